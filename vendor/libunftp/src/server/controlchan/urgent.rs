//! strata: the control connection, read so that urgent data does not stall
//! a command.
//!
//! Clients send ABOR, or the Telnet IP and Synch before it, as TCP urgent
//! data (RFC 959 4.1.3; Python's ftplib sends the whole `ABOR\r\n` so). The
//! connection keeps urgent bytes inline (`SO_OOBINLINE`), but Linux ends a
//! read at the urgent mark, and tokio takes a read shorter than its buffer
//! for a drained socket and waits for the next readiness edge, which the
//! bytes already past the mark never give: ABOR sat unread until the client
//! sent something else. After every read this one reads on, without
//! waiting, until the socket is empty or the buffer full.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::socket::{MsgFlags, recv, setsockopt, sockopt::OobInline};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) struct UrgentInline(TcpStream);

impl UrgentInline {
    pub(crate) fn new(stream: TcpStream) -> io::Result<Self> {
        setsockopt(&stream, OobInline, &true)?;
        Ok(Self(stream))
    }
}

impl AsyncRead for UrgentInline {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.0).poll_read(cx, buf))?;
        if buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        while buf.remaining() > 0 {
            // End of stream and "nothing more yet" both stop here; tokio
            // keeps a seen end of stream for the next read.
            match recv(this.0.as_raw_fd(), buf.initialize_unfilled(), MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(_) => break,
                Ok(read) => buf.advance(read),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UrgentInline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

//! strata: the control connection, read so that urgent data does not stall
//! a command.
//!
//! Clients send ABOR, or the Telnet IP and Synch before it, as TCP urgent
//! data (RFC 959 4.1.3; Python's ftplib sends the whole `ABOR\r\n` so). The
//! connection keeps urgent bytes inline (`SO_OOBINLINE`), but Linux ends a
//! read at the urgent mark, and tokio's `poll_read` takes a read shorter
//! than its buffer for a drained socket and waits for the next readiness
//! edge, which the bytes past the mark never give: ABOR sat unread until the
//! client sent something else. Reads here forget readiness only when the
//! socket says it has nothing (`try_read`'s WouldBlock).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::socket::{setsockopt, sockopt::OobInline};
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
        let stream = &self.get_mut().0;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
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

//! What the listeners of gateways and nodes share: a connection must start
//! talking within a bound.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest a connection may wait for its first byte (of its first
/// request, or of a TLS handshake), as long as hyper gives a request's head.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream whose first read must bring bytes within [`FIRST_BYTE_TIMEOUT`]:
/// hyper's timers start only once it knows the protocol (HTTP/1's header
/// timeout, HTTP/2's pings), so a connection that never sends a byte would
/// be held forever. Afterwards it adds nothing but a branch per read.
pub struct FirstByteDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstByteDeadline<S> {
    pub fn new(inner: S) -> Self {
        Self::within(inner, FIRST_BYTE_TIMEOUT)
    }

    pub fn within(inner: S, limit: Duration) -> Self {
        FirstByteDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending() {
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        } else if buf.filled().len() > filled {
            this.deadline = None;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    // Responses go out as one gathered write of head and body: delegated,
    // not flattened.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection silent past the limit is cut; one that spoke in time
    /// is not cut later, however long it then waits.
    #[tokio::test]
    async fn a_connection_must_speak_first_within_the_limit() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let limit = Duration::from_millis(50);
        let (_client, server) = tokio::io::duplex(64);
        let mut silent = FirstByteDeadline::within(server, limit);
        let mut buf = [0u8; 8];
        let cut = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut speaking = FirstByteDeadline::within(server, limit);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(speaking.read(&mut buf).await.unwrap(), 3);
        let later = tokio::spawn(async move {
            tokio::time::sleep(limit * 3).await;
            client.write_all(b" /").await.unwrap();
            client
        });
        assert_eq!(speaking.read(&mut buf).await.unwrap(), 2);
        drop(later.await.unwrap());
    }
}

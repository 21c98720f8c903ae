//! What the listeners of gateways and nodes share: a connection that stops
//! making progress is cut.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a connection may wait for its first byte (of a TLS
/// handshake, or of its first request).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may go without progress: without starting a
/// request, with none in progress and without a byte of an answer written.
/// A silent connection is cut after this; an idle keep-alive connection,
/// one trickling a request's head or one whose client stopped reading an
/// answer after one to two of these.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The requests of one connection, counted by the service that answers
/// them, which [`IdleDeadline`] reads to tell a busy connection from an
/// idle one.
#[derive(Debug, Default)]
pub struct RequestCount {
    started: AtomicU64,
    ended: AtomicU64,
}

/// A request in progress; it ends when this is dropped (answered, or its
/// handler cancelled).
#[derive(Debug)]
pub struct RequestInProgress(Arc<RequestCount>);

impl RequestCount {
    pub fn start(self: &Arc<Self>) -> RequestInProgress {
        self.started.fetch_add(1, Ordering::Relaxed);
        RequestInProgress(self.clone())
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream cut (reads and writes fail with `TimedOut`) once a period of
/// [`IDLE_TIMEOUT`] passed without progress: no request started, none in
/// progress and no byte written. Bytes read do not count, or a client
/// trickling a request's head would hold the connection for ever.
///
/// It replaces hyper's header timeout, which arms and cancels a timer for
/// every request (two takes of the runtime's timer lock per request on a
/// keep-alive connection); this one timer is reset once a period.
pub struct IdleDeadline<S> {
    inner: S,
    requests: Arc<RequestCount>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// Requests started when the timer was last armed.
    started_when_armed: u64,
    /// Whether bytes were written since the timer was last armed.
    wrote: bool,
}

impl<S> IdleDeadline<S> {
    /// `inner`, cut after [`IDLE_TIMEOUT`] without progress; its service
    /// counts its requests in `requests`.
    pub fn new(inner: S, requests: Arc<RequestCount>) -> Self {
        Self::within(inner, requests, IDLE_TIMEOUT)
    }

    pub fn within(inner: S, requests: Arc<RequestCount>, limit: Duration) -> Self {
        IdleDeadline {
            inner,
            requests,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            started_when_armed: 0,
            wrote: false,
        }
    }

    /// Whether the connection is to be cut, asked when it waits (its
    /// stream answered `Pending`): the timer ran out and the period it
    /// measured saw no progress. A period with progress arms the next.
    fn idled_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let started = self.requests.started.load(Ordering::Relaxed);
            let in_progress = started != self.requests.ended.load(Ordering::Relaxed);
            if !in_progress && !self.wrote && started == self.started_when_armed {
                return true;
            }
            self.started_when_armed = started;
            self.wrote = false;
            let next = Instant::now() + self.limit;
            self.timer.as_mut().reset(next);
        }
        false
    }

    fn wrote(&mut self, written: &Poll<std::io::Result<usize>>) -> bool {
        match written {
            Poll::Ready(Ok(count)) => {
                self.wrote |= *count > 0;
                false
            }
            Poll::Ready(Err(_)) => false,
            Poll::Pending => true,
        }
    }
}

fn timed_out<T>() -> Poll<std::io::Result<T>> {
    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending() && this.idled_out(cx) {
            return timed_out();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if this.wrote(&written) && this.idled_out(cx) {
            return timed_out();
        }
        written
    }

    // Responses go out as one gathered write of head and body: delegated,
    // not flattened.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if this.wrote(&written) && this.idled_out(cx) {
            return timed_out();
        }
        written
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const LIMIT: Duration = Duration::from_millis(100);

    fn deadline(
        stream: tokio::io::DuplexStream,
    ) -> (IdleDeadline<tokio::io::DuplexStream>, Arc<RequestCount>) {
        let requests = Arc::new(RequestCount::default());
        (
            IdleDeadline::within(stream, requests.clone(), LIMIT),
            requests,
        )
    }

    /// A connection that never speaks is cut within one period.
    #[tokio::test]
    async fn a_silent_connection_is_cut() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut silent, _) = deadline(server);
        let began = Instant::now();
        let cut = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
        assert!(began.elapsed() < LIMIT * 2);
    }

    /// Bytes of a head that never ends are not progress: a trickling
    /// client is cut within two periods.
    #[tokio::test]
    async fn a_trickled_head_is_cut() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut trickled, _) = deadline(server);
        let trickle = tokio::spawn(async move {
            while client.write_all(b"G").await.is_ok() {
                tokio::time::sleep(LIMIT / 4).await;
            }
        });
        let began = Instant::now();
        let mut buf = [0u8; 8];
        let cut = loop {
            if let Err(err) = trickled.read(&mut buf).await {
                break err;
            }
        };
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
        assert!(began.elapsed() < LIMIT * 3);
        drop(trickled);
        trickle.await.unwrap();
    }

    /// A request in progress, requests started in every period, or an
    /// answer being written keep the connection while a read waits,
    /// however long each lasts; then nothing cuts it.
    #[tokio::test]
    async fn a_busy_connection_is_kept() {
        let (mut client, server) = tokio::io::duplex(64);
        let (busy, requests) = deadline(server);
        let (reading, mut writing) = tokio::io::split(busy);
        // A read waiting in a task, as hyper's does between requests.
        type Reading = tokio::io::ReadHalf<IdleDeadline<tokio::io::DuplexStream>>;
        let wait_for_bytes = |mut reading: Reading| {
            tokio::spawn(async move {
                let read = reading.read(&mut [0u8; 8]).await;
                (reading, read)
            })
        };
        let mut reader = wait_for_bytes(reading);
        let mut keeps =
            async |reader: tokio::task::JoinHandle<(Reading, std::io::Result<usize>)>| {
                client.write_all(b"x").await.unwrap();
                let (reading, read) = reader.await.unwrap();
                assert_eq!(read.unwrap(), 1, "cut while busy");
                reading
            };

        // A request whose handler takes several periods.
        let handling = requests.start();
        tokio::time::sleep(LIMIT * 4).await;
        reader = wait_for_bytes(keeps(reader).await);
        drop(handling);

        // One request started in each period.
        for _ in 0..8 {
            drop(requests.start());
            tokio::time::sleep(LIMIT / 2).await;
        }
        reader = wait_for_bytes(keeps(reader).await);

        // An answer written slowly (to a client whose buffer takes it).
        for _ in 0..8 {
            writing.write_all(b"z").await.unwrap();
            tokio::time::sleep(LIMIT / 2).await;
        }
        reader = wait_for_bytes(keeps(reader).await);

        // Then nothing: cut.
        let (_, read) = reader.await.unwrap();
        assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

    /// A client that stops reading an answer is cut: the write waits,
    /// the period passes without a byte written.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut stalled, _) = deadline(server);
        let cut = stalled.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
    }
}

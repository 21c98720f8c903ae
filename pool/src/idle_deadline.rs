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
/// request, without its server working on one (a handler running, unless
/// it waits for more of its request's body; an answer's next piece not
/// ready) and without a byte of an answer written. A silent connection is
/// cut after this; an idle keep-alive connection, one trickling a
/// request's head, one whose body stopped coming or whose client stopped
/// reading an answer after one to two of these.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the service of one connection is doing, which [`IdleDeadline`]
/// reads to tell a connection waiting for its server from an idle one:
/// how many of its handlers and answers are being worked on, and a count
/// of changes to that. Handlers of HTTP/2 streams run in tasks of their
/// own, hence atomics.
#[derive(Debug, Default)]
pub struct RequestCount {
    /// Handlers running, plus answers whose next piece is not ready.
    busy: AtomicU64,
    /// Bumped whenever one of those begins or ends.
    events: AtomicU64,
}

impl RequestCount {
    /// A request's handler begins; it ends when the guard is dropped or
    /// turned into its answer's body ([`HandlerRunning::answer`]).
    pub fn start(self: &Arc<Self>) -> HandlerRunning {
        self.begin();
        HandlerRunning(self.clone())
    }

    fn begin(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.events.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        // The event first: who reads `busy` fallen sees the event.
        self.events.fetch_add(1, Ordering::SeqCst);
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RequestCount {
    /// `body`, the body of a request whose handler this counts: while
    /// the handler waits for more of it, the handler does not count as
    /// busy, so an upload that stops coming is cut (nginx's
    /// `client_body_timeout`) and one that keeps coming, a piece at least
    /// every period, is not.
    pub fn request_body<B>(self: &Arc<Self>, body: B) -> CountedBody<B> {
        CountedBody::new(body, self.clone(), Waiting::ForClient)
    }
}

/// A request's handler, running (see [`RequestCount::start`]); it ends
/// when this is dropped.
#[derive(Debug)]
pub struct HandlerRunning(Arc<RequestCount>);

impl HandlerRunning {
    /// The handler is done: `body` is its answer's, counted as busy while
    /// its next piece is not ready. A download whose bytes come slowly
    /// from the store is not idle, while one waiting for its client to
    /// read is (hyper then stops asking the body for more).
    pub fn answer<B>(self, body: B) -> CountedBody<B> {
        let requests = self.0.clone();
        drop(self);
        CountedBody::new(body, requests, Waiting::ForServer)
    }
}

impl Drop for HandlerRunning {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Who a body that is not ready waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// A request's body: the client, while its handler (counted as busy)
    /// is not working.
    ForClient,
    /// An answer's body: the server, which is then busy.
    ForServer,
}

/// A body that tells the connection's [`RequestCount`] while its next
/// piece is not ready: a request's takes its handler's count back, an
/// answer's counts as busy.
#[derive(Debug)]
pub struct CountedBody<B> {
    inner: B,
    requests: Arc<RequestCount>,
    kind: Waiting,
    /// Whether its last poll was pending.
    pending: bool,
}

impl<B> CountedBody<B> {
    fn new(inner: B, requests: Arc<RequestCount>, kind: Waiting) -> Self {
        CountedBody {
            inner,
            requests,
            kind,
            pending: false,
        }
    }

    /// Tells the count that the body now waits (`pending`) or no longer.
    fn set_pending(&mut self, pending: bool) {
        if pending == self.pending {
            return;
        }
        self.pending = pending;
        if pending == (self.kind == Waiting::ForServer) {
            self.requests.begin();
        } else {
            self.requests.end();
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.set_pending(polled.is_pending());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountedBody<B> {
    // A request's body gives its handler's count back (the handler's
    // guard takes it once more); an answer's stops being busy.
    fn drop(&mut self) {
        self.set_pending(false);
    }
}

/// A stream cut (reads and writes fail with `TimedOut`) once a period of
/// [`IDLE_TIMEOUT`] passed without progress: no request started, its
/// server not working on one and no byte written. Bytes read do not
/// count, or a client trickling a request's head would hold the
/// connection for ever.
///
/// It replaces hyper's header timeout, which arms and cancels a timer for
/// every request (two takes of the runtime's timer lock per request on a
/// keep-alive connection); this one timer is reset once a period.
pub struct IdleDeadline<S> {
    inner: S,
    requests: Arc<RequestCount>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// `requests.events` when the timer was last armed.
    events_when_armed: u64,
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
            events_when_armed: 0,
            wrote: false,
        }
    }

    /// Whether the connection is to be cut, asked when it waits (its
    /// stream answered `Pending`): the timer ran out and the period it
    /// measured saw no progress. A period with progress arms the next.
    fn idled_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let busy = self.requests.busy.load(Ordering::SeqCst) > 0;
            let events = self.requests.events.load(Ordering::SeqCst);
            if !busy && !self.wrote && events == self.events_when_armed {
                return true;
            }
            self.events_when_armed = events;
            self.wrote = false;
            let next = Instant::now() + self.limit;
            self.timer.as_mut().reset(next);
        }
        false
    }

    /// `polled`, or a cut if it waits and the connection idled out.
    fn checked<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_pending() && self.idled_out(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        polled
    }

    /// [`Self::checked`] for a write, whose bytes are progress.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(count)) = polled {
            self.wrote |= count > 0;
        }
        self.checked(cx, polled)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.checked(cx, read)
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
        this.written(cx, written)
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
        this.written(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A TLS stream takes writes into its buffer and waits here for the
    // client to read them.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.checked(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let closed = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.checked(cx, closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// The tests run in tokio's paused clock, which moves only when every
    /// task waits: what they time is the deadline's logic, not the
    /// machine's load.
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

    /// A body of the pieces `pieces` yields, as they come.
    fn body_of(
        pieces: impl futures::Stream<Item = bytes::Bytes> + Send + 'static,
    ) -> impl hyper::body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Unpin {
        use futures::StreamExt as _;
        let frames = pieces.map(|piece| Ok(hyper::body::Frame::data(piece)));
        http_body_util::StreamBody::new(Box::pin(frames))
    }

    /// A connection that never speaks is cut after one period, not before.
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_cut() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut silent, _) = deadline(server);
        let began = Instant::now();
        let cut = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(began.elapsed(), LIMIT);
    }

    /// Bytes of a head that never ends are not progress: a trickling
    /// client is cut within two periods, and not within one.
    #[tokio::test(start_paused = true)]
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
        let elapsed = began.elapsed();
        assert!(LIMIT <= elapsed && elapsed <= LIMIT * 2, "{elapsed:?}");
        drop(trickled);
        trickle.await.unwrap();
    }

    /// A request in progress, requests started in every period, or an
    /// answer being written keep the connection while a read waits,
    /// however long each lasts; then nothing cuts it.
    #[tokio::test(start_paused = true)]
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
        let (_, read) = tokio::time::timeout(LIMIT * 5, reader)
            .await
            .expect("not cut once nothing happened")
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

    /// An answer whose next piece takes several periods to come (from a
    /// slow store) keeps the connection; once it has ended, nothing does.
    #[tokio::test(start_paused = true)]
    async fn an_answer_produced_slowly_keeps_the_connection() {
        use http_body_util::BodyExt as _;

        let (_client, server) = tokio::io::duplex(64);
        let (mut waiting, requests) = deadline(server);
        let reader = tokio::spawn(async move { waiting.read(&mut [0u8; 8]).await });
        // One piece, once its sleep has passed.
        let late = body_of(futures::stream::once(async {
            tokio::time::sleep(LIMIT * 4 + LIMIT / 2).await;
            bytes::Bytes::from_static(b"late")
        }));
        let mut body = requests.start().answer(late);
        let piece = body.frame().await.unwrap().unwrap();
        assert_eq!(piece.into_data().unwrap(), "late");
        assert!(!reader.is_finished(), "cut while its answer was coming");
        assert!(body.frame().await.is_none());
        drop(body);
        let cut = tokio::time::timeout(LIMIT * 5, reader)
            .await
            .expect("not cut once its answer ended")
            .unwrap()
            .unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
    }

    /// A handler waiting for its request's body does not keep the
    /// connection once the body stops coming (nginx's
    /// `client_body_timeout`); while a piece comes every half period, it
    /// does.
    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stops_coming_is_cut() {
        use http_body_util::BodyExt as _;

        let (_client, server) = tokio::io::duplex(64);
        let (mut waiting, requests) = deadline(server);
        let reader = tokio::spawn(async move { waiting.read(&mut [0u8; 8]).await });
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let handler = requests.start();
        // Its pieces come through a channel.
        let pieces = futures::stream::unfold(receiver, |mut receiver| async move {
            let byte = receiver.recv().await?;
            Some((bytes::Bytes::from(vec![byte]), receiver))
        });
        let mut body = requests.request_body(body_of(pieces));
        let uploader = tokio::spawn(async move {
            for piece in 0..8 {
                tokio::time::sleep(LIMIT / 2).await;
                sender.send(piece).await.unwrap();
            }
            sender
        });
        for _ in 0..8 {
            body.frame().await.unwrap().unwrap();
        }
        assert!(!reader.is_finished(), "cut while the upload kept coming");
        let _stopped = uploader.await.unwrap();
        let handling = tokio::spawn(async move { body.frame().await.is_none() });
        let cut = tokio::time::timeout(LIMIT * 5, reader)
            .await
            .expect("a handler waiting for a stopped upload kept the connection")
            .unwrap()
            .unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
        handling.abort();
        drop(handler);
    }

    /// A client that stops reading an answer is cut: the write waits,
    /// the period passes without a byte written.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut stalled, _) = deadline(server);
        let cut = stalled.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(cut.kind(), std::io::ErrorKind::TimedOut);
    }
}

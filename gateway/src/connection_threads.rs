//! The threads that serve the HTTP port's connections: each runs a
//! current-thread tokio runtime, and a connection stays on the thread it
//! was handed when accepted, as a connection of nginx stays with one
//! worker process.
//!
//! Why not the multi-thread runtime everything else runs on: there, a
//! worker that finds a ready connection wakes an idle sibling to steal
//! work, and the futex wake and context switch that follow cost a cached
//! hit more than the hit itself does in user space. On 2 cores with the
//! load generator beside it, a 1 KiB hit cost 11.1 µs of CPU served on the
//! shared runtime and 9.6 µs on threads of its own, 0.96x then 1.14x
//! nginx's req/s (`bench/runs/2026-12-06-vm-edge-threads.md`).
//!
//! What a request starts (`tokio::spawn`, `spawn_blocking`: a cache fill,
//! a metadata batch, a database commit) runs on its connection's thread
//! and that thread's blocking pool, and so does every call another member
//! makes (Raft's included, which share their thread with its other
//! connections); the accept loop, FTP, the store's background work and
//! the metadata service's own tasks stay on the shared runtime. A
//! connection stays on its thread: one client's HTTP/2 streams get one
//! core, as one nginx worker's connections do.
//!
//! A thread steps aside (`sched_yield`) at a request's start when it last
//! did so [`STEP_ASIDE_EVERY`] ago or more ([`step_aside_if_due`]). A
//! thread whose connections keep it busy seldom sleeps, and the kernel
//! then runs it for whole slices of milliseconds while the threads that
//! share its core wait, clients reading its answers among them. On 2 cores
//! beside wrk, stepping aside every 0.5 ms took the p99 of a 64 KiB hit
//! from 7.7–8.0 ms to 2.0–2.6 ms (nginx's: 3.9–5.3 ms), and that of a 1 KiB
//! hit from 4.0–6.4 ms to 1.6–2.2 ms
//! (`bench/runs/2026-12-07-vm-edge-stepping-aside.md`). Hits per second
//! moved within the machine's noise: interleaved A/B runs of 0.5, 1 and
//! 2 ms against never found no period consistently ahead
//! (`bench/runs/2026-12-07-vm-edge-step-period.md`).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long a stopping thread waits for the blocking work its requests
/// started (a database commit's fsync) before it lets go.
const BLOCKING_WORK_AT_STOP: Duration = Duration::from_secs(10);

/// How often at most a connection thread steps aside for the threads that
/// wait for its core: well under the kernel's slice (3 ms on this
/// machine), and once a request at most.
const STEP_ASIDE_EVERY: Duration = Duration::from_micros(500);

thread_local! {
    /// On a connection thread: when it last stepped aside, and its count
    /// of times it did. `None` on every other thread.
    static STEPPING_ASIDE: RefCell<Option<(Instant, Arc<AtomicU64>)>> =
        const { RefCell::new(None) };
}

/// On a connection thread, gives its core to whatever else is ready to run
/// there (a `sched_yield`, which returns at once when nothing is) if it
/// last did so [`STEP_ASIDE_EVERY`] ago or more; elsewhere, nothing.
pub fn step_aside_if_due() {
    step_aside_if_past(STEP_ASIDE_EVERY);
}

fn step_aside_if_past(every: Duration) {
    STEPPING_ASIDE.with_borrow_mut(|stepping| {
        let Some((last, count)) = stepping else {
            return;
        };
        if last.elapsed() >= every {
            std::thread::yield_now();
            *last = Instant::now();
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// The connection threads, and how many connections each holds.
pub struct ConnectionThreads {
    threads: Vec<Thread>,
}

struct Thread {
    runtime: Handle,
    connections: Arc<AtomicUsize>,
    /// Times the thread stepped aside ([`step_aside_if_due`]).
    steps_aside: Arc<AtomicU64>,
    /// Until [`ConnectionThreads::stop`]: what ends the thread's runtime
    /// (sent, or dropped), and the thread to join.
    running: Mutex<Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// Counts a connection on its thread until the connection ends.
struct Holding(Arc<AtomicUsize>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), which run until
    /// [`ConnectionThreads::stop`]. Blocks while each thread builds its
    /// runtime (at start: milliseconds).
    pub fn start(count: usize) -> anyhow::Result<ConnectionThreads> {
        let threads = (0..count.max(1))
            .map(Thread::start)
            .collect::<anyhow::Result<_>>()?;
        Ok(ConnectionThreads { threads })
    }

    /// Serves `stream` (from `peer`) with `serve` on the thread holding
    /// the fewest connections. The stream leaves the accepting runtime's
    /// reactor for that thread's.
    pub fn serve<F, Fut>(&self, stream: TcpStream, peer: SocketAddr, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|thread| thread.connections.load(Ordering::Relaxed))
        else {
            return;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "handing a connection to its thread");
                return;
            }
        };
        thread.connections.fetch_add(1, Ordering::Relaxed);
        let holding = Holding(thread.connections.clone());
        thread.runtime.spawn(async move {
            let _holding = holding;
            // Registered with the reactor of the runtime it now runs on.
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(err) => {
                    tracing::warn!(%peer, error = %err, "taking a connection on its thread");
                }
            }
        });
    }

    /// Connections each thread holds.
    pub fn connections(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|thread| thread.connections.load(Ordering::Relaxed))
            .collect()
    }

    /// Times each thread stepped aside ([`step_aside_if_due`]).
    pub fn steps_aside(&self) -> Vec<u64> {
        self.threads
            .iter()
            .map(|thread| thread.steps_aside.load(Ordering::Relaxed))
            .collect()
    }

    /// The connections each thread holds, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::from("# TYPE strata_connection_thread_connections gauge\n");
        for (index, open) in self.connections().into_iter().enumerate() {
            out.push_str(&format!(
                "strata_connection_thread_connections{{thread=\"{index}\"}} {open}\n"
            ));
        }
        out.push_str("# TYPE strata_connection_thread_steps_aside_total counter\n");
        for (index, steps) in self.steps_aside().into_iter().enumerate() {
            out.push_str(&format!(
                "strata_connection_thread_steps_aside_total{{thread=\"{index}\"}} {steps}\n"
            ));
        }
        out
    }

    /// Ends every thread: its connections are dropped, and the blocking
    /// work their requests started is waited for, a while. Blocks: call it
    /// off the async runtime.
    pub fn stop(&self) {
        // All told first, so that they wind down together.
        let stopping: Vec<_> = self
            .threads
            .iter()
            .filter_map(|thread| thread.running.lock().take())
            .map(|(stop, joined)| {
                drop(stop);
                joined
            })
            .collect();
        for joined in stopping {
            if joined.join().is_err() {
                tracing::warn!("a connection thread panicked");
            }
        }
    }
}

impl Thread {
    fn start(index: usize) -> anyhow::Result<Thread> {
        let (built, runtime) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let steps_aside = Arc::new(AtomicU64::new(0));
        let counted = steps_aside.clone();
        // The runtime is built and dropped on its own thread: dropped on
        // an async one it would panic.
        let joined = std::thread::Builder::new()
            .name(format!("strata-conn-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(format!("strata-conn-{index}-blocking"))
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = built.send(Err(err));
                        return;
                    }
                };
                let _ = built.send(Ok(runtime.handle().clone()));
                STEPPING_ASIDE.set(Some((Instant::now(), counted)));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(BLOCKING_WORK_AT_STOP);
            })
            .context("starting a connection thread")?;
        let runtime = runtime
            .recv()
            .context("a connection thread ended while starting")?
            .context("starting a connection thread's runtime")?;
        Ok(Thread {
            runtime,
            connections: Arc::new(AtomicUsize::new(0)),
            steps_aside,
            running: Mutex::new(Some((stop, joined))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go to the thread holding fewest, are served on a thread
    /// of the set (not the accepting runtime's), and leave their count when
    /// they end.
    #[tokio::test]
    async fn connections_spread_over_the_threads_and_leave_when_done() {
        let threads = ConnectionThreads::start(2).expect("threads");
        let listener = loopback_listener().await;
        let mut clients = Vec::new();
        let (served_on, mut names) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let (client, stream, peer) = connection(&listener).await;
            clients.push(client);
            let served_on = served_on.clone();
            threads.serve(stream, peer, move |mut stream| async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = served_on.send(name);
                // Held until the client closes.
                let mut byte = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(names.recv().await.expect("served").expect("a named thread"));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "strata-conn-0",
                "strata-conn-0",
                "strata-conn-1",
                "strata-conn-1"
            ]
        );
        assert_eq!(threads.connections(), [2, 2]);

        // One of thread 1's connections ends (the second: ties go to the
        // first thread), and the next goes there, though thread 0 would be
        // next in turn.
        drop(clients.remove(1));
        until(|| threads.connections() == [2, 1]).await;
        let (client, stream, peer) = connection(&listener).await;
        clients.push(client);
        let served_on = served_on.clone();
        threads.serve(stream, peer, move |_stream| async move {
            let _ = served_on.send(std::thread::current().name().map(str::to_owned));
            std::future::pending::<()>().await;
        });
        let fifth = names.recv().await.expect("served");
        assert_eq!(fifth.as_deref(), Some("strata-conn-1"));

        drop(clients);
        until(|| threads.connections() == [0, 1]).await;
        // Stopping drops what the threads still serve.
        tokio::task::spawn_blocking(move || {
            threads.stop();
            assert_eq!(threads.connections(), [0, 0]);
        })
        .await
        .expect("stopped");
    }

    /// A connection thread steps aside once its interval has passed since
    /// it last did, and counts it; other threads never do.
    #[tokio::test]
    async fn a_thread_steps_aside_once_its_interval_passed() {
        let threads = ConnectionThreads::start(1).expect("threads");
        let listener = loopback_listener().await;
        let (_client, stream, peer) = connection(&listener).await;
        let (served, done) = oneshot::channel();
        threads.serve(stream, peer, move |_stream| async move {
            // Not an hour since the thread started.
            step_aside_if_past(Duration::from_secs(3600));
            step_aside_if_past(Duration::ZERO);
            step_aside_if_past(Duration::ZERO);
            let _ = served.send(());
        });
        done.await.expect("served");
        assert_eq!(threads.steps_aside(), [2]);
        assert!(
            threads
                .metrics_text()
                .contains("strata_connection_thread_steps_aside_total{thread=\"0\"} 2\n")
        );
        // This test's own thread is no connection thread.
        step_aside_if_past(Duration::ZERO);
        assert_eq!(threads.steps_aside(), [2]);
        tokio::task::spawn_blocking(move || threads.stop())
            .await
            .expect("stopped");
    }

    async fn loopback_listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    }

    /// A client's end of a new connection to `listener`, and the accepted
    /// end with its peer address.
    async fn connection(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let address = listener.local_addr().expect("address");
        let client = TcpStream::connect(address).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        (client, stream, peer)
    }

    async fn until(mut reached: impl FnMut() -> bool) {
        for _ in 0..500 {
            if reached() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("not reached in 5 s");
    }
}

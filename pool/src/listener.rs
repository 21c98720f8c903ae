//! What the listeners of gateways and nodes share about accepting: a cap on
//! the connections open at once, and the file descriptors to hold them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Raises the soft limit on open files to the hard limit (as nginx's
/// `worker_rlimit_nofile` or Go's runtime do: the soft default, often 1024,
/// is a compatibility relic) and returns the limit now in effect.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %err, "could not raise the open file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// How many connections a listener holds open at once: `configured`, or
/// half the open file limit, so that a flood of clients leaves the other
/// half to the database, the extent files and the calls to other members.
pub fn connection_cap(configured: Option<usize>) -> usize {
    let files = raise_open_file_limit();
    match configured {
        Some(cap) => cap.max(1),
        None => usize::try_from(files / 2).unwrap_or(usize::MAX).max(64),
    }
}

/// A TCP listener holding at most `cap` connections open at once. At the
/// cap it stops accepting, so new connections wait in the kernel's backlog
/// (as nginx does at `worker_connections`) instead of failing a later
/// `open` of a file with EMFILE.
pub struct CappedListener {
    listener: TcpListener,
    gauge: ConnectionGauge,
    /// When the cap was last logged: once a minute at most, as a flood
    /// meets it at every connection.
    last_warned: std::sync::Mutex<Option<Instant>>,
}

/// One accepted connection; it counts against the cap until `permit` drops.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
}

/// The connections a [`CappedListener`] holds, for `/metrics`.
#[derive(Clone)]
pub struct ConnectionGauge {
    permits: Arc<Semaphore>,
    cap: usize,
    /// How many times the listener found itself at the cap.
    saturated: Arc<AtomicU64>,
}

impl ConnectionGauge {
    pub fn open(&self) -> usize {
        self.cap.saturating_sub(self.permits.available_permits())
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn saturated(&self) -> u64 {
        self.saturated.load(Ordering::Relaxed)
    }

    /// The gauges in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        format!(
            "# TYPE strata_connections_open gauge\nstrata_connections_open {}\n\
             # TYPE strata_connections_max gauge\nstrata_connections_max {}\n\
             # TYPE strata_connections_saturated_total counter\n\
             strata_connections_saturated_total {}\n",
            self.open(),
            self.cap,
            self.saturated()
        )
    }
}

impl CappedListener {
    pub fn new(listener: TcpListener, cap: usize) -> Self {
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        CappedListener {
            listener,
            gauge: ConnectionGauge {
                permits: Arc::new(Semaphore::new(cap)),
                cap,
                saturated: Arc::new(AtomicU64::new(0)),
            },
            last_warned: std::sync::Mutex::new(None),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn gauge(&self) -> ConnectionGauge {
        self.gauge.clone()
    }

    fn warn_at_cap(&self) {
        let mut last = self
            .last_warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                cap = self.gauge.cap,
                "at the connection cap: new connections wait until one closes"
            );
        }
    }

    /// The next connection, once one is allowed, with `TCP_NODELAY` set:
    /// small answers must not wait for a delayed ACK (Nagle).
    pub async fn accept(&self) -> Accepted {
        let permits = &self.gauge.permits;
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.gauge.saturated.fetch_add(1, Ordering::Relaxed);
                self.warn_at_cap();
                match permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is ours and never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(error = %err, "could not set TCP_NODELAY");
                    }
                    return Accepted {
                        stream,
                        peer,
                        permit,
                    };
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_past_the_cap_waits_for_one_to_close() {
        let listener = CappedListener::new(TcpListener::bind("127.0.0.1:0").await.unwrap(), 2);
        let addr = listener.local_addr().unwrap();
        let gauge = listener.gauge();
        let _clients: Vec<TcpStream> =
            futures::future::join_all((0..3).map(|_| TcpStream::connect(addr)))
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
        let first = listener.accept().await;
        let _second = listener.accept().await;
        assert_eq!(gauge.open(), 2);
        // The third client is connected (the backlog took it) but not accepted.
        let third = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(third.is_err(), "accepted past the cap");
        assert_eq!(gauge.saturated(), 1);
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(third.is_ok(), "a closed connection made no room");
        assert_eq!(gauge.open(), 2);
    }

    #[test]
    fn the_cap_defaults_to_half_the_open_file_limit() {
        let files = raise_open_file_limit();
        assert_eq!(connection_cap(Some(10)), 10);
        assert_eq!(connection_cap(Some(0)), 1);
        let expected = usize::try_from(files / 2).unwrap_or(usize::MAX).max(64);
        assert_eq!(connection_cap(None), expected);
    }
}

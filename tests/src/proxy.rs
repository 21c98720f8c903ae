//! A TCP proxy that can cut what it carries, as a network partition does:
//! while cut, no byte passes in either direction and nothing is refused, so
//! connections hang as they do when packets are dropped, rather than fail
//! fast as they do when a process is gone. Healed, held bytes flow again.
//! It can also let a given number of bytes through from the target and then
//! hold the rest, to stop a transfer part-way.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often blocked threads look at the cut and closed flags.
const POLL: Duration = Duration::from_millis(20);

/// The allowance of a proxy that is not throttled.
const UNMETERED: u64 = u64::MAX;

struct Flags {
    cut: AtomicBool,
    closed: AtomicBool,
    /// Bytes from the target that may still pass ([`UNMETERED`]: any).
    allowance: AtomicU64,
}

impl Flags {
    /// Waits while the link is cut; false once the proxy is closed.
    fn wait_until_open(&self) -> bool {
        while self.cut.load(Ordering::SeqCst) {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            thread::sleep(POLL);
        }
        !self.closed.load(Ordering::SeqCst)
    }

    /// Up to `want` bytes from the target may pass now; waits while the
    /// allowance is spent. `None` once the proxy is closed.
    fn take_allowance(&self, want: usize) -> Option<usize> {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            let left = self.allowance.load(Ordering::SeqCst);
            if left == UNMETERED {
                return Some(want);
            }
            if left == 0 {
                thread::sleep(POLL);
                continue;
            }
            let take = left.min(want as u64);
            if self
                .allowance
                .compare_exchange(left, left - take, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(take as usize);
            }
        }
    }

    fn give_back(&self, unused: usize) {
        // Not into an allowance lifted meanwhile.
        let _ = self
            .allowance
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left != UNMETERED).then(|| left + unused as u64)
            });
    }
}

/// Forwards connections from `address` to a target until dropped.
pub struct Proxy {
    pub address: String,
    flags: Arc<Flags>,
}

impl Proxy {
    /// A proxy listening on `address` (`127.0.0.1:0`: a port the OS picks,
    /// then in [`Proxy::address`]).
    pub fn start(address: &str, target: &str) -> Result<Proxy> {
        let listener =
            TcpListener::bind(address).with_context(|| format!("proxy binding {address}"))?;
        let address = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let flags = Arc::new(Flags {
            cut: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            allowance: AtomicU64::new(UNMETERED),
        });
        let accept_flags = flags.clone();
        let target = target.to_owned();
        thread::spawn(move || accept_loop(&listener, &target, &accept_flags));
        Ok(Proxy { address, flags })
    }

    /// Stops every byte, in both directions, on every connection.
    pub fn cut(&self) {
        self.flags.cut.store(true, Ordering::SeqCst);
    }

    /// Lets `bytes` more pass from the target, over all connections, then
    /// holds what follows until [`Proxy::heal`]. What goes to the target
    /// still passes.
    pub fn throttle(&self, bytes: u64) {
        self.flags
            .allowance
            .store(bytes.min(UNMETERED - 1), Ordering::SeqCst);
    }

    /// Ends a cut or a throttle.
    pub fn heal(&self) {
        self.flags.allowance.store(UNMETERED, Ordering::SeqCst);
        self.flags.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flags.closed.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, target: &str, flags: &Arc<Flags>) {
    while !flags.closed.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let flags = flags.clone();
                let target = target.to_owned();
                thread::spawn(move || connect(client, &target, &flags));
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Joins a client to the target, once the link is not cut. The kernel has
/// already accepted the client's connection to the proxy, so a client's
/// connect timeout never fires: harsher than a real partition, where the
/// handshake itself would hang.
fn connect(client: TcpStream, target: &str, flags: &Arc<Flags>) {
    if !flags.wait_until_open() {
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream_flags = flags.clone();
    thread::spawn(move || pump(client_copy, server_copy, &upstream_flags, false));
    pump(server, client, flags, true);
}

/// Copies one direction until end of stream, holding bytes while cut (and,
/// `from_target`, beyond a throttle's allowance).
fn pump(mut from: TcpStream, mut to: TcpStream, flags: &Flags, from_target: bool) {
    let _ = from.set_read_timeout(Some(POLL * 5));
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if !flags.wait_until_open() {
            break;
        }
        let allowed = if from_target {
            match flags.take_allowance(buffer.len()) {
                Some(allowed) => allowed,
                None => break,
            }
        } else {
            buffer.len()
        };
        let read = from.read(&mut buffer[..allowed]);
        if from_target {
            flags.give_back(allowed - *read.as_ref().unwrap_or(&0));
        }
        match read {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if !flags.wait_until_open() || to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

//! A TCP proxy that can cut what it carries, as a network partition does:
//! while cut, no byte passes in either direction and nothing is refused, so
//! connections hang as they do when packets are dropped, rather than fail
//! fast as they do when a process is gone. Healed, held bytes flow again.
//! It can also let a given number of bytes through from the target and then
//! hold the rest, to stop a transfer part-way.
//!
//! A [`Partition`] cuts links between given processes instead: each host is
//! reached through a proxy of its own ([`Proxy::front`]), which tells which
//! host a connection comes from by the process owning its other end (read
//! from `/proc`), so the links between two hosts can be cut both ways while
//! each still reaches the rest.

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// The partition whose host this proxy fronts, and that host.
    front: Option<(Arc<Partition>, usize)>,
}

impl Flags {
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
        Proxy::start_with(address, target, None)
    }

    /// A proxy on `address` (`127.0.0.1:0`: a port the OS picks) through
    /// which `host` of `partition`, at `target`, is reached: the
    /// partition's cuts apply to it.
    pub fn front(
        partition: &Arc<Partition>,
        host: usize,
        address: &str,
        target: &str,
    ) -> Result<Proxy> {
        Proxy::start_with(address, target, Some((partition.clone(), host)))
    }

    fn start_with(
        address: &str,
        target: &str,
        front: Option<(Arc<Partition>, usize)>,
    ) -> Result<Proxy> {
        let listener =
            TcpListener::bind(address).with_context(|| format!("proxy binding {address}"))?;
        let address = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let flags = Arc::new(Flags {
            cut: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            allowance: AtomicU64::new(UNMETERED),
            front,
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
            Ok((client, peer)) => {
                let link = Arc::new(Link {
                    flags: flags.clone(),
                    client_socket: listener
                        .local_addr()
                        .ok()
                        .and_then(|proxy| socket_inode(peer, proxy)),
                    source: OnceLock::new(),
                });
                let target = target.to_owned();
                thread::spawn(move || connect(client, &target, &link));
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
fn connect(client: TcpStream, target: &str, link: &Arc<Link>) {
    if !link.wait_until_open() {
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
    let upstream = link.clone();
    thread::spawn(move || pump(client_copy, server_copy, &upstream, false));
    pump(server, client, link, true);
}

/// Copies one direction until end of stream, holding bytes while cut (and,
/// `from_target`, beyond a throttle's allowance).
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, from_target: bool) {
    let flags = &link.flags;
    let _ = from.set_read_timeout(Some(POLL * 5));
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if !link.wait_until_open() {
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
                if !link.wait_until_open() || to.write_all(&buffer[..n]).is_err() {
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

/// One connection through a proxy.
struct Link {
    flags: Arc<Flags>,
    /// The inode of the client's end of the connection.
    client_socket: Option<u64>,
    /// The host the client is, once known.
    source: OnceLock<usize>,
}

impl Link {
    /// Waits while the link is cut; false once the proxy is closed.
    fn wait_until_open(&self) -> bool {
        while self.is_cut() {
            if self.flags.closed.load(Ordering::SeqCst) {
                return false;
            }
            thread::sleep(POLL);
        }
        !self.flags.closed.load(Ordering::SeqCst)
    }

    fn is_cut(&self) -> bool {
        if self.flags.cut.load(Ordering::SeqCst) {
            return true;
        }
        let Some((partition, host)) = &self.flags.front else {
            return false;
        };
        partition.cuts(self, *host)
    }
}

/// Hosts (numbered by the test) that are processes, and the links cut
/// between them.
#[derive(Default)]
pub struct Partition {
    /// Process id → host.
    hosts: Mutex<HashMap<u32, usize>>,
    /// (from, to): no byte passes on connections from `from` to `to`.
    cut: Mutex<BTreeSet<(usize, usize)>>,
}

impl Partition {
    pub fn new() -> Arc<Partition> {
        Arc::default()
    }

    /// Host `host` runs as process `pid` (again after a restart).
    pub fn place(&self, host: usize, pid: u32) {
        let mut hosts = lock(&self.hosts);
        hosts.retain(|_, placed| *placed != host);
        hosts.insert(pid, host);
    }

    /// Cuts the links between `host` and each of `others`, both ways.
    pub fn isolate(&self, host: usize, others: &[usize]) {
        let mut cut = lock(&self.cut);
        for other in others {
            cut.insert((host, *other));
            cut.insert((*other, host));
        }
    }

    /// Ends every cut.
    pub fn heal(&self) {
        lock(&self.cut).clear();
    }

    fn cuts(&self, link: &Link, to: usize) -> bool {
        if lock(&self.cut).is_empty() {
            return false;
        }
        let from = match link.source.get() {
            Some(from) => *from,
            None => match link.client_socket.and_then(|inode| self.owner_of(inode)) {
                Some(from) => *link.source.get_or_init(|| from),
                // Not a host's connection (a test's own, say): never cut.
                None => return false,
            },
        };
        lock(&self.cut).contains(&(from, to))
    }

    /// The host whose process holds socket `inode`.
    fn owner_of(&self, inode: u64) -> Option<usize> {
        let wanted = format!("socket:[{inode}]");
        let hosts = lock(&self.hosts).clone();
        hosts.into_iter().find_map(|(pid, host)| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()?
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == *wanted))
                .then_some(host)
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The inode of the IPv4 socket at `local` connected to `remote`, from
/// `/proc/net/tcp` (addresses and ports in hex, the inode tenth).
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let matches = fields.len() > 9
            && port_of(fields[1]) == Some(local.port())
            && port_of(fields[2]) == Some(remote.port());
        matches
            .then(|| fields[9].parse().ok())
            .flatten()
            .filter(|inode| *inode != 0)
    })
}

//! RAM-zone bodies in a memfd, and the plain-HTTP connection stream that
//! sends them with `sendfile` rather than copying them into the socket
//! (`docs/design/edge-zero-copy.md`).
//!
//! A profile of 64 KiB hits spent a sixth of the gateway's CPU in the
//! kernel's copy of bodies into socket buffers at `writev`. `sendfile`
//! from a memfd hands the socket the file's pages by reference instead, as
//! nginx does from its cache files.
//!
//! The one subtle point: a page sent by reference stays in the socket's
//! queue (and on loopback, in the receiver's) until the peer reads it,
//! which can be long after the answer was written. So a freed region is
//! punched out of the file before it is reused: its old pages live on as
//! long as a socket holds them, and the next body written there gets fresh
//! ones. A region that cannot be punched is never reused.

// The arena's bodies are read through a mapping of its memfd: the one
// place that needs `unsafe` (`RamArena::open` and `Region::as_ref`).
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::IoSlice;
use std::os::fd::AsFd as _;
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use parking_lot::Mutex;
use rustix::fs::{FallocateFlags, MemfdFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The bodies the arena takes: those whose hits used less CPU sent with
/// `sendfile` than copied, measured A/B on loopback
/// (`bench/runs/2026-12-07-vm-edge-sendfile.md`): 25–50% less from 64 KiB
/// to 512 KiB; below, the second system call (`sendmsg` of the head, then
/// `sendfile`) costs about what the copy saves, and at 1 MiB the page by
/// page handling of the socket's buffers cost more than the copy.
pub const ARENA_BODY_BYTES: std::ops::RangeInclusive<usize> = 64 * 1024..=512 * 1024;

/// The memory page size: regions are whole pages, so punching one never
/// touches a neighbour's.
fn page() -> u64 {
    rustix::param::page_size() as u64
}

/// Whether the arena takes a body of `length` bytes.
pub fn takes(length: usize) -> bool {
    ARENA_BODY_BYTES.contains(&length)
}

/// Whether the kernel may back shared memory with pages larger than the
/// base page (transparent huge pages for shmem, in
/// `/sys/kernel/mm/transparent_hugepage`): a region punched inside such a
/// page is zeroed in place rather than detached while a socket holds it,
/// so the arena is not used.
pub fn shared_memory_may_use_huge_pages() -> bool {
    shmem_huge_pages_in(std::path::Path::new("/sys/kernel/mm/transparent_hugepage"))
}

/// [`shared_memory_may_use_huge_pages`], read from the settings under
/// `root`.
fn shmem_huge_pages_in(root: &std::path::Path) -> bool {
    // The setting is the word in brackets: `always [never] …`.
    let selected = |path: &std::path::Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let start = text.find('[')? + 1;
        let end = start + text[start..].find(']')?;
        Some(text[start..end].to_owned())
    };
    let huge = |setting: &str| matches!(setting, "always" | "within_size" | "force");
    let top = selected(&root.join("shmem_enabled"));
    if top.as_deref().is_some_and(huge) {
        return true;
    }
    let Ok(sizes) = std::fs::read_dir(root) else {
        return false;
    };
    sizes.flatten().any(
        |size| match selected(&size.path().join("shmem_enabled")).as_deref() {
            Some("inherit") => top.as_deref().is_some_and(huge),
            Some(setting) => huge(setting),
            None => false,
        },
    )
}

/// A memfd of a fixed span, mapped read-only once, whose page-aligned
/// regions hold RAM-zone bodies (as [`Bytes`] that free their region when
/// the last clone drops).
pub struct RamArena {
    /// Written with `write_all_at`; mapped, sent from and punched through
    /// its descriptor.
    memfd: std::fs::File,
    /// The memory page size, which regions are whole multiples of.
    page: u64,
    /// The mapping's address, as an integer: the arena only compares it
    /// with the addresses of slices and reads regions it handed out.
    base: usize,
    span: u64,
    free: Mutex<FreeSpace>,
    metrics: ArenaMetrics,
}

#[derive(Default)]
struct ArenaMetrics {
    /// Bytes of bodies in regions now.
    held_bytes: AtomicU64,
    /// Bodies kept on the heap because no region was free.
    full: AtomicU64,
    /// Regions given up on because they could not be punched.
    lost_regions: AtomicU64,
    /// Body bytes sockets took with `sendfile`.
    sent_bytes: AtomicU64,
}

/// The arena's free space: each free run by offset, and by (length,
/// offset) for the best fit.
#[derive(Default)]
struct FreeSpace {
    by_offset: BTreeMap<u64, u64>,
    by_length: BTreeSet<(u64, u64)>,
}

impl FreeSpace {
    fn insert(&mut self, offset: u64, length: u64) {
        self.by_offset.insert(offset, length);
        self.by_length.insert((length, offset));
    }

    fn remove(&mut self, offset: u64, length: u64) {
        self.by_offset.remove(&offset);
        self.by_length.remove(&(length, offset));
    }

    /// The offset of `length` bytes taken from the smallest run that
    /// holds them, which keeps the large runs for large bodies.
    fn take(&mut self, length: u64) -> Option<u64> {
        let &(run, offset) = self.by_length.range((length, 0)..).next()?;
        self.remove(offset, run);
        if run > length {
            self.insert(offset + length, run - length);
        }
        Some(offset)
    }

    /// Returns a run, joined with the free runs on either side.
    fn give_back(&mut self, mut offset: u64, mut length: u64) {
        if let Some((&before, &before_length)) = self.by_offset.range(..offset).next_back()
            && before + before_length == offset
        {
            self.remove(before, before_length);
            offset = before;
            length += before_length;
        }
        if let Some(&after_length) = self.by_offset.get(&(offset + length)) {
            self.remove(offset + length, after_length);
            length += after_length;
        }
        self.insert(offset, length);
    }
}

impl RamArena {
    /// An arena of `span` bytes (rounded up to pages). The memfd is sparse:
    /// only the regions holding bodies take memory.
    pub fn open(span: u64) -> std::io::Result<Arc<RamArena>> {
        let page = page();
        let span = span
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let length = usize::try_from(span).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let memfd = rustix::fs::memfd_create("strata-ram-zone", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&memfd, span)?;
        // SAFETY: a new mapping at an address the kernel picks, of a file
        // only this process can reach. The arena unmaps it on drop, once
        // no region (each holds the arena) is left.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                length,
                ProtFlags::READ,
                MapFlags::SHARED | MapFlags::NORESERVE,
                &memfd,
                0,
            )?
        };
        let mut free = FreeSpace::default();
        free.insert(0, span);
        Ok(Arc::new(RamArena {
            memfd: std::fs::File::from(memfd),
            page,
            base: base as usize,
            span,
            free: Mutex::new(free),
            metrics: ArenaMetrics::default(),
        }))
    }

    /// `body` copied into a region, or `None` when no free run holds it
    /// (the caller keeps it on the heap).
    pub fn copy_in(self: &Arc<Self>, body: &[u8]) -> Option<Bytes> {
        let rounded = self.rounded(body.len()) as u64;
        let Some(offset) = self.free.lock().take(rounded) else {
            self.metrics.full.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // Counted from here: the region's drop, even a failed write's,
        // takes it off.
        self.metrics
            .held_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let region = Region {
            arena: self.clone(),
            offset,
            length: body.len(),
            rounded,
        };
        // Written through the file, not the mapping (which is read-only):
        // no reader has the region yet. A failed write drops the region,
        // which punches whatever it wrote.
        if let Err(err) = self.memfd.write_all_at(body, offset) {
            tracing::warn!(error = %err, "writing a body into the RAM zone's memfd");
            return None;
        }
        Some(Bytes::from_owner(region))
    }

    /// `length` bytes rounded up to whole pages (one at least).
    fn rounded(&self, length: usize) -> usize {
        length.max(1).next_multiple_of(self.page as usize)
    }

    /// What `body` takes of the RAM zone: its region's whole pages if it
    /// is in the arena (the weight the zone's budget counts, so that the
    /// span holds what the budget admits), else its length.
    pub fn footprint(&self, body: &[u8]) -> usize {
        match self.offset_of(body) {
            Some(_) => self.rounded(body.len()),
            None => body.len(),
        }
    }

    /// Where `slice` lies in the memfd, if it is in the arena.
    fn offset_of(&self, slice: &[u8]) -> Option<u64> {
        let start = (slice.as_ptr() as usize).checked_sub(self.base)? as u64;
        let end = start.checked_add(slice.len() as u64)?;
        (!slice.is_empty() && end <= self.span).then_some(start)
    }

    /// Frees a region: punched first, so pages a socket still holds are
    /// not the ones the next body is written to.
    fn release(&self, region: &Region) {
        let Region {
            offset, rounded, ..
        } = *region;
        self.metrics
            .held_bytes
            .fetch_sub(region.length as u64, Ordering::Relaxed);
        let punched = rustix::fs::fallocate(
            &self.memfd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            rounded,
        );
        match punched {
            Ok(()) => self.free.lock().give_back(offset, rounded),
            Err(err) => {
                self.metrics.lost_regions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, offset, "punching a freed RAM zone region; not reused");
            }
        }
    }

    /// The arena's series for `/metrics`: name, type and value.
    pub fn metrics(&self) -> [(&'static str, &'static str, u64); 4] {
        let metrics = &self.metrics;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        [
            // Bytes of RAM-zone bodies in the arena.
            (
                "strata_cache_ram_arena_bytes",
                "gauge",
                load(&metrics.held_bytes),
            ),
            // Bodies kept on the heap because the arena had no room.
            (
                "strata_cache_ram_arena_full_total",
                "counter",
                load(&metrics.full),
            ),
            // Regions not reused because they could not be punched.
            (
                "strata_cache_ram_arena_lost_regions_total",
                "counter",
                load(&metrics.lost_regions),
            ),
            // Body bytes sent from the arena with `sendfile`.
            (
                "strata_cache_sendfile_bytes_total",
                "counter",
                load(&metrics.sent_bytes),
            ),
        ]
    }
}

impl Drop for RamArena {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, with its length; nothing
        // reads it any more, as every region holds the arena.
        let unmapped = unsafe { rustix::mm::munmap(self.base as *mut _, self.span as usize) };
        if let Err(err) = unmapped {
            tracing::warn!(error = %err, "unmapping the RAM zone's memfd");
        }
    }
}

/// A body in the arena: the owner behind its [`Bytes`].
struct Region {
    arena: Arc<RamArena>,
    offset: u64,
    length: usize,
    /// `length` in whole pages: what the region takes of the memfd.
    rounded: u64,
}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the region lies inside the mapping (`FreeSpace::take`
        // gives out runs of the span only), which lives as long as the
        // arena this region holds. Its bytes were written before the
        // region was handed out and do not change until it is dropped:
        // the arena gives the run out again only after `release`.
        unsafe {
            std::slice::from_raw_parts(
                (self.arena.base + self.offset as usize) as *const u8,
                self.length,
            )
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.arena.release(self);
    }
}

/// A plain HTTP connection's stream: writes of arena bodies go out with
/// `sendfile` (the slices before them with `sendmsg`, so the order on the
/// wire holds), every other write as it would on the `TcpStream`.
pub struct SendingStream {
    tcp: TcpStream,
    /// `None` once the kernel refused `sendfile` here (a sandbox's filter,
    /// say): the stream copies from then on.
    arena: Option<Arc<RamArena>>,
}

impl SendingStream {
    /// `tcp`, sending the bodies of `arena` by reference (none: a plain
    /// stream).
    pub fn new(tcp: TcpStream, arena: Option<Arc<RamArena>>) -> Self {
        SendingStream { tcp, arena }
    }

    /// Sends `head` and then `body` (at `offset` in `arena`'s memfd), as
    /// far as the socket takes them without waiting. `WouldBlock` only
    /// when it took nothing.
    fn send(
        &self,
        arena: &RamArena,
        head: &[IoSlice<'_>],
        (offset, body_length): (u64, usize),
    ) -> std::io::Result<usize> {
        let head_length: usize = head.iter().map(|slice| slice.len()).sum();
        let mut sent = 0;
        if head_length > 0 {
            // MSG_MORE: the head waits for the body to fill its segment,
            // as it did in one `writev`, despite TCP_NODELAY.
            sent = rustix::net::sendmsg(
                &self.tcp,
                head,
                &mut SendAncillaryBuffer::default(),
                SendFlags::MORE | SendFlags::NOSIGNAL,
            )?;
            if sent < head_length {
                return Ok(sent);
            }
        }
        let mut at = offset;
        match rustix::fs::sendfile(self.tcp.as_fd(), &arena.memfd, Some(&mut at), body_length) {
            Ok(count) => {
                arena
                    .metrics
                    .sent_bytes
                    .fetch_add(count as u64, Ordering::Relaxed);
                Ok(sent + count)
            }
            // The head went: that is this write; the next one finds the
            // error (or the socket still full) again.
            Err(_) if sent > 0 => Ok(sent),
            Err(err) => Err(err.into()),
        }
    }
}

/// Whether `err` says this kernel or sandbox does not do `sendfile` from
/// a memfd to this socket at all, rather than that the connection failed.
fn refused(err: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errno = err.raw_os_error().map(Errno::from_raw_os_error);
    matches!(
        errno,
        Some(Errno::INVAL | Errno::NOSYS | Errno::PERM | Errno::OPNOTSUPP | Errno::ACCESS)
    )
}

impl AsyncRead for SendingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let Some(arena) = &this.arena else {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        };
        let found = bufs
            .iter()
            .enumerate()
            .find_map(|(index, slice)| Some((index, arena.offset_of(slice)?)));
        let Some((index, offset)) = found else {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        };
        let body = (offset, bufs[index].len());
        loop {
            ready!(this.tcp.poll_write_ready(cx))?;
            // `try_io` clears the socket's readiness when it took nothing,
            // so the next poll waits for room.
            match this.tcp.try_io(Interest::WRITABLE, || {
                this.send(arena, &bufs[..index], body)
            }) {
                Ok(count) => return Poll::Ready(Ok(count)),
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(err) if refused(&err) => {
                    tracing::warn!(error = %err, "sendfile refused; this connection copies");
                    this.arena = None;
                    return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn freed_regions_join_their_neighbours_and_the_best_fit_is_taken() {
        let mut free = FreeSpace::default();
        free.insert(0, 10 * page());
        let a = free.take(2 * page()).unwrap();
        let b = free.take(3 * page()).unwrap();
        let c = free.take(page()).unwrap();
        assert_eq!((a, b, c), (0, 2 * page(), 5 * page()));
        free.give_back(a, 2 * page());
        // The two-page hole fits one page better than the four at the end.
        assert_eq!(free.take(page()), Some(0));
        free.give_back(0, page());
        free.give_back(b, 3 * page());
        free.give_back(c, page());
        assert_eq!(
            free.by_offset.into_iter().collect::<Vec<_>>(),
            [(0, 10 * page())]
        );
        assert_eq!(free.by_length.len(), 1);
    }

    #[test]
    fn huge_pages_for_shared_memory_are_found_at_the_top_or_for_any_size() {
        let root = tempfile::tempdir().unwrap();
        let set = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        assert!(!shmem_huge_pages_in(root.path()), "no settings: none");
        set(
            "shmem_enabled",
            "always within_size advise [never] deny force\n",
        );
        set(
            "hugepages-64kB/shmem_enabled",
            "always [inherit] within_size advise never\n",
        );
        assert!(!shmem_huge_pages_in(root.path()));
        set(
            "shmem_enabled",
            "always within_size [advise] never deny force\n",
        );
        assert!(!shmem_huge_pages_in(root.path()), "advise: only on request");
        set(
            "shmem_enabled",
            "always [within_size] advise never deny force\n",
        );
        assert!(shmem_huge_pages_in(root.path()));
        set(
            "shmem_enabled",
            "always within_size advise [never] deny force\n",
        );
        set(
            "hugepages-2048kB/shmem_enabled",
            "[always] inherit within_size advise never\n",
        );
        assert!(shmem_huge_pages_in(root.path()), "one size is enough");
    }

    #[test]
    fn a_full_arena_leaves_bodies_on_the_heap_until_room_is_freed() {
        let arena = RamArena::open(8 * page()).unwrap();
        let first = arena.copy_in(&vec![1; 5 * page() as usize]).unwrap();
        assert!(arena.copy_in(&vec![2; 4 * page() as usize]).is_none());
        let second = arena.copy_in(&vec![3; 3 * page() as usize - 1]).unwrap();
        assert!(first.iter().all(|&byte| byte == 1));
        assert!(second.iter().all(|&byte| byte == 3));
        assert!(arena.offset_of(&second[10..20]).is_some());
        assert!(arena.offset_of(&[0u8; 4][..]).is_none());
        drop(first);
        assert!(arena.copy_in(&vec![2; 4 * page() as usize]).is_some());
        assert_eq!(
            arena.metrics()[1],
            ("strata_cache_ram_arena_full_total", "counter", 1)
        );
        // The budget weighs a body in the arena by its pages.
        assert_eq!(arena.footprint(&second), 3 * page() as usize);
        assert_eq!(arena.footprint(&[0u8; 4][..]), 4);
    }

    /// The bytes a client reads are those of the body when it was sent,
    /// even when its region was freed and written again before the client
    /// read them: the pages sent are in the client's socket queue by
    /// reference, and the rewrite must go to fresh ones.
    #[tokio::test]
    async fn a_region_reused_before_the_client_reads_does_not_change_what_was_sent() {
        let arena = RamArena::open(64 * page()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = SendingStream::new(server, Some(arena.clone()));

        let sent = arena.copy_in(&vec![0xAA; 8 * page() as usize]).unwrap();
        let head = b"head:";
        let mut bufs = [IoSlice::new(head), IoSlice::new(&sent)];
        let mut slices = &mut bufs[..];
        while !slices.is_empty() {
            let count = server.write_vectored(slices).await.unwrap();
            IoSlice::advance_slices(&mut slices, count);
        }
        let sent_at = sent.as_ptr();
        drop(sent);
        let rewritten = arena.copy_in(&vec![0xBB; 8 * page() as usize]).unwrap();
        assert_eq!(rewritten.as_ptr(), sent_at, "the same region, reused");
        assert_eq!(
            arena.metrics()[3],
            ("strata_cache_sendfile_bytes_total", "counter", 8 * page())
        );

        let mut read = vec![0; head.len() + 8 * page() as usize];
        let mut client = client;
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(&read[..head.len()], head);
        assert!(
            read[head.len()..].iter().all(|&byte| byte == 0xAA),
            "the client read bytes written after they were sent"
        );
        drop(server);
    }
}

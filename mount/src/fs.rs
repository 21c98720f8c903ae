//! The FUSE file system over [`SwiftClient`]: lookups answered from briefly
//! cached listings (or a HEAD when a directory is too large to cache), reads
//! through a growing read-ahead window of ranged GETs, writes into a local
//! spool file (one per file, shared by its open handles) uploaded on
//! flush/fsync/close, renames as copy + delete.
//!
//! fuser calls these methods on its own threads; each blocks on the tokio
//! runtime for its requests. The tree lock is never held across a request;
//! an open file's lock is, so one file's operations run in order.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use http::StatusCode;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::client::{ClientError, SwiftClient};
use crate::tree::{Child, DirEntries, Kind, Place, ROOT, Tree, children_of};

/// A directory with more entries than this is not cached whole: lookups in
/// it ask the store about the one name.
const CACHED_DIRECTORY_MAX: usize = 1000;
/// Longest object name the store accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;
const READ_AHEAD_MIN: u64 = 128 * 1024;
const READ_AHEAD_MAX: u64 = 8 * 1024 * 1024;

/// How the mount behaves.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Where open files being written are spooled.
    pub spool_dir: PathBuf,
    /// Files larger than this are uploaded as segments of this size.
    pub segment_size: u64,
    /// How long listings and attributes are trusted.
    pub listing_ttl: Duration,
    /// Owner shown for every file (the mount point's).
    pub uid: u32,
    pub gid: u32,
}

pub struct StrataFs {
    client: Arc<SwiftClient>,
    runtime: Handle,
    options: FsOptions,
    tree: Mutex<Tree>,
    /// Taken after `tree` when both are held, never before.
    files: Mutex<HashMap<u64, Arc<OpenHandle>>>,
    directories: Mutex<HashMap<u64, DirEntries>>,
    next_handle: AtomicU64,
}

/// An open file: what never changes outside its lock, so that finding a
/// file's handles never waits for one of them to finish an upload.
struct OpenHandle {
    ino: u64,
    writable: bool,
    /// Shared by every handle open on the file at once: two writers (a
    /// daemon's log and an `echo >>`) write into one spool, and a reader
    /// sees what they wrote.
    file: Arc<Mutex<OpenFile>>,
    /// This handle's own: two readers at different places each keep their
    /// window.
    read_ahead: Mutex<ReadAhead>,
}

struct OpenFile {
    ino: u64,
    /// The file's bytes as written here; None until the first write or
    /// truncate (reads go to the store until then).
    spool: Option<std::fs::File>,
    size: u64,
    dirty: bool,
}

/// The last ranged GET of a reader and the window of the next one, which
/// doubles while reads are sequential.
struct ReadAhead {
    start: u64,
    data: Bytes,
    window: u64,
    /// The ETag of the version the handle's first read saw.
    etag: Option<String>,
}

impl StrataFs {
    pub fn new(client: Arc<SwiftClient>, runtime: Handle, root: Place, options: FsOptions) -> Self {
        StrataFs {
            client,
            runtime,
            tree: Mutex::new(Tree::new(root, options.listing_ttl)),
            options,
            files: Mutex::new(HashMap::new()),
            directories: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let tree = self.tree.lock();
        let node = tree.node(ino)?;
        let (kind, perm, nlink) = match node.kind {
            Kind::Directory => (FileType::Directory, 0o755, 2),
            Kind::File => (FileType::RegularFile, 0o644, 1),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: node.modified,
            mtime: node.modified,
            ctime: node.modified,
            crtime: node.modified,
            kind,
            perm,
            nlink,
            uid: self.options.uid,
            gid: self.options.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn place(&self, ino: u64) -> Result<Place, Errno> {
        self.tree
            .lock()
            .node(ino)
            .map(|node| node.place.clone())
            .ok_or(Errno::ENOENT)
    }

    /// The place of `name` in directory `parent`.
    fn child_place(&self, parent: u64, name: &OsStr) -> Result<(Place, String), Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?.to_owned();
        let place = self.place(parent)?.child(&name);
        if let Some((_, key)) = place.object()
            && key.len() > MAX_KEY_BYTES
        {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok((place, name))
    }

    /// Lists `dir` from the store, whole or up to `max` entries; installs the
    /// listing when it is complete, and what it shows.
    fn fetch_listing(&self, dir: u64, max: usize) -> Result<Option<DirEntries>, Errno> {
        let place = self.place(dir)?;
        let (container, prefix) = place.listing();
        let fetched = Instant::now();
        let (mut listed, complete) = self
            .runtime
            .block_on(self.client.list(container, &prefix, true, max))
            .map_err(|err| errno(&err))?;
        if !complete {
            return Ok(None);
        }
        if let Some(container) = container {
            self.runtime
                .block_on(self.client.resolve_empty_sizes(container, &mut listed));
        }
        let children = children_of(listed, &prefix, container.is_none());
        Ok(Some(
            self.tree.lock().install_listing(dir, children, fetched),
        ))
    }

    /// The inode of `name` in `parent`, from a fresh cached listing, a new
    /// listing of a small directory, or a question about the one name; held
    /// (counted under the lock that found it) until the operation is done
    /// with it or hands it to the kernel.
    fn resolve(&self, parent: u64, name: &OsStr) -> Result<Held<'_>, Errno> {
        let (place, name) = self.child_place(parent, name)?;
        {
            let mut tree = self.tree.lock();
            if let Some(found) = tree.cached_child(parent, &name, Instant::now()) {
                return Ok(self.hold(&mut tree, found.ok_or(Errno::ENOENT)?));
            }
        }
        if self.fetch_listing(parent, CACHED_DIRECTORY_MAX)?.is_some() {
            let mut tree = self.tree.lock();
            // The listing just installed, fresh or not (a zero TTL); unless
            // a sweep dropped it meanwhile: then the name is asked about.
            if let Some(found) = tree.listed_child(parent, &name) {
                return Ok(self.hold(&mut tree, found.ok_or(Errno::ENOENT)?));
            }
        }
        {
            // A file being written here, in a directory too large to list.
            let mut tree = self.tree.lock();
            if let Some(ino) = tree.pending_at(&place) {
                return Ok(self.hold(&mut tree, ino));
            }
        }
        let child = self.probe(&place, &name)?.ok_or(Errno::ENOENT)?;
        let mut tree = self.tree.lock();
        let ino = tree.intern(place, &child);
        tree.add_child(parent, &name, ino);
        Ok(self.hold(&mut tree, ino))
    }

    /// Counts a lookup of `ino` under the tree's lock the caller holds, and
    /// guards it until the operation is done with it.
    fn hold(&self, tree: &mut Tree, ino: u64) -> Held<'_> {
        tree.looked_up(ino);
        Held {
            tree: &self.tree,
            ino,
        }
    }

    /// Asks the store whether `place` is a file or a directory.
    fn probe(&self, place: &Place, name: &str) -> Result<Option<Child>, Errno> {
        let directory = |modified| Child {
            name: name.to_owned(),
            kind: Kind::Directory,
            size: 0,
            modified,
        };
        self.runtime.block_on(async {
            match place {
                Place::Account => Ok(None),
                Place::Container(container) => {
                    let exists = self.client.container_exists(container).await;
                    Ok(exists
                        .map_err(|err| errno(&err))?
                        .then(|| directory(SystemTime::now())))
                }
                Place::Object { container, key } => {
                    if let Some(head) = self
                        .client
                        .head_object(container, key)
                        .await
                        .map_err(|err| errno(&err))?
                    {
                        return Ok(Some(Child {
                            name: name.to_owned(),
                            kind: Kind::File,
                            size: head.size,
                            modified: head.modified,
                        }));
                    }
                    let (under, _) = self
                        .client
                        .list(Some(container), &format!("{key}/"), false, 1)
                        .await
                        .map_err(|err| errno(&err))?;
                    Ok(under.first().map(|entry| directory(entry.modified)))
                }
            }
        })
    }

    fn open_file(&self, fh: FileHandle) -> Result<Arc<OpenHandle>, Errno> {
        self.files.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// A new handle on `file`'s inode. It shares the state of the handles
    /// already open on it, if any (and `file` is dropped). Never waits for
    /// an open file's lock.
    fn add_open_file(&self, file: OpenFile, writable: bool) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let ino = file.ino;
        let mut files = self.files.lock();
        let file = files
            .values()
            .find(|handle| handle.ino == ino)
            .map(|handle| handle.file.clone())
            .unwrap_or_else(|| Arc::new(Mutex::new(file)));
        files.insert(
            fh,
            Arc::new(OpenHandle {
                ino,
                writable,
                file,
                read_ahead: Mutex::new(ReadAhead::new()),
            }),
        );
        fh
    }

    /// A handle open on `ino` (one that may write, if `writer`). The
    /// handles of a file share its state: any stands for all.
    fn open_handle(&self, ino: u64, writer: bool) -> Option<Arc<OpenHandle>> {
        self.files
            .lock()
            .values()
            .find(|handle| handle.ino == ino && (handle.writable || !writer))
            .cloned()
    }

    fn new_spool(&self) -> Result<std::fs::File, Errno> {
        tempfile::tempfile_in(&self.options.spool_dir).map_err(|err| {
            tracing::warn!(error = %err, dir = %self.options.spool_dir.display(), "cannot make a spool file");
            Errno::EIO
        })
    }

    /// The spool of `file`, filled with the stored bytes on first use.
    fn loaded_spool<'f>(&self, file: &'f mut OpenFile) -> Result<&'f std::fs::File, Errno> {
        if file.spool.is_none() {
            let spool = self.new_spool()?;
            let place = self.place(file.ino)?;
            let pending = self
                .tree
                .lock()
                .node(file.ino)
                .is_some_and(|node| node.pending);
            file.size = match place.object() {
                Some((container, key)) if !pending => {
                    match self
                        .runtime
                        .block_on(self.client.download(container, key, &spool))
                    {
                        Ok(size) => size,
                        Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => 0,
                        Err(err) => return Err(errno(&err)),
                    }
                }
                _ => 0,
            };
            file.spool = Some(spool);
        }
        file.spool.as_ref().ok_or(Errno::EIO)
    }

    /// Uploads `file` if it has changes; afterwards the store holds what the
    /// file's writers wrote.
    fn upload(&self, file: &mut OpenFile) -> Result<(), Errno> {
        if !file.dirty {
            return Ok(());
        }
        let (place, stored) = {
            let tree = self.tree.lock();
            let node = tree.node(file.ino).ok_or(Errno::ENOENT)?;
            if node.unlinked {
                // Removed or replaced since: its bytes go with it.
                file.dirty = false;
                return Ok(());
            }
            // A file made here and not uploaded yet replaces nothing.
            (node.place.clone(), !node.pending)
        };
        let (container, key) = place.object().ok_or(Errno::EPERM)?;
        let spool = file.spool.as_ref().ok_or(Errno::EIO)?;
        self.runtime
            .block_on(self.client.upload(
                container,
                key,
                (spool, file.size),
                self.options.segment_size,
                stored,
            ))
            .map_err(|err| errno(&err))?;
        file.dirty = false;
        if let Some(node) = self.tree.lock().node_mut(file.ino) {
            node.pending = false;
            node.unsaved = false;
            node.size = file.size;
            node.modified = SystemTime::now();
        }
        Ok(())
    }

    /// Reads `ino`'s stored bytes through a handle's read-ahead window.
    fn read_remote(
        &self,
        ino: u64,
        ahead: &mut ReadAhead,
        offset: u64,
        size: u64,
    ) -> Result<Bytes, Errno> {
        let end = ahead.start + ahead.data.len() as u64;
        if offset >= ahead.start && offset + size <= end {
            let from = (offset - ahead.start) as usize;
            return Ok(ahead.data.slice(from..from + size as usize));
        }
        ahead.window = if offset == end && !ahead.data.is_empty() {
            (ahead.window * 2).min(READ_AHEAD_MAX)
        } else {
            READ_AHEAD_MIN
        };
        let place = self.place(ino)?;
        let (container, key) = place.object().ok_or(Errno::EISDIR)?;
        let (data, etag) = self
            .runtime
            .block_on(
                self.client
                    .read_range(container, key, offset, size.max(ahead.window)),
            )
            .map_err(|err| errno(&err))?;
        // A handle reads one version: an object replaced between two of
        // its reads (`cp` of a file another client overwrites) must not
        // give the old bytes followed by the new.
        if let (Some(first), Some(now)) = (&ahead.etag, &etag)
            && first != now
        {
            tracing::info!(container, key, "object replaced while open for reading");
            return Err(Errno::ESTALE);
        }
        if ahead.etag.is_none() {
            ahead.etag = etag;
        }
        ahead.start = offset;
        ahead.data = data;
        let len = (size as usize).min(ahead.data.len());
        Ok(ahead.data.slice(..len))
    }

    fn set_size(&self, ino: u64, fh: Option<FileHandle>, size: u64) -> Result<(), Errno> {
        let open_handle = match fh {
            Some(fh) => Some(self.open_file(fh)?),
            None => self.open_handle(ino, false),
        };
        let writers = self.open_handle(ino, true).is_some();
        let truncate = |file: &mut OpenFile| -> Result<(), Errno> {
            let spool = if size == 0 && file.spool.is_none() {
                file.spool = Some(self.new_spool()?);
                file.spool.as_ref().ok_or(Errno::EIO)?
            } else {
                self.loaded_spool(file)?
            };
            spool.set_len(size).map_err(io_errno)?;
            file.size = size;
            file.dirty = true;
            Ok(())
        };
        let note_size = |left_unsaved: bool| {
            if let Some(node) = self.tree.lock().node_mut(ino) {
                node.size = size;
                node.unsaved |= left_unsaved;
                node.modified = SystemTime::now();
            }
        };
        match open_handle {
            Some(handle) => {
                let mut file = handle.file.lock();
                truncate(&mut file)?;
                // A writer's close uploads; without one, it is done at once.
                if !writers {
                    self.upload(&mut file)?;
                }
                // Under the file's lock, as a write notes its size.
                note_size(writers);
            }
            None => {
                // A truncate without an open file: done on a private copy and
                // uploaded at once.
                let mut file = OpenFile::new(ino);
                truncate(&mut file)?;
                self.upload(&mut file)?;
                note_size(false);
            }
        }
        Ok(())
    }

    /// The open state of those of `inos` that have a writer here, to be
    /// locked (in inode order, so that two operations on the same files
    /// cannot deadlock) around a change of their names in the store: an
    /// upload in progress (another handle's close) finishes first, and none
    /// starts until the names in the tree say where the file went, so an
    /// upload never puts back what a remove or a rename just deleted.
    ///
    /// Writes, truncates and fsyncs need not be waited for: the kernel
    /// holds the file's inode lock across an unlink or a rename, and they
    /// take it too; closes (flush, release) do not.
    fn writers_of(&self, inos: impl IntoIterator<Item = u64>) -> Vec<Arc<Mutex<OpenFile>>> {
        let mut inos: Vec<u64> = inos.into_iter().collect();
        inos.sort_unstable();
        inos.dedup();
        inos.into_iter()
            .filter_map(|ino| self.open_handle(ino, true))
            .map(|handle| handle.file.clone())
            .collect()
    }

    fn remove_file(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let held = self.resolve(parent, name)?;
        let ino = held.ino;
        let (place, name) = self.child_place(parent, name)?;
        let writers = self.writers_of([ino]);
        let _uploads_held: Vec<_> = writers.iter().map(|file| file.lock()).collect();
        let node = self.tree.lock().node(ino).cloned().ok_or(Errno::ENOENT)?;
        if node.kind == Kind::Directory {
            return Err(Errno::EISDIR);
        }
        let (container, key) = place.object().ok_or(Errno::EPERM)?;
        match self
            .runtime
            .block_on(self.client.delete_object(container, key))
        {
            Ok(()) => {}
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) && node.pending => {}
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {
                // Deleted by another client since it was listed: `rm` says
                // so, and `ls` stops showing it at once, not at the TTL.
                self.tree.lock().remove_child(parent, &name);
                return Err(Errno::ENOENT);
            }
            Err(err) => return Err(errno(&err)),
        }
        self.tree.lock().remove_child(parent, &name);
        Ok(())
    }

    fn remove_directory(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let held = self.resolve(parent, name)?;
        let ino = held.ino;
        let (place, name) = self.child_place(parent, name)?;
        if self.tree.lock().node(ino).map(|node| node.kind) != Some(Kind::Directory) {
            return Err(Errno::ENOTDIR);
        }
        self.runtime.block_on(async {
            match &place {
                Place::Container(container) => {
                    self.client
                        .delete_container(container)
                        .await
                        .map_err(|err| match err.status() {
                            // Swift's answer for a container with objects.
                            Some(StatusCode::CONFLICT) => Errno::ENOTEMPTY,
                            _ => errno(&err),
                        })
                }
                Place::Object { container, key } => {
                    let marker = format!("{key}/");
                    let (under, _) = self
                        .client
                        .list(Some(container), &marker, false, 2)
                        .await
                        .map_err(|err| errno(&err))?;
                    if under.iter().any(|entry| entry.name != marker) {
                        return Err(Errno::ENOTEMPTY);
                    }
                    match self.client.delete_object(container, &marker).await {
                        // A directory that only its contents made has no marker.
                        Err(err) if err.status() != Some(StatusCode::NOT_FOUND) => Err(errno(&err)),
                        _ => Ok(()),
                    }
                }
                Place::Account => Err(Errno::EBUSY),
            }
        })?;
        self.tree.lock().remove_child(parent, &name);
        Ok(())
    }

    fn make_directory(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let (place, name) = self.child_place(parent, name)?;
        match self.resolve(parent, OsStr::new(&name)) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(Errno::ENOENT) => {}
            // Not known to be absent: nothing is made.
            Err(err) => return Err(err),
        }
        self.runtime
            .block_on(async {
                match &place {
                    Place::Container(container) => {
                        self.client.put_container(container).await.map(drop)
                    }
                    Place::Object { container, key } => {
                        self.client
                            .put_directory_marker(container, &format!("{key}/"))
                            .await
                    }
                    Place::Account => Ok(()),
                }
            })
            .map_err(|err| match err.status() {
                // The name is another account's container.
                Some(StatusCode::CONFLICT) => Errno::EEXIST,
                _ => errno(&err),
            })?;
        let now = SystemTime::now();
        let mut tree = self.tree.lock();
        let ino = tree.intern(
            place,
            &Child {
                name: name.clone(),
                kind: Kind::Directory,
                size: 0,
                modified: now,
            },
        );
        tree.add_child(parent, &name, ino);
        tree.mark_empty(ino, Instant::now());
        // Counted for the kernel, which the entry replied hands it to.
        tree.looked_up(ino);
        Ok(ino)
    }

    fn rename_file(
        &self,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let held = self.resolve(from.0, from.1)?;
        let ino = held.ino;
        let (source, from_name) = self.child_place(from.0, from.1)?;
        let (target, to_name) = self.child_place(to.0, to.1)?;
        if self.tree.lock().node(ino).map(|node| node.kind) != Some(Kind::File) {
            // `mv` copies a directory file by file when told it cannot be
            // moved in one step, which is all a store without directories
            // could do anyway.
            return Err(Errno::EXDEV);
        }
        let replaced = match self.resolve(to.0, to.1) {
            // rename(2) of a name onto itself does nothing.
            Ok(existing) if existing.ino == ino => return Ok(()),
            Ok(existing) => {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if self.tree.lock().node(existing.ino).map(|node| node.kind)
                    == Some(Kind::Directory)
                {
                    return Err(Errno::EISDIR);
                }
                Some(existing.ino)
            }
            Err(err) if err == Errno::ENOENT => None,
            Err(err) => return Err(err),
        };
        let ((from_container, from_key), (to_container, to_key)) =
            source.object().zip(target.object()).ok_or(Errno::EPERM)?;
        // Neither the moved file nor the one it replaces uploads while the
        // store moves them: it would land under a name that is gone.
        let writers = self.writers_of(std::iter::once(ino).chain(replaced));
        let mut uploads_held: Vec<_> = writers.iter().map(|file| file.lock()).collect();
        // Whatever writers have written goes first, so the copy carries it.
        if let Some(moved) = uploads_held.iter_mut().find(|file| file.ino == ino) {
            self.upload(moved)?;
        }
        self.runtime
            .block_on(
                self.client
                    .rename((from_container, from_key), (to_container, to_key)),
            )
            .map_err(|err| errno(&err))?;
        self.tree
            .lock()
            .move_file(ino, (from.0, &from_name), (to.0, &to_name));
        Ok(())
    }

    /// Uploads what the file's writers wrote when `handle` is one of them: a
    /// reader's close uploads nothing, and fails for nothing a writer did.
    fn upload_if_writer(&self, handle: &OpenHandle) -> Result<(), Errno> {
        match handle.writable {
            true => self.upload(&mut handle.file.lock()),
            false => Ok(()),
        }
    }

    /// Uploads what the writers of handle `fh` wrote (fsync()).
    fn upload_handle(&self, fh: FileHandle) -> Result<(), Errno> {
        self.upload(&mut self.open_file(fh)?.file.lock())
    }

    fn entry_ttl(&self) -> Duration {
        self.options.listing_ttl
    }

    fn reply_attr(&self, reply: ReplyAttr, ino: u64) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&self.entry_ttl(), &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Replies an entry for `found`, already counted as one lookup the
    /// kernel holds (until it forgets it); a failed reply takes it back.
    fn reply_entry(&self, reply: ReplyEntry, found: Result<u64, Errno>) {
        match found.map(|ino| (ino, self.attr(ino))) {
            Ok((_, Some(attr))) => reply.entry(&self.entry_ttl(), &attr, Generation(0)),
            Ok((ino, None)) => {
                self.tree.lock().forget(ino, 1);
                reply.error(Errno::ENOENT);
            }
            Err(err) => reply.error(err),
        }
    }
}

/// One lookup of a node counted for an operation that uses it: dropped,
/// the count goes (and the node with it, if nothing else holds it); handed
/// to the kernel with an entry reply, it becomes the kernel's lookup.
/// (Dropped without the tree's lock held.)
struct Held<'a> {
    tree: &'a Mutex<Tree>,
    ino: u64,
}

impl Held<'_> {
    fn into_kernel(self) -> u64 {
        let ino = self.ino;
        std::mem::forget(self);
        ino
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.tree.lock().forget(self.ino, 1);
    }
}

impl OpenFile {
    fn new(ino: u64) -> OpenFile {
        OpenFile {
            ino,
            spool: None,
            size: 0,
            dirty: false,
        }
    }
}

impl ReadAhead {
    fn new() -> ReadAhead {
        ReadAhead {
            start: 0,
            data: Bytes::new(),
            window: READ_AHEAD_MIN,
            etag: None,
        }
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger writes mean fewer round trips into the spool.
        let _ = config.set_max_write(1024 * 1024);
        let _ = config.set_max_readahead(1024 * 1024);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(reply, self.resolve(parent.0, name).map(Held::into_kernel));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, ino.0);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Modes, owners and times are not stored: objects have none of
        // their own, and refusing would break `cp -p` and editors.
        if let Some(size) = size {
            let is_dir = self.tree.lock().node(ino.0).map(|node| node.kind);
            let result = match is_dir {
                None => Err(Errno::ENOENT),
                Some(Kind::Directory) => Err(Errno::EISDIR),
                Some(Kind::File) => self.set_size(ino.0, fh, size),
            };
            if let Err(err) = result {
                return reply.error(err);
            }
        }
        self.reply_attr(reply, ino.0);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.make_directory(parent.0, name));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_file(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_directory(parent.0, name));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.rename_file((parent.0, name), (newparent.0, newname), flags),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Opened under the tree's lock, as `create` does: see `release`.
        let tree = self.tree.lock();
        match tree.node(ino.0).map(|node| node.kind) {
            None => return reply.error(Errno::ENOENT),
            Some(Kind::Directory) => return reply.error(Errno::EISDIR),
            Some(Kind::File) => {}
        }
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let fh = self.add_open_file(OpenFile::new(ino.0), writable);
        drop(tree);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let made = (|| {
            let (place, name) = self.child_place(parent.0, name)?;
            if place.object().is_none() {
                // The account's root holds containers only.
                return Err(Errno::EPERM);
            }
            let spool = self.new_spool()?;
            let mut tree = self.tree.lock();
            // A name whose file is still open here (a lookup said it was
            // gone: another client removed it): the new file replaces that
            // one, as if it had been removed here, and what its handles
            // write is not uploaded over the new one.
            if tree
                .ino_at(&place)
                .is_some_and(|ino| self.open_handle(ino, false).is_some())
            {
                tree.remove_child(parent.0, &name);
            }
            let ino = tree.intern(
                place,
                &Child {
                    name: name.clone(),
                    kind: Kind::File,
                    size: 0,
                    modified: SystemTime::now(),
                },
            );
            if let Some(node) = tree.node_mut(ino) {
                node.pending = true;
                node.size = 0;
            }
            tree.add_child(parent.0, &name, ino);
            // Counted for the kernel, which the entry replied hands it to.
            tree.looked_up(ino);
            let mut file = OpenFile::new(ino);
            file.spool = Some(spool);
            // An empty file closed right away is still an object.
            file.dirty = true;
            // Its writer is known before the tree's lock is let go, so that
            // a `release` of an earlier handle of the same file does not
            // take it for abandoned.
            let fh = self.add_open_file(file, true);
            drop(tree);
            Ok((ino, fh))
        })();
        let made = made.and_then(|(ino, fh)| match self.attr(ino) {
            Some(attr) => Ok((attr, fh)),
            None => {
                self.tree.lock().forget(ino, 1);
                Err(Errno::EIO)
            }
        });
        match made {
            Ok((attr, fh)) => {
                reply.created(
                    &self.entry_ttl(),
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(err) => reply.error(err),
        }
    }

    // (fuser's `batch_forget` calls this for each inode.)
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.tree.lock().forget(ino.0, nlookup);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.open_file(fh).and_then(|handle| {
            let file = handle.file.lock();
            match &file.spool {
                Some(spool) => {
                    let len = u64::from(size).min(file.size.saturating_sub(offset));
                    let mut buffer = vec![0; len as usize];
                    spool.read_exact_at(&mut buffer, offset).map_err(io_errno)?;
                    Ok(Bytes::from(buffer))
                }
                None => {
                    // Nothing written here: the stored bytes, without
                    // holding up the file's other handles.
                    drop(file);
                    let mut ahead = handle.read_ahead.lock();
                    self.read_remote(handle.ino, &mut ahead, offset, u64::from(size))
                }
            }
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(err),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.open_file(fh).and_then(|handle| {
            let mut file = handle.file.lock();
            self.loaded_spool(&mut file)?
                .write_all_at(data, offset)
                .map_err(io_errno)?;
            file.size = file.size.max(offset + data.len() as u64);
            file.dirty = true;
            // Still under the file's lock: a write or an upload of another
            // handle in between would leave the node an older size, or
            // marked unsaved after its upload.
            if let Some(node) = self.tree.lock().node_mut(ino.0) {
                node.size = file.size;
                node.unsaved = true;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(err) => reply.error(err),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.open_file(fh)
                .and_then(|handle| self.upload_if_writer(&handle)),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.upload_handle(fh));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(handle) = self.files.lock().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        // close() has flushed already; this catches writes after a dup'd
        // descriptor was closed (and a flush whose upload failed). The
        // handle stays listed until its upload is done, so a remove or
        // rename waits for it.
        let uploaded = self.upload_if_writer(&handle);
        self.files.lock().remove(&fh.0);
        // A file made here that has not reached the store when its last
        // writer is done (its upload failed, here or on another handle) is
        // no longer shown as still to come: the next listing leaves it
        // out, and nothing keeps its node. (An upload clears `pending`.)
        // Decided under the tree's lock, under which `create` and `open`
        // make writers (lock order: tree, then files).
        let mut tree = self.tree.lock();
        if self.open_handle(handle.ino, true).is_none() {
            tree.abandon_pending(handle.ino);
            // No writer is left to upload more: listings say what is stored.
            if let Some(node) = tree.node_mut(handle.ino) {
                node.unsaved = false;
            }
        }
        drop(tree);
        match uploaded {
            Ok(()) => reply.ok(),
            Err(err) => {
                tracing::warn!(?err, "upload on release failed; the changes are lost");
                reply.error(err)
            }
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let cached = self.tree.lock().cached_children(ino.0, Instant::now());
        let children = match cached {
            Some(children) => children,
            // As installed, fresh or not (a zero TTL).
            None => match self.fetch_listing(ino.0, usize::MAX) {
                Ok(listed) => listed.unwrap_or_default(),
                Err(err) => return reply.error(err),
            },
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.directories.lock().insert(fh, children);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let directories = self.directories.lock();
        let Some(children) = directories.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let dots = [
            (".".to_owned(), ino.0, Kind::Directory),
            ("..".to_owned(), ROOT, Kind::Directory),
        ];
        let entries = dots.iter().chain(children.iter());
        for (index, (name, child, kind)) in entries.enumerate().skip(offset as usize) {
            let kind = match kind {
                Kind::Directory => FileType::Directory,
                Kind::File => FileType::RegularFile,
            };
            if reply.add(INodeNo(*child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.directories.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // An object store has no fixed size; report plenty so that tools
        // checking free space before copying go ahead.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 32, 1 << 32, 4096, 255, 4096);
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(err),
    }
}

fn errno(err: &ClientError) -> Errno {
    tracing::debug!(error = %err, "store request failed");
    match err.status() {
        Some(StatusCode::NOT_FOUND) => Errno::ENOENT,
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Errno::EACCES,
        // Where the operation has no better word (a segment gone, a
        // conflict): an I/O error, which programs do not retry forever.
        Some(StatusCode::CONFLICT) => Errno::EIO,
        Some(StatusCode::PAYLOAD_TOO_LARGE) => Errno::EFBIG,
        Some(StatusCode::INSUFFICIENT_STORAGE) => Errno::ENOSPC,
        Some(StatusCode::BAD_REQUEST | StatusCode::PRECONDITION_FAILED) => Errno::EINVAL,
        _ => {
            tracing::warn!(error = %err, "store request failed");
            Errno::EIO
        }
    }
}

fn io_errno(err: std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

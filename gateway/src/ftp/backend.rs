//! The FTP file system over the store: containers and pseudo-directories are
//! directories, objects are files. Every change is a store write, so it
//! lands on the change feed and purges the edge like any other door's.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use strata_store::{
    BucketInfo, BucketPin, ListEntry, ListQuery, ObjectInfo, ObjectMeta, PutConditions, StageError,
    StageOptions, Store, StoreError,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::{ReaderStream, StreamReader};
use unftp_core::storage::{self, ErrorKind, FEATURE_RESTART, Fileinfo, Metadata, StorageBackend};

use super::login::FtpUser;
use super::path::FtpPath;
use crate::directory::Directory;
use crate::large_object;
use crate::public::ATTR_SWIFT_WRITE;
use crate::swift::container_acl;
use crate::wire::{content_type_for, unix_now_ms};

/// Content type of the empty objects that stand for directories made with
/// MKD (the convention of Swift, s3fs and rclone).
const DIRECTORY_MARKER_TYPE: &str = "application/x-directory";
/// Dynamic Large Objects of one listing shown with their assembled size;
/// past these, with their manifest's.
const MAX_DLOS_SIZED_PER_LISTING: usize = 100;
/// Listing page size when reading a directory from the store.
const LIST_PAGE: usize = 1000;

/// One FTP session's view of the store.
#[derive(Clone)]
pub struct StoreFileSystem {
    pub store: Store,
    /// Where each call checks that its session's user is still who logged
    /// in.
    pub directory: Directory,
    /// Region new containers are created in.
    pub region: String,
    /// Largest file a STOR may write.
    pub max_object_size: u64,
    /// Entries a listing may hold ([`super::FtpConfig::max_list_entries`]).
    pub max_list_entries: usize,
}

impl fmt::Debug for StoreFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreFileSystem")
    }
}

/// Size, kind and time of a directory entry.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    size: u64,
    is_dir: bool,
    modified_ms: i64,
    /// A Dynamic Large Object's manifest record, which does not know the
    /// assembled size (its segments do): kept for a listing to size it.
    dynamic: Option<Box<ObjectInfo>>,
}

impl EntryMeta {
    fn dir(modified_ms: i64) -> EntryMeta {
        EntryMeta {
            size: 0,
            is_dir: true,
            modified_ms,
            dynamic: None,
        }
    }

    fn file(info: &ObjectInfo) -> EntryMeta {
        EntryMeta {
            // A Swift large object shows its assembled size.
            size: large_object::listed_view(info).size,
            is_dir: false,
            modified_ms: info.last_modified_ms,
            dynamic: (large_object::is_large_object(info) && !large_object::is_slo(info))
                .then(|| Box::new(info.clone())),
        }
    }
}

impl Metadata for EntryMeta {
    fn len(&self) -> u64 {
        self.size
    }
    fn is_dir(&self) -> bool {
        self.is_dir
    }
    fn is_file(&self) -> bool {
        !self.is_dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> storage::Result<SystemTime> {
        Ok(UNIX_EPOCH + Duration::from_millis(self.modified_ms.max(0) as u64))
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

type FtpResult<T> = storage::Result<T>;

/// Most keys one folder rename moves: beyond that the client would wait
/// minutes for one reply, and a tool that copies in the background fits
/// better.
const MAX_FOLDER_RENAME: usize = 10_000;

/// An object's bytes as a file: its own, or a large object's segments.
struct FileContent {
    info: ObjectInfo,
    segments: Option<Vec<large_object::Segment>>,
    size: u64,
}

impl FileContent {
    /// `range` of the file; a range past its end is refused.
    fn read(self, store: &Store, range: Range<u64>) -> FtpResult<strata_store::ObjectReader> {
        if range.start > range.end || range.end > self.size {
            return Err(refused(ErrorKind::PermanentFileNotAvailable));
        }
        Ok(large_object::read_assembled(
            store,
            &self.info,
            self.segments,
            Some(range),
        ))
    }
}

fn refused(kind: ErrorKind) -> storage::Error {
    storage::Error::from(kind)
}

/// The store's errors as FTP replies: what the client did wrong is a 55x,
/// what the server failed at a 451 (logged here, where it is handled).
fn ftp_error(err: StoreError) -> storage::Error {
    let kind = match &err {
        StoreError::NoSuchBucket | StoreError::NoSuchKey | StoreError::NoSuchUpload => {
            ErrorKind::PermanentFileNotAvailable
        }
        StoreError::BucketNotEmpty => ErrorKind::PermanentDirectoryNotEmpty,
        StoreError::BucketAlreadyExists | StoreError::BucketAlreadyOwnedByYou => {
            ErrorKind::PermanentFileNotAvailable
        }
        StoreError::InvalidBucketName(_) | StoreError::InvalidKey(_) => {
            ErrorKind::FileNameNotAllowedError
        }
        StoreError::TooLarge(_) => ErrorKind::ExceededStorageAllocationError,
        StoreError::PreconditionFailed => ErrorKind::PermanentFileNotAvailable,
        StoreError::InvalidPart(..)
        | StoreError::InvalidPartOrder
        | StoreError::PartTooSmall { .. }
        | StoreError::InvalidArgument(_) => ErrorKind::PermanentFileNotAvailable,
        StoreError::Conflict => ErrorKind::TransientFileNotAvailable,
        StoreError::Unavailable(_)
        | StoreError::Corrupt(_)
        | StoreError::Pool(_)
        | StoreError::Db(_)
        | StoreError::Internal(_) => {
            tracing::warn!(error = %err, "ftp request failed in the store");
            ErrorKind::LocalError
        }
    };
    storage::Error::new(kind, err)
}

fn parse(path: &Path) -> FtpResult<FtpPath> {
    FtpPath::parse(path).map_err(|_| refused(ErrorKind::FileNameNotAllowedError))
}

/// Whether `user` may read in `bucket`: by role or a user grant of its
/// read ACL (`swift::user_reads`); a referrer grant (`.r:*`) makes objects
/// readable by URL, not containers browsable by every FTP user.
fn may_read_in(user: &FtpUser, bucket: &BucketInfo) -> bool {
    crate::swift::user_reads(&user.principal, bucket)
}

/// Whether `user` may write in `bucket`: by role, or by its write ACL.
fn may_write_in(user: &FtpUser, bucket: &BucketInfo) -> bool {
    user.principal.writes_account(&bucket.account)
        || strata_auth::write_decision(
            &container_acl(bucket, ATTR_SWIFT_WRITE),
            &bucket.account,
            &user.principal,
        )
        .allowed
}

impl StoreFileSystem {
    /// Refuses every call of a session whose user was deleted, had its keys
    /// revoked (a new token generation) or its role changed since it
    /// logged in: an FTP session lasts as long as its client keeps it
    /// busy, and must not outlive what ends the user's Swift tokens.
    fn check_session(&self, user: &FtpUser) -> FtpResult<()> {
        let principal = &user.principal;
        match self
            .directory
            .principal(&principal.account, &principal.user)
        {
            Some((now, generation))
                if generation == user.generation && now.role == principal.role =>
            {
                Ok(())
            }
            _ => {
                tracing::info!(user = %user, "ftp session of a revoked or changed user refused");
                Err(refused(ErrorKind::PermissionDenied))
            }
        }
    }

    /// The container `name` if `user` may read it; one they may not is
    /// reported as missing, never shown.
    async fn readable_container(&self, user: &FtpUser, name: &str) -> FtpResult<BucketInfo> {
        match self.store.bucket(name).await {
            Ok(bucket) if may_read_in(user, &bucket) => Ok(bucket),
            Ok(_) | Err(StoreError::NoSuchBucket) => {
                Err(refused(ErrorKind::PermanentDirectoryNotAvailable))
            }
            Err(err) => Err(ftp_error(err)),
        }
    }

    /// Whether the user may write in the container (a write ACL is enough,
    /// as in Swift, without read access); its record if so, which the
    /// write is pinned to.
    async fn may_write(&self, user: &FtpUser, container: &str) -> FtpResult<BucketInfo> {
        let bucket = match self.store.bucket(container).await {
            Ok(bucket) => bucket,
            Err(StoreError::NoSuchBucket) => {
                return Err(refused(ErrorKind::PermanentDirectoryNotAvailable));
            }
            Err(err) => return Err(ftp_error(err)),
        };
        if may_write_in(user, &bucket) {
            Ok(bucket)
        } else if may_read_in(user, &bucket) {
            Err(refused(ErrorKind::PermissionDenied))
        } else {
            Err(refused(ErrorKind::PermanentDirectoryNotAvailable))
        }
    }

    /// A file's content as FTP shows it: a Swift large object as its
    /// segments (those `user` may read), as through Swift.
    async fn file_content(
        &self,
        user: &FtpUser,
        account: &str,
        container: &str,
        key: &str,
    ) -> FtpResult<FileContent> {
        let info = self
            .object(container, key)
            .await?
            .ok_or_else(|| refused(ErrorKind::PermanentFileNotAvailable))?;
        self.content_of(user, account, info).await
    }

    /// [`Self::file_content`] of a record already read.
    async fn content_of(
        &self,
        user: &FtpUser,
        account: &str,
        info: ObjectInfo,
    ) -> FtpResult<FileContent> {
        // Segments as this user may read them: a container ACL opens the
        // manifest's container, not every container of its account.
        let reader = large_object::Reader::User {
            account,
            principal: &user.principal,
        };
        match large_object::assemble(&self.store, &info, reader)
            .await
            .map_err(ftp_error)?
        {
            large_object::Assembly::Plain => Ok(FileContent {
                size: info.size,
                info,
                segments: None,
            }),
            large_object::Assembly::Segments(segments) => Ok(FileContent {
                size: large_object::assembled_size(&segments),
                info,
                segments: Some(segments),
            }),
            large_object::Assembly::Unreadable => {
                Err(refused(ErrorKind::PermanentFileNotAvailable))
            }
        }
    }

    /// Up to `limit` keys starting with `prefix`, without rolling them up.
    async fn keys_under(
        &self,
        container: &str,
        prefix: &str,
        limit: usize,
    ) -> FtpResult<Vec<ListEntry>> {
        let page = self
            .store
            .list_objects(
                container,
                ListQuery {
                    prefix: prefix.to_owned(),
                    max_keys: limit,
                    ..Default::default()
                },
            )
            .await
            .map_err(ftp_error)?;
        Ok(page.entries)
    }

    /// Moves every key under `from` (a `dir/` prefix, its marker included)
    /// to the same name under `to`, key by key: each move is atomic, the
    /// folder's as a whole is not, as with every client that renames
    /// folders in an object store. Refused when `to` holds keys already (no
    /// merging) or `from` more than [`MAX_FOLDER_RENAME`].
    async fn rename_directory(
        &self,
        from: (&str, &str, &BucketPin),
        to: (&str, &str, &BucketPin),
    ) -> FtpResult<()> {
        if to.1.starts_with(from.1) && from.0 == to.0 {
            // Into itself: the moved keys would be listed again.
            return Err(refused(ErrorKind::FileNameNotAllowedError));
        }
        if !self.keys_under(to.0, to.1, 1).await?.is_empty() {
            return Err(refused(ErrorKind::PermanentFileNotAvailable));
        }
        let mut keys = Vec::new();
        let mut start_after = None;
        loop {
            let page = self
                .store
                .list_objects(
                    from.0,
                    ListQuery {
                        prefix: from.1.to_owned(),
                        start_after: start_after.take(),
                        max_keys: LIST_PAGE,
                        ..Default::default()
                    },
                )
                .await
                .map_err(ftp_error)?;
            keys.extend(page.entries.into_iter().filter_map(|entry| match entry {
                ListEntry::Object(info) => Some(info.key),
                ListEntry::CommonPrefix(_) => None,
            }));
            if keys.len() > MAX_FOLDER_RENAME {
                return Err(refused(ErrorKind::ExceededStorageAllocationError));
            }
            if !page.is_truncated {
                break;
            }
            start_after = page.next_marker;
        }
        for key in keys {
            let moved = format!("{}{}", to.1, &key[from.1.len()..]);
            let renamed = self
                .store
                .rename_object_pinned((from.0, &key, from.2), (to.0, &moved, to.2));
            match renamed.await {
                // Deleted since it was listed (by another client, or its
                // expiry): nothing to move, and the rest still must be.
                Ok(_) | Err(StoreError::NoSuchKey) => {}
                Err(err) => return Err(ftp_error(err)),
            }
        }
        Ok(())
    }

    /// Streams `body` into the pool and makes it `container/key` once it has
    /// ended well; a body that fails leaves nothing. Returns the size.
    async fn commit(
        &self,
        container: &str,
        key: &str,
        body: impl futures::Stream<Item = io::Result<Bytes>>,
        content_type: String,
        conditions: PutConditions,
    ) -> FtpResult<u64> {
        let options = StageOptions {
            max_size: self.max_object_size,
            ..Default::default()
        };
        let staged = match self.store.stage(container, body, &options).await {
            Ok(staged) => staged,
            Err(StageError::Store(err)) => return Err(ftp_error(err)),
            // The client went away or the connection broke.
            Err(StageError::Body(err)) => return Err(storage::Error::from(err)),
        };
        let size = staged.size;
        let meta = ObjectMeta {
            content_type: Some(content_type),
            ..Default::default()
        };
        self.store
            .put_object(container, key, staged, meta, None, conditions)
            .await
            .map_err(ftp_error)?;
        Ok(size)
    }

    /// The object at `container/key`, if there is one.
    async fn object(&self, container: &str, key: &str) -> FtpResult<Option<ObjectInfo>> {
        match self.store.head_object(container, key).await {
            Ok(info) => Ok(Some(info)),
            Err(StoreError::NoSuchKey) => Ok(None),
            Err(err) => Err(ftp_error(err)),
        }
    }

    /// Refuses (550) to make `key` a file where it names a folder: the
    /// object would hide the folder (CWD refused, two entries of one name
    /// listed), where a POSIX server's rename(2) or open(2) says EISDIR.
    async fn refuse_folder(&self, container: &str, key: &str) -> FtpResult<()> {
        match self.directory_time(container, &format!("{key}/")).await? {
            Some(_) => Err(refused(ErrorKind::PermanentFileNotAvailable)),
            None => Ok(()),
        }
    }

    /// Whether `prefix` (ending in `/`) is a directory: a marker object or
    /// any object below it. Returns the marker's time, or now.
    async fn directory_time(&self, container: &str, prefix: &str) -> FtpResult<Option<i64>> {
        if let Some(marker) = self.object(container, prefix).await? {
            return Ok(Some(marker.last_modified_ms));
        }
        let below = self.keys_under(container, prefix, 1).await?;
        Ok((!below.is_empty()).then(unix_now_ms))
    }

    async fn entry_meta(&self, user: &FtpUser, path: &FtpPath) -> FtpResult<EntryMeta> {
        match path {
            FtpPath::Root => Ok(EntryMeta::dir(unix_now_ms())),
            FtpPath::Container(container) => Ok(EntryMeta::dir(
                self.readable_container(user, container).await?.created_ms,
            )),
            FtpPath::Entry { container, key } => {
                let bucket = self.readable_container(user, container).await?;
                if let Some(info) = self.object(container, key).await? {
                    // SIZE, and the offset APPE appends at: the assembled
                    // size, also of a DLO (listed by its manifest's 0 bytes).
                    let mut meta = EntryMeta::file(&info);
                    match self.content_of(user, &bucket.account, info).await {
                        Ok(content) => meta.size = content.size,
                        Err(err) => tracing::debug!(error = %err, "size of a large object unknown"),
                    }
                    return Ok(meta);
                }
                match self.directory_time(container, &path.dir_prefix()).await? {
                    Some(time) => Ok(EntryMeta::dir(time)),
                    None => Err(refused(ErrorKind::PermanentFileNotAvailable)),
                }
            }
        }
    }

    /// Every entry of a directory, a page of the store's listing at a time.
    async fn read_dir(&self, container: &str, prefix: &str) -> FtpResult<Vec<(String, EntryMeta)>> {
        let mut entries = Vec::new();
        let mut start_after = None;
        // Pseudo-directories have no time of their own.
        let listed_at = unix_now_ms();
        loop {
            let page = self
                .store
                .list_objects(
                    container,
                    ListQuery {
                        prefix: prefix.to_owned(),
                        delimiter: Some("/".to_owned()),
                        start_after: start_after.take(),
                        max_keys: LIST_PAGE,
                        ..Default::default()
                    },
                )
                .await
                .map_err(ftp_error)?;
            for entry in &page.entries {
                match entry {
                    ListEntry::Object(info) => {
                        let name = &info.key[prefix.len()..];
                        // The directory's own marker is not one of its entries.
                        if !name.is_empty() {
                            entries.push((name.to_owned(), EntryMeta::file(info)));
                        }
                    }
                    ListEntry::CommonPrefix(sub) => {
                        let name = sub[prefix.len()..].trim_end_matches('/');
                        if !name.is_empty() {
                            entries.push((name.to_owned(), EntryMeta::dir(listed_at)));
                        }
                    }
                }
            }
            if entries.len() > self.max_list_entries {
                tracing::info!(
                    container,
                    prefix,
                    max = self.max_list_entries,
                    "ftp listing refused: the folder holds more entries than one listing may"
                );
                return Err(storage::Error::new(
                    ErrorKind::PermanentDirectoryNotAvailable,
                    format!(
                        "the folder holds more than {} entries",
                        self.max_list_entries
                    ),
                ));
            }
            if !page.is_truncated {
                return Ok(entries);
            }
            start_after = page.next_marker;
        }
    }

    /// The file path `path` names (container and key), refusing directories
    /// that cannot be files.
    fn file_path(path: &Path) -> FtpResult<(String, String)> {
        match parse(path)? {
            FtpPath::Entry { container, key } => Ok((container, key)),
            FtpPath::Root | FtpPath::Container(_) => {
                Err(refused(ErrorKind::PermanentFileNotAvailable))
            }
        }
    }
}

#[async_trait]
impl StorageBackend<FtpUser> for StoreFileSystem {
    type Metadata = EntryMeta;

    fn name(&self) -> &str {
        "strata"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<EntryMeta> {
        self.check_session(user)?;
        self.entry_meta(user, &parse(path.as_ref())?).await
    }

    async fn list<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<Vec<Fileinfo<PathBuf, EntryMeta>>> {
        self.check_session(user)?;
        let path = path.as_ref();
        let parsed = parse(path)?;
        let entries = match &parsed {
            FtpPath::Root => self
                .store
                .list_buckets(&user.principal.account)
                .await
                .map_err(ftp_error)?
                .into_iter()
                .map(|bucket| (bucket.name, EntryMeta::dir(bucket.created_ms)))
                .collect(),
            FtpPath::Container(container) | FtpPath::Entry { container, .. } => {
                let meta = self.entry_meta(user, &parsed).await?;
                if !meta.is_dir {
                    // LIST of a file lists that file, as ls does.
                    return Ok(vec![Fileinfo {
                        path: path.to_path_buf(),
                        metadata: meta,
                    }]);
                }
                let prefix = parsed.dir_prefix();
                let mut entries = self.read_dir(container, &prefix).await?;
                // A listing says the size SIZE and RETR give: mirroring
                // clients (lftp mirror, WinSCP sync) compare them.
                // Each costs a listing of its segments: a bounded number.
                let mut account = None;
                let mut sized = 0;
                for (name, meta) in entries.iter_mut() {
                    let Some(info) = meta.dynamic.take() else {
                        continue;
                    };
                    if sized == MAX_DLOS_SIZED_PER_LISTING || !listable(name) {
                        continue;
                    }
                    sized += 1;
                    let account = match &account {
                        Some(account) => account,
                        None => {
                            account.insert(self.readable_container(user, container).await?.account)
                        }
                    };
                    match self.content_of(user, account, *info).await {
                        Ok(content) => meta.size = content.size,
                        Err(err) => tracing::debug!(error = %err, "size of a large object unknown"),
                    }
                }
                entries
            }
        };
        Ok(entries
            .into_iter()
            .filter(|(name, _)| listable(name))
            .map(|(name, metadata)| Fileinfo {
                path: path.join(name),
                metadata,
            })
            .collect())
    }

    async fn get<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
    ) -> FtpResult<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        self.check_session(user)?;
        let (container, key) = Self::file_path(path.as_ref())?;
        let bucket = self.readable_container(user, &container).await?;
        let file = self
            .file_content(user, &bucket.account, &container, &key)
            .await?;
        let size = file.size;
        let pieces = file.read(&self.store, start_pos..size)?;
        let pieces = pieces.map_err(io::Error::other);
        Ok(Box::new(SyncReader(Mutex::new(StreamReader::new(pieces)))))
    }

    async fn put<P, R>(&self, user: &FtpUser, input: R, path: P, start_pos: u64) -> FtpResult<u64>
    where
        P: AsRef<Path> + Send + fmt::Debug,
        R: AsyncRead + Send + Sync + Unpin + 'static,
    {
        self.check_session(user)?;
        let (container, key) = Self::file_path(path.as_ref())?;
        let bucket = self.may_write(user, &container).await?;
        self.refuse_folder(&container, &key).await?;
        // A resumed upload (REST + STOR) or APPE keeps the first `start_pos`
        // bytes of the current file (a large object's assembled bytes, as
        // RETR shows them) and appends the transfer to them; the result
        // replaces the object only once the transfer has ended well, and
        // only if it is still the version whose bytes were kept: two
        // appends at once would otherwise each drop the other's.
        let mut conditions = PutConditions::for_bucket(&bucket);
        let kept: strata_store::ObjectReader = if start_pos == 0 {
            Box::pin(futures::stream::empty())
        } else {
            let content = self
                .file_content(user, &bucket.account, &container, &key)
                .await?;
            conditions.if_match = Some(vec![content.info.etag.clone()]);
            content.read(&self.store, 0..start_pos)?
        };
        let kept = kept.map_err(io::Error::other);
        let body = kept.chain(ReaderStream::new(input));
        let size = self
            .commit(&container, &key, body, content_type_for(&key), conditions)
            .await
            .map_err(|err| match err.kind() {
                // The file changed during the transfer: the client may
                // send it again (450).
                ErrorKind::PermanentFileNotAvailable if start_pos > 0 => {
                    refused(ErrorKind::TransientFileNotAvailable)
                }
                _ => err,
            })?;
        Ok(size.saturating_sub(start_pos))
    }

    async fn del<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<()> {
        self.check_session(user)?;
        let (container, key) = Self::file_path(path.as_ref())?;
        let pin = BucketPin::of(&self.may_write(user, &container).await?);
        match self
            .store
            .delete_object_pinned(&container, &key, &pin)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(refused(ErrorKind::PermanentFileNotAvailable)),
            Err(err) => Err(ftp_error(err)),
        }
    }

    async fn mkd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<()> {
        self.check_session(user)?;
        let parsed = parse(path.as_ref())?;
        match &parsed {
            FtpPath::Root => Err(refused(ErrorKind::PermanentFileNotAvailable)),
            FtpPath::Container(container) => {
                if !user.principal.administers(&user.principal.account) {
                    return Err(refused(ErrorKind::PermissionDenied));
                }
                self.store
                    .create_bucket(&user.principal.account, container, &self.region)
                    .await
                    .map_err(ftp_error)?;
                Ok(())
            }
            FtpPath::Entry { container, key } => {
                let bucket = self.may_write(user, container).await?;
                let prefix = parsed.dir_prefix();
                if self.object(container, key).await?.is_some()
                    || self.directory_time(container, &prefix).await?.is_some()
                {
                    return Err(refused(ErrorKind::PermanentFileNotAvailable));
                }
                let empty = futures::stream::empty::<io::Result<Bytes>>();
                self.commit(
                    container,
                    &prefix,
                    empty,
                    DIRECTORY_MARKER_TYPE.to_owned(),
                    PutConditions::for_bucket(&bucket),
                )
                .await?;
                Ok(())
            }
        }
    }

    async fn rename<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> FtpResult<()> {
        self.check_session(user)?;
        let (from_container, from_key) = Self::file_path(from.as_ref())?;
        let (to_container, to_key) = Self::file_path(to.as_ref())?;
        // A rename reads the source (a copy) and writes both places.
        self.readable_container(user, &from_container).await?;
        let from_pin = BucketPin::of(&self.may_write(user, &from_container).await?);
        let to_pin = BucketPin::of(&self.may_write(user, &to_container).await?);
        if self.object(&from_container, &from_key).await?.is_some() {
            self.refuse_folder(&to_container, &to_key).await?;
            return self
                .store
                .rename_object_pinned(
                    (&from_container, &from_key, &from_pin),
                    (&to_container, &to_key, &to_pin),
                )
                .await
                .map(drop)
                .map_err(ftp_error);
        }
        let from_prefix = format!("{from_key}/");
        if self
            .directory_time(&from_container, &from_prefix)
            .await?
            .is_none()
        {
            return Err(refused(ErrorKind::PermanentFileNotAvailable));
        }
        // A folder moved under a file's name would be out of reach.
        if self.object(&to_container, &to_key).await?.is_some() {
            return Err(refused(ErrorKind::PermanentFileNotAvailable));
        }
        self.rename_directory(
            (&from_container, &from_prefix, &from_pin),
            (&to_container, &format!("{to_key}/"), &to_pin),
        )
        .await
    }

    async fn rmd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<()> {
        self.check_session(user)?;
        let parsed = parse(path.as_ref())?;
        match &parsed {
            FtpPath::Root => Err(refused(ErrorKind::PermissionDenied)),
            FtpPath::Container(container) => {
                let bucket = self.readable_container(user, container).await?;
                // Only its account's admins delete a container, ACLs or not.
                if !user.principal.administers(&bucket.account) {
                    return Err(refused(ErrorKind::PermissionDenied));
                }
                self.store
                    .delete_bucket_pinned(container, &BucketPin::of(&bucket))
                    .await
                    .map_err(ftp_error)
            }
            FtpPath::Entry { container, .. } => {
                let pin = BucketPin::of(&self.may_write(user, container).await?);
                let prefix = parsed.dir_prefix();
                let below = self.keys_under(container, &prefix, 2).await?;
                let has_marker = below
                    .iter()
                    .any(|entry| matches!(entry, ListEntry::Object(info) if info.key == prefix));
                if below.len() > usize::from(has_marker) {
                    return Err(refused(ErrorKind::PermanentDirectoryNotEmpty));
                }
                if !has_marker {
                    return Err(refused(ErrorKind::PermanentDirectoryNotAvailable));
                }
                self.store
                    .delete_object_pinned(container, &prefix, &pin)
                    .await
                    .map_err(ftp_error)?;
                Ok(())
            }
        }
    }

    async fn cwd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> FtpResult<()> {
        self.check_session(user)?;
        match self.entry_meta(user, &parse(path.as_ref())?).await {
            Ok(meta) if meta.is_dir => Ok(()),
            Ok(_) | Err(_) => Err(refused(ErrorKind::PermanentDirectoryNotAvailable)),
        }
    }
}

/// libunftp wants a `Sync` reader; the store's stream is only `Send`. A
/// reader is only ever polled through `&mut`, so `Mutex::get_mut` gives
/// access without ever locking.
struct SyncReader<R>(Mutex<R>);

impl<R: AsyncRead + Unpin> AsyncRead for SyncReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().0.get_mut() {
            Ok(reader) => Pin::new(reader).poll_read(cx, buf),
            Err(_) => Poll::Ready(Err(io::Error::other("reader poisoned"))),
        }
    }
}

/// Whether a name can be shown in an FTP listing: one with a control
/// character (keys may hold CR and LF, made through S3 or Swift) would end
/// its line early and make the rest a fake entry of the listing, and no
/// FTP command could name it anyway.
fn listable(name: &str) -> bool {
    let shown = !name.chars().any(char::is_control);
    if !shown {
        tracing::debug!(
            name = name.escape_debug().to_string(),
            "left out of an FTP listing"
        );
    }
    shown
}

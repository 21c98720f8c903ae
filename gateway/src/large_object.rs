//! Swift large objects as every door reads them. The Swift door writes
//! them: a Static Large Object (`PUT ?multipart-manifest=put`) stores a JSON
//! list of segments as its body, with the assembled size and ETag in the
//! record's `meta.headers`; a Dynamic Large Object (`X-Object-Manifest:
//! container/prefix`, what `swift upload --segment-size` makes) is the
//! concatenation of the objects under a prefix at read time. A reader wants
//! the segments' bytes, whichever door it came through: S3 clients, FTP
//! clients and `strata mount` (which uploads large files as SLOs) see the
//! assembled object, not the manifest.
//!
//! Which segments a caller may read is the caller's decision; this module
//! parses, checks (every segment still has the ETag the manifest recorded)
//! and streams.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, stream};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use strata_store::{ListEntry, ListQuery, ObjectInfo, Store, StoreError};

pub const HDR_OBJECT_MANIFEST: &str = "x-object-manifest";
pub const HDR_SLO: &str = "x-static-large-object";
/// The assembled size and ETag of a static large object.
pub const HDR_SLO_SIZE: &str = "x-slo-size";
pub const HDR_SLO_ETAG: &str = "x-slo-etag";

/// Largest SLO manifest body (Swift's `max_manifest_size`).
pub const MAX_MANIFEST_SIZE: usize = 8 * 1024 * 1024;
/// Most segments a DLO is assembled from.
pub const MAX_DLO_SEGMENTS: usize = 10_000;

/// A segment as the stored SLO manifest lists it (Swift's stored form).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSegment {
    pub name: String,
    pub hash: String,
    pub bytes: u64,
}

/// A piece of an assembled object.
#[derive(Debug, Clone)]
pub struct Segment {
    pub info: ObjectInfo,
    pub range: Range<u64>,
}

/// The size and ETag an object shows in listings.
pub struct ListedView {
    pub size: u64,
    pub etag: String,
}

/// Whether `name` is one of the headers that make a record a large object
/// (which a copy of its assembled bytes must not keep).
pub fn is_large_object_header(name: &str) -> bool {
    [HDR_SLO, HDR_SLO_SIZE, HDR_SLO_ETAG, HDR_OBJECT_MANIFEST]
        .iter()
        .any(|header| name.eq_ignore_ascii_case(header))
}

/// Whether `info` is a large object (SLO or DLO) a reader assembles.
pub fn is_large_object(info: &ObjectInfo) -> bool {
    is_slo(info) || info.meta.headers.contains_key(HDR_OBJECT_MANIFEST)
}

pub fn is_slo(info: &ObjectInfo) -> bool {
    info.meta
        .headers
        .get(HDR_SLO)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// What a listing shows: a static large object's assembled size and ETag,
/// any other object's own.
pub fn listed_view(info: &ObjectInfo) -> ListedView {
    match recorded_slo(info) {
        Some((size, etag)) => ListedView {
            size,
            etag: etag.to_owned(),
        },
        None => ListedView {
            size: info.size,
            etag: info.etag.clone(),
        },
    }
}

/// A static large object's assembled size and ETag as its manifest's PUT
/// recorded them; `None` for another object (or a record without them).
pub fn recorded_slo(info: &ObjectInfo) -> Option<(u64, &str)> {
    if !is_slo(info) {
        return None;
    }
    let size = info.meta.headers.get(HDR_SLO_SIZE)?.parse().ok()?;
    Some((size, info.meta.headers.get(HDR_SLO_ETAG)?))
}

/// The record as a reader of the assembled object sees it: the segments'
/// total size, and Swift's ETag of a large object (MD5 of the segments'
/// ETags).
/// The size of an object assembled from `segments`.
pub fn assembled_size(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .map(|segment| segment.range.end - segment.range.start)
        .sum()
}

pub fn assembled_view(view: ObjectInfo, segments: &[Segment]) -> ObjectInfo {
    let mut etags = Md5::new();
    for segment in segments {
        etags.update(segment.info.etag.as_bytes());
    }
    large_view(
        view,
        assembled_size(segments),
        hex::encode(etags.finalize()),
    )
}

/// A large object's record shown with its assembled `size` and `etag`.
pub fn large_view(mut view: ObjectInfo, size: u64, etag: String) -> ObjectInfo {
    view.size = size;
    view.etag = etag;
    // The manifest's own checksum and parts describe the manifest.
    view.checksum = None;
    view.part_sizes = Vec::new();
    view
}

/// The manifest's segments, read from the store; `None` when the stored
/// manifest does not parse.
pub async fn stored_segments(
    store: &Store,
    manifest: &ObjectInfo,
) -> Result<Option<Vec<StoredSegment>>, StoreError> {
    if manifest.size > MAX_MANIFEST_SIZE as u64 {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(manifest.size as usize);
    let mut reader = store.read(manifest, None);
    while let Some(piece) = reader.next().await {
        body.extend_from_slice(&piece?);
    }
    Ok(serde_json::from_slice(&body).ok())
}

/// Who reads a large object outside the Swift door.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A user of `account`, who may read its containers.
    Account(&'a str),
    /// An anonymous visitor of a public object of `account`: each segment
    /// must be public too, as Swift requires.
    Anonymous(&'a str),
    /// A user reading an object of `account`, perhaps by a container ACL
    /// only: each segment's container must let them read too.
    User {
        account: &'a str,
        principal: &'a strata_auth::Principal,
    },
}

/// How a reader outside the Swift door gets an object's bytes.
pub enum Assembly {
    /// The record's own bytes.
    Plain,
    /// A large object: these segments, in order.
    Segments(Vec<Segment>),
    /// A large object `reader` cannot read whole: a segment is gone or
    /// changed, in another account, or (for an anonymous reader) not
    /// public. Swift answers 409 or 401.
    Unreadable,
}

/// How `reader` reads `info`: plainly, or as the segments of a large object.
pub async fn assemble(
    store: &Store,
    info: &ObjectInfo,
    reader: Reader<'_>,
) -> Result<Assembly, StoreError> {
    let segments = if is_slo(info) {
        slo_segments(store, info, reader).await?
    } else if let Some(manifest) = info.meta.headers.get(HDR_OBJECT_MANIFEST) {
        dlo_segments(store, manifest, reader).await?
    } else {
        return Ok(Assembly::Plain);
    };
    Ok(segments.map_or(Assembly::Unreadable, Assembly::Segments))
}

/// Whether `reader` may read `key` of `container` as a segment.
async fn may_read_segment(
    store: &Store,
    container: &str,
    key: &str,
    reader: Reader<'_>,
) -> Result<bool, StoreError> {
    let (Reader::Account(account) | Reader::Anonymous(account) | Reader::User { account, .. }) =
        reader;
    let bucket = match store.bucket(container).await {
        Ok(bucket) => bucket,
        Err(StoreError::NoSuchBucket) => return Ok(false),
        Err(err) => return Err(err),
    };
    Ok(bucket.account == account
        && match reader {
            Reader::Account(_) => true,
            Reader::Anonymous(_) => crate::public::anonymous_object_read(&bucket, Some(key), None),
            Reader::User { principal, .. } => crate::swift::user_reads(principal, &bucket),
        })
}

async fn slo_segments(
    store: &Store,
    manifest: &ObjectInfo,
    reader: Reader<'_>,
) -> Result<Option<Vec<Segment>>, StoreError> {
    let Some(stored) = stored_segments(store, manifest).await? else {
        return Ok(None);
    };
    let mut segments = Vec::with_capacity(stored.len());
    for entry in stored {
        let Some((container, key)) = split_segment_path(&entry.name) else {
            return Ok(None);
        };
        if !may_read_segment(store, &container, &key, reader).await? {
            return Ok(None);
        }
        let info = match store.head_object(&container, &key).await {
            Ok(info) if info.etag == entry.hash => info,
            Ok(_) | Err(StoreError::NoSuchKey) => return Ok(None),
            Err(err) => return Err(err),
        };
        let range = 0..info.size;
        segments.push(Segment { info, range });
    }
    Ok(Some(segments))
}

/// The objects under a DLO's `container/prefix`, in name order, for a
/// reader who may see them.
async fn dlo_segments(
    store: &Store,
    manifest: &str,
    reader: Reader<'_>,
) -> Result<Option<Vec<Segment>>, StoreError> {
    let (container, prefix) = dlo_location(manifest);
    if !may_read_segment(store, &container, &prefix, reader).await? {
        return Ok(None);
    }
    objects_under(store, &container, &prefix).await
}

/// A DLO's `X-Object-Manifest` (`container/prefix`, URL-encoded as sent)
/// as container and prefix.
pub fn dlo_location(manifest: &str) -> (String, String) {
    let decoded = percent_encoding::percent_decode_str(manifest).decode_utf8_lossy();
    let trimmed = decoded.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((container, prefix)) => (container.to_owned(), prefix.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// Every object under `prefix` of `container`, in name order, as segments;
/// `None` beyond [`MAX_DLO_SEGMENTS`].
pub async fn objects_under(
    store: &Store,
    container: &str,
    prefix: &str,
) -> Result<Option<Vec<Segment>>, StoreError> {
    let mut segments = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list_objects(
                container,
                ListQuery {
                    prefix: prefix.to_owned(),
                    start_after: start_after.take(),
                    max_keys: 1000,
                    ..ListQuery::default()
                },
            )
            .await?;
        for entry in page.entries {
            if let ListEntry::Object(info) = entry {
                let range = 0..info.size;
                segments.push(Segment { info: *info, range });
            }
        }
        if segments.len() > MAX_DLO_SEGMENTS {
            return Ok(None);
        }
        if !page.is_truncated {
            return Ok(Some(segments));
        }
        start_after = page.next_marker;
    }
}

/// The bytes of `info` (or a `range` of them) as readers see them: the
/// segments [`assemble`] found for a large object, its own bytes otherwise.
pub fn read_assembled(
    store: &Store,
    info: &ObjectInfo,
    segments: Option<Vec<Segment>>,
    range: Option<Range<u64>>,
) -> strata_store::ObjectReader {
    match segments {
        Some(segments) => Box::pin(segmented_stream(store, segments, range)),
        None => store.read(info, range),
    }
}

/// The body of an assembled object (or a `range` of it) as a stream.
pub fn segmented_stream(
    store: &Store,
    segments: Vec<Segment>,
    range: Option<Range<u64>>,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let store = store.clone();
    let pieces = match range {
        Some(range) => select_range(&segments, range),
        None => segments,
    };
    stream::iter(pieces)
        .map(move |segment| store.read(&segment.info, Some(segment.range)))
        .flatten()
}

/// The parts of `segments` that cover `range` of their concatenation (only
/// those are copied: a multi-range read selects once per range).
pub fn select_range(segments: &[Segment], range: Range<u64>) -> Vec<Segment> {
    let mut offset = 0u64;
    let mut selected = Vec::new();
    for segment in segments {
        let len = segment.range.end - segment.range.start;
        let (start, end) = (offset, offset + len);
        offset = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.max(start) - start + segment.range.start;
        let to = range.end.min(end) - start + segment.range.start;
        selected.push(Segment {
            info: segment.info.clone(),
            range: from..to,
        });
    }
    selected
}

/// `/container/object` or `container/object`.
pub fn split_segment_path(path: &str) -> Option<(String, String)> {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((container, key)) if !container.is_empty() && !key.is_empty() => {
            Some((container.to_owned(), key.to_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use strata_store::ObjectMeta;

    use super::*;

    fn segment(size: u64) -> Segment {
        Segment {
            info: ObjectInfo {
                bucket: "b".into(),
                key: format!("k{size}"),
                size,
                etag: String::new(),
                last_modified_ms: 0,
                meta: ObjectMeta::default(),
                checksum: None,
                part_sizes: Vec::new(),
                extents: Vec::new(),
                inline: None,
                copy_nonce: None,
            },
            range: 0..size,
        }
    }

    fn ranges(range: Range<u64>) -> Vec<Range<u64>> {
        select_range(&[segment(10), segment(5), segment(7)], range)
            .into_iter()
            .map(|segment| segment.range)
            .collect()
    }

    #[test]
    fn ranges_across_segments() {
        assert_eq!(ranges(0..22), vec![0..10, 0..5, 0..7]);
        assert_eq!(ranges(3..4), vec![3..4]);
        assert_eq!(ranges(8..12), vec![8..10, 0..2]);
        assert_eq!(ranges(10..15), vec![0..5]);
        assert_eq!(ranges(14..22), vec![4..5, 0..7]);
    }

    #[test]
    fn segment_paths() {
        assert_eq!(
            split_segment_path("/c/a/b"),
            Some(("c".to_owned(), "a/b".to_owned()))
        );
        assert_eq!(split_segment_path("/c"), None);
        assert_eq!(split_segment_path("c/"), None);
    }

    #[test]
    fn the_assembled_view_sums_the_segments() {
        let view = assembled_view(segment(1).info, &[segment(10), segment(5)]);
        assert_eq!(view.size, 15);
        assert_eq!(view.etag.len(), 32);
    }
}

//! Large objects and expiry: how a stored record is presented.
//!
//! * Dynamic Large Objects: an object with `X-Object-Manifest:
//!   container/prefix` reads as the concatenation of the objects under that
//!   prefix, in name order, at read time.
//! * Static Large Objects: `PUT ?multipart-manifest=put` with a JSON list of
//!   segments, each checked (same account, ETag and size as given); the
//!   stored body is the manifest, and reads concatenate the segments after
//!   checking each still has its ETag. `?multipart-manifest=get` reads the
//!   manifest itself, `=delete` deletes it with its segments.
//!
//! The record's `meta.headers` hold the door's bookkeeping under the names
//! below; the S3 door does not show them.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, stream};
use http::StatusCode;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use strata_store::{
    ListEntry, ListQuery, ObjectInfo, ObjectMeta, PutConditions, StageOptions, StoreError,
};

use super::access::Access;
use super::bulk::DeleteReport;
use super::error::{SwiftError, SwiftResult};
use super::{SwiftDoor, SwiftRequest};
use crate::wire::Response;

pub(crate) const HDR_OBJECT_MANIFEST: &str = "x-object-manifest";
pub(crate) const HDR_SLO: &str = "x-static-large-object";
/// The assembled size and ETag of a static large object.
const HDR_SLO_SIZE: &str = "x-slo-size";
const HDR_SLO_ETAG: &str = "x-slo-etag";

/// Most segments in one SLO manifest (Swift's `max_manifest_segments`).
pub(crate) const MAX_MANIFEST_SEGMENTS: usize = 1000;
/// Largest SLO manifest body (Swift's `max_manifest_size`).
pub(crate) const MAX_MANIFEST_SIZE: usize = 8 * 1024 * 1024;
/// Most segments a DLO is assembled from.
pub(crate) const MAX_DLO_SEGMENTS: usize = 10_000;

/// The size and ETag an object shows in listings.
pub(crate) struct ListedView {
    pub size: u64,
    pub etag: String,
}

pub(crate) fn is_slo(info: &ObjectInfo) -> bool {
    info.meta
        .headers
        .get(HDR_SLO)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

pub(crate) fn listed_view(info: &ObjectInfo) -> ListedView {
    if is_slo(info) {
        let size = info
            .meta
            .headers
            .get(HDR_SLO_SIZE)
            .and_then(|size| size.parse().ok());
        let etag = info.meta.headers.get(HDR_SLO_ETAG);
        if let (Some(size), Some(etag)) = (size, etag) {
            return ListedView {
                size,
                etag: etag.clone(),
            };
        }
    }
    ListedView {
        size: info.size,
        etag: info.etag.clone(),
    }
}

/// A piece of an assembled object.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub info: ObjectInfo,
    pub range: Range<u64>,
}

/// How a GET presents an object: its own bytes, or its segments'.
pub(crate) struct Assembled {
    /// The record as shown: for large objects, the assembled size and ETag.
    pub view: ObjectInfo,
    pub segments: Option<Vec<Segment>>,
}

/// A segment as the stored SLO manifest lists it (Swift's stored form).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSegment {
    name: String,
    hash: String,
    bytes: u64,
}

/// A segment as a client's `multipart-manifest=put` body names it.
#[derive(Debug, Deserialize)]
struct RequestedSegment {
    path: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    range: Option<String>,
}

impl SwiftDoor {
    /// Resolves an object for reading: a large object becomes its segments,
    /// unless the request asks for the manifest itself.
    pub(crate) async fn assemble(
        &self,
        request: &SwiftRequest,
        info: ObjectInfo,
    ) -> SwiftResult<Assembled> {
        let manifest_itself = request.query.get("multipart-manifest") == Some("get");
        if !manifest_itself && is_slo(&info) {
            let segments = self.slo_segments(request, &info).await?;
            return Ok(assembled(info, segments));
        }
        if let Some(manifest) = info.meta.headers.get(HDR_OBJECT_MANIFEST).cloned()
            && !manifest_itself
        {
            let segments = self.dlo_segments(request, &manifest).await?;
            return Ok(assembled(info, segments));
        }
        Ok(Assembled {
            view: info,
            segments: None,
        })
    }

    async fn slo_segments(
        &self,
        request: &SwiftRequest,
        info: &ObjectInfo,
    ) -> SwiftResult<Vec<Segment>> {
        let manifest = self.read_small(info, MAX_MANIFEST_SIZE).await?;
        let stored: Vec<StoredSegment> = serde_json::from_slice(&manifest).map_err(|err| {
            tracing::error!(error = %err, key = %info.key, "stored SLO manifest does not parse");
            SwiftError::internal()
        })?;
        let mut segments = Vec::with_capacity(stored.len());
        for entry in stored {
            let (container, key) = split_segment_path(&entry.name)?;
            let segment = self
                .segment(request, &container, &key)
                .await?
                .filter(|segment| segment.etag == entry.hash)
                .ok_or_else(|| {
                    SwiftError::conflict(format!(
                        "Object segment no longer valid: {} (its ETag changed or it was deleted)",
                        entry.name
                    ))
                })?;
            let range = 0..segment.size;
            segments.push(Segment {
                info: segment,
                range,
            });
        }
        Ok(segments)
    }

    async fn dlo_segments(
        &self,
        request: &SwiftRequest,
        manifest: &str,
    ) -> SwiftResult<Vec<Segment>> {
        let decoded = percent_encoding::percent_decode_str(manifest)
            .decode_utf8_lossy()
            .into_owned();
        let (container, prefix) = decoded
            .trim_start_matches('/')
            .split_once('/')
            .map(|(container, prefix)| (container.to_owned(), prefix.to_owned()))
            .unwrap_or((decoded.clone(), String::new()));
        let bucket = self.container_of(&request.account, &container).await?;
        self.authorize(request, bucket.as_ref(), false, Access::Read)?;
        if bucket.is_none() {
            return Ok(Vec::new());
        }
        let mut segments = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .store
                .list_objects(
                    &container,
                    ListQuery {
                        prefix: prefix.clone(),
                        start_after: marker.take(),
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
                return Err(SwiftError::conflict(format!(
                    "The manifest names more than {MAX_DLO_SEGMENTS} segments"
                )));
            }
            if !page.is_truncated {
                return Ok(segments);
            }
            marker = page.next_marker;
        }
    }

    /// A segment object of the request's account, if it exists and the
    /// caller may read it.
    async fn segment(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<Option<ObjectInfo>> {
        let bucket = self.container_of(&request.account, container).await?;
        self.authorize(request, bucket.as_ref(), false, Access::Read)?;
        if bucket.is_none() {
            return Ok(None);
        }
        match self.store.head_object(container, key).await {
            Ok(info) => Ok(Some(info)),
            Err(StoreError::NoSuchKey) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// A whole object's bytes, refused when larger than `limit`.
    pub(crate) async fn read_small(&self, info: &ObjectInfo, limit: usize) -> SwiftResult<Vec<u8>> {
        if info.size > limit as u64 {
            return Err(SwiftError::conflict("The manifest is too large"));
        }
        let mut out = Vec::with_capacity(info.size as usize);
        let mut reader = self.store.read(info, None);
        while let Some(piece) = reader.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// `PUT ?multipart-manifest=put`: checks every segment, then stores the
    /// manifest.
    pub(crate) async fn put_slo(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        body: Incoming,
        meta: ObjectMeta,
    ) -> SwiftResult<Response> {
        let document = read_body(body, MAX_MANIFEST_SIZE).await?;
        let requested: Vec<RequestedSegment> =
            serde_json::from_slice(&document).map_err(|err| {
                SwiftError::bad_request(format!("Manifest must be valid JSON: {err}"))
            })?;
        if requested.is_empty() {
            return Err(SwiftError::bad_request(
                "Manifest must list at least one segment",
            ));
        }
        if requested.len() > MAX_MANIFEST_SEGMENTS {
            return Err(SwiftError::bad_request(format!(
                "Too many segments: at most {MAX_MANIFEST_SEGMENTS}"
            )));
        }
        let mut problems = Vec::new();
        let mut stored = Vec::with_capacity(requested.len());
        let mut etags = Md5::new();
        let mut total: u64 = 0;
        for wanted in &requested {
            let path = wanted.path.trim_start_matches('/');
            if wanted.range.is_some() {
                problems.push(format!("{path}: segment ranges are not supported"));
                continue;
            }
            let Ok((segment_container, segment_key)) = split_segment_path(path) else {
                problems.push(format!("{path}: not a container/object path"));
                continue;
            };
            let found = match self
                .segment(request, &segment_container, &segment_key)
                .await
            {
                Ok(found) => found,
                Err(err) => {
                    problems.push(format!("{path}: {}", err.status));
                    continue;
                }
            };
            let Some(segment) = found else {
                problems.push(format!("{path}: 404 Not Found"));
                continue;
            };
            if is_slo(&segment) || segment.meta.headers.contains_key(HDR_OBJECT_MANIFEST) {
                problems.push(format!(
                    "{path}: segments cannot be large objects themselves"
                ));
                continue;
            }
            if let Some(etag) = wanted.etag.as_deref()
                && etag.trim_matches('"') != segment.etag
            {
                problems.push(format!("{path}: ETag Mismatch"));
                continue;
            }
            if let Some(size) = wanted.size_bytes
                && size != segment.size
            {
                problems.push(format!("{path}: Size Mismatch"));
                continue;
            }
            if segment.size == 0 {
                problems.push(format!(
                    "{path}: Too Small; each segment must be at least 1 byte."
                ));
                continue;
            }
            etags.update(segment.etag.as_bytes());
            total += segment.size;
            stored.push(StoredSegment {
                name: format!("/{segment_container}/{segment_key}"),
                hash: segment.etag.clone(),
                bytes: segment.size,
            });
        }
        if !problems.is_empty() {
            return Err(SwiftError::bad_request(format!(
                "Errors:\n{}",
                problems.join("\n")
            )));
        }
        let slo_etag = hex::encode(etags.finalize());
        let manifest = serde_json::to_vec(&stored).map_err(|_| SwiftError::internal())?;
        let mut meta = meta;
        meta.headers.insert(HDR_SLO.to_owned(), "True".to_owned());
        meta.headers
            .insert(HDR_SLO_SIZE.to_owned(), total.to_string());
        meta.headers
            .insert(HDR_SLO_ETAG.to_owned(), slo_etag.clone());
        let staged = self
            .store
            .stage(
                stream::once(
                    async move { Ok::<_, std::convert::Infallible>(Bytes::from(manifest)) },
                ),
                &StageOptions {
                    sha256: false,
                    checksum: None,
                    max_size: MAX_MANIFEST_SIZE as u64,
                },
            )
            .await
            .map_err(|err| match err {
                strata_store::StageError::Store(err) => SwiftError::from(err),
                strata_store::StageError::Body(never) => match never {},
            })?;
        let info = self
            .store
            .put_object(container, key, staged, meta, None, PutConditions::default())
            .await?;
        let mut response = crate::wire::empty_response(StatusCode::CREATED);
        super::put_header(response.headers_mut(), "etag", &format!("\"{slo_etag}\""));
        super::put_header(
            response.headers_mut(),
            "last-modified",
            &crate::wire::http_date(info.last_modified_ms),
        );
        Ok(response)
    }

    /// `DELETE ?multipart-manifest=delete` of an SLO: its segments, then the
    /// manifest.
    pub(crate) async fn delete_slo(
        &self,
        request: &SwiftRequest,
        info: &ObjectInfo,
    ) -> SwiftResult<DeleteReport> {
        let manifest = self.read_small(info, MAX_MANIFEST_SIZE).await?;
        let stored: Vec<StoredSegment> =
            serde_json::from_slice(&manifest).map_err(|_| SwiftError::internal())?;
        let mut report = DeleteReport::default();
        for entry in stored {
            let outcome = match split_segment_path(&entry.name) {
                Ok((container, key)) => self.delete_one(request, &container, Some(&key)).await,
                Err(err) => Err(err),
            };
            report.record(&entry.name, outcome);
        }
        let outcome = self
            .delete_one(request, &info.bucket, Some(&info.key))
            .await;
        report.record(&format!("/{}/{}", info.bucket, info.key), outcome);
        Ok(report)
    }

    /// The body of an assembled object (or a range of it) as a stream.
    pub(crate) fn segmented_stream(
        &self,
        segments: Vec<Segment>,
        range: Option<Range<u64>>,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let store = self.store.clone();
        let pieces = select_range(segments, range);
        stream::iter(pieces)
            .map(move |segment| store.read(&segment.info, Some(segment.range)))
            .flatten()
    }
}

fn assembled(mut view: ObjectInfo, segments: Vec<Segment>) -> Assembled {
    let mut etags = Md5::new();
    for segment in &segments {
        etags.update(segment.info.etag.as_bytes());
    }
    view.size = segments
        .iter()
        .map(|segment| segment.range.end - segment.range.start)
        .sum();
    view.etag = hex::encode(etags.finalize());
    Assembled {
        view,
        segments: Some(segments),
    }
}

/// The parts of `segments` that cover `range` of their concatenation.
fn select_range(segments: Vec<Segment>, range: Option<Range<u64>>) -> Vec<Segment> {
    let Some(range) = range else {
        return segments;
    };
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
            info: segment.info,
            range: from..to,
        });
    }
    selected
}

/// `/container/object` or `container/object`.
fn split_segment_path(path: &str) -> SwiftResult<(String, String)> {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((container, key)) if !container.is_empty() && !key.is_empty() => {
            Ok((container.to_owned(), key.to_owned()))
        }
        _ => Err(SwiftError::bad_request(format!(
            "{path}: segment paths are /container/object"
        ))),
    }
}

/// A small request body, whole; larger than `limit` is 413.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> SwiftResult<Vec<u8>> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(SwiftError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than {limit} bytes"),
            ))
        }
        Err(_) => Err(SwiftError::bad_request("The request body ended early")),
    }
}

#[cfg(test)]
mod tests {
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
            },
            range: 0..size,
        }
    }

    fn ranges(range: Option<Range<u64>>) -> Vec<Range<u64>> {
        select_range(vec![segment(10), segment(5), segment(7)], range)
            .into_iter()
            .map(|segment| segment.range)
            .collect()
    }

    #[test]
    fn ranges_across_segments() {
        assert_eq!(ranges(None), vec![0..10, 0..5, 0..7]);
        assert_eq!(ranges(Some(0..22)), vec![0..10, 0..5, 0..7]);
        assert_eq!(ranges(Some(3..4)), vec![3..4]);
        assert_eq!(ranges(Some(8..12)), vec![8..10, 0..2]);
        assert_eq!(ranges(Some(10..15)), vec![0..5]);
        assert_eq!(ranges(Some(14..22)), vec![4..5, 0..7]);
    }

    #[test]
    fn segment_paths() {
        assert_eq!(
            split_segment_path("/c/a/b").unwrap(),
            ("c".to_owned(), "a/b".to_owned())
        );
        assert!(split_segment_path("/c").is_err());
        assert!(split_segment_path("c/").is_err());
    }
}

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

use crate::wire::RequestBody;
use bytes::Bytes;
use futures::{StreamExt as _, stream};
use http::StatusCode;
use http_body_util::BodyExt as _;
use md5::{Digest as _, Md5};
use serde::Deserialize;
use strata_store::{ObjectInfo, ObjectMeta, StageOptions, StoreError};

use super::access::Access;
use super::bulk::DeleteReport;
use super::error::{SwiftError, SwiftResult};
use super::{SwiftDoor, SwiftRequest};
use crate::wire::Response;

pub(crate) use crate::large_object::{
    HDR_OBJECT_MANIFEST, HDR_SLO, MAX_DLO_SEGMENTS, MAX_MANIFEST_SIZE, Segment, is_slo, listed_view,
};
use crate::large_object::{HDR_SLO_ETAG, HDR_SLO_SIZE, StoredSegment, assembled_view};

/// Most segments in one SLO manifest (Swift's `max_manifest_segments`).
pub(crate) const MAX_MANIFEST_SEGMENTS: usize = 1000;

/// How a GET presents an object: its own bytes, or its segments'.
pub(crate) struct Assembled {
    /// The record as shown: for large objects, the assembled size and ETag.
    pub view: ObjectInfo,
    /// `Some` for a large object; empty for the HEAD of an SLO, which
    /// reads none.
    pub segments: Option<Vec<Segment>>,
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
        // A HEAD of an SLO answers from what its manifest's PUT recorded,
        // as Swift's does: no segment is looked up (1,000 lookups for a
        // manifest of 1,000), and one gone since shows on a GET.
        if !manifest_itself
            && request.method == http::Method::HEAD
            && let Some((size, etag)) = crate::large_object::recorded_slo(&info)
        {
            let etag = etag.to_owned();
            return Ok(Assembled {
                view: crate::large_object::large_view(info, size, etag),
                segments: Some(Vec::new()),
            });
        }
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
        let (container, prefix) = crate::large_object::dlo_location(manifest);
        let bucket = self.container_of(&request.account, &container).await?;
        // Users and TempURLs are decided by the container, once and before
        // anything is listed; an anonymous reader by each segment's key,
        // which a bucket policy may open or not.
        let anonymous = matches!(request.caller, super::access::Caller::Anonymous);
        if !anonymous || bucket.is_none() {
            self.authorize(request, bucket.as_ref(), Some(&prefix), Access::Read)?;
        }
        let Some(bucket) = bucket else {
            return Ok(Vec::new());
        };
        let segments = crate::large_object::objects_under(&self.store, &container, &prefix)
            .await?
            .ok_or_else(|| {
                SwiftError::conflict(format!(
                    "The manifest names more than {MAX_DLO_SEGMENTS} segments"
                ))
            })?;
        if anonymous {
            for segment in &segments {
                self.authorize(
                    request,
                    Some(&bucket),
                    Some(&segment.info.key),
                    Access::Read,
                )?;
            }
        }
        Ok(segments)
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
        self.authorize(request, bucket.as_ref(), Some(key), Access::Read)?;
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
        (container, key, pin): (&str, &str, &strata_store::BucketPin),
        body: RequestBody,
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
        // The client's ETag names the manifest's, as Swift checks it.
        super::object::check_etag(request, &slo_etag)?;
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
                container,
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
        // If-None-Match: * holds for a manifest as for any object.
        let info = self
            .commit(request, (container, key, pin), staged, meta)
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
}

fn assembled(view: ObjectInfo, segments: Vec<Segment>) -> Assembled {
    Assembled {
        view: assembled_view(view, &segments),
        segments: Some(segments),
    }
}

/// `/container/object` or `container/object`, else 400.
fn split_segment_path(path: &str) -> SwiftResult<(String, String)> {
    crate::large_object::split_segment_path(path).ok_or_else(|| {
        SwiftError::bad_request(format!(
            "{}: segment paths are /container/object",
            path.trim_start_matches('/')
        ))
    })
}

/// A small request body, whole; larger than `limit` is 413.
pub(crate) async fn read_body(body: RequestBody, limit: usize) -> SwiftResult<Vec<u8>> {
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

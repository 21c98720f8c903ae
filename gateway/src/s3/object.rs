//! Object operations: PutObject, CopyObject, GetObject/HeadObject, DeleteObject
//! and DeleteObjects.

use std::ops::Range;

use crate::wire::RequestBody;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use strata_store::{
    BucketInfo, BucketPin, ChecksumAlgorithm, ObjectInfo, PutConditions, StageError, StageOptions,
    StoreError,
};

use super::body::{read_small_body, stage_request_body};
use super::error::{S3Error, S3Result};
use super::headers::{
    ConditionOutcome, add_object_headers, evaluate_conditions, header_str, iso8601,
    meta_from_request, parse_range, quoted_etag,
};
use super::xml::{self, DeleteRequest};
use super::{Response, ResponseBody, S3Door, S3Request, empty_response, xml_response};
use crate::edge::{CacheOutcome, CachedObject, Dialect};
use crate::large_object::{Assembly, Reader, Segment, assemble, assembled_view, read_assembled};
use crate::wire::{range_header, stream_body};

/// The most keys one DeleteObjects request may name.
const MAX_DELETE_KEYS: usize = 1000;

/// `response-*` query parameters of GetObject and the headers they override.
const RESPONSE_OVERRIDES: [(&str, &str); 6] = [
    ("response-cache-control", "cache-control"),
    ("response-content-disposition", "content-disposition"),
    ("response-content-encoding", "content-encoding"),
    ("response-content-language", "content-language"),
    ("response-content-type", "content-type"),
    ("response-expires", "expires"),
];

/// The most one CopyObject or UploadPartCopy copies (S3's limit).
const MAX_COPY_SOURCE: u64 = 5 * 1024 * 1024 * 1024;

impl S3Door {
    pub(crate) async fn put_object(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let meta = meta_from_request(&request.headers, self.limits.max_user_metadata)?;
        let mut conditions = put_conditions(&request.headers)?;
        // Refuse before reading a body that has nowhere to go.
        let bucket = self.owned_bucket(request).await?;
        check_object_acl(request, &bucket)?;
        conditions.pin_bucket(&bucket);
        let (staged, checksum) = stage_request_body(self, request, body, false).await?;
        let info = self
            .store
            .put_object(
                &request.bucket,
                &request.key,
                staged,
                meta,
                checksum,
                conditions,
            )
            .await?;
        let mut response = empty_response(StatusCode::OK);
        put_etag_and_checksum(response.headers_mut(), &info.etag, info.checksum.as_ref());
        Ok(response)
    }

    /// A copy onto the source itself is allowed, as in S3, when it keeps the
    /// metadata but asks for a storage class, encryption or a website
    /// redirect: `aws s3 cp s3://b/k s3://b/k --storage-class …` is how
    /// tools change an object's class. strata keeps one class and accepts
    /// these headers on every write without acting on them, so such a copy
    /// rewrites the object as it is.
    pub(crate) async fn copy_object(&self, request: &S3Request) -> S3Result<Response> {
        let copied = self.copy_source(request).await?;
        let source = &copied.record;
        let directive = header_str(&request.headers, "x-amz-metadata-directive").unwrap_or("COPY");
        let meta = match directive {
            "COPY" => {
                if source.bucket == request.bucket
                    && source.key == request.key
                    && !changes_more_than_metadata(&request.headers)
                {
                    return Err(S3Error::invalid_request(
                        "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
                    ));
                }
                let mut meta = source.meta.clone();
                // A copy of a Swift large object is its assembled bytes,
                // a plain object: the manifest's bookkeeping stays behind.
                meta.headers
                    .retain(|name, _| !crate::large_object::is_large_object_header(name));
                meta
            }
            "REPLACE" => meta_from_request(&request.headers, self.limits.max_user_metadata)?,
            _ => {
                return Err(S3Error::invalid_argument(
                    "Unknown metadata directive (COPY or REPLACE).",
                ));
            }
        };
        let mut conditions = put_conditions(&request.headers)?;
        let bucket = self.owned_bucket(request).await?;
        check_object_acl(request, &bucket)?;
        conditions.pin_bucket(&bucket);
        let algorithm = requested_checksum_algorithm(&request.headers)?
            .or(source.checksum.as_ref().map(|(algo, _)| *algo));
        let staged = self
            .stage_copy(&request.bucket, &copied, None, algorithm, false)
            .await?;
        let checksum = checksum_of(&staged, algorithm);
        let info = self
            .store
            .put_object(
                &request.bucket,
                &request.key,
                staged,
                meta,
                checksum,
                conditions,
            )
            .await?;
        let mut xml = xml::document("CopyObjectResult");
        xml.element("LastModified", &iso8601(info.last_modified_ms))
            .element("ETag", &quoted_etag(&info.etag));
        if let Some((algo, value)) = &info.checksum {
            xml.element(&format!("Checksum{}", algo.name()), value);
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    /// The object named by `x-amz-copy-source`, after its `x-amz-copy-source-if-*`
    /// conditions (on the bytes a copy reads: a Swift large object's
    /// assembled ETag and dates).
    pub(crate) async fn copy_source(&self, request: &S3Request) -> S3Result<CopySource> {
        let raw = header_str(&request.headers, "x-amz-copy-source").ok_or_else(|| {
            S3Error::invalid_argument(
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
            )
        })?;
        let (path, version) = match raw.split_once('?') {
            Some((path, query)) => (path, query.strip_prefix("versionId=")),
            None => (raw, None),
        };
        only_null_version(version)?;
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| S3Error::invalid_argument("Copy Source is not valid UTF-8."))?;
        let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
        let Some((bucket, key)) = decoded
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(S3Error::invalid_argument(
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.",
            ));
        };
        strata_store::validate_key(key)?;
        let bucket_info = self.store.bucket(bucket).await?;
        if bucket_info.account != request.account()? {
            return Err(S3Error::access_denied());
        }
        let record = self.store.head_object(bucket, key).await?;
        let (view, segments) = if crate::large_object::is_large_object(&record) {
            self.assembled(record.clone(), Reader::Account(&bucket_info.account))
                .await?
        } else {
            (record.clone(), None)
        };
        if evaluate_conditions(&request.headers, "x-amz-copy-source-", &view)
            != ConditionOutcome::Proceed
        {
            return Err(StoreError::PreconditionFailed.into());
        }
        Ok(CopySource {
            record,
            view,
            segments,
        })
    }

    /// `info` as `reader` reads it: a Swift large object becomes its
    /// assembled view and segments; 409 when a segment is missing, changed
    /// or not the reader's.
    async fn assembled(
        &self,
        info: ObjectInfo,
        reader: Reader<'_>,
    ) -> S3Result<(ObjectInfo, Option<Vec<Segment>>)> {
        match assemble(&self.store, &info, reader).await? {
            Assembly::Plain => Ok((info, None)),
            Assembly::Segments(segments) => Ok((assembled_view(info, &segments), Some(segments))),
            Assembly::Unreadable => Err(S3Error::new(
                "InvalidObjectState",
                StatusCode::CONFLICT,
                "A segment of this large object is missing, changed or not readable.",
            )),
        }
    }

    /// Streams (a range of) an existing object into a new staged body for
    /// `bucket`.
    pub(crate) async fn stage_copy(
        &self,
        bucket: &str,
        source: &CopySource,
        range: Option<Range<u64>>,
        checksum: Option<ChecksumAlgorithm>,
        part: bool,
    ) -> S3Result<strata_store::StagedBody> {
        // S3 copies at most 5 GiB in one request (a larger object is copied
        // by UploadPartCopy ranges), and no copy may pass the largest
        // object this gateway takes.
        let limit = MAX_COPY_SOURCE.min(self.limits.max_object_size);
        let len = range
            .as_ref()
            .map_or(source.view.size, |range| range.end - range.start);
        if len > limit {
            return Err(S3Error::invalid_request(format!(
                "The specified copy source is larger than the maximum allowable size for a \
                 copy source: {limit}"
            )));
        }
        let options = StageOptions {
            sha256: false,
            checksum,
            max_size: limit,
        };
        let reader = read_assembled(&self.store, &source.record, source.segments.clone(), range);
        let staged = if part {
            self.store.stage_part(bucket, reader, &options).await
        } else {
            self.store.stage(bucket, reader, &options).await
        };
        staged.map_err(|err| match err {
            StageError::Body(err) | StageError::Store(err) => S3Error::from(err),
        })
    }

    pub(crate) async fn get_object(&self, request: &S3Request, head: bool) -> S3Result<Response> {
        let bucket = self.readable_bucket(request, false).await?;
        let mut response = self.read_object(request, head, &bucket).await?;
        Self::vary_public_answer(request, &bucket, &mut response);
        Ok(response)
    }

    /// [`S3Door::get_object`] of an object of `bucket`, which the caller
    /// may read.
    async fn read_object(
        &self,
        request: &S3Request,
        head: bool,
        bucket: &strata_store::BucketInfo,
    ) -> S3Result<Response> {
        only_null_version(request.query.get("versionId"))?;
        // Anonymous reads of public objects go through the edge cache; with
        // query parameters (partNumber, response-*) they are not plain reads.
        if request.credential.is_none()
            && self.edge.enabled()
            && request.query.0.is_empty()
            && let Some((cached, outcome)) = self
                .edge
                .get(&self.store, &request.bucket, &request.key)
                .await
            && let Some(response) =
                cached_response(&self.edge, request, &cached, outcome, head).await?
        {
            let mut response = response;
            // With an Origin the door's wrapper decorates the answer;
            // without, a shared cache must still know it varies by one.
            if !request.headers.contains_key(http::header::ORIGIN) {
                crate::cors::vary_by_origin(bucket, response.headers_mut());
            }
            return Ok(response);
        }
        let info = self
            .store
            .head_object(&request.bucket, &request.key)
            .await?;
        // A Swift large object reads as its segments, as through Swift; the
        // manifest is the Swift door's to show.
        let reader = if request
            .account()
            .is_ok_and(|account| account == bucket.account)
        {
            Reader::Account(&bucket.account)
        } else {
            Reader::Anonymous(&bucket.account)
        };
        let (info, segments) = self.assembled(info, reader).await?;
        match evaluate_conditions(&request.headers, "", &info) {
            ConditionOutcome::Proceed => {}
            ConditionOutcome::NotModified => return Ok(not_modified(&info)),
            ConditionOutcome::PreconditionFailed => {
                return Err(StoreError::PreconditionFailed.into());
            }
        }
        let (range, parts_count) = match request.query.get("partNumber") {
            Some(_) if request.headers.contains_key(http::header::RANGE) => {
                return Err(S3Error::invalid_request(
                    "Cannot specify both Range header and partNumber query parameter",
                ));
            }
            Some(number) => (
                Some(part_range(&info, number)?),
                Some(info.parts_count().unwrap_or(1)),
            ),
            None => (
                parse_range(range_header(&request.headers, &info), info.size)?,
                None,
            ),
        };
        let checksum_mode = super::headers::checksum_mode(&request.headers);
        let overrides = response_overrides(request)?;

        let body: ResponseBody = if head {
            super::full_body(bytes::Bytes::new())
        } else {
            stream_body(read_assembled(&self.store, &info, segments, range.clone())).await?
        };
        let mut response = http::Response::new(body);
        let headers = response.headers_mut();
        add_object_headers(headers, &info, checksum_mode && range.is_none());
        for (name, value) in overrides {
            headers.insert(name, value);
        }
        if let Some(count) = parts_count {
            headers.insert("x-amz-mp-parts-count", HeaderValue::from(count as u64));
        }
        let length = match &range {
            Some(range) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let content_range = format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    info.size
                );
                if let Ok(value) = HeaderValue::from_str(&content_range) {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_RANGE, value);
                }
                range.end - range.start
            }
            None => info.size,
        };
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        Ok(response)
    }

    pub(crate) async fn delete_object(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        // Never the current object in place of a version it is not.
        only_null_version(request.query.get("versionId"))?;
        self.store
            .delete_object_pinned(&request.bucket, &request.key, &BucketPin::of(&bucket))
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn delete_objects(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let pin = BucketPin::of(&self.owned_bucket(request).await?);
        let document = read_small_body(request, body, self.limits.max_xml_body).await?;
        if !xml::root_is(&document, "Delete") {
            return Err(S3Error::malformed_xml());
        }
        let delete: DeleteRequest = xml::parse(&document)?;
        if delete.objects.is_empty() || delete.objects.len() > MAX_DELETE_KEYS {
            return Err(S3Error::malformed_xml());
        }
        let mut xml = xml::document("DeleteResult");
        for object in &delete.objects {
            let outcome = match strata_store::validate_key(&object.key)
                .map_err(S3Error::from)
                .and_then(|()| only_null_version(object.version_id.as_deref()))
            {
                Ok(()) => self
                    .store
                    .delete_object_pinned(&request.bucket, &object.key, &pin)
                    .await
                    .map(|_| ())
                    .map_err(S3Error::from),
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) if delete.quiet => {}
                Ok(()) => {
                    xml.open("Deleted").element("Key", &object.key);
                    xml.optional("VersionId", object.version_id.as_deref());
                    xml.close();
                }
                Err(err) => {
                    xml.open("Error")
                        .element("Key", &object.key)
                        .element("Code", err.code)
                        .element("Message", &err.message)
                        .close();
                }
            }
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }
}

/// The object a copy reads: its record and, for a Swift large object, the
/// assembled view (whose size and ETag the copy's range and conditions are
/// about) and the segments found once.
pub(crate) struct CopySource {
    pub record: ObjectInfo,
    pub view: ObjectInfo,
    segments: Option<Vec<Segment>>,
}

/// The `response-*` parameters as the headers they replace. Refused for
/// anonymous requests, as S3 refuses them.
fn response_overrides(request: &S3Request) -> S3Result<Vec<(HeaderName, HeaderValue)>> {
    let mut overrides = Vec::new();
    for (param, header) in RESPONSE_OVERRIDES {
        let Some(value) = request.query.get(param) else {
            continue;
        };
        if request.credential.is_none() {
            return Err(S3Error::invalid_request(
                "Request specific response headers cannot be used for anonymous GET requests.",
            ));
        }
        // UTF-8 goes through as is (a filename= in any language); only
        // control characters cannot be in a header.
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            S3Error::invalid_argument(format!("{param} is not a valid header value"))
        })?;
        overrides.push((HeaderName::from_static(header), value));
    }
    Ok(overrides)
}

/// Versioning is never on here, so the only version of an object is the one
/// S3 calls `null`; any other id names nothing (and must never be taken
/// for the current object by a read or, worse, a delete).
fn only_null_version(version: Option<&str>) -> S3Result<()> {
    match version {
        None | Some("null") => Ok(()),
        Some(_) => Err(S3Error::new(
            "NoSuchVersion",
            StatusCode::NOT_FOUND,
            "The specified version does not exist.",
        )),
    }
}

fn not_modified(info: &ObjectInfo) -> Response {
    let mut response = empty_response(StatusCode::NOT_MODIFIED);
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&quoted_etag(&info.etag)) {
        headers.insert(http::header::ETAG, etag);
    }
    if let Ok(date) = HeaderValue::from_str(&super::headers::http_date(info.last_modified_ms)) {
        headers.insert(http::header::LAST_MODIFIED, date);
    }
    crate::wire::add_freshness_headers(headers, info);
    response
}

/// A GetObject/HeadObject answered from the edge cache's copy; `None` when
/// the copy turned out damaged (the caller reads the store).
async fn cached_response(
    edge: &crate::edge::EdgeCache,
    request: &S3Request,
    cached: &CachedObject,
    outcome: CacheOutcome,
    head: bool,
) -> S3Result<Option<Response>> {
    let info = &cached.info;
    let mut response = match evaluate_conditions(&request.headers, "", info) {
        ConditionOutcome::Proceed => {
            let range = parse_range(range_header(&request.headers, info), info.size)?;
            let Some(body) = edge.serve(cached, range.as_ref(), head).await else {
                return Ok(None);
            };
            let length = range
                .as_ref()
                .map_or(info.size, |range| range.end - range.start);
            let mut response = http::Response::new(body);
            *response.headers_mut() = cached.headers(Dialect::S3, |info| {
                let mut headers = http::HeaderMap::new();
                add_object_headers(&mut headers, info, false);
                headers
            });
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
            // Not in the rendered headers, which every reader shares.
            if range.is_none() && super::headers::checksum_mode(&request.headers) {
                super::headers::add_checksum_headers(response.headers_mut(), info);
            }
            if let Some(range) = range {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                if let Ok(value) = HeaderValue::from_str(&format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    info.size
                )) {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_RANGE, value);
                }
            }
            response
        }
        ConditionOutcome::NotModified => not_modified(info),
        ConditionOutcome::PreconditionFailed => return Err(StoreError::PreconditionFailed.into()),
    };
    let headers = response.headers_mut();
    headers.insert("x-cache", HeaderValue::from_static(outcome.header()));
    headers.insert("age", HeaderValue::from(cached.age_secs()));
    Ok(Some(response))
}

/// The byte range of part `number` of a multipart object (`1` is the whole of
/// a simple object).
fn part_range(info: &ObjectInfo, number: &str) -> S3Result<Range<u64>> {
    let number: usize = number
        .parse()
        .ok()
        .filter(|number| (1..=10_000).contains(number))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
    if info.part_sizes.is_empty() {
        return if number == 1 {
            Ok(0..info.size)
        } else {
            Err(S3Error::new(
                "InvalidPartNumber",
                StatusCode::RANGE_NOT_SATISFIABLE,
                "The requested partnumber is not satisfiable",
            ))
        };
    }
    let Some(size) = info.part_sizes.get(number - 1) else {
        return Err(S3Error::new(
            "InvalidPartNumber",
            StatusCode::RANGE_NOT_SATISFIABLE,
            "The requested partnumber is not satisfiable",
        ));
    };
    let start: u64 = info.part_sizes[..number - 1].iter().sum();
    Ok(start..start + size)
}

/// `If-None-Match: *` and `If-Match` on writes.
pub(crate) fn put_conditions(headers: &HeaderMap) -> S3Result<PutConditions> {
    let mut conditions = PutConditions::default();
    if let Some(value) = header_str(headers, "if-none-match") {
        if value.trim() != "*" {
            return Err(S3Error::not_implemented(
                "If-None-Match with an ETag on writes",
            ));
        }
        conditions.if_none_match_any = true;
    }
    if let Some(value) = header_str(headers, "if-match") {
        conditions.if_match = Some(value.split(',').map(|tag| tag.trim().to_owned()).collect());
    }
    Ok(conditions)
}

/// `x-amz-checksum-algorithm` (CopyObject, CreateMultipartUpload).
pub(crate) fn requested_checksum_algorithm(
    headers: &HeaderMap,
) -> S3Result<Option<ChecksumAlgorithm>> {
    match header_str(headers, "x-amz-checksum-algorithm") {
        None => Ok(None),
        Some(name) => ChecksumAlgorithm::parse(name.trim())
            .map(Some)
            .ok_or_else(|| {
                S3Error::invalid_request(format!("Unsupported checksum algorithm {name}"))
            }),
    }
}

pub(crate) fn checksum_of(
    staged: &strata_store::StagedBody,
    algorithm: Option<ChecksumAlgorithm>,
) -> Option<(ChecksumAlgorithm, String)> {
    use base64::Engine as _;
    let (algo, raw) = staged.digests.checksum.as_ref()?;
    (Some(*algo) == algorithm)
        .then(|| (*algo, base64::engine::general_purpose::STANDARD.encode(raw)))
}

pub(crate) fn put_etag_and_checksum(
    headers: &mut HeaderMap,
    etag: &str,
    checksum: Option<&(ChecksumAlgorithm, String)>,
) {
    if let Ok(value) = HeaderValue::from_str(&quoted_etag(etag)) {
        headers.insert(http::header::ETAG, value);
    }
    if let Some((algo, value)) = checksum
        && let (Ok(name), Ok(value)) = (
            HeaderName::try_from(format!(
                "x-amz-checksum-{}",
                algo.name().to_ascii_lowercase()
            )),
            HeaderValue::from_str(value),
        )
    {
        headers.insert(name, value);
    }
}

/// Whether a copy asks for something besides metadata that S3 lets a copy
/// onto itself change (see [`S3Door::copy_object`]).
fn changes_more_than_metadata(headers: &HeaderMap) -> bool {
    [
        "x-amz-storage-class",
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-website-redirect-location",
    ]
    .iter()
    .any(|name| headers.contains_key(*name))
}

/// Objects have no ACLs of their own: their bucket's ACL and policy decide
/// who reads them. A write asking for an object ACL is taken when the
/// bucket already gives what it asks (`private` and the bucket-owner
/// grants, which mean the owner here; `public-read` in a bucket whose
/// objects anyone may read), and refused otherwise, rather than stored
/// private while the client believes it public.
pub(crate) fn check_object_acl(request: &S3Request, bucket: &BucketInfo) -> S3Result<()> {
    if request
        .headers
        .keys()
        .any(|name| name.as_str().starts_with("x-amz-grant-"))
    {
        return Err(S3Error::not_implemented(
            "Object ACL grants (x-amz-grant-*)",
        ));
    }
    match header_str(&request.headers, "x-amz-acl") {
        None | Some("private" | "bucket-owner-read" | "bucket-owner-full-control") => Ok(()),
        Some("public-read")
            if crate::public::anonymous_object_read(bucket, Some(&request.key), None) =>
        {
            Ok(())
        }
        Some(_) => Err(S3Error::not_implemented(
            "Object ACLs (x-amz-acl other than private): make the bucket public-read, or \
             give it a policy granting s3:GetObject",
        )),
    }
}

//! Object requests: PUT (with ETag check, `X-Copy-From`, manifests), GET and
//! HEAD (conditions, ranges, large objects), POST (metadata), DELETE, COPY.

use crate::wire::RequestBody;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyDataStream;
use strata_store::{BucketPin, ObjectInfo, ObjectMeta, PutConditions, StageError, StageOptions};

use super::access::{Access, Caller};
use super::error::{SwiftError, SwiftResult};
use super::large::{HDR_OBJECT_MANIFEST, HDR_SLO, is_slo};
use super::meta::{MetaKind, apply_changes, meta_changes};
use super::{SwiftDoor, SwiftRequest, put_header, swift_timestamp, truthy};
use crate::edge::Dialect;
use crate::large_object::{read_assembled, select_range};
use crate::wire::{
    ByteRanges, ConditionOutcome, MultipartRanges, REPRESENTATION_HEADERS, RangeError, Response,
    ResponseBody, byte_ranges, content_type_for, empty_response, evaluate_conditions, full_body,
    http_date, lazy_store_body, range_header, stream_body,
};

impl SwiftDoor {
    pub(crate) async fn put_object(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        body: RequestBody,
    ) -> SwiftResult<Response> {
        let pin = self.writable_container(request, container, key).await?;
        if_none_match_any(request)?;
        if let Some(source) = request.header("x-copy-from") {
            // What the body would say is the source's: Swift refuses one.
            if declared_length(&request.headers)
                .ok()
                .flatten()
                .is_some_and(|length| length > 0)
            {
                return Err(SwiftError::bad_request(
                    "Copy requests require a zero byte body",
                ));
            }
            if request.query.get("multipart-manifest") == Some("put") {
                return Err(SwiftError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Copying into a manifest is not allowed",
                ));
            }
            let (source_container, source_key) = copy_path(source)?;
            return self
                .copy_object(
                    request,
                    (&source_container, &source_key),
                    (container, key, &pin),
                )
                .await;
        }
        let meta = object_meta(request, key, None)?;
        if request.query.get("multipart-manifest") == Some("put") {
            return self
                .put_slo(request, (container, key, &pin), body, meta)
                .await;
        }
        let declared = declared_length(&request.headers)?;
        if declared.is_some_and(|length| length > self.limits.max_object_size) {
            return Err(too_large(self.limits.max_object_size));
        }
        let stream = BodyDataStream::new(body);
        let staged = self
            .store
            .stage(
                container,
                stream,
                &StageOptions {
                    sha256: false,
                    checksum: None,
                    max_size: self.limits.max_object_size,
                },
            )
            .await
            .map_err(|err| match err {
                StageError::Store(err) => SwiftError::from(err),
                StageError::Body(err) => {
                    tracing::debug!(error = %err, "request body failed");
                    SwiftError::bad_request("The request body ended early")
                }
            })?;
        if declared.is_some_and(|length| length != staged.size) {
            return Err(SwiftError::bad_request(
                "The body is shorter than its Content-Length",
            ));
        }
        check_etag(request, &hex::encode(staged.digests.md5))?;
        let info = self
            .commit(request, (container, key, &pin), staged, meta)
            .await?;
        Ok(created(&info, &info.etag))
    }

    pub(crate) async fn get_object(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        head: bool,
    ) -> SwiftResult<Response> {
        if matches!(request.caller, Caller::Anonymous)
            && self.edge.enabled()
            && request.query.get("multipart-manifest").is_none()
            && let Some(response) = self.public_read(request, container, key, head).await?
        {
            return Ok(response);
        }
        // Boxed: a request's future is as large as its largest path, and
        // this one holds far more across its awaits than a hit does.
        Box::pin(self.get_object_from_store(request, container, key, head)).await
    }

    /// A GET or HEAD answered from the store: large objects assembled,
    /// conditions and ranges applied.
    async fn get_object_from_store(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        head: bool,
    ) -> SwiftResult<Response> {
        let info = self.readable_object(request, container, key).await?;
        let assembled = self.assemble(request, info).await?;
        let view = &assembled.view;
        let large = assembled.segments.is_some();
        match evaluate_conditions(&request.headers, "", view) {
            ConditionOutcome::Proceed => {}
            ConditionOutcome::NotModified => return Ok(not_modified(view, large)),
            ConditionOutcome::PreconditionFailed => {
                return Err(SwiftError::precondition_failed("Precondition Failed"));
            }
        }
        let ranges = requested_ranges(request, view, head)?;
        if let ByteRanges::Several(parts) = &ranges {
            // Never a HEAD: requested_ranges answers those Whole.
            let mut bodies = Vec::with_capacity(parts.len());
            for (index, range) in parts.iter().enumerate() {
                // The range's own segments, not a copy of all of them per range.
                let (segments, range) = match &assembled.segments {
                    Some(all) => (Some(select_range(all, range.clone())), None),
                    None => (None, Some(range.clone())),
                };
                let reader = read_assembled(&self.store, view, segments, range);
                bodies.push(match index {
                    0 => stream_body(reader).await?,
                    _ => lazy_store_body(reader),
                });
            }
            let mut headers = HeaderMap::new();
            object_headers(&mut headers, view, large);
            return Ok(multipart_response(headers, parts, view.size, bodies));
        }
        let range = ranges.single();
        let length = range
            .as_ref()
            .map_or(view.size, |range| range.end - range.start);
        let body = if head {
            full_body(bytes::Bytes::new())
        } else {
            let segments = assembled.segments.clone();
            stream_body(read_assembled(&self.store, view, segments, range.clone())).await?
        };
        let mut response = http::Response::new(body);
        let headers = response.headers_mut();
        object_headers(headers, view, large);
        put_header(headers, "content-length", &length.to_string());
        if let Some(range) = &range {
            partial(&mut response, range, view.size);
        }
        Ok(response)
    }

    /// An anonymous read through the edge cache; `None` when the object is
    /// not one the cache keeps or its copy turned out damaged (the caller
    /// reads the store).
    async fn public_read(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        head: bool,
    ) -> SwiftResult<Option<Response>> {
        let bucket = self
            .edge
            .bucket(&self.store, container)
            .await?
            .filter(|bucket| bucket.account == request.account);
        self.authorize(request, bucket.as_deref(), Some(key), Access::Read)?;
        if bucket.is_none() {
            return Err(SwiftError::not_found());
        }
        let Some((cached, outcome)) = self.edge.get(&self.store, container, key).await else {
            return Ok(None);
        };
        let info = &cached.info;
        let mut response = match evaluate_conditions(&request.headers, "", info) {
            ConditionOutcome::Proceed => {
                let ranges = requested_ranges(request, info, head)?;
                let cached_headers = || {
                    cached.headers(Dialect::Swift, |info| {
                        let mut headers = HeaderMap::new();
                        object_headers(&mut headers, info, false);
                        headers
                    })
                };
                if let ByteRanges::Several(parts) = &ranges {
                    let Some(bodies) = self.edge.serve_parts(&cached, parts).await else {
                        return Ok(None);
                    };
                    multipart_response(cached_headers(), parts, info.size, bodies)
                } else {
                    let range = ranges.single();
                    let Some(body) = self.edge.serve(&cached, range.as_ref(), head).await else {
                        return Ok(None);
                    };
                    let length = range
                        .as_ref()
                        .map_or(info.size, |range| range.end - range.start);
                    let mut response = http::Response::new(body);
                    *response.headers_mut() = cached_headers();
                    response.headers_mut().insert(
                        http::header::CONTENT_LENGTH,
                        http::HeaderValue::from(length),
                    );
                    if let Some(range) = range {
                        partial(&mut response, &range, info.size);
                    }
                    response
                }
            }
            ConditionOutcome::NotModified => not_modified(info, false),
            ConditionOutcome::PreconditionFailed => {
                return Err(SwiftError::precondition_failed("Precondition Failed"));
            }
        };
        let headers = response.headers_mut();
        headers.insert(
            crate::wire::names::X_CACHE,
            http::HeaderValue::from_static(outcome.header()),
        );
        headers.insert(
            http::header::AGE,
            http::HeaderValue::from(cached.age_secs()),
        );
        // With an Origin the door's wrapper decorates the answer; without,
        // a shared cache must still know it varies by one.
        if let Some(bucket) = &bucket {
            if !request.headers.contains_key(http::header::ORIGIN) {
                crate::cors::vary_by_origin(bucket, headers);
            }
            // Here, with the record at hand: the door's wrapper leaves
            // answers from the cache (`X-Cache`) alone.
            crate::public::vary_by_referrer(bucket, headers);
        }
        Ok(Some(response))
    }

    pub(crate) async fn post_object(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<Response> {
        let pin = self.writable_container(request, container, key).await?;
        let current = self.existing_object(container, key).await?;
        let meta = object_meta(request, key, Some(&current))?;
        let etag = Some(current.etag.clone());
        self.store
            .replace_object_meta_pinned((container, &pin), key, meta, etag)
            .await?;
        Ok(empty_response(StatusCode::ACCEPTED))
    }

    pub(crate) async fn delete_object(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<Response> {
        let pin = self.writable_container(request, container, key).await?;
        if request.query.get("multipart-manifest") == Some("delete") {
            let current = self.existing_object(container, key).await?;
            if is_slo(&current) {
                let report = self.delete_slo(request, &current).await?;
                return report.into_response(super::listing::format_of(request));
            }
        }
        match self
            .store
            .delete_object_pinned(container, key, &pin)
            .await?
        {
            Some(deleted) if !deleted.is_expired_at(request.now) => {
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            _ => Err(SwiftError::not_found()),
        }
    }

    /// `COPY /v1/AUTH_a/c/o` with `Destination: c2/o2`.
    pub(crate) async fn copy_method(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<Response> {
        if_none_match_any(request)?;
        let destination = request
            .header("destination")
            .ok_or_else(|| SwiftError::precondition_failed("Destination header required"))?;
        let (dest_container, dest_key) = copy_path(destination)?;
        strata_store::validate_key(&dest_key)?;
        let pin = self
            .writable_container(request, &dest_container, &dest_key)
            .await?;
        self.copy_object(
            request,
            (container, key),
            (&dest_container, &dest_key, &pin),
        )
        .await
    }

    /// Copies an object within the request's account into `container` as
    /// the caller found it writable (`pin`); a large object is copied
    /// assembled, unless `multipart-manifest=get` asks for the manifest.
    async fn copy_object(
        &self,
        request: &SwiftRequest,
        (source_container, source_key): (&str, &str),
        (container, key, pin): (&str, &str, &BucketPin),
    ) -> SwiftResult<Response> {
        for header in ["destination-account", "x-copy-from-account"] {
            if let Some(account) = request.header(header)
                && account.trim_start_matches("AUTH_") != request.account
            {
                return Err(SwiftError::precondition_failed(
                    "Copies between accounts are not supported",
                ));
            }
        }
        strata_store::validate_key(source_key)?;
        let source = self
            .readable_object(request, source_container, source_key)
            .await?;
        let assembled = self.assemble(request, source).await?;
        let source = &assembled.view;
        // A large object's copy is one plain object of its assembled size.
        let max_size = self.limits.max_object_size;
        if source.size > max_size {
            return Err(too_large(max_size));
        }
        let mut meta = object_meta(request, key, Some(source))?;
        if assembled.segments.is_some() {
            meta.headers
                .retain(|name, _| !crate::large_object::is_large_object_header(name));
        }
        let options = StageOptions {
            sha256: false,
            checksum: None,
            max_size,
        };
        let body = read_assembled(&self.store, source, assembled.segments.clone(), None);
        let staged =
            self.store
                .stage(container, body, &options)
                .await
                .map_err(|err| match err {
                    StageError::Body(err) | StageError::Store(err) => SwiftError::from(err),
                })?;
        let info = self
            .commit(request, (container, key, pin), staged, meta)
            .await?;
        let mut response = created(&info, &info.etag);
        let headers = response.headers_mut();
        put_header(
            headers,
            "x-copied-from",
            &format!("{source_container}/{source_key}"),
        );
        put_header(
            headers,
            "x-copied-from-last-modified",
            &http_date(source.last_modified_ms),
        );
        Ok(response)
    }

    /// Stores `staged` as `key` in `container` as the caller found it
    /// writable (`pin`), with the request's `If-None-Match: *`.
    pub(super) async fn commit(
        &self,
        request: &SwiftRequest,
        (container, key, pin): (&str, &str, &BucketPin),
        staged: strata_store::StagedBody,
        meta: ObjectMeta,
    ) -> SwiftResult<ObjectInfo> {
        Ok(self
            .store
            .put_object(
                container,
                key,
                staged,
                meta,
                None,
                put_conditions(request, pin),
            )
            .await?)
    }

    /// Checks the caller may write `key` in `container`, which must exist.
    async fn writable_container(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<BucketPin> {
        let bucket = self.container_of(&request.account, container).await?;
        self.authorize(request, bucket.as_ref(), Some(key), Access::Write)?;
        bucket
            .map(|bucket| BucketPin::of(&bucket))
            .ok_or_else(SwiftError::not_found)
    }

    /// The object, if the caller may read it and it has not expired.
    async fn readable_object(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
    ) -> SwiftResult<ObjectInfo> {
        let bucket = self.container_of(&request.account, container).await?;
        self.authorize(request, bucket.as_ref(), Some(key), Access::Read)?;
        if bucket.is_none() {
            return Err(SwiftError::not_found());
        }
        self.existing_object(container, key).await
    }

    /// The object; an expired one is gone.
    async fn existing_object(&self, container: &str, key: &str) -> SwiftResult<ObjectInfo> {
        Ok(self.store.head_object(container, key).await?)
    }
}

/// Metadata of a write. With `base` (POST, copies) the stored content type
/// and headers carry over unless the request changes them; user metadata is
/// replaced on POST and merged on copies (unless `X-Fresh-Metadata`).
fn object_meta(
    request: &SwiftRequest,
    key: &str,
    base: Option<&ObjectInfo>,
) -> SwiftResult<ObjectMeta> {
    let is_copy = request.header("x-copy-from").is_some() || request.method.as_str() == "COPY";
    let fresh = request.header("x-fresh-metadata").is_some_and(truthy);
    let mut meta = ObjectMeta::default();
    if let Some(base) = base {
        meta.content_type = base.meta.content_type.clone();
        if request.method == http::Method::POST {
            // A POST replaces the metadata as Swift's object server does:
            // what it does not send (X-Delete-At, X-Object-Manifest,
            // Content-Disposition…) is gone; the content type and an SLO's
            // marker, size and ETag, kept with the data, stay.
            meta.headers = base
                .meta
                .headers
                .iter()
                .filter(|(name, _)| {
                    crate::large_object::is_large_object_header(name)
                        && name.as_str() != HDR_OBJECT_MANIFEST
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
        } else {
            meta.headers = base.meta.headers.clone();
            // A copy keeps its source's X-Delete-At, as Swift's does (it
            // must not outlive the retention of what it copies); a fresh
            // one starts without, unless the request sets one (below).
            if !(is_copy && fresh) {
                meta.delete_at = base.meta.delete_at;
            }
        }
        if is_copy && !fresh {
            meta.user = base.meta.user.clone();
        }
    }
    apply_changes(
        &mut meta.user,
        meta_changes(&request.headers, MetaKind::Object)?,
    )?;
    if let Some(content_type) = request
        .header("content-type")
        .filter(|value| !value.is_empty())
    {
        meta.content_type = Some(content_type.to_owned());
    }
    // X-Detect-Content-Type: the name's type wins over one sent, as in Swift.
    if meta.content_type.is_none() || request.header("x-detect-content-type").is_some_and(truthy) {
        meta.content_type = Some(content_type_for(key));
    }
    for name in REPRESENTATION_HEADERS {
        if let Some(value) = request.header(name) {
            meta.headers.insert(name.to_owned(), value.to_owned());
        }
    }
    if let Some(manifest) = request.header(HDR_OBJECT_MANIFEST) {
        if manifest.trim_start_matches('/').split_once('/').is_none() {
            return Err(SwiftError::bad_request(
                "X-Object-Manifest must be in the format container/prefix",
            ));
        }
        meta.headers
            .insert(HDR_OBJECT_MANIFEST.to_owned(), manifest.to_owned());
    }
    if let Some(delete_at) = delete_at(request)? {
        meta.delete_at = Some(delete_at);
    } else if request.header("x-remove-delete-at").is_some() {
        meta.delete_at = None;
    }
    Ok(meta)
}

/// `X-Delete-After` (seconds from now), which wins as in Swift, or
/// `X-Delete-At` (unix seconds): integers, as Swift's `int()` takes them; a
/// time in the past is refused.
fn delete_at(request: &SwiftRequest) -> SwiftResult<Option<u64>> {
    // Any size, as Python's ints: a time too far to store is forever.
    let parse = |name: &str, text: &str| {
        text.trim()
            .parse::<i128>()
            .map_err(|_| SwiftError::bad_request(format!("Non-integer {name}")))
    };
    let clamp = |value: i128| u64::try_from(value.max(0)).unwrap_or(u64::MAX);
    let at = match (
        request.header("x-delete-after"),
        request.header("x-delete-at"),
    ) {
        (Some(after), _) => {
            let after = parse("X-Delete-After", after)?;
            if after < 0 {
                return Err(SwiftError::bad_request("X-Delete-After in past"));
            }
            request.now.saturating_add(clamp(after))
        }
        (None, Some(at)) => clamp(parse("X-Delete-At", at)?),
        (None, None) => return Ok(None),
    };
    if at <= request.now {
        return Err(SwiftError::bad_request("X-Delete-At in past"));
    }
    Ok(Some(at))
}

/// `If-None-Match` on a PUT: only `*` (create, never overwrite) means
/// something to Swift, which refuses any other value rather than ignore it.
fn if_none_match_any(request: &SwiftRequest) -> SwiftResult<bool> {
    match request.header("if-none-match") {
        None => Ok(false),
        Some(value) if value.split(',').any(|tag| tag.trim() == "*") => Ok(true),
        Some(_) => Err(SwiftError::bad_request("If-None-Match only supports *")),
    }
}

/// A container is the account's: the write was allowed on that account's.
/// The request's `ETag`, if it sent one, must be `etag` (hex MD5, quoted
/// or not, either case): Swift's 422 otherwise, and nothing is written.
pub(super) fn check_etag(request: &SwiftRequest, etag: &str) -> SwiftResult<()> {
    match request.header("etag") {
        Some(expected) if !expected.trim().trim_matches('"').eq_ignore_ascii_case(etag) => {
            Err(SwiftError::unprocessable(
                "Unprocessable Entity: the body does not match the ETag header",
            ))
        }
        _ => Ok(()),
    }
}

/// A write's conditions: `If-None-Match: *`, and the container as the
/// caller found it writable (`pin`), so that one deleted and created again
/// since, by any account, is not written to.
fn put_conditions(request: &SwiftRequest, pin: &BucketPin) -> PutConditions {
    PutConditions {
        if_match: None,
        // Refused at the start of the request otherwise.
        if_none_match_any: if_none_match_any(request).unwrap_or(false),
        ..PutConditions::pinned(pin)
    }
}

/// `Content-Length`, or `None` for a chunked body; neither is 411.
fn declared_length(headers: &HeaderMap) -> SwiftResult<Option<u64>> {
    if let Some(length) = crate::wire::header_str(headers, "content-length") {
        return length
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| SwiftError::bad_request("Invalid Content-Length"));
    }
    let chunked = crate::wire::header_str(headers, "transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        Ok(None)
    } else {
        Err(SwiftError::new(
            StatusCode::LENGTH_REQUIRED,
            "Length Required",
        ))
    }
}

fn too_large(limit: u64) -> SwiftError {
    SwiftError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request Entity Too Large: objects are at most {limit} bytes"),
    )
}

/// `container/object` of `X-Copy-From` and `Destination` (URL-encoded,
/// with or without a leading `/`).
fn copy_path(text: &str) -> SwiftResult<(String, String)> {
    let decoded = percent_encoding::percent_decode_str(text.trim())
        .decode_utf8()
        .map_err(|_| SwiftError::precondition_failed("Invalid UTF8 in the copy path"))?;
    let path = decoded.trim_start_matches('/');
    match path.split_once('/') {
        Some((container, key)) if !container.is_empty() && !key.is_empty() => {
            Ok((container.to_owned(), key.to_owned()))
        }
        _ => Err(SwiftError::precondition_failed(
            "Bad URL: copy paths must be container/object",
        )),
    }
}

/// The `Range` of a read; unsatisfiable is 416 with `Content-Range: */size`.
/// HEAD ignores it (RFC 9110 §14.2 defines ranges for GET only; Swift
/// answers a ranged HEAD with the whole object's headers).
fn requested_ranges(
    request: &SwiftRequest,
    info: &ObjectInfo,
    head: bool,
) -> SwiftResult<ByteRanges> {
    if head {
        return Ok(ByteRanges::Whole);
    }
    let size = info.size;
    byte_ranges(range_header(&request.headers, info), size).map_err(|RangeError::Unsatisfiable| {
        SwiftError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "Requested Range Not Satisfiable",
        )
        .with_header("content-range", format!("bytes */{size}"))
    })
}

/// Makes a response a 206 for `range` of an object of `size` bytes.
fn partial(response: &mut Response, range: &std::ops::Range<u64>, size: u64) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    put_header(
        response.headers_mut(),
        "content-range",
        &format!(
            "bytes {}-{}/{size}",
            range.start,
            range.end.saturating_sub(1)
        ),
    );
}

/// A 206 of several `ranges` of an object of `size` bytes, as one
/// `multipart/byteranges` body of `bodies`; each part is of the
/// object's type, which `headers` carry.
fn multipart_response(
    mut headers: HeaderMap,
    ranges: &[std::ops::Range<u64>],
    size: u64,
    bodies: Vec<ResponseBody>,
) -> Response {
    let part_type = crate::wire::header_str(&headers, http::header::CONTENT_TYPE)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let multipart = MultipartRanges::new(ranges, size, &part_type);
    put_header(&mut headers, "content-type", &multipart.content_type());
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(multipart.content_length()),
    );
    let mut response = http::Response::new(multipart.body(bodies));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.headers_mut() = headers;
    response
}

fn not_modified(info: &ObjectInfo, large: bool) -> Response {
    let mut response = empty_response(StatusCode::NOT_MODIFIED);
    put_header(response.headers_mut(), "etag", &shown_etag(info, large));
    put_header(
        response.headers_mut(),
        "last-modified",
        &http_date(info.last_modified_ms),
    );
    crate::wire::add_freshness_headers(response.headers_mut(), info);
    response
}

/// Large objects show their ETag quoted, as Swift does, plain objects bare.
fn shown_etag(info: &ObjectInfo, large: bool) -> String {
    if large {
        format!("\"{}\"", info.etag)
    } else {
        info.etag.clone()
    }
}

fn created(info: &ObjectInfo, etag: &str) -> Response {
    let mut response = empty_response(StatusCode::CREATED);
    let headers = response.headers_mut();
    version_headers(headers, info, etag);
    put_header(headers, "content-type", "text/html; charset=UTF-8");
    response
}

/// ETag, Last-Modified and X-Timestamp: which version of the object this is.
fn version_headers(headers: &mut HeaderMap, info: &ObjectInfo, etag: &str) {
    put_header(headers, "etag", etag);
    put_header(headers, "last-modified", &http_date(info.last_modified_ms));
    put_header(
        headers,
        "x-timestamp",
        &swift_timestamp(info.last_modified_ms),
    );
}

fn object_headers(headers: &mut HeaderMap, info: &ObjectInfo, large: bool) {
    version_headers(headers, info, &shown_etag(info, large));
    put_header(headers, "accept-ranges", "bytes");
    put_header(
        headers,
        "content-type",
        info.meta
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    );
    for (name, value) in &info.meta.headers {
        if REPRESENTATION_HEADERS.contains(&name.as_str())
            || name == HDR_OBJECT_MANIFEST
            || name == HDR_SLO
        {
            put_header(headers, name, value);
        }
    }
    if let Some(delete_at) = info.meta.delete_at {
        put_header(headers, "x-delete-at", &delete_at.to_string());
    }
    for (name, value) in &info.meta.user {
        put_header(headers, &MetaKind::Object.header(name), value);
    }
}

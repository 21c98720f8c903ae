//! The S3 door: request addressing (path- and virtual-hosted–style), SigV4
//! authentication, routing, and the wrapper that turns every outcome into an S3
//! response with a request id.

mod body;
mod bucket;
mod error;
mod headers;
mod list;
mod multipart;
mod object;
mod router;
mod website;
mod xml;

use std::time::SystemTime;

use crate::wire::RequestBody;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use strata_auth::{AuthError, Credential, PayloadMode, SigV4Config, verify_request};
use strata_store::Store;
use tracing::Instrument as _;

use crate::config::Limits;
use crate::directory::{Directory, STALE_PATIENCE};
use crate::wire::Origin;
pub use error::{S3Error, S3Result};
use router::{Query, S3Op};
use xml::XmlWriter;

pub use crate::wire::{Response, ResponseBody};

pub(crate) use crate::wire::{empty_response, full_body};

/// Everything the S3 handlers share.
pub struct S3Door {
    pub store: Store,
    /// Where access keys are looked up.
    pub credentials: Directory,
    pub sigv4: SigV4Config,
    pub region: String,
    pub s3_domain: Option<String>,
    pub limits: Limits,
    /// Anonymous reads of public objects are answered from here when they can be.
    pub edge: std::sync::Arc<crate::edge::EdgeCache>,
}

/// One authenticated, routed request.
pub(crate) struct S3Request {
    pub op: S3Op,
    pub headers: HeaderMap,
    pub query: Query,
    pub bucket: String,
    pub key: String,
    /// The path as the client sent it, still percent-encoded: website
    /// redirects append `/` to it whatever the addressing style.
    pub path_as_sent: String,
    /// `None` for an anonymous request (only `S3Op::allows_anonymous`).
    pub credential: Option<Credential>,
    pub payload: PayloadMode,
    /// How the client reached the gateway, for URLs in answers.
    pub origin: Origin,
}

impl S3Request {
    /// The account that signed the request; anonymous requests are refused.
    pub fn account(&self) -> S3Result<&str> {
        self.credential
            .as_ref()
            .map(|credential| credential.account.as_str())
            .ok_or_else(S3Error::access_denied)
    }
}

impl S3Door {
    /// Answers one HTTP request; never fails (errors become S3 error responses).
    pub async fn handle(&self, request: http::Request<RequestBody>) -> Response {
        let request_id = hex::encode_upper(rand::random::<[u8; 8]>());
        let (parts, body) = request.into_parts();
        let is_head = parts.method == Method::HEAD;
        let origin = crate::wire::header_str(&parts.headers, "origin").map(str::to_owned);
        let method = parts.method.clone();
        let prepared = self.prepare(parts).await;
        let mut cors_bucket = None;
        let (op, response) = match prepared {
            Ok(request) => {
                let op = request.op;
                if origin.is_some() && op != S3Op::Preflight && !request.bucket.is_empty() {
                    cors_bucket = Some((request.bucket.clone(), request.credential.is_some()));
                }
                // Debug level, as in the Swift door: failures log the id themselves.
                let span = tracing::debug_span!("s3", op = op.name(), id = %request_id);
                let outcome = self.dispatch(request, body).instrument(span).await;
                (Some(op), outcome)
            }
            Err(err) => (None, Err(err)),
        };
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                let op_name = op.map_or("-", S3Op::name);
                if err.status.is_server_error() {
                    tracing::warn!(op = op_name, id = %request_id, code = err.code, message = %err.message, "request failed");
                } else {
                    tracing::debug!(op = op_name, id = %request_id, code = err.code, message = %err.message, "request refused");
                }
                error_response(&err, &request_id, is_head)
            }
        };
        let mut response = response;
        if let (Some(origin), Some((name, signed))) = (origin, cors_bucket)
            && let Ok(Some(bucket)) = self.edge.bucket(&self.store, &name).await
        {
            let request = crate::cors::CorsRequest {
                method: method.as_str(),
                origin: &origin,
                signed,
            };
            crate::cors::decorate(&bucket, &request, response.headers_mut());
        }
        with_request_id(response, &request_id)
    }

    async fn prepare(&self, parts: http::request::Parts) -> S3Result<S3Request> {
        let (bucket, key) = self.address(&parts.uri, &parts.headers)?;
        let query = router::parse_query(parts.uri.query())?;
        let op = router::route(
            &parts.method,
            !bucket.is_empty(),
            !key.is_empty(),
            &query,
            parts.headers.contains_key("x-amz-copy-source"),
        )?;
        // One time for both verdicts: a second one differs only by the view.
        let now = SystemTime::now();
        let verify = || {
            verify_request(
                &parts.method,
                &parts.uri,
                &parts.headers,
                &self.credentials,
                &self.sigv4,
                now,
            )
        };
        // Keys are not judged by a directory that may have missed a change
        // (a key revoked or added while the metadata service was away). One
        // being read again after a failover is waited for, a while, and the
        // request judged again by what it read: the key may be gone.
        let signed = |verdict: &Result<_, AuthError>| !matches!(verdict, Err(AuthError::Anonymous));
        let judged = self
            .credentials
            .judge_by_current(STALE_PATIENCE, verify, signed);
        let Some(verdict) = judged.await else {
            return Err(S3Error::new(
                "ServiceUnavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Please reduce your request rate.",
            ));
        };
        let verified = match verdict {
            Ok(verified) => Some(verified),
            Err(AuthError::Anonymous) if op.allows_anonymous() => None,
            Err(err) => return Err(err.into()),
        };
        if !key.is_empty() {
            strata_store::validate_key(&key).map_err(S3Error::from)?;
        }
        let origin = Origin::of(&parts);
        Ok(S3Request {
            op,
            headers: parts.headers,
            query,
            bucket,
            key,
            path_as_sent: parts.uri.path().to_owned(),
            credential: verified
                .as_ref()
                .map(|verified| verified.credential.clone()),
            payload: verified.map_or(PayloadMode::UnsignedPayload, |verified| verified.payload),
            origin,
        })
    }

    /// Bucket and key of a request: from the Host header when it is a subdomain of
    /// the configured S3 domain, otherwise from the first path segment.
    fn address(&self, uri: &Uri, headers: &HeaderMap) -> S3Result<(String, String)> {
        let path = percent_encoding::percent_decode_str(uri.path())
            .decode_utf8()
            .map_err(|_| {
                S3Error::new(
                    "InvalidURI",
                    StatusCode::BAD_REQUEST,
                    "Couldn't parse the specified URI: the path is not UTF-8.",
                )
            })?;
        let path = path.strip_prefix('/').unwrap_or(&path);
        if let Some(bucket) = self.virtual_host_bucket(uri, headers) {
            return Ok((bucket, path.to_owned()));
        }
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        Ok((bucket.to_owned(), key.to_owned()))
    }

    /// Whether the request's host names a bucket (virtual-hosted style).
    pub(crate) fn is_virtual_host(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.virtual_host_bucket(uri, headers).is_some()
    }

    fn virtual_host_bucket(&self, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        let domain = self.s3_domain.as_deref()?;
        // Port, trailing dot and case as the other host routes take them; an
        // IP or a malformed host is no virtual host.
        let host = crate::directory::request_host(uri, headers)?;
        let bucket = host.strip_suffix(domain)?.strip_suffix('.')?;
        (!bucket.is_empty()).then(|| bucket.to_owned())
    }

    async fn dispatch(&self, request: S3Request, body: RequestBody) -> S3Result<Response> {
        use S3Op::*;
        if request.credential.is_none()
            && let Some(response) = self.website_read(&request).await?
        {
            return Ok(response);
        }
        // The signer's role, as the directory held it when the key was
        // looked up for this request's signature.
        if let Some(credential) = &request.credential
            && credential.role < request.op.least_role()
        {
            return Err(S3Error::access_denied());
        }
        if matches!(request.op, PutObject | CopyObject | CreateMultipartUpload)
            && request
                .headers
                .get("x-amz-tagging")
                .is_some_and(|tags| !tags.is_empty())
        {
            // Tags a client sets must not vanish unsaid.
            return Err(S3Error::not_implemented("Object tagging (x-amz-tagging)"));
        }
        match request.op {
            ListBuckets => self.list_buckets(&request).await,
            CreateBucket => self.create_bucket(&request, body).await,
            HeadBucket => self.head_bucket(&request).await,
            DeleteBucket => self.delete_bucket(&request).await,
            GetBucketLocation => self.get_bucket_location(&request).await,
            GetBucketVersioning => self.get_bucket_versioning(&request).await,
            GetBucketAcl | GetObjectAcl => self.get_acl(&request).await,
            GetObjectTagging => self.get_object_tagging(&request).await,
            DeleteObjectTagging => self.delete_object_tagging(&request).await,
            PutBucketAcl => self.put_bucket_acl(&request, body).await,
            GetBucketPolicy => self.get_bucket_policy(&request).await,
            PutBucketPolicy => self.put_bucket_policy(&request, body).await,
            DeleteBucketPolicy => self.delete_bucket_policy(&request).await,
            PutBucketCors => self.put_bucket_cors(&request, body).await,
            GetBucketCors => self.get_bucket_cors(&request).await,
            DeleteBucketCors => self.delete_bucket_cors(&request).await,
            PutBucketWebsite => self.put_bucket_website(&request, body).await,
            GetBucketWebsite => self.get_bucket_website(&request).await,
            DeleteBucketWebsite => self.delete_bucket_website(&request).await,
            Preflight => {
                let bucket = self.edge.bucket(&self.store, &request.bucket).await?;
                Ok(crate::cors::preflight(bucket.as_deref(), &request.headers))
            }
            ListObjects | ListObjectsV2 | ListObjectVersions => self.list_objects(&request).await,
            ListMultipartUploads => self.list_uploads(&request).await,
            DeleteObjects => self.delete_objects(&request, body).await,
            PutObject => self.put_object(&request, body).await,
            CopyObject => self.copy_object(&request).await,
            GetObject => self.get_object(&request, false).await,
            HeadObject => self.get_object(&request, true).await,
            DeleteObject => self.delete_object(&request).await,
            CreateMultipartUpload => self.create_upload(&request).await,
            UploadPart => self.upload_part(&request, body).await,
            UploadPartCopy => self.upload_part_copy(&request).await,
            CompleteMultipartUpload => self.complete_upload(&request, body).await,
            AbortMultipartUpload => self.abort_upload(&request).await,
            ListParts => self.list_parts(&request).await,
        }
    }
}

/// Whether a request carries an AWS signature (a SigV4 or SigV2
/// `Authorization` header, or a SigV4 or SigV2 presigned query): it is
/// for the S3 door,
/// whatever its path looks like to the others (a bucket may be called
/// `v1`, `v3`, `auth` or `admin`).
pub(crate) fn is_aws_signed(uri: &Uri, headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("AWS"))
        || uri.query().is_some_and(|query| {
            query.contains("X-Amz-Signature")
                || (query.contains("AWSAccessKeyId=") && query.contains("Signature="))
        })
}

/// `GET /health` without credentials. With credentials it is a listing of a
/// bucket named `health`, as S3 clients mean it.
pub(crate) fn is_health_check(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && uri.path() == "/health"
        && !headers.contains_key(http::header::AUTHORIZATION)
        && !uri.query().is_some_and(|query| query.contains("X-Amz-"))
}

pub(crate) fn xml_response(status: StatusCode, document: impl Into<bytes::Bytes>) -> Response {
    let mut response = http::Response::new(full_body(document));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

fn error_response(err: &S3Error, request_id: &str, is_head: bool) -> Response {
    let mut response = if is_head {
        // HEAD answers carry no body, so clients only see the status.
        empty_response(err.status)
    } else {
        let mut xml = XmlWriter::bare("Error");
        xml.element("Code", err.code)
            .element("Message", &err.message);
        for (name, value) in &err.extra {
            xml.element(name, value);
        }
        xml.element("RequestId", request_id);
        xml_response(err.status, xml.finish())
    };
    for (name, value) in &err.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amz-request-id", value.clone());
        headers.insert("x-amz-id-2", value);
    }
    headers.insert(http::header::SERVER, HeaderValue::from_static("strata"));
    response
}

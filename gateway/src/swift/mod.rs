//! The Swift door: OpenStack Swift's API v1 over the same store the S3 door
//! uses. `/v1/AUTH_<account>[/<container>[/<object>]]` with a token from the
//! auth endpoints, a TempURL, or nothing (public containers); `/info` lists
//! what this door supports.
//!
//! An account is a directory account, a container is a bucket the account
//! owns, an object is the same record S3 reads (`X-Object-Meta-*` and
//! `x-amz-meta-*` are one set of metadata). Container settings (ACLs,
//! metadata) live in the bucket's `attrs` under the `swift:` names below.

mod access;
pub(crate) use access::{acl as container_acl, user_reads};
mod account;
mod bulk;
mod container;
mod error;
mod info;
mod large;
mod listing;
mod meta;
mod object;
mod web;

use crate::wire::RequestBody;
use http::{HeaderMap, HeaderValue, Method};
use strata_store::{BucketInfo, Store};
use tracing::Instrument as _;

use crate::config::Limits;
use crate::directory::Directory;
use crate::wire::{Query, Response, empty_response, text_response};
pub use error::{SwiftError, SwiftResult};

use access::Caller;

/// Bucket attributes owned by this door.
pub(crate) const ATTR_READ_ACL: &str = crate::public::ATTR_SWIFT_READ;
pub(crate) const ATTR_WRITE_ACL: &str = crate::public::ATTR_SWIFT_WRITE;
/// Prefix of container metadata (`X-Container-Meta-Color` → `swift:meta:color`).
pub(crate) const ATTR_META_PREFIX: &str = "swift:meta:";

/// Everything the Swift handlers share.
pub struct SwiftDoor {
    pub store: Store,
    pub directory: Directory,
    pub limits: Limits,
    /// The region recorded on containers created through Swift.
    pub region: String,
    /// Public reads are answered from here when they can be.
    pub edge: std::sync::Arc<crate::edge::EdgeCache>,
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Account,
    Container(String),
    Object(String, String),
}

/// One authenticated, parsed request.
pub(crate) struct SwiftRequest {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    /// The target, still percent-encoded: TempURL signatures cover its path.
    pub uri: http::Uri,
    /// The path the visitor sent, when a custom domain's rewrite made
    /// `uri` another: website redirects point at it.
    pub rewritten_from: Option<String>,
    pub account: String,
    pub target: Target,
    pub caller: Caller,
    /// Unix seconds when the request arrived.
    pub now: u64,
}

impl SwiftRequest {
    /// The path as sent, still percent-encoded.
    pub fn raw_path(&self) -> &str {
        self.uri.path()
    }

    /// The path the visitor sent, before any custom domain's rewrite.
    pub fn path_as_sent(&self) -> &str {
        self.rewritten_from.as_deref().unwrap_or(self.uri.path())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        crate::wire::header_str(&self.headers, name)
    }
}

impl SwiftDoor {
    /// Whether a path is this door's: `/info`, or under `/v1/AUTH_`. The
    /// router has sent AWS-signed requests to S3 before it asks (an S3
    /// bucket may be called `v1`).
    pub fn serves(path: &str) -> bool {
        path == "/info" || path.starts_with("/v1/AUTH_")
    }

    /// Answers one request; never fails (errors become Swift error responses).
    pub async fn handle(&self, request: http::Request<RequestBody>) -> Response {
        let trans_id = new_trans_id();
        let (parts, body) = request.into_parts();
        let is_head = parts.method == Method::HEAD;
        // Debug level: at the default info level an enabled span would format
        // its fields on every request, and failures log the id themselves.
        let span = tracing::debug_span!("swift", method = %parts.method, id = %trans_id);
        let origin =
            crate::wire::header_str(&parts.headers, http::header::ORIGIN).map(str::to_owned);
        let method = parts.method.clone();
        let mut cors_container = None;
        // An anonymous request's answer may depend on its Referer.
        let mut anonymous = false;
        let outcome = async {
            if parts.uri.path() == "/info" {
                return info::answer(self, &parts.method);
            }
            let request = self.prepare(parts).await?;
            if let Target::Container(container) | Target::Object(container, _) = &request.target {
                if request.method == Method::OPTIONS {
                    let bucket = self.edge.bucket(&self.store, container).await?;
                    let bucket = bucket.filter(|bucket| bucket.account == request.account);
                    return Ok(crate::cors::preflight(bucket.as_deref(), &request.headers));
                }
                cors_container = Some((container.clone(), request.account.clone()));
                anonymous = matches!(request.caller, access::Caller::Anonymous);
            }
            self.dispatch(request, body).await
        }
        .instrument(span)
        .await;
        let mut response = match outcome {
            Ok(response) => response,
            Err(err) => {
                if err.status.is_server_error() {
                    tracing::warn!(id = %trans_id, status = %err.status, text = %err.text, "swift request failed");
                } else {
                    tracing::debug!(id = %trans_id, status = %err.status, text = %err.text, "swift request refused");
                }
                error_response(err, is_head)
            }
        };
        // Answers from the edge cache (`X-Cache`) said whether they vary by
        // Referer where they had the record: a public hit looks it up once.
        let vary_referrer =
            anonymous && !response.headers().contains_key(crate::wire::names::X_CACHE);
        // Only the path's own account's container: another's rules would
        // not apply, and would tell that it exists.
        if let Some((container, account)) =
            cors_container.filter(|_| origin.is_some() || vary_referrer)
            && let Ok(Some(bucket)) = self.edge.bucket(&self.store, &container).await
            && bucket.account == account
        {
            if let Some(origin) = &origin {
                let request = crate::cors::CorsRequest {
                    method: method.as_str(),
                    origin,
                    // Swift answers `*` to a wildcard rule whoever asks.
                    signed: false,
                };
                crate::cors::decorate(&bucket, &request, response.headers_mut());
            }
            if vary_referrer {
                crate::public::vary_by_referrer(&bucket, response.headers_mut());
            }
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&trans_id) {
            headers.insert(crate::wire::names::X_TRANS_ID, value.clone());
            headers.insert(crate::wire::names::X_OPENSTACK_REQUEST_ID, value);
        }
        headers.insert(http::header::SERVER, HeaderValue::from_static("strata"));
        response
    }

    async fn prepare(&self, mut parts: http::request::Parts) -> SwiftResult<SwiftRequest> {
        let rewritten_from = parts
            .extensions
            .remove::<crate::wire::PathAsSent>()
            .map(|path| path.0);
        let (account, target) = parse_path(parts.uri.path())?;
        let query = Query::parse(parts.uri.query())
            .ok_or_else(|| SwiftError::bad_request("Invalid UTF8 in the query string"))?;
        let now = crate::wire::unix_now();
        let caller = access::authenticate(&self.directory, &parts.headers, &query, now).await?;
        if let Target::Object(_, key) = &target {
            strata_store::validate_key(key)?;
        }
        Ok(SwiftRequest {
            method: parts.method,
            headers: parts.headers,
            query,
            uri: parts.uri,
            rewritten_from,
            account,
            target,
            caller,
            now,
        })
    }

    /// Every path but an object's GET and HEAD is boxed: a request's
    /// future is as large as its largest path, and hyper copies each
    /// request's future whole. A public hit's was 8 KiB with every path
    /// inline, 4.5 KiB now; the boxed paths pay an allocation instead.
    async fn dispatch(&self, request: SwiftRequest, body: RequestBody) -> SwiftResult<Response> {
        let target = request.target.clone();
        let method = request.method.clone();
        if matches!(request.caller, Caller::TempUrl) {
            access::refuse_other_objects(&request)?;
        }
        if request.query.has("bulk-delete")
            && target == Target::Account
            && (method == Method::POST || method == Method::DELETE)
        {
            return Box::pin(self.bulk_delete(&request, body)).await;
        }
        match (&target, method) {
            (Target::Account, Method::HEAD) => Box::pin(self.head_account(&request)).await,
            (Target::Account, Method::GET) => Box::pin(self.list_account(&request)).await,
            (Target::Account, Method::POST) => Box::pin(self.post_account(&request)).await,
            (Target::Container(container), Method::PUT) => {
                Box::pin(self.put_container(&request, container)).await
            }
            (Target::Container(container), Method::HEAD | Method::GET) => {
                let head = request.method == Method::HEAD;
                if matches!(request.caller, Caller::Anonymous)
                    && let Some(page) =
                        Box::pin(self.web_directory(&request, container, "", head)).await?
                {
                    return Ok(page);
                }
                Box::pin(self.get_container(&request, container, head)).await
            }
            (Target::Container(container), Method::POST) => {
                Box::pin(self.post_container(&request, container)).await
            }
            (Target::Container(container), Method::DELETE) => {
                Box::pin(self.delete_container(&request, container)).await
            }
            (Target::Object(container, key), Method::PUT) => {
                Box::pin(self.put_object(&request, container, key, body)).await
            }
            (Target::Object(container, key), Method::HEAD | Method::GET) => {
                let head = request.method == Method::HEAD;
                let anonymous = matches!(request.caller, Caller::Anonymous);
                if anonymous
                    && key.ends_with('/')
                    && let Some(page) =
                        Box::pin(self.web_directory(&request, container, key, head)).await?
                {
                    return Ok(page);
                }
                match self.get_object(&request, container, key, head).await {
                    Err(err)
                        if anonymous
                            && matches!(
                                err.status,
                                http::StatusCode::NOT_FOUND | http::StatusCode::UNAUTHORIZED
                            ) =>
                    {
                        Box::pin(self.web_object_missing(&request, container, key, err, head)).await
                    }
                    answer => answer,
                }
            }
            (Target::Object(container, key), Method::POST) => {
                Box::pin(self.post_object(&request, container, key)).await
            }
            (Target::Object(container, key), Method::DELETE) => {
                Box::pin(self.delete_object(&request, container, key)).await
            }
            (Target::Object(container, key), method) if method.as_str() == "COPY" => {
                Box::pin(self.copy_method(&request, container, key)).await
            }
            _ => Err(SwiftError::method_not_allowed()),
        }
    }

    /// The container `name` of the request's account, if it exists. A bucket
    /// of another account by that name is not this account's container.
    pub(crate) async fn container_of(
        &self,
        account: &str,
        name: &str,
    ) -> SwiftResult<Option<BucketInfo>> {
        match self.store.bucket(name).await {
            Ok(bucket) if bucket.account == account => Ok(Some(bucket)),
            Ok(_) | Err(strata_store::StoreError::NoSuchBucket) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// `/v1/AUTH_acct`, `/v1/AUTH_acct/container`, `/v1/AUTH_acct/container/obj/ect`
/// (a trailing `/` after the container still means the container).
fn parse_path(raw: &str) -> SwiftResult<(String, Target)> {
    let rest = raw
        .strip_prefix("/v1/AUTH_")
        .ok_or_else(SwiftError::not_found)?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| SwiftError::precondition_failed("Invalid UTF8 or contains NULL"))
    };
    let mut pieces = rest.splitn(3, '/');
    let account = decode(pieces.next().unwrap_or(""))?;
    if account.is_empty() {
        return Err(SwiftError::not_found());
    }
    let container = decode(pieces.next().unwrap_or(""))?;
    let object = decode(pieces.next().unwrap_or(""))?;
    if [&account, &container, &object]
        .iter()
        .any(|part| part.contains('\0'))
    {
        return Err(SwiftError::precondition_failed(
            "Invalid UTF8 or contains NULL",
        ));
    }
    let target = match (container.is_empty(), object.is_empty()) {
        (true, _) => Target::Account,
        (false, true) => Target::Container(container),
        (false, false) => Target::Object(container, object),
    };
    Ok((account, target))
}

/// `tx` + 21 random hex digits + `-` + the time in hex, as Swift's proxy
/// makes them; built in place, since every request carries one.
fn new_trans_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// `value`'s low `digits` hex digits, most significant first.
    fn push_hex(id: &mut Vec<u8>, value: u128, digits: u32) {
        id.extend(
            (0..digits)
                .rev()
                .map(|shift| HEX[((value >> (shift * 4)) & 0xf) as usize]),
        );
    }
    let random: u128 = rand::random();
    let mut id = Vec::with_capacity(2 + 21 + 1 + 10);
    id.extend_from_slice(b"tx");
    // 21 hex digits are 84 bits; then the time, as Swift writes it.
    push_hex(&mut id, random, 21);
    id.push(b'-');
    push_hex(&mut id, u128::from(crate::wire::unix_now()), 10);
    // Only ASCII hex digits, `t`, `x` and `-` were written.
    String::from_utf8(id).unwrap_or_default()
}

fn error_response(err: SwiftError, is_head: bool) -> Response {
    let mut response = if is_head {
        empty_response(err.status)
    } else {
        text_response(err.status, err.text.into_owned())
    };
    for (name, value) in err.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A yes in a header or query value, as Swift's `config_true_value` reads
/// it (header values come without surrounding whitespace).
pub(crate) fn truthy(value: &str) -> bool {
    ["true", "1", "yes", "on", "t", "y"]
        .iter()
        .any(|yes| value.eq_ignore_ascii_case(yes))
}

/// `1733150000.12345`: Swift's `X-Timestamp` form.
pub(crate) fn swift_timestamp(ms: i64) -> String {
    format!("{}.{:03}00", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Adds a header, skipping values that cannot be sent.
pub(crate) fn put_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        http::HeaderName::try_from(name),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Option<(&str, Target)>) {
        let got = parse_path(path).ok();
        let expected = expected.map(|(account, target)| (account.to_owned(), target));
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn paths() {
        use Target::*;
        check("/v1/AUTH_acct", Some(("acct", Account)));
        check("/v1/AUTH_acct/", Some(("acct", Account)));
        check("/v1/AUTH_acct/c", Some(("acct", Container("c".into()))));
        check("/v1/AUTH_acct/c/", Some(("acct", Container("c".into()))));
        check(
            "/v1/AUTH_acct/c/a/b%20c",
            Some(("acct", Object("c".into(), "a/b c".into()))),
        );
        check("/v1/AUTH_", None);
        check("/v1/acct/c", None);
        check("/v1/AUTH_acct/c%00/o", None);
        check("/v1/AUTH_acct/c/%FF", None);
    }

    #[test]
    fn trans_ids_look_like_swifts() {
        let id = new_trans_id();
        assert_eq!(id.len(), 2 + 21 + 1 + 10, "{id}");
        assert!(id.starts_with("tx"));
        assert_eq!(swift_timestamp(1_733_150_000_123), "1733150000.12300");
    }
}

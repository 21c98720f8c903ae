//! HTTP pieces every door shares: response bodies, streaming object reads,
//! conditional requests (RFC 9110 §13) and byte ranges. Protocol-specific
//! errors stay with each door; what is here returns neutral outcomes.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use strata_store::{ObjectInfo, StoreError};

/// Representation headers kept with an object as sent and returned on reads,
/// by every door.
pub const REPRESENTATION_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;
pub type Response = http::Response<ResponseBody>;

pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty_response(status: StatusCode) -> Response {
    let mut response = http::Response::new(full_body(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(full_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
}

/// A JSON document as a response.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = text_response(status, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), the unit
/// of the store's timestamps.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The content type an upload without one gets, guessed from its name as
/// Swift does (`application/octet-stream` when the name says nothing).
pub fn content_type_for(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// A store reader as a response body. Its first piece is read before the
/// response starts, so an object the store cannot serve at all (no storage
/// node answers) gets the door's error, a 503, rather than a 200 cut short.
/// A failure later aborts the connection, so the client sees a short body
/// rather than wrong bytes.
pub async fn stream_body(
    reader: impl Stream<Item = Result<bytes::Bytes, StoreError>> + Send + 'static,
) -> Result<ResponseBody, StoreError> {
    let pieces = first_read(reader).await?.map(|piece| {
        piece.map_err(|err| {
            tracing::error!(error = %err, "object read failed mid-stream");
            std::io::Error::other(err)
        })
    });
    Ok(streamed_body(pieces))
}

/// `pieces` with its first piece already read, so that a failure there
/// comes back before anything is answered (as an error status, or a reason
/// to read elsewhere); a later failure stays in the stream.
pub async fn first_read<T, E>(
    pieces: impl Stream<Item = Result<T, E>> + Send + 'static,
) -> Result<impl Stream<Item = Result<T, E>> + Send + 'static, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let mut pieces = Box::pin(pieces);
    let first = match pieces.next().await {
        Some(Err(err)) => return Err(err),
        first => first,
    };
    Ok(futures::stream::iter(first).chain(pieces))
}

/// A stream of pieces as a response body; an error aborts the connection,
/// so the client sees a short body rather than wrong bytes.
pub fn streamed_body(
    pieces: impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
) -> ResponseBody {
    StreamBody::new(pieces.map(|piece| piece.map(Frame::data))).boxed_unsync()
}

pub fn header_str(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Header names the read path uses on every request: a `HeaderName` made
/// once is not parsed again (a `&str` name is, at each use).
pub mod names {
    use http::HeaderName;

    pub const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
    pub const X_STORAGE_TOKEN: HeaderName = HeaderName::from_static("x-storage-token");
    pub const X_TRANS_ID: HeaderName = HeaderName::from_static("x-trans-id");
    pub const X_OPENSTACK_REQUEST_ID: HeaderName =
        HeaderName::from_static("x-openstack-request-id");
    pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
}

pub fn http_date(ms: i64) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(when)
}

/// Why a conditional request does not get the object.
#[derive(Debug, PartialEq, Eq)]
pub enum ConditionOutcome {
    Proceed,
    NotModified,
    PreconditionFailed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` (names prefixed by `prefix`, for copy sources) in the order
/// of RFC 9110 §13.2.2, as S3 does.
pub fn evaluate_conditions(
    headers: &HeaderMap,
    prefix: &str,
    info: &ObjectInfo,
) -> ConditionOutcome {
    // Without a prefix the standard names are looked up as constants: no
    // string is built or parsed per request on the hot read path.
    let header = |standard: http::header::HeaderName| {
        if prefix.is_empty() {
            headers.get(&standard).and_then(|value| value.to_str().ok())
        } else {
            header_str(headers, format!("{prefix}{}", standard.as_str()))
        }
    };
    let modified_secs = info.last_modified_ms.div_euclid(1000);
    let parse_date = |text: &str| {
        httpdate::parse_http_date(text.trim())
            .ok()
            .and_then(|when| when.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since| since.as_secs() as i64)
    };
    if let Some(tags) = header(http::header::IF_MATCH) {
        if !etag_matches(tags, &info.etag) {
            return ConditionOutcome::PreconditionFailed;
        }
    } else if let Some(date) = header(http::header::IF_UNMODIFIED_SINCE).and_then(parse_date)
        && modified_secs > date
    {
        return ConditionOutcome::PreconditionFailed;
    }
    if let Some(tags) = header(http::header::IF_NONE_MATCH) {
        if etag_matches(tags, &info.etag) {
            return ConditionOutcome::NotModified;
        }
    } else if let Some(date) = header(http::header::IF_MODIFIED_SINCE).and_then(parse_date)
        && modified_secs <= date
    {
        return ConditionOutcome::NotModified;
    }
    ConditionOutcome::Proceed
}

/// Whether a list of entity tags (`"a", W/"b"`, or `*`) names `etag`.
pub fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == etag)
}

/// The path a visitor sent, kept as a request extension when the request
/// is rewritten (a custom domain's request becomes the Swift path it stands
/// for): redirects must point at what the visitor can ask for.
#[derive(Debug, Clone)]
pub struct PathAsSent(pub String);

/// The decoded query string of a request, in order.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Decodes `a=b&c` (`+` is a space, as S3, Swift and the SigV4 verifier
    /// read it); `None` when a parameter is not UTF-8 after decoding.
    pub fn parse(raw: Option<&str>) -> Option<Query> {
        let mut params = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode_component(name)?, decode_component(value)?));
        }
        Some(Query(params))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(param, _)| param == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| value.as_str())
    }
}

fn decode_component(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// A `Range` that no byte of the object satisfies (416 in every protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    Unsatisfiable,
}

/// The byte range a `Range` header asks for, clamped to `size`. `Ok(None)` means
/// the whole object: no header, or a form S3 and Swift both ignore (several
/// ranges, another unit, a malformed spec).
pub fn byte_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, RangeError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |text: &str| text.parse::<u64>().ok();
    let range = match (first.is_empty(), last.is_empty()) {
        (false, _) => {
            let Some(start) = parse(first) else {
                return Ok(None);
            };
            let end = if last.is_empty() {
                size
            } else {
                let Some(last) = parse(last) else {
                    return Ok(None);
                };
                if last < start {
                    return Ok(None);
                }
                last.saturating_add(1).min(size)
            };
            if start >= size {
                return Err(RangeError::Unsatisfiable);
            }
            start..end
        }
        (true, false) => {
            let Some(suffix) = parse(last) else {
                return Ok(None);
            };
            if suffix == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            size.saturating_sub(suffix)..size
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, size: u64, expected: Result<Option<Range<u64>>, RangeError>) {
        let got = byte_range(header, size);
        assert_eq!(got, expected, "{header:?} of {size}");
    }

    #[test]
    fn ranges() {
        check(None, 10, Ok(None));
        check(Some("bytes=0-4"), 10, Ok(Some(0..5)));
        check(Some("bytes=5-"), 10, Ok(Some(5..10)));
        check(Some("bytes=-3"), 10, Ok(Some(7..10)));
        check(Some("bytes=-30"), 10, Ok(Some(0..10)));
        check(Some("bytes=8-100"), 10, Ok(Some(8..10)));
        check(Some("bytes=10-"), 10, Err(RangeError::Unsatisfiable));
        check(Some("bytes=0-"), 0, Err(RangeError::Unsatisfiable));
        check(Some("bytes=-0"), 10, Err(RangeError::Unsatisfiable));
        check(Some("bytes=5-2"), 10, Ok(None));
        check(Some("bytes=0-1,3-4"), 10, Ok(None));
        check(Some("items=0-1"), 10, Ok(None));
        check(Some("bytes=x-1"), 10, Ok(None));
    }

    #[test]
    fn etag_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", W/\"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }
}

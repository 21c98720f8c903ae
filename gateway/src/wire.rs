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
/// A request's body, as the doors read it: while they wait for more of
/// it, the connection counts as idle (`strata_pool::IdleDeadline`).
pub type RequestBody = strata_pool::CountedBody<hyper::body::Incoming>;
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

/// Marks a request that came over a TLS connection (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The gateway as a request reached it: the scheme of its connection and
/// the host (with port) it named, in the target (HTTP/2's `:authority`, an
/// absolute-form target) or else in its Host header. What URLs the gateway
/// hands out (Swift storage URLs, an upload's `Location`) start with.
#[derive(Debug, Clone)]
pub struct Origin {
    over_tls: bool,
    authority: Option<http::uri::Authority>,
}

impl Origin {
    pub fn of(request: &http::request::Parts) -> Origin {
        Origin {
            over_tls: request.extensions.get::<OverTls>().is_some(),
            authority: request.uri.authority().cloned(),
        }
    }

    /// `scheme://host[:port]`, with `fallback` as the host when the request
    /// named none.
    pub fn url(&self, headers: &HeaderMap, fallback: &str) -> String {
        let scheme = if self.over_tls { "https" } else { "http" };
        let host = match &self.authority {
            // Userinfo is never part of what a client is sent back.
            Some(authority) => authority.as_str().rsplit('@').next().unwrap_or_default(),
            // A Host that is not a host[:port] does not make the URL.
            None => header_str(headers, "host")
                .filter(|host| !host.contains('@') && host.parse::<http::uri::Authority>().is_ok())
                .unwrap_or(fallback),
        };
        format!("{scheme}://{host}")
    }
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
    Ok(lazy_store_body(first_read(reader).await?))
}

/// A store reader as a response body, nothing read until the body is
/// polled: for the later parts of a multi-range answer, whose status is
/// out before they start.
pub fn lazy_store_body(
    reader: impl Stream<Item = Result<bytes::Bytes, StoreError>> + Send + 'static,
) -> ResponseBody {
    streamed_body(reader.map(|piece| {
        piece.map_err(|err| {
            tracing::error!(error = %err, "object read failed mid-stream");
            std::io::Error::other(err)
        })
    }))
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
    if let Some(tags) = header(http::header::IF_MATCH) {
        if !etag_matches_strongly(tags, &info.etag) {
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

/// Unix seconds of an HTTP date.
fn parse_date(text: &str) -> Option<i64> {
    httpdate::parse_http_date(text.trim())
        .ok()
        .and_then(|when| when.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs() as i64)
}

/// The `Range` header of a read of `info`, unless an `If-Range` says the
/// client's copy is another version (RFC 9110 §13.1.5): then the answer
/// must be the whole object, or a resumed download would splice new bytes
/// onto old ones. An entity tag matches strongly (a weak one never does);
/// a date matches when it is the object's Last-Modified.
pub fn range_header<'a>(headers: &'a HeaderMap, info: &ObjectInfo) -> Option<&'a str> {
    let range = header_str(headers, http::header::RANGE)?;
    let Some(validator) = header_str(headers, http::header::IF_RANGE).map(str::trim) else {
        return Some(range);
    };
    let current = if validator.starts_with('"') {
        validator.trim_matches('"') == info.etag.trim_matches('"')
    } else if validator.starts_with("W/") {
        false
    } else {
        parse_date(validator) == Some(info.last_modified_ms.div_euclid(1000))
    };
    current.then_some(range)
}

/// Whether a list of entity tags (`"a", W/"b"`, or `*`) names `etag`,
/// weakly: `If-None-Match`'s comparison (RFC 9110 §8.8.3.2).
pub fn etag_matches(list: &str, etag: &str) -> bool {
    etag_list_names(list, etag, true)
}

/// Whether a list of entity tags names `etag` strongly: `If-Match`'s
/// comparison, where a weak tag never matches (RFC 9110 §13.1.1), since
/// what it guards (a write, a resumed read) needs the very bytes.
pub fn etag_matches_strongly(list: &str, etag: &str) -> bool {
    etag_list_names(list, etag, false)
}

fn etag_list_names(list: &str, etag: &str, weak_matches: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        let (weak, tag) = match tag.strip_prefix("W/") {
            Some(tag) => (true, tag),
            None => (false, tag),
        };
        tag == "*" || ((weak_matches || !weak) && tag.trim_matches('"') == etag)
    })
}

/// The object's stored headers a 304 repeats from the 200 it stands for
/// (RFC 9110 §15.4.5): `Cache-Control` and `Expires`, so that a cache in
/// front refreshes its copy's freshness with them.
pub fn add_freshness_headers(headers: &mut HeaderMap, info: &ObjectInfo) {
    for name in [http::header::CACHE_CONTROL, http::header::EXPIRES] {
        if let Some(value) = info.meta.headers.get(name.as_str())
            && let Ok(value) = HeaderValue::from_str(value)
        {
            headers.insert(name, value);
        }
    }
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
/// the whole object: no header, or a form S3 ignores (several ranges,
/// another unit, a malformed spec).
pub fn byte_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, RangeError> {
    match range_specs(header).as_deref() {
        Some([spec]) if size == 0 && spec.is_nonzero_suffix() => Ok(None),
        Some([spec]) => spec.clamp(size).map(Some).ok_or(RangeError::Unsatisfiable),
        _ => Ok(None),
    }
}

/// What a `Range` header asks of an object, read as Swift reads it: one
/// range or several (a `multipart/byteranges` answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRanges {
    /// No header, or one to ignore: another unit or a malformed spec.
    Whole,
    One(Range<u64>),
    /// Two or more satisfiable ranges, in the order asked.
    Several(Vec<Range<u64>>),
}

impl ByteRanges {
    /// The range of a single-part answer; `None` for the whole object.
    pub fn single(&self) -> Option<Range<u64>> {
        match self {
            ByteRanges::One(range) => Some(range.clone()),
            _ => None,
        }
    }
}

/// More ranges than this in one request are refused (416), as Swift does.
const MAX_RANGES: usize = 50;
/// Refused when more than this many pairs of the ranges overlap.
const MAX_RANGE_OVERLAPS: usize = 2;
/// Refused when this many ranges or more are out of ascending order.
const MAX_NONASCENDING_RANGES: usize = 8;

/// The ranges a `Range` header asks for, clamped to `size`: those no byte
/// satisfies are dropped, and if none is left the answer is 416. Requests
/// RFC 9110 §14.1.1 calls egregious (many ranges, overlapping ranges, many
/// out of order) are refused with 416, as Swift's proxy refuses them, so a
/// few header bytes cannot make the gateway read an object many times over.
pub fn byte_ranges(header: Option<&str>, size: u64) -> Result<ByteRanges, RangeError> {
    let Some(specs) = range_specs(header) else {
        return Ok(ByteRanges::Whole);
    };
    if size == 0 && specs.iter().any(RangeSpec::is_nonzero_suffix) {
        return Ok(ByteRanges::Whole);
    }
    let mut ranges: Vec<Range<u64>> = specs.iter().filter_map(|spec| spec.clamp(size)).collect();
    // The count first: pairs are counted only among a few ranges.
    if ranges.is_empty() || ranges.len() > MAX_RANGES {
        return Err(RangeError::Unsatisfiable);
    }
    let overlapping_pairs = ranges
        .iter()
        .enumerate()
        .flat_map(|(i, a)| ranges[i + 1..].iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.start < b.end && b.start < a.end)
        .take(MAX_RANGE_OVERLAPS + 1)
        .count();
    let ascending = ranges.windows(2).all(|pair| pair[0].start <= pair[1].start);
    if overlapping_pairs > MAX_RANGE_OVERLAPS
        || (!ascending && ranges.len() >= MAX_NONASCENDING_RANGES)
    {
        return Err(RangeError::Unsatisfiable);
    }
    Ok(match ranges.len() {
        1 => ByteRanges::One(ranges.remove(0)),
        _ => ByteRanges::Several(ranges),
    })
}

/// One `byte-range-spec`: `first-last`, `first-`, or `-suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    From { first: u64, last: Option<u64> },
    Suffix(u64),
}

impl RangeSpec {
    /// RFC 9110 §14.1.3: the one spec an empty representation satisfies,
    /// answered with the whole (empty) object, since no 206 can say 0 bytes.
    fn is_nonzero_suffix(&self) -> bool {
        matches!(self, RangeSpec::Suffix(suffix) if *suffix > 0)
    }

    /// The bytes of an object of `size` this spec covers; `None` when none.
    fn clamp(self, size: u64) -> Option<Range<u64>> {
        match self {
            RangeSpec::From { first, .. } if first >= size => None,
            RangeSpec::From { first, last } => {
                let end = last.map_or(size, |last| last.saturating_add(1).min(size));
                Some(first..end)
            }
            RangeSpec::Suffix(suffix) if suffix == 0 || size == 0 => None,
            RangeSpec::Suffix(suffix) => Some(size.saturating_sub(suffix)..size),
        }
    }
}

/// The specs of a `bytes=` header, `None` when it is to be ignored: absent,
/// another unit, or any spec malformed (RFC 9110 §14.2: a recipient ignores
/// a range set with an invalid spec). Spaces are allowed anywhere.
fn range_specs(header: Option<&str>) -> Option<Vec<RangeSpec>> {
    let compact: String = header?.chars().filter(|c| *c != ' ').collect();
    let unit = compact.get(..6)?;
    if !unit.eq_ignore_ascii_case("bytes=") {
        return None;
    }
    let digits = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    compact[6..]
        .split(',')
        .map(|spec| {
            let (first, last) = spec.split_once('-')?;
            match (first.is_empty(), last.is_empty()) {
                (false, true) => Some(RangeSpec::From {
                    first: digits(first)?,
                    last: None,
                }),
                (false, false) => {
                    let (first, last) = (digits(first)?, digits(last)?);
                    (last >= first).then_some(RangeSpec::From {
                        first,
                        last: Some(last),
                    })
                }
                (true, false) => Some(RangeSpec::Suffix(digits(last)?)),
                (true, true) => None,
            }
        })
        .collect()
}

/// A `multipart/byteranges` answer (RFC 9110 §14.6) for several ranges of
/// an object: each part its range's bytes under a `Content-Type` and a
/// `Content-Range`. Its length is known before any byte is read.
pub struct MultipartRanges {
    boundary: String,
    part_heads: Vec<Bytes>,
    length: u64,
}

impl MultipartRanges {
    pub fn new(ranges: &[Range<u64>], size: u64, part_type: &str) -> MultipartRanges {
        let boundary = hex::encode(rand::random::<[u8; 16]>());
        let part_heads: Vec<Bytes> = ranges
            .iter()
            .map(|range| {
                Bytes::from(format!(
                    "--{boundary}\r\nContent-Type: {part_type}\r\n\
                     Content-Range: bytes {}-{}/{size}\r\n\r\n",
                    range.start,
                    range.end - 1
                ))
            })
            .collect();
        // Each part is its head, its bytes and a CRLF; then the last boundary.
        let length = ranges
            .iter()
            .zip(&part_heads)
            .map(|(range, head)| head.len() as u64 + (range.end - range.start) + 2)
            .sum::<u64>()
            + boundary.len() as u64
            + 4;
        MultipartRanges {
            boundary,
            part_heads,
            length,
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    pub fn content_length(&self) -> u64 {
        self.length
    }

    /// The body, from one body per range, in the order of the ranges.
    pub fn body(self, parts: Vec<ResponseBody>) -> ResponseBody {
        let closing = Bytes::from(format!("--{}--", self.boundary));
        let pieces = self.part_heads.into_iter().zip(parts).map(|(head, part)| {
            futures::stream::iter([Ok(head)])
                .chain(part.into_data_stream())
                .chain(futures::stream::iter([Ok(Bytes::from_static(b"\r\n"))]))
        });
        streamed_body(
            futures::stream::iter(pieces)
                .flatten()
                .chain(futures::stream::iter([Ok(closing)])),
        )
    }
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
        check(Some("bytes=-5"), 0, Ok(None));
        check(Some("bytes=0-"), 0, Err(RangeError::Unsatisfiable));
        check(Some("Bytes = 2 - 3"), 10, Ok(Some(2..4)));
    }

    /// URLs handed out name the host as the client did, with its port and
    /// its connection's scheme; a Host that is not one is not echoed.
    #[test]
    fn origins() {
        let origin = |target: &str, host: Option<&str>, tls: bool| {
            let mut request = http::Request::get(target);
            if let Some(host) = host {
                request = request.header("host", host);
            }
            let (mut parts, ()) = request.body(()).unwrap().into_parts();
            if tls {
                parts.extensions.insert(OverTls);
            }
            Origin::of(&parts).url(&parts.headers, "fallback")
        };
        assert_eq!(
            origin("/x", Some("st.example.com:8443"), true),
            "https://st.example.com:8443"
        );
        assert_eq!(
            origin("/x", Some("127.0.0.1:80"), false),
            "http://127.0.0.1:80"
        );
        // HTTP/2 and absolute-form targets carry the host in the target.
        assert_eq!(
            origin("https://a.example:9/x", None, true),
            "https://a.example:9"
        );
        assert_eq!(
            origin("http://u:p@a.example/x", None, false),
            "http://a.example"
        );
        assert_eq!(origin("/x", None, false), "http://fallback");
        for bad in ["evil/x?", "a b", "u@evil", ""] {
            assert_eq!(origin("/x", Some(bad), false), "http://fallback", "{bad:?}");
        }
    }

    #[test]
    fn several_ranges() {
        use ByteRanges::*;
        let ranges = |header: &str, size| byte_ranges(Some(header), size);
        assert_eq!(byte_ranges(None, 10), Ok(Whole));
        assert_eq!(ranges("bytes=0-1,4-5", 10), Ok(Several(vec![0..2, 4..6])));
        assert_eq!(ranges("bytes=-2,0-0", 10), Ok(Several(vec![8..10, 0..1])));
        // Unsatisfiable ranges drop out; one left is a single-part answer.
        assert_eq!(ranges("bytes=0-1,50-60", 10), Ok(One(0..2)));
        assert_eq!(ranges("bytes=20-,30-", 10), Err(RangeError::Unsatisfiable));
        // One malformed spec voids the header.
        assert_eq!(ranges("bytes=0-1,x-2", 10), Ok(Whole));
        assert_eq!(ranges("bytes=0-1,", 10), Ok(Whole));
        assert_eq!(ranges("bytes=0-1,5-3", 10), Ok(Whole));
        // Egregious sets are refused.
        let many = (0..51)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            ranges(&format!("bytes={many}"), 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(
            ranges("bytes=0-5,1-6,2-7,3-8", 10),
            Err(RangeError::Unsatisfiable)
        );
        assert!(ranges("bytes=0-5,1-6,20-30", 100).is_ok());
        let backwards = (0..8)
            .rev()
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            ranges(&format!("bytes={backwards}"), 100),
            Err(RangeError::Unsatisfiable)
        );
        // Thousands of ranges are refused before any pair is compared.
        let flood = vec!["0-0"; 20_000].join(",");
        assert_eq!(
            ranges(&format!("bytes={flood}"), 10),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(ranges("bytes=-5,-3", 0), Ok(Whole));
        assert_eq!(ranges("bytes=0-5", 0), Err(RangeError::Unsatisfiable));
        let few_backwards = "bytes=5-5,3-3,1-1";
        assert_eq!(
            ranges(few_backwards, 10),
            Ok(Several(vec![5..6, 3..4, 1..2]))
        );
    }

    #[tokio::test]
    async fn multipart_length_is_the_body_length() {
        let object = b"0123456789";
        let ranges = [2..4, 7..10];
        let multipart = MultipartRanges::new(&ranges, 10, "text/plain");
        let boundary = multipart
            .content_type()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .to_owned();
        let length = multipart.content_length();
        let parts = ranges
            .iter()
            .map(|range| {
                full_body(Bytes::copy_from_slice(
                    &object[range.start as usize..range.end as usize],
                ))
            })
            .collect();
        let body = multipart
            .body(parts)
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let expected = format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 2-3/10\r\n\r\n23\r\n\
             --{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 7-9/10\r\n\r\n789\r\n\
             --{boundary}--"
        );
        assert_eq!(String::from_utf8_lossy(&body), expected);
        assert_eq!(length, body.len() as u64);
    }

    #[test]
    fn if_range_keeps_the_range_only_for_the_same_version() {
        let info = ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 10,
            etag: "abc".into(),
            last_modified_ms: 1_700_000_000_123,
            meta: strata_store::ObjectMeta::default(),
            checksum: None,
            part_sizes: Vec::new(),
            extents: Vec::new(),
            inline: None,
            copy_nonce: None,
        };
        let with = |if_range: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::RANGE, HeaderValue::from_static("bytes=5-"));
            if let Some(value) = if_range {
                headers.insert(
                    http::header::IF_RANGE,
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            range_header(&headers, &info).map(str::to_owned)
        };
        let range = Some("bytes=5-".to_owned());
        assert_eq!(with(None), range);
        assert_eq!(with(Some("\"abc\"")), range);
        assert_eq!(with(Some("\"abd\"")), None);
        assert_eq!(with(Some("W/\"abc\"")), None);
        assert_eq!(with(Some("Tue, 14 Nov 2023 22:13:20 GMT")), range);
        assert_eq!(with(Some("Tue, 14 Nov 2023 22:13:21 GMT")), None);
        assert_eq!(with(Some("garbage")), None);
    }

    #[test]
    fn etag_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", W/\"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
        assert!(etag_matches_strongly("\"x\", \"abc\"", "abc"));
        assert!(etag_matches_strongly("*", "abc"));
        assert!(!etag_matches_strongly("W/\"abc\"", "abc"));
        assert!(!etag_matches_strongly("\"abd\"", "abc"));
    }
}

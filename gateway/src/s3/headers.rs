//! Object headers in both directions: metadata from a request, representation
//! headers on a response, conditional requests and ranges.

use std::ops::Range;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use strata_store::{ObjectInfo, ObjectMeta};

use super::error::{S3Error, S3Result};

/// Representation headers stored with an object and returned on GET.
const STORED_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];
const USER_META_PREFIX: &str = "x-amz-meta-";

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Content type, representation headers and user metadata of a write.
pub fn meta_from_request(headers: &HeaderMap, max_user_metadata: usize) -> S3Result<ObjectMeta> {
    let mut meta = ObjectMeta {
        content_type: header_str(headers, "content-type").map(str::to_owned),
        ..ObjectMeta::default()
    };
    for name in STORED_HEADERS {
        let Some(value) = header_str(headers, name) else {
            continue;
        };
        let value = if name == "content-encoding" {
            // aws-chunked describes the transfer, not the object.
            let kept: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            if kept.is_empty() {
                continue;
            }
            kept.join(",")
        } else {
            value.to_owned()
        };
        meta.headers.insert(name.to_owned(), value);
    }
    let mut user_size = 0;
    for (name, value) in headers {
        let Some(user_name) = name.as_str().strip_prefix(USER_META_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            S3Error::invalid_argument(
                "User metadata values must be printable ASCII (use RFC 2047 for other text)",
            )
        })?;
        user_size += user_name.len() + value.len();
        meta.user.insert(user_name.to_owned(), value.to_owned());
    }
    if user_size > max_user_metadata {
        return Err(S3Error::new(
            "MetadataTooLarge",
            StatusCode::BAD_REQUEST,
            "Your metadata headers exceed the maximum allowed metadata size.",
        )
        .with_extra("MaxSizeAllowed", max_user_metadata.to_string()));
    }
    Ok(meta)
}

pub fn quoted_etag(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub fn http_date(ms: i64) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(when)
}

/// `2009-10-12T17:50:30.000Z`, as S3 XML writes times.
pub fn iso8601(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Adds the headers describing a stored object to a response.
pub fn add_object_headers(out: &mut HeaderMap, info: &ObjectInfo, with_checksum: bool) {
    let mut put = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            out.insert(name, value);
        }
    };
    put("etag", &quoted_etag(&info.etag));
    put("last-modified", &http_date(info.last_modified_ms));
    put("accept-ranges", "bytes");
    put(
        "content-type",
        info.meta
            .content_type
            .as_deref()
            .unwrap_or("binary/octet-stream"),
    );
    for (name, value) in &info.meta.headers {
        put(name, value);
    }
    for (name, value) in &info.meta.user {
        put(&format!("{USER_META_PREFIX}{name}"), value);
    }
    if with_checksum && let Some((algo, value)) = &info.checksum {
        put(
            &format!("x-amz-checksum-{}", algo.name().to_ascii_lowercase()),
            value,
        );
        put("x-amz-checksum-type", "FULL_OBJECT");
    }
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
    let header = |name: &str| header_str(headers, &format!("{prefix}{name}"));
    let modified_secs = info.last_modified_ms.div_euclid(1000);
    let parse_date = |text: &str| {
        httpdate::parse_http_date(text.trim())
            .ok()
            .and_then(|when| when.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since| since.as_secs() as i64)
    };
    if let Some(tags) = header("if-match") {
        if !etag_matches(tags, &info.etag) {
            return ConditionOutcome::PreconditionFailed;
        }
    } else if let Some(date) = header("if-unmodified-since").and_then(parse_date)
        && modified_secs > date
    {
        return ConditionOutcome::PreconditionFailed;
    }
    if let Some(tags) = header("if-none-match") {
        if etag_matches(tags, &info.etag) {
            return ConditionOutcome::NotModified;
        }
    } else if let Some(date) = header("if-modified-since").and_then(parse_date)
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

/// The byte range a `Range` header asks for, clamped to `size`. `Ok(None)` means
/// the whole object (no header, or a form S3 ignores such as several ranges);
/// an unsatisfiable range is `InvalidRange` (416).
pub fn parse_range(header: Option<&str>, size: u64) -> S3Result<Option<Range<u64>>> {
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
                return Err(invalid_range(size));
            }
            start..end
        }
        (true, false) => {
            let Some(suffix) = parse(last) else {
                return Ok(None);
            };
            if suffix == 0 {
                return Err(invalid_range(size));
            }
            size.saturating_sub(suffix)..size
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

fn invalid_range(size: u64) -> S3Error {
    S3Error::new(
        "InvalidRange",
        StatusCode::RANGE_NOT_SATISFIABLE,
        "The requested range is not satisfiable",
    )
    .with_extra("ActualObjectSize", size.to_string())
    .with_header("content-range", format!("bytes */{size}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, size: u64, expected: Result<Option<Range<u64>>, &str>) {
        let got = parse_range(header, size).map_err(|err| err.code);
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
        check(Some("bytes=10-"), 10, Err("InvalidRange"));
        check(Some("bytes=0-"), 0, Err("InvalidRange"));
        check(Some("bytes=-0"), 10, Err("InvalidRange"));
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

    #[test]
    fn aws_chunked_is_not_stored_as_content_encoding() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-encoding",
            HeaderValue::from_static("aws-chunked,gzip"),
        );
        headers.insert("x-amz-meta-Color", HeaderValue::from_static("blue"));
        let meta = meta_from_request(&headers, 2048).unwrap();
        assert_eq!(
            meta.headers.get("content-encoding").map(String::as_str),
            Some("gzip")
        );
        assert_eq!(meta.user.get("color").map(String::as_str), Some("blue"));
        headers.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
        assert!(
            meta_from_request(&headers, 2048)
                .unwrap()
                .headers
                .is_empty()
        );
    }
}

//! Object headers in both directions: metadata from a request, representation
//! headers on a response, conditional requests and ranges.

use std::ops::Range;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use strata_store::{ObjectInfo, ObjectMeta};

use super::error::{S3Error, S3Result};
use crate::wire::REPRESENTATION_HEADERS;
use crate::wire::RangeError;
pub use crate::wire::{ConditionOutcome, evaluate_conditions, header_str, http_date};

const USER_META_PREFIX: &str = "x-amz-meta-";

/// Content type, representation headers and user metadata of a write.
pub fn meta_from_request(headers: &HeaderMap, max_user_metadata: usize) -> S3Result<ObjectMeta> {
    let mut meta = ObjectMeta {
        content_type: header_str(headers, "content-type").map(str::to_owned),
        ..ObjectMeta::default()
    };
    for name in REPRESENTATION_HEADERS {
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
    // Other doors keep their own entries here too (Swift manifests, expiry).
    for (name, value) in &info.meta.headers {
        if REPRESENTATION_HEADERS.contains(&name.as_str()) {
            put(name, value);
        }
    }
    for (name, value) in &info.meta.user {
        put(&format!("{USER_META_PREFIX}{name}"), value);
    }
    if with_checksum {
        add_checksum_headers(out, info);
    }
}

/// The object's additional checksum, if it has one: asked for with
/// `x-amz-checksum-mode: ENABLED` ([`checksum_mode`]), on whole reads.
pub fn add_checksum_headers(out: &mut HeaderMap, info: &ObjectInfo) {
    if let Some((algo, value)) = &info.checksum
        && let Ok(name) = HeaderName::try_from(format!(
            "x-amz-checksum-{}",
            algo.name().to_ascii_lowercase()
        ))
        && let Ok(value) = HeaderValue::from_str(value)
    {
        out.insert(name, value);
        out.insert(
            HeaderName::from_static("x-amz-checksum-type"),
            HeaderValue::from_static("FULL_OBJECT"),
        );
    }
}

/// Whether a read asks for the object's checksum.
pub fn checksum_mode(headers: &HeaderMap) -> bool {
    crate::wire::header_str(headers, "x-amz-checksum-mode")
        .is_some_and(|mode| mode.eq_ignore_ascii_case("enabled"))
}

/// The byte range a `Range` header asks for (see [`crate::wire::byte_range`]);
/// an unsatisfiable range is `InvalidRange` (416).
pub fn parse_range(header: Option<&str>, size: u64) -> S3Result<Option<Range<u64>>> {
    crate::wire::byte_range(header, size).map_err(|RangeError::Unsatisfiable| invalid_range(size))
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

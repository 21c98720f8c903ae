//! `GET /info`: the capabilities this Swift door actually has, in the shape
//! clients read (swiftclient decides on SLO and bulk delete from it).

use http::{Method, StatusCode};
use serde_json::json;

use super::SwiftDoor;
use super::bulk::MAX_DELETES_PER_REQUEST;
use super::error::{SwiftError, SwiftResult};
use super::large::{MAX_DLO_SEGMENTS, MAX_MANIFEST_SEGMENTS, MAX_MANIFEST_SIZE};
use super::listing::LISTING_LIMIT;
use super::meta::{
    MAX_META_COUNT, MAX_META_NAME_LENGTH, MAX_META_OVERALL_SIZE, MAX_META_VALUE_LENGTH,
};
use crate::wire::{Response, json_response};

pub(crate) fn answer(door: &SwiftDoor, method: &Method) -> SwiftResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(SwiftError::method_not_allowed());
    }
    let info = json!({
        "swift": {
            "version": concat!("strata-", env!("CARGO_PKG_VERSION")),
            "max_file_size": door.limits.max_object_size,
            "max_meta_name_length": MAX_META_NAME_LENGTH,
            "max_meta_value_length": MAX_META_VALUE_LENGTH,
            "max_meta_count": MAX_META_COUNT,
            "max_meta_overall_size": MAX_META_OVERALL_SIZE,
            "max_object_name_length": 1024,
            "max_container_name_length": 256,
            "max_account_name_length": 256,
            "container_listing_limit": LISTING_LIMIT,
            "account_listing_limit": LISTING_LIMIT,
            "extra_header_count": 0,
            "strict_cors_mode": true,
            "policies": [{"name": "default", "default": true}],
        },
        "tempurl": {
            "methods": ["GET", "HEAD", "PUT", "POST", "DELETE"],
            "allowed_digests": strata_auth::TEMPURL_DIGESTS,
        },
        "slo": {
            "max_manifest_segments": MAX_MANIFEST_SEGMENTS,
            "max_manifest_size": MAX_MANIFEST_SIZE,
            "min_segment_size": 1,
        },
        "dlo": {"max_segments": MAX_DLO_SEGMENTS},
        "bulk_delete": {
            "max_deletes_per_request": MAX_DELETES_PER_REQUEST,
            "max_failed_deletes": MAX_DELETES_PER_REQUEST,
        },
        "tempauth": {"account_acls": false},
    });
    let body = info.to_string();
    if method == Method::HEAD {
        // The GET's length, as HEAD answers it.
        let mut response = json_response(StatusCode::OK, String::new());
        (response.headers_mut()).insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        return Ok(response);
    }
    Ok(json_response(StatusCode::OK, body))
}

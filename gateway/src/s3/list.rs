//! Listings: ListObjects (v1), ListObjectsV2, ListObjectVersions and
//! ListMultipartUploads, all over the store's one listing primitive.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use strata_store::{ListEntry, ListQuery, UploadListQuery};

use super::error::{S3Error, S3Result};
use super::headers::{iso8601, quoted_etag};
use super::router::{Query, S3Op};
use super::xml;
use super::{Response, S3Door, S3Request, xml_response};

/// The most entries one page returns, whatever the client asks for.
const MAX_PAGE: usize = 1000;

/// `encoding-type=url`: everything but unreserved characters and `/` is escaped.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

struct Encoding {
    url: bool,
}

impl Encoding {
    fn from_query(query: &Query) -> S3Result<Encoding> {
        match query.get("encoding-type") {
            None => Ok(Encoding { url: false }),
            Some(value) if value.eq_ignore_ascii_case("url") => Ok(Encoding { url: true }),
            Some(_) => Err(S3Error::invalid_argument(
                "Invalid Encoding Method specified in Request",
            )),
        }
    }

    fn apply(&self, text: &str) -> String {
        if self.url {
            utf8_percent_encode(text, KEY_ENCODE).to_string()
        } else {
            text.to_owned()
        }
    }
}

/// A `max-keys`-style parameter: an integer from 0 to 2³¹−1, capped at 1000.
fn page_size(query: &Query, name: &str) -> S3Result<usize> {
    match query.get(name) {
        None => Ok(MAX_PAGE),
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|value| *value >= 0)
            .map(|value| (value as usize).min(MAX_PAGE))
            .ok_or_else(|| {
                S3Error::invalid_argument(format!(
                    "Provided {name} not an integer or within integer range"
                ))
                .with_extra("ArgumentName", name)
                .with_extra("ArgumentValue", text)
            }),
    }
}

impl S3Door {
    pub(crate) async fn list_objects(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.readable_bucket(request, true).await?;
        let mut response = self.list_readable(request, &bucket).await?;
        Self::vary_public_answer(request, &bucket, &mut response);
        Ok(response)
    }

    /// [`S3Door::list_objects`] of `bucket`, which the caller may list.
    async fn list_readable(
        &self,
        request: &S3Request,
        bucket: &strata_store::BucketInfo,
    ) -> S3Result<Response> {
        // An anonymous listing (of a public bucket) goes through the edge
        // cache, as a public Swift container's does, under the same
        // per-bucket generation that any change in the bucket bumps.
        let public_form = request
            .credential
            .is_none()
            .then(|| crate::edge::listing_form(&format!("s3 {:?}", request.op), &request.query.0));
        let generation = match &public_form {
            Some(form) => match self.edge.listing(&bucket.name, form) {
                Ok(cached) => return Ok(cached),
                Err(generation) => generation,
            },
            None => 0,
        };
        let query = &request.query;
        let encoding = Encoding::from_query(query)?;
        let max_keys = page_size(query, "max-keys")?;
        let prefix = query.get("prefix").unwrap_or("").to_owned();
        let delimiter = query
            .get("delimiter")
            .filter(|d| !d.is_empty())
            .map(str::to_owned);
        let start_after = match request.op {
            S3Op::ListObjectsV2 => match query.get("continuation-token") {
                Some(token) => Some(decode_token(token)?),
                None => query.get("start-after").map(str::to_owned),
            },
            S3Op::ListObjectVersions => query.get("key-marker").map(str::to_owned),
            _ => query.get("marker").map(str::to_owned),
        }
        .filter(|marker| !marker.is_empty());
        let page = if max_keys == 0 {
            strata_store::ListPage::default()
        } else {
            self.store
                .list_objects(
                    &bucket.name,
                    ListQuery {
                        prefix: prefix.clone(),
                        delimiter: delimiter.clone(),
                        start_after: start_after.clone(),
                        end_before: None,
                        reverse: false,
                        max_keys,
                    },
                )
                .await?
        };

        let (root, entry_name) = match request.op {
            S3Op::ListObjectVersions => ("ListVersionsResult", "Version"),
            _ => ("ListBucketResult", "Contents"),
        };
        let show_owner = match request.op {
            S3Op::ListObjectsV2 => query.get("fetch-owner") == Some("true"),
            _ => true,
        };
        let mut xml = xml::document(root);
        xml.element("Name", &bucket.name)
            .element("Prefix", &encoding.apply(&prefix));
        match request.op {
            S3Op::ListObjectsV2 => {
                xml.optional(
                    "StartAfter",
                    query
                        .get("start-after")
                        .map(|s| encoding.apply(s))
                        .as_deref(),
                );
                xml.optional("ContinuationToken", query.get("continuation-token"));
                if page.is_truncated
                    && let Some(marker) = &page.next_marker
                {
                    xml.element("NextContinuationToken", &URL_SAFE_NO_PAD.encode(marker));
                }
                xml.element("KeyCount", &page.entries.len().to_string());
            }
            S3Op::ListObjectVersions => {
                xml.element(
                    "KeyMarker",
                    &encoding.apply(query.get("key-marker").unwrap_or("")),
                );
                xml.element(
                    "VersionIdMarker",
                    query.get("version-id-marker").unwrap_or(""),
                );
                if page.is_truncated
                    && let Some(marker) = &page.next_marker
                {
                    xml.element("NextKeyMarker", &encoding.apply(marker));
                    xml.element("NextVersionIdMarker", "null");
                }
            }
            _ => {
                xml.element("Marker", &encoding.apply(query.get("marker").unwrap_or("")));
                // Only with a delimiter, as S3: without one, clients go on
                // from the last key.
                if page.is_truncated
                    && delimiter.is_some()
                    && let Some(marker) = &page.next_marker
                {
                    xml.element("NextMarker", &encoding.apply(marker));
                }
            }
        }
        xml.element("MaxKeys", &max_keys.to_string());
        xml.optional(
            "Delimiter",
            delimiter.as_deref().map(|d| encoding.apply(d)).as_deref(),
        );
        if encoding.url {
            xml.element("EncodingType", "url");
        }
        xml.element(
            "IsTruncated",
            if page.is_truncated { "true" } else { "false" },
        );
        for entry in &page.entries {
            match entry {
                ListEntry::Object(info) => {
                    // A Swift large object lists with its assembled size.
                    let view = crate::large_object::listed_view(info);
                    xml.open(entry_name)
                        .element("Key", &encoding.apply(&info.key));
                    if request.op == S3Op::ListObjectVersions {
                        xml.element("VersionId", "null").element("IsLatest", "true");
                    }
                    xml.element("LastModified", &iso8601(info.last_modified_ms))
                        .element("ETag", &quoted_etag(&view.etag))
                        .element("Size", &view.size.to_string())
                        .element("StorageClass", "STANDARD");
                    if let Some((algo, _)) = &info.checksum {
                        xml.element("ChecksumAlgorithm", algo.name());
                    }
                    if show_owner {
                        xml.open("Owner")
                            .element("ID", &bucket.account)
                            .element("DisplayName", &bucket.account)
                            .close();
                    }
                    xml.close();
                }
                ListEntry::CommonPrefix(prefix) => {
                    xml.open("CommonPrefixes")
                        .element("Prefix", &encoding.apply(prefix))
                        .close();
                }
            }
        }
        let body = bytes::Bytes::from(xml.finish());
        let response = xml_response(StatusCode::OK, body.clone());
        let Some(form) = public_form else {
            return Ok(response);
        };
        let (parts, _) = response.into_parts();
        Ok(self.edge.keep_listing(
            (&bucket.name, generation, &form),
            (parts.status, parts.headers, body),
            page.first_expiry(),
        ))
    }

    pub(crate) async fn list_uploads(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        let query = &request.query;
        let encoding = Encoding::from_query(query)?;
        let max_uploads = page_size(query, "max-uploads")?;
        let prefix = query.get("prefix").unwrap_or("").to_owned();
        let delimiter = query
            .get("delimiter")
            .filter(|delimiter| !delimiter.is_empty())
            .map(str::to_owned);
        let key_marker = query
            .get("key-marker")
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let upload_id_marker = key_marker
            .as_ref()
            .and(query.get("upload-id-marker"))
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let page = self
            .store
            .list_uploads(
                &bucket.name,
                UploadListQuery {
                    prefix: prefix.clone(),
                    key_marker: key_marker.clone(),
                    upload_id_marker: upload_id_marker.clone(),
                    max_uploads,
                    delimiter: delimiter.clone(),
                },
            )
            .await?;
        let mut xml = xml::document("ListMultipartUploadsResult");
        xml.element("Bucket", &bucket.name)
            .element(
                "KeyMarker",
                &encoding.apply(key_marker.as_deref().unwrap_or("")),
            )
            .element("UploadIdMarker", upload_id_marker.as_deref().unwrap_or(""))
            .element(
                "NextKeyMarker",
                &encoding.apply(page.next_key_marker.as_deref().unwrap_or("")),
            )
            .element(
                "NextUploadIdMarker",
                page.next_upload_id_marker.as_deref().unwrap_or(""),
            )
            .element("Prefix", &encoding.apply(&prefix))
            .element("MaxUploads", &max_uploads.to_string())
            .element(
                "IsTruncated",
                if page.is_truncated { "true" } else { "false" },
            );
        if let Some(delimiter) = &delimiter {
            xml.element("Delimiter", &encoding.apply(delimiter));
        }
        if encoding.url {
            xml.element("EncodingType", "url");
        }
        for upload in &page.uploads {
            xml.open("Upload")
                .element("Key", &encoding.apply(&upload.key))
                .element("UploadId", &upload.upload_id);
            for role in ["Initiator", "Owner"] {
                xml.open(role)
                    .element("ID", &bucket.account)
                    .element("DisplayName", &bucket.account)
                    .close();
            }
            xml.element("StorageClass", "STANDARD")
                .element("Initiated", &iso8601(upload.initiated_ms))
                .close();
        }
        for common_prefix in &page.common_prefixes {
            xml.open("CommonPrefixes")
                .element("Prefix", &encoding.apply(common_prefix))
                .close();
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }
}

/// Continuation tokens are the marker, base64url-encoded: opaque to clients,
/// stable across restarts.
fn decode_token(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| {
            S3Error::invalid_argument("The continuation token provided is incorrect")
                .with_extra("ArgumentName", "continuation-token")
        })
}

//! Multipart uploads: create, upload (and copy) parts, list parts, complete,
//! abort.

use crate::wire::RequestBody;
use http::StatusCode;
use strata_store::{CompletedPart, UploadInfo};

use super::body::{read_small_body, stage_request_body};
use super::error::{S3Error, S3Result};
use super::headers::{header_str, iso8601, meta_from_request, quoted_etag};
use super::object::{
    checksum_of, put_conditions, put_etag_and_checksum, requested_checksum_algorithm,
};
use super::xml::{self, CompleteRequest};
use super::{Response, S3Door, S3Request, empty_response, xml_response};

const MAX_PARTS_PAGE: usize = 1000;

impl S3Door {
    async fn current_upload(&self, request: &S3Request) -> S3Result<UploadInfo> {
        self.owned_bucket(request).await?;
        let upload_id = request.query.get("uploadId").unwrap_or("");
        Ok(self
            .store
            .upload(&request.bucket, &request.key, upload_id)
            .await?)
    }

    pub(crate) async fn create_upload(&self, request: &S3Request) -> S3Result<Response> {
        let meta = meta_from_request(&request.headers, self.limits.max_user_metadata)?;
        let algorithm = requested_checksum_algorithm(&request.headers)?;
        let bucket = self.owned_bucket(request).await?;
        super::object::check_object_acl(request, &bucket)?;
        let upload = self
            .store
            .create_upload(&request.bucket, &request.key, meta, algorithm)
            .await?;
        let mut xml = xml::document("InitiateMultipartUploadResult");
        xml.element("Bucket", &upload.bucket)
            .element("Key", &upload.key)
            .element("UploadId", &upload.upload_id);
        let mut response = xml_response(StatusCode::OK, xml.finish());
        if let Some(algo) = algorithm
            && let Ok(value) = http::HeaderValue::from_str(algo.name())
        {
            response
                .headers_mut()
                .insert("x-amz-checksum-algorithm", value);
        }
        Ok(response)
    }

    pub(crate) async fn upload_part(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let part_number = part_number(request)?;
        let upload = self.current_upload(request).await?;
        let (staged, checksum) = stage_request_body(self, request, body, true).await?;
        let part = self
            .store
            .put_part(&upload, part_number, staged, checksum)
            .await?;
        let mut response = empty_response(StatusCode::OK);
        put_etag_and_checksum(response.headers_mut(), &part.etag, part.checksum.as_ref());
        Ok(response)
    }

    pub(crate) async fn upload_part_copy(&self, request: &S3Request) -> S3Result<Response> {
        let part_number = part_number(request)?;
        let upload = self.current_upload(request).await?;
        let source = self.copy_source(request).await?;
        let range = match header_str(&request.headers, "x-amz-copy-source-range") {
            None => None,
            Some(text) => Some(copy_range(text, source.view.size)?),
        };
        let staged = self
            .stage_copy(
                &upload.bucket,
                &source,
                range,
                upload.checksum_algorithm,
                true,
            )
            .await?;
        let checksum = checksum_of(&staged, upload.checksum_algorithm);
        let part = self
            .store
            .put_part(&upload, part_number, staged, checksum)
            .await?;
        let mut xml = xml::document("CopyPartResult");
        xml.element("LastModified", &iso8601(part.last_modified_ms))
            .element("ETag", &quoted_etag(&part.etag));
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    pub(crate) async fn complete_upload(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let mut conditions = put_conditions(&request.headers)?;
        // `current_upload` checked that the caller's account owns the bucket.
        conditions.bucket_owner = Some(request.account()?.to_owned());
        let upload = self.current_upload(request).await?;
        let document = read_small_body(request, body, self.limits.max_xml_body).await?;
        let complete: CompleteRequest = xml::parse(&document)?;
        if complete.parts.is_empty() {
            return Err(S3Error::malformed_xml());
        }
        let chosen = complete
            .parts
            .into_iter()
            .map(|part| CompletedPart {
                part_number: part.part_number,
                etag: part.etag,
            })
            .collect();
        let info = self
            .store
            .complete_upload(&upload, chosen, conditions)
            .await?;
        let origin = request.origin.url(&request.headers, "localhost");
        let mut xml = xml::document("CompleteMultipartUploadResult");
        xml.element(
            "Location",
            &format!("{origin}/{}/{}", info.bucket, info.key),
        )
        .element("Bucket", &info.bucket)
        .element("Key", &info.key)
        .element("ETag", &quoted_etag(&info.etag));
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    pub(crate) async fn abort_upload(&self, request: &S3Request) -> S3Result<Response> {
        let upload = self.current_upload(request).await?;
        self.store.abort_upload(&upload).await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn list_parts(&self, request: &S3Request) -> S3Result<Response> {
        let upload = self.current_upload(request).await?;
        let marker: u32 = match request.query.get("part-number-marker") {
            None | Some("") => 0,
            Some(text) => text.parse().map_err(|_| {
                S3Error::invalid_argument(
                    "Provided part-number-marker not an integer or within integer range",
                )
            })?,
        };
        let max_parts = match request.query.get("max-parts") {
            None => MAX_PARTS_PAGE,
            Some(text) => text
                .parse::<i32>()
                .ok()
                .filter(|value| *value >= 0)
                .map(|value| (value as usize).min(MAX_PARTS_PAGE))
                .ok_or_else(|| {
                    S3Error::invalid_argument(
                        "Provided max-parts not an integer or within integer range",
                    )
                })?,
        };
        let (parts, truncated) = self.store.list_parts(&upload, marker, max_parts).await?;
        let account = request.account()?;
        let mut xml = xml::document("ListPartsResult");
        xml.element("Bucket", &upload.bucket)
            .element("Key", &upload.key)
            .element("UploadId", &upload.upload_id);
        for role in ["Initiator", "Owner"] {
            xml.open(role)
                .element("ID", account)
                .element("DisplayName", account)
                .close();
        }
        xml.element("StorageClass", "STANDARD")
            .element("PartNumberMarker", &marker.to_string());
        if let Some(last) = parts.last() {
            xml.element("NextPartNumberMarker", &last.part_number.to_string());
        }
        xml.element("MaxParts", &max_parts.to_string())
            .element("IsTruncated", if truncated { "true" } else { "false" });
        if let Some(algo) = upload.checksum_algorithm {
            xml.element("ChecksumAlgorithm", algo.name());
        }
        for part in &parts {
            xml.open("Part")
                .element("PartNumber", &part.part_number.to_string())
                .element("LastModified", &iso8601(part.last_modified_ms))
                .element("ETag", &quoted_etag(&part.etag))
                .element("Size", &part.size.to_string());
            if let Some((algo, value)) = &part.checksum {
                xml.element(&format!("Checksum{}", algo.name()), value);
            }
            xml.close();
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }
}

fn part_number(request: &S3Request) -> S3Result<u32> {
    request
        .query
        .get("partNumber")
        .and_then(|text| text.parse::<u32>().ok())
        .filter(|number| (1..=10_000).contains(number))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with_extra("ArgumentName", "partNumber")
        })
}

/// `x-amz-copy-source-range: bytes=first-last`, which must lie inside the source.
fn copy_range(text: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let invalid = || {
        S3Error::invalid_argument(format!(
            "Range specified is not valid for source object of size: {size}"
        ))
    };
    let spec = text.trim().strip_prefix("bytes=").ok_or_else(invalid)?;
    let (first, last) = spec.split_once('-').ok_or_else(invalid)?;
    let first: u64 = first.trim().parse().map_err(|_| invalid())?;
    let last: u64 = last.trim().parse().map_err(|_| invalid())?;
    if first > last || last >= size {
        return Err(invalid());
    }
    Ok(first..last + 1)
}

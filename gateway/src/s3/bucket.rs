//! Bucket operations: list, create, head, delete, location, versioning, ACL.

use http::{HeaderValue, StatusCode};
use hyper::body::Incoming;
use strata_store::BucketInfo;

use super::body::read_small_body;
use super::error::{S3Error, S3Result};
use super::headers::iso8601;
use super::xml::{self, CreateBucketConfiguration};
use super::{Response, S3Door, S3Request, empty_response, xml_response};

impl S3Door {
    /// The bucket of the request, if the caller's account owns it.
    pub(crate) async fn owned_bucket(&self, request: &S3Request) -> S3Result<BucketInfo> {
        let info = self.store.bucket(&request.bucket).await?;
        if info.account != request.credential.account {
            return Err(S3Error::access_denied());
        }
        Ok(info)
    }

    pub(crate) async fn list_buckets(&self, request: &S3Request) -> S3Result<Response> {
        let account = &request.credential.account;
        let buckets = self.store.list_buckets(account).await?;
        let mut xml = xml::document("ListAllMyBucketsResult");
        xml.open("Owner")
            .element("ID", account)
            .element("DisplayName", account)
            .close();
        xml.open("Buckets");
        for bucket in &buckets {
            xml.open("Bucket")
                .element("Name", &bucket.name)
                .element("CreationDate", &iso8601(bucket.created_ms))
                .element("BucketRegion", &bucket.region)
                .close();
        }
        xml.close();
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    pub(crate) async fn create_bucket(
        &self,
        request: &S3Request,
        body: Incoming,
    ) -> S3Result<Response> {
        validate_bucket_name(&request.bucket)?;
        let document = read_small_body(request, body, self.limits.max_xml_body).await?;
        if !document.iter().all(u8::is_ascii_whitespace) {
            let config: CreateBucketConfiguration = xml::parse(&document)?;
            if let Some(location) = config.location_constraint.filter(|l| !l.is_empty())
                && location != self.region
            {
                return Err(S3Error::new(
                    "IllegalLocationConstraintException",
                    StatusCode::BAD_REQUEST,
                    format!(
                        "The {location} location constraint is incompatible for the region specific endpoint this request was sent to."
                    ),
                ));
            }
        }
        self.store
            .create_bucket(&request.credential.account, &request.bucket, &self.region)
            .await?;
        let mut response = empty_response(StatusCode::OK);
        if let Ok(location) = HeaderValue::from_str(&format!("/{}", request.bucket)) {
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
        }
        Ok(response)
    }

    pub(crate) async fn head_bucket(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        let mut response = empty_response(StatusCode::OK);
        if let Ok(region) = HeaderValue::from_str(&info.region) {
            response.headers_mut().insert("x-amz-bucket-region", region);
        }
        Ok(response)
    }

    pub(crate) async fn delete_bucket(&self, request: &S3Request) -> S3Result<Response> {
        self.owned_bucket(request).await?;
        self.store.delete_bucket(&request.bucket).await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn get_bucket_location(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        // S3 reports us-east-1 as an empty constraint; SDKs rely on it.
        let text = if info.region == "us-east-1" {
            ""
        } else {
            info.region.as_str()
        };
        let mut xml = xml::document("LocationConstraint");
        xml.text(text);
        let document = xml.finish();
        Ok(xml_response(StatusCode::OK, document))
    }

    pub(crate) async fn get_bucket_versioning(&self, request: &S3Request) -> S3Result<Response> {
        self.owned_bucket(request).await?;
        // Versioning was never enabled: S3 answers an empty configuration.
        Ok(xml_response(
            StatusCode::OK,
            xml::document("VersioningConfiguration").finish(),
        ))
    }

    /// The owner has full control, and nobody else has any: the only policy today.
    pub(crate) async fn get_acl(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        if !request.key.is_empty() {
            self.store
                .head_object(&request.bucket, &request.key)
                .await?;
        }
        let mut xml = xml::document("AccessControlPolicy");
        xml.open("Owner")
            .element("ID", &info.account)
            .element("DisplayName", &info.account)
            .close();
        xml.open("AccessControlList").open("Grant");
        xml.open("Grantee")
            .element("ID", &info.account)
            .element("DisplayName", &info.account)
            .close();
        xml.element("Permission", "FULL_CONTROL");
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }
}

/// S3's rules for new bucket names: 3–63 characters of lower-case letters, digits,
/// dots and hyphens, starting and ending with a letter or digit, no `..`, not an
/// IPv4 address.
pub fn validate_bucket_name(name: &str) -> S3Result<()> {
    let bytes = name.as_bytes();
    let edge_ok = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && !name.contains("..")
        && !name.contains(".-")
        && !name.contains("-.")
        && name.parse::<std::net::Ipv4Addr>().is_err();
    if valid {
        Ok(())
    } else {
        Err(S3Error::new(
            "InvalidBucketName",
            StatusCode::BAD_REQUEST,
            "The specified bucket is not valid.",
        )
        .with_extra("BucketName", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, valid: bool) {
        assert_eq!(validate_bucket_name(name).is_ok(), valid, "{name}");
    }

    #[test]
    fn bucket_names() {
        check("my-bucket.v2", true);
        check("abc", true);
        check("ab", false);
        check(&"a".repeat(64), false);
        check("My-Bucket", false);
        check("-bucket", false);
        check("bucket-", false);
        check("a..b", false);
        check("a_b", false);
        check("192.168.1.1", false);
        check("health", true);
    }
}

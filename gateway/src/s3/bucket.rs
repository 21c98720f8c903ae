//! Bucket operations: list, create, head, delete, location, versioning, ACL.

use crate::wire::RequestBody;
use http::{HeaderValue, StatusCode};
use strata_store::{BucketInfo, BucketPin};

use super::body::read_small_body;
use super::error::{S3Error, S3Result};
use super::headers::header_str;
use super::headers::iso8601;
use super::xml::{self, CreateBucketConfiguration};
use super::{Response, S3Door, S3Request, empty_response, xml_response};
use crate::cors::CorsRule;
use crate::public::{self, PUBLIC_READ, PublicPolicy};
use strata_store::StoreError;

/// The largest bucket policy S3 takes (20 KB) and CORS configuration
/// (64 KB): each public read consults them.
const MAX_POLICY_BYTES: usize = 20 * 1024;
const MAX_CORS_BYTES: usize = 64 * 1024;

impl S3Door {
    /// The bucket of the request, if the caller's account owns it.
    pub(crate) async fn owned_bucket(&self, request: &S3Request) -> S3Result<BucketInfo> {
        let account = request.account()?;
        let info = self.store.bucket(&request.bucket).await?;
        if info.account != account {
            return Err(S3Error::access_denied());
        }
        Ok(info)
    }

    /// Marks an answer [`S3Door::readable_bucket`] allowed: an anonymous
    /// caller's may have been allowed by a Swift `.r:host` rule, for this
    /// Referer only.
    pub(crate) fn vary_public_answer(
        request: &S3Request,
        bucket: &BucketInfo,
        response: &mut crate::wire::Response,
    ) {
        if request.credential.is_none() {
            public::vary_by_referrer(bucket, response.headers_mut());
        }
    }

    /// The bucket, if the caller owns it or its settings make the
    /// request's object (`listing`: its listing) public.
    pub(crate) async fn readable_bucket(
        &self,
        request: &S3Request,
        listing: bool,
    ) -> S3Result<BucketInfo> {
        // From the edge's copy: public reads must not cost a metadata read.
        let info = match self.edge.bucket(&self.store, &request.bucket).await? {
            Some(info) => BucketInfo::clone(&info),
            // Anonymous callers do not learn which buckets exist.
            None if request.credential.is_none() => return Err(S3Error::access_denied()),
            None => return Err(StoreError::NoSuchBucket.into()),
        };
        if request
            .account()
            .is_ok_and(|account| account == info.account)
        {
            return Ok(info);
        }
        let referrer = header_str(&request.headers, "referer");
        let public = if listing {
            public::anonymous_listing(&info, referrer)
        } else {
            public::anonymous_object_read(&info, Some(&request.key), referrer)
        };
        if public {
            Ok(info)
        } else {
            Err(S3Error::access_denied())
        }
    }

    pub(crate) async fn list_buckets(&self, request: &S3Request) -> S3Result<Response> {
        let account = request.account()?;
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
        body: RequestBody,
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
        let mut attrs = std::collections::BTreeMap::new();
        if let Some(acl) = canned_acl(&request.headers)? {
            attrs.insert(public::ATTR_S3_ACL.to_owned(), acl.to_owned());
        }
        self.store
            .create_bucket_with(request.account()?, &request.bucket, &self.region, attrs)
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
        // Whoever may list the bucket may ask whether it exists, as on S3
        // (a public-read bucket answers anyone).
        let info = self.readable_bucket(request, true).await?;
        let mut response = empty_response(StatusCode::OK);
        if let Ok(region) = HeaderValue::from_str(&info.region) {
            response.headers_mut().insert("x-amz-bucket-region", region);
        }
        Ok(response)
    }

    pub(crate) async fn delete_bucket(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        self.store
            .delete_bucket_pinned(&request.bucket, &BucketPin::of(&bucket))
            .await?;
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
        let info = self.owned_bucket_and_object(request).await?;
        let mut xml = xml::document("AccessControlPolicy");
        xml.open("Owner")
            .element("ID", &info.account)
            .element("DisplayName", &info.account)
            .close();
        // Each grantee says its type, as S3 writes it: s3cmd reads the
        // attribute unconditionally (and stops with a traceback without it).
        xml.open("AccessControlList").open("Grant");
        xml.open_with("Grantee", &grantee_type("CanonicalUser"))
            .element("ID", &info.account)
            .element("DisplayName", &info.account)
            .close();
        xml.element("Permission", "FULL_CONTROL").close();
        if request.key.is_empty() && public::is_public_read(&info) {
            xml.open("Grant")
                .open_with("Grantee", &grantee_type("Group"))
                .element("URI", ALL_USERS)
                .close()
                .element("Permission", "READ")
                .close();
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    /// GetObjectTagging: objects carry no tags here (`x-amz-tagging` and
    /// PutObjectTagging are refused), so an object's set is empty. The aws
    /// CLI reads it before every multipart copy (`s3 cp` of 8 MiB or more
    /// from a bucket), and stops the copy if the read fails.
    pub(crate) async fn get_object_tagging(&self, request: &S3Request) -> S3Result<Response> {
        self.owned_bucket_and_object(request).await?;
        let mut xml = xml::document("Tagging");
        xml.open("TagSet").close();
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    /// DeleteObjectTagging: there is nothing to delete.
    pub(crate) async fn delete_object_tagging(&self, request: &S3Request) -> S3Result<Response> {
        self.owned_bucket_and_object(request).await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// [`S3Door::owned_bucket`], and the request's object in it when it
    /// names one (`NoSuchKey` otherwise).
    async fn owned_bucket_and_object(&self, request: &S3Request) -> S3Result<BucketInfo> {
        let info = self.owned_bucket(request).await?;
        if !request.key.is_empty() {
            self.store
                .head_object(&request.bucket, &request.key)
                .await?;
        }
        Ok(info)
    }

    /// PutBucketAcl: the canned `x-amz-acl` (`private`, `public-read`), or
    /// an `AccessControlPolicy` body whose only grant beyond the owner's is
    /// READ to AllUsers.
    pub(crate) async fn put_bucket_acl(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        let acl = match canned_acl(&request.headers)? {
            Some(acl) => acl,
            None => {
                let document = read_small_body(request, body, self.limits.max_xml_body).await?;
                acl_from_policy(&document)?
            }
        };
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), move |bucket| {
                if acl == PUBLIC_READ {
                    bucket
                        .attrs
                        .insert(public::ATTR_S3_ACL.to_owned(), acl.to_owned());
                } else {
                    bucket.attrs.remove(public::ATTR_S3_ACL);
                }
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::OK))
    }

    pub(crate) async fn put_bucket_cors(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        let limit = MAX_CORS_BYTES.min(self.limits.max_xml_body);
        let document = read_small_body(request, body, limit).await?;
        let configuration: xml::CorsConfiguration = xml::parse(&document)?;
        let rules = cors_rules(configuration)?;
        let encoded = serde_json::to_string(&rules).map_err(|_| S3Error::malformed_xml())?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), move |bucket| {
                bucket
                    .attrs
                    .insert(crate::cors::ATTR_S3_CORS.to_owned(), encoded.clone());
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::OK))
    }

    pub(crate) async fn get_bucket_cors(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        let rules: Vec<CorsRule> = info
            .attrs
            .get(crate::cors::ATTR_S3_CORS)
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| {
                S3Error::new(
                    "NoSuchCORSConfiguration",
                    StatusCode::NOT_FOUND,
                    "The CORS configuration does not exist",
                )
            })?;
        let mut xml = xml::document("CORSConfiguration");
        for rule in &rules {
            xml.open("CORSRule");
            for (name, values) in [
                ("AllowedOrigin", &rule.allowed_origins),
                ("AllowedMethod", &rule.allowed_methods),
                ("AllowedHeader", &rule.allowed_headers),
                ("ExposeHeader", &rule.expose_headers),
            ] {
                for value in values {
                    xml.element(name, value);
                }
            }
            if let Some(age) = rule.max_age_secs {
                xml.element("MaxAgeSeconds", &age.to_string());
            }
            xml.close();
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    pub(crate) async fn delete_bucket_cors(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), |bucket| {
                bucket.attrs.remove(crate::cors::ATTR_S3_CORS);
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn get_bucket_policy(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        let Some(policy) = info.attrs.get(public::ATTR_S3_POLICY) else {
            return Err(S3Error::new(
                "NoSuchBucketPolicy",
                StatusCode::NOT_FOUND,
                "The bucket policy does not exist",
            ));
        };
        let mut response = crate::wire::json_response(StatusCode::OK, policy.clone());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    pub(crate) async fn put_bucket_policy(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        let limit = MAX_POLICY_BYTES.min(self.limits.max_xml_body);
        let document = read_small_body(request, body, limit).await?;
        let text = String::from_utf8(document.to_vec()).map_err(|_| {
            S3Error::new(
                "MalformedPolicy",
                StatusCode::BAD_REQUEST,
                "Policies must be UTF-8",
            )
        })?;
        PublicPolicy::parse(&request.bucket, &text)
            .map_err(|why| S3Error::new("MalformedPolicy", StatusCode::BAD_REQUEST, why))?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), move |bucket| {
                bucket
                    .attrs
                    .insert(public::ATTR_S3_POLICY.to_owned(), text.clone());
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    pub(crate) async fn delete_bucket_policy(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), |bucket| {
                bucket.attrs.remove(public::ATTR_S3_POLICY);
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
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

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// `x-amz-acl`, if sent: `private` or `public-read`; the other canned ACLs
/// grant writes or per-user reads, which strata does not keep.
fn canned_acl(headers: &http::HeaderMap) -> S3Result<Option<&'static str>> {
    match header_str(headers, "x-amz-acl").map(str::trim) {
        None => Ok(None),
        Some("private") => Ok(Some("private")),
        Some("public-read") => Ok(Some(PUBLIC_READ)),
        Some(other) => Err(S3Error::not_implemented(&format!("The canned ACL {other}"))),
    }
}

/// The canned ACL an `AccessControlPolicy` document amounts to.
fn acl_from_policy(document: &[u8]) -> S3Result<&'static str> {
    let policy: xml::AccessControlPolicy = xml::parse(document)?;
    let mut public_read = false;
    for grant in policy.access_control_list.grants {
        match (grant.grantee.uri.as_deref(), grant.permission.as_str()) {
            (None, "FULL_CONTROL") => {}
            (Some(ALL_USERS), "READ") => public_read = true,
            _ => {
                return Err(S3Error::not_implemented(
                    "Grants other than the owner's FULL_CONTROL and READ to AllUsers",
                ));
            }
        }
    }
    Ok(if public_read { PUBLIC_READ } else { "private" })
}

/// The rules of a PutBucketCors body, checked as S3 checks them.
fn cors_rules(configuration: xml::CorsConfiguration) -> S3Result<Vec<CorsRule>> {
    if configuration.rules.is_empty() || configuration.rules.len() > crate::cors::MAX_RULES {
        return Err(S3Error::malformed_xml());
    }
    configuration
        .rules
        .into_iter()
        .map(|rule| {
            if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
                return Err(S3Error::malformed_xml());
            }
            if let Some(method) = rule.allowed_methods.iter().find(|method| {
                !matches!(method.as_str(), "GET" | "PUT" | "POST" | "DELETE" | "HEAD")
            }) {
                return Err(S3Error::invalid_request(format!(
                    "Found unsupported HTTP method in CORS config. Unsupported method is {method}"
                )));
            }
            if let Some(origin) = rule
                .allowed_origins
                .iter()
                .find(|origin| origin.matches('*').count() > 1)
            {
                return Err(S3Error::invalid_request(format!(
                    "AllowedOrigin \"{origin}\" can not have more than one wildcard."
                )));
            }
            Ok(CorsRule {
                allowed_origins: rule.allowed_origins,
                allowed_methods: rule.allowed_methods,
                allowed_headers: rule
                    .allowed_headers
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                expose_headers: rule.expose_headers,
                max_age_secs: rule.max_age_seconds,
                from_swift: false,
            })
        })
        .collect()
}

/// The attributes of an ACL's `<Grantee>` of type `kind` (`CanonicalUser`
/// or `Group`).
fn grantee_type(kind: &str) -> [(&str, &str); 2] {
    [
        ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
        ("xsi:type", kind),
    ]
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

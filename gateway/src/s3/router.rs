//! Which S3 operation a request is: decided once, from method, bucket, key and
//! query, before any handler runs.

use http::Method;

use strata_auth::Role;

use super::error::{S3Error, S3Result};

pub use crate::wire::Query;

/// Decodes the query string; parameters that are not UTF-8 are refused.
pub fn parse_query(raw: Option<&str>) -> S3Result<Query> {
    Query::parse(raw).ok_or_else(|| S3Error::invalid_argument("Query parameters must be UTF-8"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Op {
    ListBuckets,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    GetBucketLocation,
    GetBucketVersioning,
    GetBucketAcl,
    PutBucketAcl,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    /// A CORS preflight `OPTIONS`.
    Preflight,
    GetBucketPolicy,
    PutBucketPolicy,
    DeleteBucketPolicy,
    GetBucketWebsite,
    PutBucketWebsite,
    DeleteBucketWebsite,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    GetObjectAcl,
    GetObjectTagging,
    DeleteObjectTagging,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
}

/// Sub-resources of S3 this server does not offer: asking for one must not be
/// mistaken for the plain operation (a `PUT ?tagging` is not a `PutObject`).
const UNSUPPORTED_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "analytics",
    "attributes",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataConfiguration",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policyStatus",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "torrent",
];

/// Picks the operation. `bucket`/`key` say whether the path named them;
/// `copy_source` whether `x-amz-copy-source` was sent.
pub fn route(
    method: &Method,
    bucket: bool,
    key: bool,
    query: &Query,
    copy_source: bool,
) -> S3Result<S3Op> {
    use S3Op::*;
    if let Some(name) = UNSUPPORTED_SUBRESOURCES.iter().find(|name| query.has(name)) {
        return Err(S3Error::not_implemented(&format!(
            "The ?{name} sub-resource"
        )));
    }
    let op = match (method.as_str(), bucket, key) {
        ("GET", false, _) => ListBuckets,
        (_, false, _) => return Err(method_not_allowed()),

        // Objects carry no tags: their (empty) set can be read and
        // deleted, as the aws CLI does around copies, not written.
        ("GET", true, true) if query.has("tagging") => GetObjectTagging,
        ("DELETE", true, true) if query.has("tagging") => DeleteObjectTagging,
        (_, true, _) if query.has("tagging") => {
            return Err(S3Error::not_implemented("The ?tagging sub-resource"));
        }

        ("PUT", true, false) if query.has("versioning") => {
            return Err(S3Error::not_implemented("Changing versioning"));
        }
        ("PUT", true, false) if query.has("acl") => PutBucketAcl,
        ("PUT", true, false) if query.has("cors") => PutBucketCors,
        ("GET", true, false) if query.has("cors") => GetBucketCors,
        ("DELETE", true, false) if query.has("cors") => DeleteBucketCors,
        ("OPTIONS", true, _) => Preflight,
        ("PUT", true, false) if query.has("policy") => PutBucketPolicy,
        ("GET", true, false) if query.has("policy") => GetBucketPolicy,
        ("DELETE", true, false) if query.has("policy") => DeleteBucketPolicy,
        ("PUT", true, false) if query.has("website") => PutBucketWebsite,
        ("GET", true, false) if query.has("website") => GetBucketWebsite,
        ("DELETE", true, false) if query.has("website") => DeleteBucketWebsite,
        // CreateBucket and DeleteBucket take no parameter: any other is a
        // sub-resource this list does not know yet, never a reason to
        // create or delete the bucket.
        ("PUT" | "DELETE", true, false) if let Some(name) = unknown_parameter(query) => {
            return Err(S3Error::not_implemented(&format!(
                "The ?{name} sub-resource"
            )));
        }
        ("PUT", true, false) => CreateBucket,
        ("HEAD", true, false) => HeadBucket,
        ("DELETE", true, false) => DeleteBucket,
        ("GET", true, false) if query.has("location") => GetBucketLocation,
        ("GET", true, false) if query.has("versioning") => GetBucketVersioning,
        ("GET", true, false) if query.has("acl") => GetBucketAcl,
        ("GET", true, false) if query.has("versions") => ListObjectVersions,
        ("GET", true, false) if query.has("uploads") => ListMultipartUploads,
        ("GET", true, false) if query.get("list-type") == Some("2") => ListObjectsV2,
        ("GET", true, false) if query.has("list-type") => {
            return Err(S3Error::invalid_argument("list-type must be 2"));
        }
        ("GET", true, false) => ListObjects,
        ("POST", true, false) if query.has("delete") => DeleteObjects,
        (_, true, false) => return Err(method_not_allowed()),

        // Website configurations are the bucket's; no object has one.
        (_, true, true) if query.has("website") => {
            return Err(S3Error::not_implemented(
                "The ?website sub-resource on objects",
            ));
        }
        ("PUT", true, true) if query.has("acl") => {
            return Err(S3Error::not_implemented("Changing ACLs"));
        }
        ("PUT", true, true) if query.has("partNumber") || query.has("uploadId") => {
            if !(query.has("partNumber") && query.has("uploadId")) {
                return Err(S3Error::invalid_request(
                    "UploadPart needs both partNumber and uploadId",
                ));
            }
            if copy_source {
                UploadPartCopy
            } else {
                UploadPart
            }
        }
        ("PUT", true, true) if copy_source => CopyObject,
        ("PUT", true, true) => PutObject,
        ("GET", true, true) if query.has("acl") => GetObjectAcl,
        ("GET", true, true) if query.has("uploadId") => ListParts,
        ("GET", true, true) => GetObject,
        ("HEAD", true, true) => HeadObject,
        ("DELETE", true, true) if query.has("uploadId") => AbortMultipartUpload,
        ("DELETE", true, true) => DeleteObject,
        ("POST", true, true) if query.has("uploads") => CreateMultipartUpload,
        ("POST", true, true) if query.has("uploadId") => CompleteMultipartUpload,
        (_, true, true) => return Err(method_not_allowed()),
    };
    Ok(op)
}

/// A query parameter that is neither a signature's (presigned SigV4 or V2)
/// nor the operation name SDKs add (`x-id`).
fn unknown_parameter(query: &Query) -> Option<&str> {
    const SIGNATURE_V2: [&str; 3] = ["AWSAccessKeyId", "Expires", "Signature"];
    query.0.iter().map(|(name, _)| name.as_str()).find(|name| {
        !(*name == "x-id"
            || SIGNATURE_V2.contains(name)
            || name
                .get(..6)
                .is_some_and(|start| start.eq_ignore_ascii_case("x-amz-")))
    })
}

fn method_not_allowed() -> S3Error {
    S3Error::new(
        "MethodNotAllowed",
        http::StatusCode::METHOD_NOT_ALLOWED,
        "The specified method is not allowed against this resource.",
    )
}

impl S3Op {
    /// Operations a request without credentials may attempt; the bucket's
    /// public settings then decide. An anonymous HeadBucket is a visitor's
    /// HEAD of a website's root; without a website it is refused.
    pub fn allows_anonymous(self) -> bool {
        matches!(
            self,
            S3Op::GetObject
                | S3Op::HeadObject
                | S3Op::HeadBucket
                | S3Op::ListObjects
                | S3Op::ListObjectsV2
                | S3Op::Preflight
        )
    }

    /// The least role a signer needs in the bucket's account, as the Swift
    /// door decides for the same users: readers read, writers also write
    /// and delete objects, account admins manage buckets and their
    /// settings (ACLs and policies are read by them only, as Swift shows
    /// container ACLs to admins only).
    pub fn least_role(self) -> Role {
        use S3Op::*;
        match self {
            ListBuckets | HeadBucket | GetBucketLocation | GetBucketVersioning | GetBucketCors
            | GetBucketWebsite | Preflight | ListObjects | ListObjectsV2 | ListObjectVersions
            | ListMultipartUploads | GetObject | HeadObject | GetObjectTagging | ListParts => {
                Role::Reader
            }
            PutObject
            | CopyObject
            | DeleteObject
            | DeleteObjects
            | DeleteObjectTagging
            | CreateMultipartUpload
            | UploadPart
            | UploadPartCopy
            | CompleteMultipartUpload
            | AbortMultipartUpload => Role::Writer,
            CreateBucket | DeleteBucket | GetBucketAcl | PutBucketAcl | GetObjectAcl
            | PutBucketCors | DeleteBucketCors | GetBucketPolicy | PutBucketPolicy
            | DeleteBucketPolicy | PutBucketWebsite | DeleteBucketWebsite => Role::AccountAdmin,
        }
    }

    /// The operation's name in AWS's API reference, for logs and traces.
    pub fn name(self) -> &'static str {
        use S3Op::*;
        match self {
            ListBuckets => "ListBuckets",
            CreateBucket => "CreateBucket",
            HeadBucket => "HeadBucket",
            DeleteBucket => "DeleteBucket",
            GetBucketLocation => "GetBucketLocation",
            GetBucketVersioning => "GetBucketVersioning",
            GetBucketAcl => "GetBucketAcl",
            PutBucketAcl => "PutBucketAcl",
            GetBucketCors => "GetBucketCors",
            PutBucketCors => "PutBucketCors",
            DeleteBucketCors => "DeleteBucketCors",
            Preflight => "Preflight",
            GetBucketPolicy => "GetBucketPolicy",
            PutBucketPolicy => "PutBucketPolicy",
            DeleteBucketPolicy => "DeleteBucketPolicy",
            GetBucketWebsite => "GetBucketWebsite",
            PutBucketWebsite => "PutBucketWebsite",
            DeleteBucketWebsite => "DeleteBucketWebsite",
            ListObjects => "ListObjects",
            ListObjectsV2 => "ListObjectsV2",
            ListObjectVersions => "ListObjectVersions",
            ListMultipartUploads => "ListMultipartUploads",
            DeleteObjects => "DeleteObjects",
            PutObject => "PutObject",
            CopyObject => "CopyObject",
            GetObject => "GetObject",
            HeadObject => "HeadObject",
            GetObjectAcl => "GetObjectAcl",
            GetObjectTagging => "GetObjectTagging",
            DeleteObjectTagging => "DeleteObjectTagging",
            DeleteObject => "DeleteObject",
            CreateMultipartUpload => "CreateMultipartUpload",
            UploadPart => "UploadPart",
            UploadPartCopy => "UploadPartCopy",
            CompleteMultipartUpload => "CompleteMultipartUpload",
            AbortMultipartUpload => "AbortMultipartUpload",
            ListParts => "ListParts",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `request` is `METHOD /path?query`, path-style, as in AWS's API reference
    /// examples; `copy` adds `x-amz-copy-source`.
    fn check(request: &str, copy: bool, expected: Result<S3Op, &str>) {
        let (method, target) = request.split_once(' ').unwrap();
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let bucket = parts.next().is_some_and(|bucket| !bucket.is_empty());
        let key = parts.next().is_some_and(|key| !key.is_empty());
        let query = parse_query(query).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let got = route(&method, bucket, key, &query, copy).map_err(|err| err.code);
        assert_eq!(got, expected, "{request}");
    }

    #[test]
    fn aws_documented_request_forms() {
        use S3Op::*;
        check("GET /", false, Ok(ListBuckets));
        check("PUT /examplebucket", false, Ok(CreateBucket));
        check("HEAD /examplebucket", false, Ok(HeadBucket));
        check("DELETE /examplebucket", false, Ok(DeleteBucket));
        check("GET /examplebucket?location", false, Ok(GetBucketLocation));
        check(
            "GET /examplebucket?versioning",
            false,
            Ok(GetBucketVersioning),
        );
        check("GET /examplebucket?acl", false, Ok(GetBucketAcl));
        check("PUT /examplebucket?acl", false, Ok(PutBucketAcl));
        check("GET /examplebucket?policy", false, Ok(GetBucketPolicy));
        check("PUT /examplebucket?policy", false, Ok(PutBucketPolicy));
        check(
            "DELETE /examplebucket?policy",
            false,
            Ok(DeleteBucketPolicy),
        );
        check("PUT /examplebucket?cors", false, Ok(PutBucketCors));
        check("GET /examplebucket?cors", false, Ok(GetBucketCors));
        check("DELETE /examplebucket?cors", false, Ok(DeleteBucketCors));
        check("PUT /examplebucket?website", false, Ok(PutBucketWebsite));
        check("GET /examplebucket?website", false, Ok(GetBucketWebsite));
        check(
            "DELETE /examplebucket?website",
            false,
            Ok(DeleteBucketWebsite),
        );
        check("OPTIONS /examplebucket/photo.jpg", false, Ok(Preflight));
        check(
            "GET /examplebucket?versions&prefix=photos",
            false,
            Ok(ListObjectVersions),
        );
        check(
            "GET /examplebucket?uploads&max-uploads=3",
            false,
            Ok(ListMultipartUploads),
        );
        check(
            "GET /examplebucket?list-type=2&max-keys=2",
            false,
            Ok(ListObjectsV2),
        );
        check(
            "GET /examplebucket?prefix=N&marker=Ned&max-keys=40",
            false,
            Ok(ListObjects),
        );
        check("POST /examplebucket?delete", false, Ok(DeleteObjects));
        check("PUT /examplebucket/my-image.jpg", false, Ok(PutObject));
        check(
            "PUT /examplebucket/my-image.jpg?x-id=PutObject",
            false,
            Ok(PutObject),
        );
        check(
            "PUT /examplebucket/my-second-image.jpg",
            true,
            Ok(CopyObject),
        );
        check("GET /examplebucket/my-image.jpg", false, Ok(GetObject));
        check(
            "GET /examplebucket/my-image.jpg?response-content-type=text/plain",
            false,
            Ok(GetObject),
        );
        check("HEAD /examplebucket/my-image.jpg", false, Ok(HeadObject));
        check(
            "GET /examplebucket/my-image.jpg?acl",
            false,
            Ok(GetObjectAcl),
        );
        check(
            "DELETE /examplebucket/my-image.jpg",
            false,
            Ok(DeleteObject),
        );
        check(
            "POST /examplebucket/example-object?uploads",
            false,
            Ok(CreateMultipartUpload),
        );
        check(
            "PUT /examplebucket/my-movie.m2ts?partNumber=1&uploadId=VCVsb2FkIElEIGZvciBlbZZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZR",
            false,
            Ok(UploadPart),
        );
        check(
            "PUT /examplebucket/example-object?partNumber=1&uploadId=abc",
            true,
            Ok(UploadPartCopy),
        );
        check(
            "POST /examplebucket/example-object?uploadId=AAAsb2FkIElEIGZvciBlbHZpbmcncyWeeS1tb3ZpZS5tMnRzIRRwbG9hZA",
            false,
            Ok(CompleteMultipartUpload),
        );
        check(
            "DELETE /examplebucket/example-object?uploadId=VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZ",
            false,
            Ok(AbortMultipartUpload),
        );
        check(
            "GET /examplebucket/example-object?uploadId=XXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA&max-parts=2&part-number-marker=1",
            false,
            Ok(ListParts),
        );
    }

    #[test]
    fn refusals() {
        check("PUT /examplebucket?tagging", false, Err("NotImplemented"));
        check("GET /examplebucket?tagging", false, Err("NotImplemented"));
        check(
            "DELETE /examplebucket?tagging",
            false,
            Err("NotImplemented"),
        );
        check("PUT /examplebucket/k?tagging", false, Err("NotImplemented"));
        check("PUT /examplebucket/k?tagging", true, Err("NotImplemented"));
        check(
            "GET /examplebucket/k?tagging",
            false,
            Ok(S3Op::GetObjectTagging),
        );
        check(
            "DELETE /examplebucket/k?tagging",
            false,
            Ok(S3Op::DeleteObjectTagging),
        );
        check(
            "DELETE /examplebucket?metadataTable",
            false,
            Err("NotImplemented"),
        );
        check(
            "PUT /examplebucket/k?renameObject",
            true,
            Err("NotImplemented"),
        );
        // A sub-resource nobody listed yet never deletes or creates a bucket.
        check("DELETE /examplebucket?abac", false, Err("NotImplemented"));
        check("PUT /examplebucket?newthing", false, Err("NotImplemented"));
        check(
            "DELETE /examplebucket?x-id=DeleteBucket",
            false,
            Ok(S3Op::DeleteBucket),
        );
        check(
            "PUT /examplebucket?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=60",
            false,
            Ok(S3Op::CreateBucket),
        );
        check(
            "PUT /examplebucket?versioning",
            false,
            Err("NotImplemented"),
        );
        check("POST /examplebucket", false, Err("MethodNotAllowed"));
        check(
            "POST /examplebucket?website",
            false,
            Err("MethodNotAllowed"),
        );
        check("PUT /examplebucket/k?website", false, Err("NotImplemented"));
        check("GET /examplebucket/k?website", false, Err("NotImplemented"));
        check("PUT /", false, Err("MethodNotAllowed"));
        check("POST /examplebucket/k", false, Err("MethodNotAllowed"));
        check(
            "PUT /examplebucket/k?partNumber=1",
            false,
            Err("InvalidRequest"),
        );
        check(
            "GET /examplebucket?list-type=3",
            false,
            Err("InvalidArgument"),
        );
    }

    #[test]
    fn query_decoding() {
        let query = parse_query(Some("prefix=a+b%2Fc&delimiter=%2F&versions")).unwrap();
        assert_eq!(query.get("prefix"), Some("a b/c"));
        assert_eq!(query.get("delimiter"), Some("/"));
        assert!(query.has("versions"));
        assert!(parse_query(Some("prefix=%FF")).is_err());
    }
}

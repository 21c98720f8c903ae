//! Mapping every failure to S3's wire form: code, HTTP status and XML body.

use http::StatusCode;
use strata_auth::AuthError;
use strata_store::StoreError;

/// An S3 error response.
#[derive(Debug, Clone)]
pub struct S3Error {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Extra elements of the error body (`<Region>`, `<ArgumentName>` …).
    pub extra: Vec<(&'static str, String)>,
    /// Extra response headers (`Content-Range` on 416, `x-amz-bucket-region` …).
    pub headers: Vec<(&'static str, String)>,
}

pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    pub fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        S3Error {
            code,
            status,
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_extra(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new("InvalidArgument", StatusCode::BAD_REQUEST, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new("InvalidRequest", StatusCode::BAD_REQUEST, message)
    }

    pub fn malformed_xml() -> Self {
        Self::new(
            "MalformedXML",
            StatusCode::BAD_REQUEST,
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            "NotImplemented",
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not implemented by this server."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            "InternalError",
            StatusCode::INTERNAL_SERVER_ERROR,
            "We encountered an internal error. Please try again.",
        )
    }

    pub fn access_denied() -> Self {
        Self::new("AccessDenied", StatusCode::FORBIDDEN, "Access Denied")
    }

    pub fn bad_digest(message: impl Into<String>) -> Self {
        Self::new("BadDigest", StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for S3Error {
    fn from(err: StoreError) -> Self {
        use StatusCode as S;
        match err {
            StoreError::NoSuchBucket => S3Error::new(
                "NoSuchBucket",
                S::NOT_FOUND,
                "The specified bucket does not exist",
            ),
            StoreError::NoSuchKey => S3Error::new(
                "NoSuchKey",
                S::NOT_FOUND,
                "The specified key does not exist.",
            ),
            StoreError::NoSuchUpload => S3Error::new(
                "NoSuchUpload",
                S::NOT_FOUND,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
            ),
            StoreError::BucketAlreadyExists => S3Error::new(
                "BucketAlreadyExists",
                S::CONFLICT,
                "The requested bucket name is not available.",
            ),
            StoreError::BucketAlreadyOwnedByYou => S3Error::new(
                "BucketAlreadyOwnedByYou",
                S::CONFLICT,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            StoreError::BucketNotEmpty => S3Error::new(
                "BucketNotEmpty",
                S::CONFLICT,
                "The bucket you tried to delete is not empty",
            ),
            StoreError::InvalidBucketName(_) => S3Error::new(
                "InvalidBucketName",
                S::BAD_REQUEST,
                "The specified bucket is not valid.",
            ),
            StoreError::InvalidKey(why) => {
                if why.contains("1024") {
                    S3Error::new("KeyTooLongError", S::BAD_REQUEST, "Your key is too long")
                } else {
                    S3Error::new(
                        "InvalidArgument",
                        S::BAD_REQUEST,
                        format!("Invalid object key: {why}"),
                    )
                }
            }
            StoreError::TooLarge(limit) => S3Error::new(
                "EntityTooLarge",
                S::BAD_REQUEST,
                "Your proposed upload exceeds the maximum allowed object size.",
            )
            .with_extra("MaxSizeAllowed", limit.to_string()),
            StoreError::InvalidPart(number, why) => S3Error::new(
                "InvalidPart",
                S::BAD_REQUEST,
                format!(
                    "One or more of the specified parts could not be found or did not match: part {number}: {why}"
                ),
            ),
            StoreError::InvalidPartOrder => S3Error::new(
                "InvalidPartOrder",
                S::BAD_REQUEST,
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            ),
            StoreError::PartTooSmall { part_number, size } => S3Error::new(
                "EntityTooSmall",
                S::BAD_REQUEST,
                "Your proposed upload is smaller than the minimum allowed object size.",
            )
            .with_extra("PartNumber", part_number.to_string())
            .with_extra("ProposedSize", size.to_string()),
            StoreError::PreconditionFailed => S3Error::new(
                "PreconditionFailed",
                S::PRECONDITION_FAILED,
                "At least one of the pre-conditions you specified did not hold",
            ),
            StoreError::InvalidArgument(message) => S3Error::invalid_argument(message),
            StoreError::Conflict => S3Error::new(
                "OperationAborted",
                S::CONFLICT,
                "A conflicting conditional operation is currently in progress against this resource. Try again.",
            ),
            err @ StoreError::Unavailable(_) => {
                tracing::error!(error = %err, "metadata service unavailable");
                S3Error::new(
                    "ServiceUnavailable",
                    S::SERVICE_UNAVAILABLE,
                    "Please reduce your request rate.",
                )
            }
            err @ (StoreError::Corrupt(_)
            | StoreError::Pool(_)
            | StoreError::Db(_)
            | StoreError::Internal(_)) => {
                tracing::error!(error = %err, "storage failure");
                if matches!(
                    err,
                    StoreError::Pool(
                        strata_pool::PoolError::Poisoned | strata_pool::PoolError::Unavailable(_)
                    )
                ) {
                    S3Error::new(
                        "ServiceUnavailable",
                        S::SERVICE_UNAVAILABLE,
                        "Please reduce your request rate.",
                    )
                } else {
                    S3Error::internal()
                }
            }
        }
    }
}

impl From<AuthError> for S3Error {
    fn from(err: AuthError) -> Self {
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let message = match &err {
            AuthError::Anonymous => "Access Denied".to_owned(),
            AuthError::RequestExpired => "Request has expired".to_owned(),
            AuthError::IncompleteBody => "The request body terminated unexpectedly".to_owned(),
            other => {
                let text = other.to_string();
                let mut chars = text.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => text,
                }
            }
        };
        let mut s3 = S3Error::new(err.s3_code(), status, message);
        if let AuthError::AuthorizationHeaderMalformed {
            expected_region: Some(region),
            ..
        } = &err
        {
            s3 = s3.with_extra("Region", region.clone());
        }
        s3
    }
}

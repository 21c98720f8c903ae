//! The one error type of this crate.
//!
//! Every variant corresponds to an S3 error code the gateway can answer with;
//! [`AuthError::s3_code`] and [`AuthError::http_status`] give the usual mapping
//! so that every door maps them the same way. The messages are meant for the
//! client (they go into the S3 `<Message>` element) and never contain secrets.

use thiserror::Error;

/// Errors from request verification and from decoding an aws-chunked body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The request carries no SigV4 authentication at all (no `Authorization`
    /// header, no `X-Amz-Algorithm` query parameter). Not necessarily an
    /// error: the gateway decides what anonymous requests may do.
    #[error("the request is anonymous")]
    Anonymous,

    /// Authentication failed for a reason S3 reports as `AccessDenied`
    /// (missing or unparsable date, unsigned `x-amz-*` headers, presigned URL
    /// not yet valid, ...).
    #[error("access denied: {0}")]
    AccessDenied(String),

    /// The access key is not known to the [`crate::CredentialLookup`].
    #[error("the AWS access key ID you provided does not exist in our records")]
    InvalidAccessKeyId,

    /// The signature (of the request, of a chunk or of the trailer) is not the
    /// one the server computed.
    #[error("the request signature we calculated does not match the signature you provided")]
    SignatureDoesNotMatch,

    /// The request time is further from the server clock than
    /// [`crate::SigV4Config::max_clock_skew`].
    #[error("the difference between the request time and the current time is too large")]
    RequestTimeTooSkewed,

    /// A presigned URL whose `X-Amz-Date + X-Amz-Expires` is in the past. S3
    /// answers `AccessDenied` with the message "Request has expired".
    #[error("request has expired")]
    RequestExpired,

    /// The `Authorization` header cannot be parsed or its credential scope is
    /// wrong. `expected_region` is set when the scope names another region,
    /// so that the gateway can add the `<Region>` element S3 clients use to
    /// retry against the right region.
    #[error("the authorization header is malformed: {message}")]
    AuthorizationHeaderMalformed {
        message: String,
        expected_region: Option<String>,
    },

    /// The presigned-URL query parameters are missing, duplicated or invalid.
    #[error("error parsing the query-string authentication parameters: {0}")]
    AuthorizationQueryParametersError(String),

    /// A header S3 requires for this kind of request is absent (the string is
    /// the header name, e.g. `x-amz-content-sha256`).
    #[error("missing required header for this request: {0}")]
    MissingSecurityHeader(String),

    /// A syntactically wrong value for an authentication-related argument
    /// (unsupported algorithm, bad `x-amz-content-sha256`, two auth mechanisms
    /// at once, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The request carries a session token; this server does not issue
    /// temporary credentials yet, so it cannot be valid.
    #[error("the provided token is malformed or otherwise invalid: {0}")]
    InvalidToken(String),

    /// An aws-chunked body ended before its final chunk (and trailer) were
    /// complete.
    #[error("the request body terminated unexpectedly")]
    IncompleteBody,

    /// An aws-chunked body whose framing is wrong (bad chunk header, missing
    /// CRLF, bytes after the end, ...).
    #[error("invalid aws-chunked encoding: {0}")]
    InvalidChunk(String),

    /// A chunk (or a chunk header or trailer section) larger than
    /// [`crate::ChunkLimits`] allows; refused before buffering it.
    #[error("chunk of {size} bytes exceeds the limit of {limit} bytes")]
    ChunkTooLarge { size: u64, limit: u64 },

    /// The trailer section of an aws-chunked body is malformed.
    #[error("invalid trailer: {0}")]
    InvalidTrailer(String),
}

/// Errors of [`crate::AwsChunkedDecoder`]. The decoder and the request
/// verifier share one enum because callers map both to S3 error responses the
/// same way; a bad chunk signature is [`AuthError::SignatureDoesNotMatch`].
pub type ChunkError = AuthError;

impl AuthError {
    /// The S3 error code this error is usually reported as.
    pub fn s3_code(&self) -> &'static str {
        match self {
            AuthError::Anonymous | AuthError::AccessDenied(_) | AuthError::RequestExpired => {
                "AccessDenied"
            }
            AuthError::InvalidAccessKeyId => "InvalidAccessKeyId",
            AuthError::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            AuthError::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AuthError::AuthorizationHeaderMalformed { .. } => "AuthorizationHeaderMalformed",
            AuthError::AuthorizationQueryParametersError(_) => "AuthorizationQueryParametersError",
            AuthError::MissingSecurityHeader(_) => "MissingSecurityHeader",
            AuthError::InvalidArgument(_) => "InvalidArgument",
            AuthError::InvalidToken(_) => "InvalidToken",
            AuthError::IncompleteBody => "IncompleteBody",
            AuthError::InvalidChunk(_) | AuthError::InvalidTrailer(_) => "InvalidRequest",
            AuthError::ChunkTooLarge { .. } => "InvalidRequest",
        }
    }

    /// The HTTP status S3 uses with [`AuthError::s3_code`].
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Anonymous
            | AuthError::AccessDenied(_)
            | AuthError::RequestExpired
            | AuthError::InvalidAccessKeyId
            | AuthError::SignatureDoesNotMatch
            | AuthError::RequestTimeTooSkewed => 403,
            AuthError::AuthorizationHeaderMalformed { .. }
            | AuthError::AuthorizationQueryParametersError(_)
            | AuthError::MissingSecurityHeader(_)
            | AuthError::InvalidArgument(_)
            | AuthError::InvalidToken(_)
            | AuthError::IncompleteBody
            | AuthError::InvalidChunk(_)
            | AuthError::ChunkTooLarge { .. }
            | AuthError::InvalidTrailer(_) => 400,
        }
    }

    pub(crate) fn header_malformed(message: impl Into<String>) -> Self {
        AuthError::AuthorizationHeaderMalformed {
            message: message.into(),
            expected_region: None,
        }
    }
}

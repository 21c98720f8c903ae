//! Swift's failures on the wire: a status and a short text body.

use std::borrow::Cow;

use http::StatusCode;
use strata_store::StoreError;

use crate::directory::DirectoryError;

/// A Swift error response.
#[derive(Debug, Clone)]
pub struct SwiftError {
    pub status: StatusCode,
    pub text: Cow<'static, str>,
    /// Extra response headers (`Content-Range` on 416).
    pub headers: Vec<(&'static str, String)>,
}

pub type SwiftResult<T> = Result<T, SwiftError>;

impl SwiftError {
    pub fn new(status: StatusCode, text: impl Into<Cow<'static, str>>) -> Self {
        SwiftError {
            status,
            text: text.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, text)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: this server could not verify that you are authorized to access the document you requested.",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden: access was denied to this resource.",
        )
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not Found: the resource could not be found.",
        )
    }

    pub fn conflict(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, text)
    }

    pub fn precondition_failed(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, text)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    }

    pub fn unprocessable(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, text)
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: the storage behind this proxy did not answer; try again.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error: the server has either erred or is incapable of performing the requested operation.",
        )
    }
}

impl From<StoreError> for SwiftError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NoSuchBucket | StoreError::NoSuchKey | StoreError::NoSuchUpload => {
                SwiftError::not_found()
            }
            StoreError::BucketAlreadyExists => {
                SwiftError::conflict("Container name is taken by another account")
            }
            StoreError::BucketAlreadyOwnedByYou => SwiftError::conflict("Container exists"),
            StoreError::BucketNotEmpty => SwiftError::conflict(
                "There was a conflict when trying to complete your request: the container is not empty.",
            ),
            StoreError::InvalidBucketName(_) => SwiftError::bad_request("Invalid container name"),
            StoreError::InvalidKey(why) => {
                SwiftError::bad_request(format!("Invalid object name: {why}"))
            }
            StoreError::TooLarge(limit) => SwiftError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request Entity Too Large: the object is larger than {limit} bytes"),
            ),
            StoreError::PreconditionFailed => {
                SwiftError::precondition_failed("Precondition Failed")
            }
            StoreError::InvalidArgument(why) => SwiftError::bad_request(why),
            StoreError::Conflict => {
                SwiftError::conflict("The record changed concurrently; try again")
            }
            StoreError::Unavailable(_)
            | StoreError::Pool(
                strata_pool::PoolError::Unavailable(_) | strata_pool::PoolError::Poisoned,
            ) => {
                tracing::error!(error = %err, "swift request failed: storage unavailable");
                SwiftError::unavailable()
            }
            StoreError::InvalidPart(..)
            | StoreError::InvalidPartOrder
            | StoreError::PartTooSmall { .. } => SwiftError::bad_request(err.to_string()),
            StoreError::Corrupt(_)
            | StoreError::Pool(_)
            | StoreError::Db(_)
            | StoreError::Internal(_) => {
                tracing::error!(error = %err, "swift request failed in the store");
                SwiftError::internal()
            }
        }
    }
}

impl From<DirectoryError> for SwiftError {
    fn from(err: DirectoryError) -> Self {
        match err {
            DirectoryError::NotFound(_) => SwiftError::not_found(),
            DirectoryError::Exists(what) => SwiftError::conflict(format!("{what} already exists")),
            DirectoryError::Invalid(why) => SwiftError::bad_request(why),
            DirectoryError::Store(err) => err.into(),
        }
    }
}

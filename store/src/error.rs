use strata_pool::PoolError;

/// Errors of the object layer. Each door maps them to its protocol's error codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("bucket already exists and is owned by another account")]
    BucketAlreadyExists,
    #[error("bucket already exists and is owned by you")]
    BucketAlreadyOwnedByYou,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("object is larger than the {0}-byte limit")]
    TooLarge(u64),
    #[error("part {0} is invalid: {1}")]
    InvalidPart(u32, String),
    #[error("parts are not in ascending order")]
    InvalidPartOrder,
    #[error("part {part_number} is {size} bytes, below the minimum part size")]
    PartTooSmall { part_number: u32, size: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    #[error("metadata store: {0}")]
    Db(#[from] rocksdb::Error),
    /// The metadata service did not answer (a gateway over another's store).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the record first, every time it was tried.
    #[error("the record changed concurrently; try again")]
    Conflict,
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the failure is the server's (5xx) rather than the request's (4xx).
    pub fn is_server_error(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt(_)
                | StoreError::Pool(_)
                | StoreError::Db(_)
                | StoreError::Internal(_)
                | StoreError::Unavailable(_)
                | StoreError::Conflict
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

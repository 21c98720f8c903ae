//! The one error type of the crate.

use thiserror::Error;

use crate::DeviceId;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    #[error("part power {0} out of range (0..={max})", max = crate::MAX_PART_POWER)]
    PartPowerOutOfRange(u8),
    #[error("replica count {0} out of range (1..={max})", max = crate::MAX_REPLICAS)]
    ReplicasOutOfRange(u8),
    #[error("cluster id must be 1 to 255 bytes")]
    InvalidClusterId,
    #[error("invalid device: {0}")]
    InvalidDevice(&'static str),
    #[error("no device {0}")]
    UnknownDevice(DeviceId),
    #[error("{replicas} replicas need as many devices with weight, the ring has {available}")]
    NotEnoughDevices { replicas: usize, available: usize },
    /// The builder has partitions without a device (new ring, removed devices):
    /// rebalance before building a ring from it.
    #[error("the builder has {unassigned} unassigned partition-replicas: rebalance first")]
    NeedsRebalance { unassigned: usize },
    #[error("ring belongs to cluster {found:?}, expected {expected:?}")]
    ForeignCluster { expected: String, found: String },
    /// The bytes are not a ring this code can read: truncated, corrupted, another
    /// format version, or inconsistent contents. The text says which.
    #[error("damaged ring: {0}")]
    Damaged(String),
    #[error("ring format {0} is not supported")]
    UnsupportedFormat(u16),
    #[error("ring checksum mismatch")]
    ChecksumMismatch,
    #[error("damaged ring builder: {0}")]
    DamagedBuilder(String),
}

//! The partition ring: which devices hold a record.
//!
//! The key space is cut into `2^part_power` partitions; each partition is assigned
//! to `replicas` devices. A record's partition is the top `part_power` bits of
//! MD5(cluster salt ‖ key), so finding where a record lives is one hash and one
//! array index ([`Ring::partition_of`], [`Ring::primaries`]); when a primary is
//! down, [`Ring::handoffs`] names the devices to use instead. This crate owns that
//! table and the arithmetic that builds it; it is OpenStack Swift's ring-builder
//! in spirit, and its tests follow Garage's layout tests.
//!
//! Two types. [`RingBuilder`] is the operator's editable state: devices (node
//! address, region, zone, weight), the current assignment and a version that every
//! change bumps; it is saved as JSON. [`Ring`] is the immutable lookup table built
//! from it, which every node holds; its bytes ([`Ring::to_bytes`]) carry a format
//! number and a CRC32C, so a damaged ring is refused rather than followed, and
//! [`Ring::ensure_cluster`] refuses a ring of another cluster.
//!
//! Key decision: placement works towards an integer quota per device, computed
//! before anything moves (spread first, then weight; see `quota.rs`). Replicas of a
//! partition go to distinct devices, and to distinct zones while there are at
//! least as many zones with weight as replicas; with fewer zones every zone takes
//! its turn. Within those rules each device's share follows its weight. A rebalance
//! then moves only replicas from zones and devices above their quota (or in zones
//! that break the spread rule) to ones below it, and at most one replica of any
//! partition, so the other copies stay readable while it moves. Placement is
//! greedy, not an optimal flow: where zones block a direct move it relays through
//! a third zone, so a change can cost up to two moves per replica the weights
//! require (the property tests bound it so). The one exception is a removed device: its
//! replicas move at once, however many of a partition that is, since they are lost
//! anyway. To drain a device gently, set its weight to zero and rebalance until
//! [`RebalanceReport::held_back`] is zero.
//!
//! Everything is deterministic: the same builder and the same operations give a
//! byte-identical ring on any machine. Orders that should look random (which
//! partitions move first, tie-breaks between equal devices) come from fixed hashes
//! of the cluster id and version, never from the OS.
//!
//! This crate depends on no other strata crate and does no I/O: no sockets, no
//! files, no clock. Callers read and write the bytes.

mod builder;
mod device;
mod error;
mod hash;
mod quota;
mod ring;

pub use builder::{RebalanceReport, RingBuilder};
pub use device::{Device, DeviceId, DeviceSpec, ZoneKey};
pub use error::RingError;
pub use ring::{Handoffs, Partition, Ring};

/// Largest part power: 2^24 partitions of 3 replicas is a 200 MB table already.
pub const MAX_PART_POWER: u8 = 24;
/// Most replicas a partition may have.
pub const MAX_REPLICAS: u8 = 16;

//! Devices: the disks partitions are assigned to, and where they sit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Index of a device in its ring. Ids are handed out in order and never reused, so
/// an id in an old ring never names a different disk in a newer one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl DeviceId {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// What an operator says about a device when adding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Address of the storage node serving the device, e.g. `127.0.0.1:7001`. Devices
    /// with the same address are on the same machine and fail together.
    pub node: String,
    /// Region the node is in (a site); zones are numbered within their region.
    pub region: u32,
    /// Failure domain within the region: a rack, a power feed, a room.
    pub zone: u32,
    /// Relative capacity, in any unit used consistently across the ring (GiB, say).
    /// Zero drains the device: it keeps its partitions only until they can move.
    pub weight: u64,
    /// Free-form label for operators, e.g. `sdb`.
    pub name: Option<String>,
}

/// A device as the ring knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub node: String,
    pub region: u32,
    pub zone: u32,
    pub weight: u64,
    pub name: Option<String>,
}

impl Device {
    pub(crate) fn from_spec(id: DeviceId, spec: DeviceSpec) -> Device {
        Device {
            id,
            node: spec.node,
            region: spec.region,
            zone: spec.zone,
            weight: spec.weight,
            name: spec.name,
        }
    }

    /// The failure domain that placement keeps replicas apart by. Zone numbers are
    /// per region, so the region is part of the key.
    pub fn zone_key(&self) -> ZoneKey {
        ZoneKey {
            region: self.region,
            zone: self.zone,
        }
    }
}

/// A zone, named by its region and its number within the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneKey {
    pub region: u32,
    pub zone: u32,
}

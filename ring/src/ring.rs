//! The immutable lookup table every node holds, and its wire form.

use std::fmt;

use md5::Md5;
use serde::{Deserialize, Serialize};

use crate::builder::check_shape;
use crate::hash::{cluster_seed, key_hasher, partition_index, rank};
use crate::{Device, DeviceId, RingError, ZoneKey};

/// First bytes of every serialised ring.
const MAGIC: &[u8; 8] = b"STRATARN";
/// Layout of [`Ring::to_bytes`]; readers refuse any other.
const FORMAT: u16 = 1;
/// Magic, format, header length.
const PREAMBLE_LEN: usize = 8 + 2 + 4;
const CHECKSUM_LEN: usize = 4;

/// A partition of the key space: the unit of placement and of data movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(u32);

impl Partition {
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Where every record lives: `2^part_power` partitions, each with its devices.
/// Built by [`RingBuilder::ring`](crate::RingBuilder::ring) or read with
/// [`Ring::from_bytes`]; never edited.
#[derive(Clone)]
pub struct Ring {
    version: u64,
    cluster_id: String,
    part_power: u8,
    replicas: u8,
    /// Indexed by device id; `None` for removed devices.
    devices: Vec<Option<Device>>,
    /// `replicas` devices per partition, partition after partition.
    assignment: Vec<DeviceId>,
    key_hasher: Md5,
    order_seed: u64,
}

/// The part of the wire form that is not the assignment table.
#[derive(Serialize, Deserialize)]
struct RingHeader {
    version: u64,
    cluster_id: String,
    part_power: u8,
    replicas: u8,
    devices: Vec<Option<Device>>,
}

impl Ring {
    /// Checks the table against the shape and the devices, then derives the hashers.
    pub(crate) fn from_parts(
        version: u64,
        cluster_id: String,
        part_power: u8,
        replicas: u8,
        devices: Vec<Option<Device>>,
        assignment: Vec<DeviceId>,
    ) -> Result<Ring, RingError> {
        check_shape(&cluster_id, part_power, replicas)?;
        let replica_count = usize::from(replicas);
        let expected = (1usize << part_power) * replica_count;
        if assignment.len() != expected {
            return Err(RingError::Damaged(format!(
                "{} assignment entries, expected {expected}",
                assignment.len()
            )));
        }
        for (index, device) in devices.iter().enumerate() {
            if device.as_ref().is_some_and(|d| d.id.index() != index) {
                return Err(RingError::Damaged(format!(
                    "device at index {index} has another id"
                )));
            }
        }
        for (part, owners) in assignment.chunks(replica_count).enumerate() {
            for (i, id) in owners.iter().enumerate() {
                if devices.get(id.index()).is_none_or(Option::is_none) {
                    return Err(RingError::Damaged(format!(
                        "partition {part} on unknown device {id}"
                    )));
                }
                if owners[..i].contains(id) {
                    return Err(RingError::Damaged(format!(
                        "partition {part} twice on device {id}"
                    )));
                }
            }
        }
        Ok(Ring {
            key_hasher: key_hasher(&cluster_id),
            order_seed: cluster_seed(&cluster_id),
            version,
            cluster_id,
            part_power,
            replicas,
            devices,
            assignment,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn part_power(&self) -> u8 {
        self.part_power
    }

    pub fn replicas(&self) -> usize {
        usize::from(self.replicas)
    }

    pub fn partition_count(&self) -> u32 {
        1 << self.part_power
    }

    /// Every partition, in index order.
    pub fn partitions(&self) -> impl Iterator<Item = Partition> + use<> {
        (0..self.partition_count()).map(Partition)
    }

    /// Partition number `index`, if this ring has it.
    pub fn partition(&self, index: u32) -> Option<Partition> {
        (index < self.partition_count()).then_some(Partition(index))
    }

    /// The partition a record key belongs to: the top `part_power` bits of
    /// MD5(cluster salt ‖ key).
    pub fn partition_of(&self, key: &[u8]) -> Partition {
        Partition(partition_index(&self.key_hasher, self.part_power, key))
    }

    /// The devices that hold the partition, in replica order. Empty for a partition
    /// of another ring that lies beyond this one.
    pub fn primaries(&self, part: Partition) -> &[DeviceId] {
        let replicas = self.replicas();
        let start = part.0 as usize * replicas;
        self.assignment.get(start..start + replicas).unwrap_or(&[])
    }

    /// Devices to use when primaries are unavailable: every other device with
    /// weight, each next one in a region, then a zone, then a node the partition
    /// does not use yet where there is one, otherwise in a fixed pseudo-random order
    /// per partition. Computed as it is consumed; the slow path.
    pub fn handoffs(&self, part: Partition) -> Handoffs<'_> {
        let primaries = self.primaries(part);
        let mut handoffs = Handoffs {
            used_zones: Vec::new(),
            used_nodes: Vec::new(),
            remaining: Vec::new(),
        };
        for device in primaries.iter().filter_map(|&id| self.device(id)) {
            handoffs.mark_used(device);
        }
        handoffs.remaining = self
            .devices()
            .filter(|d| d.weight > 0 && !primaries.contains(&d.id))
            .map(|d| {
                let order = rank(self.order_seed, u64::from(part.0) << 32 | u64::from(d.id.0));
                (order, d)
            })
            .collect();
        handoffs
    }

    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices.get(id.index()).and_then(Option::as_ref)
    }

    /// Devices present, in id order.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().flatten()
    }

    /// Refuses a ring made for another cluster: its partitions would send records
    /// to strangers' devices.
    pub fn ensure_cluster(&self, expected: &str) -> Result<(), RingError> {
        if self.cluster_id == expected {
            Ok(())
        } else {
            Err(RingError::ForeignCluster {
                expected: expected.to_owned(),
                found: self.cluster_id.clone(),
            })
        }
    }

    /// The wire form: magic, format (u16 LE), header length (u32 LE), JSON header
    /// (version, cluster, shape, devices), the assignment table as u32 LE device
    /// ids, and a CRC32C of everything before it (u32 LE).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = RingHeader {
            version: self.version,
            cluster_id: self.cluster_id.clone(),
            part_power: self.part_power,
            replicas: self.replicas,
            devices: self.devices.clone(),
        };
        // Serialising these derived types cannot fail; were it to, the empty header
        // would be refused by `from_bytes` rather than misread.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut bytes = Vec::with_capacity(
            PREAMBLE_LEN + header.len() + self.assignment.len() * 4 + CHECKSUM_LEN,
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for id in &self.assignment {
            bytes.extend_from_slice(&id.0.to_le_bytes());
        }
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Reads [`to_bytes`](Self::to_bytes), refusing truncated, corrupted, foreign
    /// format or inconsistent input. Check the cluster with
    /// [`ensure_cluster`](Self::ensure_cluster) before use.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ring, RingError> {
        if bytes.len() < PREAMBLE_LEN + CHECKSUM_LEN || &bytes[..8] != MAGIC {
            return Err(RingError::Damaged("not a strata ring".into()));
        }
        let format = u16::from_le_bytes([bytes[8], bytes[9]]);
        if format != FORMAT {
            return Err(RingError::UnsupportedFormat(format));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let checksum = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
        if crc32c::crc32c(body) != checksum {
            return Err(RingError::ChecksumMismatch);
        }
        let header_len = u32::from_le_bytes([body[10], body[11], body[12], body[13]]) as usize;
        let table = body
            .get(PREAMBLE_LEN + header_len..)
            .ok_or_else(|| RingError::Damaged("header runs past the end".into()))?;
        let header: RingHeader =
            serde_json::from_slice(&body[PREAMBLE_LEN..PREAMBLE_LEN + header_len])
                .map_err(|e| RingError::Damaged(format!("header: {e}")))?;
        if table.len() % 4 != 0 {
            return Err(RingError::Damaged(
                "assignment table is not whole entries".into(),
            ));
        }
        let assignment = table
            .chunks_exact(4)
            .map(|entry| DeviceId(u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]])))
            .collect();
        Ring::from_parts(
            header.version,
            header.cluster_id,
            header.part_power,
            header.replicas,
            header.devices,
            assignment,
        )
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("version", &self.version)
            .field("cluster_id", &self.cluster_id)
            .field("part_power", &self.part_power)
            .field("replicas", &self.replicas)
            .field("devices", &self.devices().count())
            .finish_non_exhaustive()
    }
}

/// The handoff devices of one partition, best first; see [`Ring::handoffs`].
pub struct Handoffs<'a> {
    used_zones: Vec<ZoneKey>,
    used_nodes: Vec<&'a str>,
    /// Candidates not yet yielded, with their fixed rank for this partition.
    remaining: Vec<(u64, &'a Device)>,
}

impl<'a> Handoffs<'a> {
    fn mark_used(&mut self, device: &'a Device) {
        self.used_zones.push(device.zone_key());
        self.used_nodes.push(&device.node);
    }
}

impl Iterator for Handoffs<'_> {
    type Item = DeviceId;

    fn next(&mut self) -> Option<DeviceId> {
        let (position, _) = self
            .remaining
            .iter()
            .enumerate()
            .min_by_key(|(_, (order, d))| {
                let zone = d.zone_key();
                (
                    self.used_zones.iter().any(|z| z.region == zone.region),
                    self.used_zones.contains(&zone),
                    self.used_nodes.contains(&d.node.as_str()),
                    *order,
                )
            })?;
        let (_, device) = self.remaining.swap_remove(position);
        self.mark_used(device);
        Some(device.id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining.len(), Some(self.remaining.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceSpec, RingBuilder};

    fn small_ring() -> Ring {
        let mut builder = RingBuilder::new("cluster-a", 4, 2).expect("shape");
        for (zone, node) in [
            (1, "10.0.0.1:7001"),
            (2, "10.0.0.2:7001"),
            (3, "10.0.0.3:7001"),
        ] {
            builder
                .add_device(DeviceSpec {
                    node: node.into(),
                    region: 1,
                    zone,
                    weight: 100,
                    name: None,
                })
                .expect("device");
        }
        builder.rebalance().expect("rebalance");
        builder.ring().expect("ring")
    }

    fn check(damage: impl Fn(&mut Vec<u8>), expected: RingError) {
        let mut bytes = small_ring().to_bytes();
        damage(&mut bytes);
        assert_eq!(Ring::from_bytes(&bytes).map(|r| r.version()), Err(expected));
    }

    #[test]
    fn refuses_damaged_bytes() {
        let not_a_ring = || RingError::Damaged("not a strata ring".into());
        check(|b| b.truncate(10), not_a_ring());
        check(|b| b.clear(), not_a_ring());
        check(|b| b[0] = b'X', not_a_ring());
        check(|b| b[8] = 2, RingError::UnsupportedFormat(2));
        check(
            |b| *b.last_mut().expect("bytes") ^= 1,
            RingError::ChecksumMismatch,
        );
        check(|b| b[40] ^= 0x10, RingError::ChecksumMismatch);
        check(
            |b| {
                b.pop();
            },
            RingError::ChecksumMismatch,
        );
    }

    #[test]
    fn refuses_consistent_checksum_over_bad_table() {
        let mut bytes = small_ring().to_bytes();
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        // Point the last entry at a device that does not exist, then re-seal.
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&99u32.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        assert!(matches!(
            Ring::from_bytes(&bytes),
            Err(RingError::Damaged(_))
        ));
    }

    #[test]
    fn refuses_foreign_cluster() {
        let ring = Ring::from_bytes(&small_ring().to_bytes()).expect("round trip");
        assert_eq!(ring.ensure_cluster("cluster-a"), Ok(()));
        assert_eq!(
            ring.ensure_cluster("cluster-b"),
            Err(RingError::ForeignCluster {
                expected: "cluster-b".into(),
                found: "cluster-a".into()
            })
        );
    }

    #[test]
    fn handoffs_prefer_new_zones_and_exclude_primaries() {
        let ring = small_ring();
        for part in ring.partitions() {
            let primaries = ring.primaries(part);
            let handoffs: Vec<DeviceId> = ring.handoffs(part).collect();
            assert_eq!(handoffs.len(), 1);
            assert!(!primaries.contains(&handoffs[0]));
        }
        assert!(ring.primaries(Partition(1 << 20)).is_empty());
    }
}

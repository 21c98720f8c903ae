//! The ring's hashes: where a key goes, and the deterministic orders placement uses.
//!
//! Both must give the same answer on every machine and every build for as long as
//! rings exist, so they are spelled out here rather than taken from `std::hash`,
//! whose algorithms may change between Rust releases.

use md5::{Digest, Md5};

/// Bytes of cluster salt hashed before every key. Eight keep a 40-byte key plus
/// salt and MD5 padding inside one 64-byte block.
const SALT_LEN: usize = 8;

/// MD5 state with the cluster's salt already absorbed: lookups clone it and add the
/// key. The salt makes placement differ between clusters, so a hot key in one
/// cluster does not land on the same device number everywhere.
pub(crate) fn key_hasher(cluster_id: &str) -> Md5 {
    let mut hasher = Md5::new();
    hasher.update(cluster_salt(cluster_id));
    hasher
}

fn cluster_salt(cluster_id: &str) -> [u8; SALT_LEN] {
    let digest = Md5::new()
        .chain_update(b"strata-ring salt\0")
        .chain_update(cluster_id.as_bytes())
        .finalize();
    let mut salt = [0; SALT_LEN];
    salt.copy_from_slice(&digest[..SALT_LEN]);
    salt
}

/// Top `part_power` bits of the key's salted MD5.
pub(crate) fn partition_index(prefixed: &Md5, part_power: u8, key: &[u8]) -> u32 {
    let digest = prefixed.clone().chain_update(key).finalize();
    let top = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // part_power ≤ 24 (checked at construction), and a shift by 32 would overflow.
    if part_power == 0 {
        0
    } else {
        top >> (32 - u32::from(part_power))
    }
}

/// A 64-bit seed for the deterministic orders of one cluster.
pub(crate) fn cluster_seed(cluster_id: &str) -> u64 {
    let digest = Md5::new()
        .chain_update(b"strata-ring order\0")
        .chain_update(cluster_id.as_bytes())
        .finalize();
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// SplitMix64's finaliser: a fixed, well-mixing permutation of u64, used to rank
/// partitions and devices pseudo-randomly but reproducibly.
pub(crate) fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rank of `item` in a pseudo-random order chosen by `seed`.
pub(crate) fn rank(seed: u64, item: u64) -> u64 {
    mix(seed ^ mix(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cluster_id: &str, part_power: u8, key: &[u8], expected: u32) {
        let hasher = key_hasher(cluster_id);
        assert_eq!(
            partition_index(&hasher, part_power, key),
            expected,
            "cluster {cluster_id:?}, part power {part_power}, key {key:?}"
        );
    }

    /// Known answers, computed independently (Python's hashlib): these must never
    /// change, or every stored record would seem to be in the wrong partition.
    #[test]
    fn partitions_are_stable() {
        check("c1", 0, b"anything", 0);
        check("c1", 16, b"", 13345);
        check("c1", 16, b"bucket/key", 24979);
        check("c2", 16, b"bucket/key", 61711);
        check("c1", 8, b"bucket/key", 97);
        check(
            "c1",
            24,
            b"0123456789012345678901234567890123456789",
            7198789,
        );
    }

    #[test]
    fn mix_is_fixed() {
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_ne!(rank(1, 2), rank(2, 1));
    }
}

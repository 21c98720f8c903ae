//! Key layout of the metadata column families.
//!
//! Bucket names never contain NUL and object keys are rejected when they do, so NUL
//! separates the parts and byte order of the RocksDB key equals the order of
//! (bucket, key) — listings are plain range scans.

/// Single records: the markers of the replicated log, the feed's
/// followers, signed calls (RocksDB's own default family).
pub const CF_DEFAULT: &str = "default";
pub const CF_BUCKETS: &str = "buckets";
pub const CF_OBJECTS: &str = "objects";
pub const CF_UPLOADS: &str = "uploads";
pub const CF_PARTS: &str = "parts";
pub const CF_FEED: &str = "feed";
pub const CF_GC: &str = "gc";
/// `namespace NUL key` → opaque cluster metadata record.
pub const CF_CATALOG: &str = "catalog";
/// `bucket` → object count and bytes, summed by a merge operator.
pub const CF_USAGE: &str = "usage";
/// `due BE u64 · bucket NUL key` → empty: objects by expiry time.
pub const CF_EXPIRY: &str = "expiry";
pub const ALL_CFS: [&str; 9] = [
    CF_BUCKETS, CF_OBJECTS, CF_UPLOADS, CF_PARTS, CF_FEED, CF_GC, CF_CATALOG, CF_USAGE, CF_EXPIRY,
];

const SEP: u8 = 0;

/// `bucket NUL key`
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = bucket_prefix(bucket);
    out.extend_from_slice(key.as_bytes());
    out
}

/// `bucket NUL`: every object and upload key of a bucket starts with it.
pub fn bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 1);
    out.extend_from_slice(bucket.as_bytes());
    out.push(SEP);
    out
}

/// `bucket NUL key NUL upload_id`
pub fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut out = object_key(bucket, key);
    out.push(SEP);
    out.extend_from_slice(upload_id.as_bytes());
    out
}

/// `upload_id NUL part_number (u32 BE)`
pub fn part_key(upload_id: &str, part_number: u32) -> Vec<u8> {
    let mut out = part_prefix(upload_id);
    out.extend_from_slice(&part_number.to_be_bytes());
    out
}

pub fn part_prefix(upload_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(upload_id.len() + 5);
    out.extend_from_slice(upload_id.as_bytes());
    out.push(SEP);
    out
}

/// `due_ms (u64 BE) extent_id`: extents to delete once `due_ms` has passed.
pub fn gc_key(due_ms: u64, extent: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&due_ms.to_be_bytes());
    out.extend_from_slice(extent);
    out
}

/// The smallest byte string greater than every string that starts with `prefix`.
/// UTF-8 never contains 0xFF, so appending it is enough for text keys.
pub fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.push(0xFF);
    out
}

//! What the store keeps in RocksDB, and the views it hands to the doors.
//!
//! Records are JSON with `#[serde(default)]` on optional fields so that adding a field
//! never makes old records unreadable.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_pool::ExtentId;

use crate::checksum::ChecksumAlgorithm;
use crate::error::{Result, StoreError};

/// A bucket (a Swift container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    /// The account that owns the bucket.
    pub account: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub region: String,
    /// Which bucket of this name it is: numbered by the store that keeps
    /// the bucket records, in the order of their creation, so a bucket
    /// deleted and created again is a later incarnation. A write decided
    /// against an earlier one ([`crate::PutConditions::for_bucket`]) and
    /// an index group's marker of it cannot be mistaken for it
    /// ([`crate::Store::put_bucket_marker`]). 0 for buckets created
    /// before incarnations.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// Settings the doors keep on the bucket (Swift container metadata and
    /// ACLs, S3 canned ACL …), by name; opaque to the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

impl BucketInfo {
    /// The bucket's marker in its index group: its identity (name, owner,
    /// incarnation) without the settings the root group keeps.
    pub(crate) fn marker(&self) -> BucketInfo {
        BucketInfo {
            attrs: Default::default(),
            ..self.clone()
        }
    }
}

/// Content type and the metadata a client attached to an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub content_type: Option<String>,
    /// Representation headers stored verbatim: `content-disposition`,
    /// `content-encoding`, `content-language`, `cache-control`, `expires`
    /// (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// User metadata, names lower-case without the protocol's prefix.
    #[serde(default)]
    pub user: BTreeMap<String, String>,
    /// Unix seconds after which the object is gone (Swift's `X-Delete-At`):
    /// reads and listings no longer see it, and it is deleted soon after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<u64>,
}

/// One extent of an object's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExtentRef {
    #[serde(with = "extent_id_hex")]
    pub id: ExtentId,
    pub len: u64,
}

/// An object as the doors see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub key: String,
    pub size: u64,
    /// Hex MD5 of the body, or of the part MD5s followed by `-N` for multipart.
    pub etag: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub meta: ObjectMeta,
    /// An additional checksum the client sent, base64 as on the wire.
    #[serde(default)]
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    /// Sizes of the parts for a multipart object, in order.
    #[serde(default)]
    pub part_sizes: Vec<u64>,
    pub extents: Vec<ExtentRef>,
    /// The whole body, for objects small enough to live in the metadata record: one
    /// fsynced batch instead of an extent file, its directory and the batch.
    #[serde(
        default,
        with = "inline_base64",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline: Option<Bytes>,
    /// Random, on a copy a rename between index groups made: the copy keeps
    /// every other attribute of its source (its time too, and an inline body
    /// has no extents), and this tells the two apart
    /// ([`ObjectInfo::same_version`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_nonce: Option<u64>,
}

impl ObjectInfo {
    /// Whether `other` describes the same version of the object: written by
    /// the same commit (extents' ids and copies' nonces are random), or by
    /// one no reader can tell from it (the same bytes, metadata and time).
    ///
    /// Every field is named, so that a field added later must be decided
    /// on here: the name is the same by construction, and an inline body
    /// is told apart by its ETag and size.
    pub fn same_version(&self, other: &ObjectInfo) -> bool {
        let ObjectInfo {
            bucket: _,
            key: _,
            inline: _,
            size,
            etag,
            last_modified_ms,
            meta,
            checksum,
            part_sizes,
            extents,
            copy_nonce,
        } = self;
        *etag == other.etag
            && *size == other.size
            && *last_modified_ms == other.last_modified_ms
            && *extents == other.extents
            && *copy_nonce == other.copy_nonce
            && *meta == other.meta
            && *checksum == other.checksum
            && *part_sizes == other.part_sizes
    }

    pub fn parts_count(&self) -> Option<usize> {
        (!self.part_sizes.is_empty()).then_some(self.part_sizes.len())
    }
}

fn is_zero(number: &u64) -> bool {
    *number == 0
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|err| StoreError::Internal(err.to_string()))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt(err.to_string()))
}

mod extent_id_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use strata_pool::ExtentId;

    pub fn serialize<S: Serializer>(id: &ExtentId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&id.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ExtentId, D::Error> {
        let text = String::deserialize(deserializer)?;
        ExtentId::from_hex(&text).ok_or_else(|| D::Error::custom("bad extent id"))
    }
}

mod inline_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(
        data: &Option<Bytes>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match data {
            Some(data) => serializer.serialize_str(&STANDARD.encode(data)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Bytes>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| {
            STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(D::Error::custom)
        })
        .transpose()
    }
}

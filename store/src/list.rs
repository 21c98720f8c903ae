//! Listings: objects by prefix with an optional delimiter and a marker, and
//! unfinished multipart uploads. Both are range scans over keys that sort as
//! (bucket, key), so a page costs what it returns plus the prefixes it skips.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::keys::{self, CF_OBJECTS, CF_UPLOADS};
use crate::multipart::UploadInfo;
use crate::records::{self, ObjectInfo};
use crate::remote::MetaCall;
use crate::store::{Inner, Store, decode_object};

/// One page of an object listing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up to the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Only keys (and common prefixes) after this one.
    pub start_after: Option<String>,
    /// Only keys before this one (Swift's `end_marker`).
    pub end_before: Option<String>,
    /// Descending order (Swift's `reverse`): `start_after` then bounds the
    /// keys from above and `end_before` from below, as in Swift.
    pub reverse: bool,
    /// At most this many entries (objects plus common prefixes).
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListEntry {
    Object(Box<ObjectInfo>),
    /// Keys rolled up by the delimiter: the prefix up to and including it.
    CommonPrefix(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListPage {
    /// Objects and common prefixes in key order.
    pub entries: Vec<ListEntry>,
    pub is_truncated: bool,
    /// The last key or common prefix of the page: the marker of the next page.
    pub next_marker: Option<String>,
}

impl ListPage {
    /// The first expiry (`ObjectMeta::delete_at`, Unix seconds) of an object
    /// on the page: past it the page no longer shows what the store lists.
    pub fn first_expiry(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|entry| match entry {
                ListEntry::Object(info) => info.meta.delete_at,
                ListEntry::CommonPrefix(_) => None,
            })
            .min()
    }
}

/// One page of the unfinished multipart uploads of a bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadListQuery {
    pub prefix: String,
    pub key_marker: Option<String>,
    /// With `key_marker`: uploads of that key after this upload id.
    pub upload_id_marker: Option<String>,
    pub max_uploads: usize,
    /// Keys with this after the prefix are rolled up into their common
    /// prefix, as in an object listing.
    #[serde(default)]
    pub delimiter: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadListPage {
    pub uploads: Vec<UploadInfo>,
    /// The common prefixes of rolled-up keys, in order; each counts as one
    /// upload against the page's size.
    #[serde(default)]
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

impl ListPage {
    /// Adds an object record to the page, unless it has expired.
    fn push_object(&mut self, bucket: &str, key: String, value: &[u8]) -> Result<()> {
        let info = decode_object(bucket, &key, value)?;
        if !info.is_expired() {
            self.next_marker = Some(key);
            self.entries.push(ListEntry::Object(Box::new(info)));
        }
        Ok(())
    }
}

impl Store {
    pub async fn list_objects(&self, bucket: &str, query: ListQuery) -> Result<ListPage> {
        if let Some(routed) = self.routed() {
            let list = |group: Store| {
                let query = query.clone();
                async move { Box::pin(group.list_objects(bucket, query)).await }
            };
            return routed.in_group(bucket, list).await;
        }
        let bucket = bucket.to_owned();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::ListObjects { bucket, query }).await;
        }
        self.blocking(move |inner| {
            inner.bucket_info(&bucket)?;
            if query.reverse {
                return list_descending(inner, &bucket, &query);
            }
            let bucket_prefix = keys::bucket_prefix(&bucket);
            let scan_prefix = keys::object_key(&bucket, &query.prefix);
            let delimiter = query.delimiter.as_deref().filter(|delim| !delim.is_empty());
            let marker = query.start_after.as_deref();

            let mut page = ListPage::default();
            let mut iter = inner.space().cursor(CF_OBJECTS)?;
            match marker {
                Some(marker) if marker >= query.prefix.as_str() => {
                    iter.seek(&keys::object_key(&bucket, marker))
                }
                _ => iter.seek(&scan_prefix),
            }
            while iter.valid() {
                let Some(db_key) = iter.key() else { break };
                if !db_key.starts_with(&scan_prefix) {
                    break;
                }
                let key = object_name(db_key, bucket_prefix.len())?;
                if marker.is_some_and(|marker| key.as_str() <= marker) {
                    iter.next();
                    continue;
                }
                if query
                    .end_before
                    .as_deref()
                    .is_some_and(|end| key.as_str() >= end)
                {
                    break;
                }
                let common_prefix = rolled_up(&key, &query.prefix, delimiter);
                if let Some(common_prefix) = common_prefix {
                    // Skip every key under it in one seek.
                    let skip_to = keys::after_prefix(&keys::object_key(&bucket, &common_prefix));
                    if marker.is_some_and(|marker| common_prefix.as_str() <= marker) {
                        iter.seek(&skip_to);
                        continue;
                    }
                    if page.entries.len() >= query.max_keys {
                        page.is_truncated = true;
                        break;
                    }
                    page.next_marker = Some(common_prefix.clone());
                    page.entries.push(ListEntry::CommonPrefix(common_prefix));
                    iter.seek(&skip_to);
                    continue;
                }
                if page.entries.len() >= query.max_keys {
                    page.is_truncated = true;
                    break;
                }
                page.push_object(&bucket, key, iter.value().unwrap_or_default())?;
                iter.next();
            }
            iter.status()?;
            Ok(page)
        })
        .await
    }

    pub async fn list_uploads(
        &self,
        bucket: &str,
        query: UploadListQuery,
    ) -> Result<UploadListPage> {
        if let Some(routed) = self.routed() {
            let list = |group: Store| {
                let query = query.clone();
                async move { Box::pin(group.list_uploads(bucket, query)).await }
            };
            return routed.in_group(bucket, list).await;
        }
        let bucket = bucket.to_owned();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::ListUploads { bucket, query }).await;
        }
        self.blocking(move |inner| {
            inner.bucket_info(&bucket)?;
            let scan_prefix = keys::object_key(&bucket, &query.prefix);
            let delimiter = query.delimiter.as_deref().filter(|delim| !delim.is_empty());
            let mut iter = inner.space().cursor(CF_UPLOADS)?;
            // From the marker's key on: each page does not walk the ones
            // before it again.
            match query.key_marker.as_deref() {
                Some(marker) if marker >= query.prefix.as_str() => {
                    iter.seek(&keys::object_key(&bucket, marker))
                }
                _ => iter.seek(&scan_prefix),
            }
            let mut page = UploadListPage::default();
            while iter.valid() {
                let (Some(db_key), Some(value)) = (iter.key(), iter.value()) else {
                    break;
                };
                if !db_key.starts_with(&scan_prefix) {
                    break;
                }
                let upload: UploadInfo = records::decode(value)?;
                let after_marker = match (&query.key_marker, &query.upload_id_marker) {
                    (None, _) => true,
                    (Some(key), None) => upload.key > *key,
                    (Some(key), Some(id)) => {
                        upload.key > *key || (upload.key == *key && upload.upload_id > *id)
                    }
                };
                let common_prefix = rolled_up(&upload.key, &query.prefix, delimiter);
                if let Some(common_prefix) = common_prefix.filter(|_| after_marker) {
                    // Every upload under it in one seek.
                    let skip_to = keys::after_prefix(&keys::object_key(&bucket, &common_prefix));
                    if (query.key_marker.as_deref()).is_some_and(|marker| *common_prefix <= *marker)
                    {
                        iter.seek(&skip_to);
                        continue;
                    }
                    if page.uploads.len() + page.common_prefixes.len() >= query.max_uploads {
                        page.is_truncated = true;
                        break;
                    }
                    page.next_key_marker = Some(common_prefix.clone());
                    page.next_upload_id_marker = None;
                    page.common_prefixes.push(common_prefix);
                    iter.seek(&skip_to);
                    continue;
                }
                if after_marker {
                    if page.uploads.len() + page.common_prefixes.len() >= query.max_uploads {
                        page.is_truncated = true;
                        break;
                    }
                    page.next_key_marker = Some(upload.key.clone());
                    page.next_upload_id_marker = Some(upload.upload_id.clone());
                    page.uploads.push(upload);
                }
                iter.next();
            }
            iter.status()?;
            Ok(page)
        })
        .await
    }
}

/// [`Store::list_objects`] walking keys downwards: from just below the
/// marker (or the end of the prefix) to just above `end_before`.
fn list_descending(inner: &Inner, bucket: &str, query: &ListQuery) -> Result<ListPage> {
    let bucket_prefix = keys::bucket_prefix(bucket);
    let scan_prefix = keys::object_key(bucket, &query.prefix);
    let delimiter = query.delimiter.as_deref().filter(|delim| !delim.is_empty());
    let below = query.start_after.as_deref();
    let above = query.end_before.as_deref();

    let mut page = ListPage::default();
    let mut iter = inner.space().cursor(CF_OBJECTS)?;
    let top = keys::after_prefix(&scan_prefix);
    match below.map(|marker| keys::object_key(bucket, marker)) {
        Some(marker) if marker < top => iter.seek_for_prev(&marker),
        _ => iter.seek_for_prev(&top),
    }
    while iter.valid() {
        let Some(db_key) = iter.key() else { break };
        if !db_key.starts_with(&scan_prefix) {
            break;
        }
        let key = object_name(db_key, bucket_prefix.len())?;
        if below.is_some_and(|marker| key.as_str() >= marker) {
            iter.prev();
            continue;
        }
        if above.is_some_and(|end| key.as_str() <= end) {
            break;
        }
        let common_prefix = rolled_up(&key, &query.prefix, delimiter);
        if page.entries.len() >= query.max_keys {
            page.is_truncated = true;
            break;
        }
        match common_prefix {
            Some(common_prefix) => {
                if above.is_some_and(|end| common_prefix.as_str() <= end) {
                    break;
                }
                // Jump below every key under it, the prefix itself included.
                let start = keys::object_key(bucket, &common_prefix);
                iter.seek_for_prev(&start);
                if iter.valid() && iter.key() == Some(start.as_slice()) {
                    iter.prev();
                }
                page.next_marker = Some(common_prefix.clone());
                page.entries.push(ListEntry::CommonPrefix(common_prefix));
            }
            None => {
                page.push_object(bucket, key, iter.value().unwrap_or_default())?;
                iter.prev();
            }
        }
    }
    iter.status()?;
    Ok(page)
}

/// The object key of a database key in the objects column family.
fn object_name(db_key: &[u8], bucket_prefix_len: usize) -> Result<String> {
    std::str::from_utf8(&db_key[bucket_prefix_len..])
        .map(str::to_owned)
        .map_err(|_| StoreError::Corrupt("object key is not UTF-8".into()))
}

/// The common prefix `key` rolls up to: up to and including the first
/// `delimiter` after `prefix`.
fn rolled_up(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let delimiter = delimiter?;
    key[prefix.len()..]
        .find(delimiter)
        .map(|pos| key[..prefix.len() + pos + delimiter.len()].to_owned())
}

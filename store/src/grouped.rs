//! The life of a bucket whose objects live in an index group
//! (`docs/design/index-on-the-ring.md`): its record in the root group, its
//! marker in the group, and the order that keeps the two from ever
//! disagreeing in a way that loses or strands an object.
//!
//! - **Creating** writes the root's record (which numbers the incarnation),
//!   then the group's marker. Cut short between the two, the bucket has no
//!   marker yet: [`marker`] writes it on the first call that needs it.
//! - **Deleting** removes the group's marker first, if the bucket is empty,
//!   and the root's record after. Cut short between the two, the root still
//!   lists a bucket its group deleted: [`marker`] finishes the deletion.
//! - **Fencing.** A group remembers the last incarnation of each name it
//!   deleted and refuses to mark it again, so a marker put that arrives
//!   after the bucket's deletion (a repair that read the root just before)
//!   cannot bring the bucket back in the group alone, where objects would
//!   land that no listing of the root's buckets leads to.
//!
//! Each function takes the two stores, local or connected: which group a
//! bucket belongs to is the caller's (the router's) to decide.

use std::collections::BTreeMap;

use crate::error::{Result, StoreError};
use crate::records::BucketInfo;
use crate::store::Store;

/// Creates bucket `name` in `root` and marks it in `group`. A name the
/// root still holds for a bucket its group deleted (a deletion cut short)
/// is freed first.
pub async fn create_bucket(
    root: &Store,
    group: &Store,
    account: &str,
    name: &str,
    region: &str,
    attrs: BTreeMap<String, String>,
) -> Result<BucketInfo> {
    let created = root
        .create_bucket_with(account, name, region, attrs.clone())
        .await;
    let info = match created {
        Err(taken @ (StoreError::BucketAlreadyOwnedByYou | StoreError::BucketAlreadyExists)) => {
            match marker(root, group, name).await {
                Err(StoreError::NoSuchBucket) => {
                    root.create_bucket_with(account, name, region, attrs)
                        .await?
                }
                _ => return Err(taken),
            }
        }
        created => created?,
    };
    group.put_bucket_marker(&info).await?;
    Ok(info)
}

/// Deletes bucket `name` if it is empty: its marker in `group`, then its
/// record in `root`.
pub async fn delete_bucket(
    root: &Store,
    group: &Store,
    name: &str,
    pin: Option<&crate::BucketPin>,
) -> Result<()> {
    // Read as stored, not from a connected root's cache: a stale record of
    // an incarnation deleted since would pass its pin and then delete
    // nothing, answering success while the bucket of the name lives on.
    let info = root.bucket_as_stored(name).await?;
    // Exact to the incarnation from here: one created after this read is
    // not touched, so checking the pin against it is enough.
    if let Some(pin) = pin {
        pin.check(&info)?;
    }
    group
        .delete_bucket_incarnation(name, info.incarnation)
        .await?;
    root.delete_bucket_incarnation(name, info.incarnation).await
}

/// Bucket `name`'s marker in `group`, written from `root`'s record if it is
/// missing (a creation cut short). `NoSuchBucket` if the root has no such
/// bucket, or if the group deleted the root's incarnation (a deletion cut
/// short, which this finishes).
pub async fn marker(root: &Store, group: &Store, name: &str) -> Result<BucketInfo> {
    match group.bucket(name).await {
        Err(StoreError::NoSuchBucket) => {}
        found => return found,
    }
    let info = root.bucket(name).await?;
    match group.put_bucket_marker(&info).await {
        Err(StoreError::NoSuchBucket) => {
            // The group deleted this incarnation (or holds a later one, which
            // only a stale read of the root's record can meet: the root
            // numbers its buckets in order). Exact to the incarnation, this
            // leaves a bucket created since untouched.
            root.delete_bucket_incarnation(name, info.incarnation)
                .await?;
            Err(StoreError::NoSuchBucket)
        }
        marked => marked,
    }
}

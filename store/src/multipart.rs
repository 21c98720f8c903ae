//! Multipart uploads: an upload record, parts staged and committed one by one, and
//! completion, which turns the chosen parts' extents into one object in a single
//! batch. Parts are never copied: the object's extent list is the parts' lists
//! concatenated.

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::checksum::ChecksumAlgorithm;
use crate::error::{Result, StoreError};
use crate::keys::{self, CF_PARTS, CF_UPLOADS};
use crate::records::{self, ExtentRef, ObjectInfo, ObjectMeta};
use crate::remote::MetaCall;
use crate::space::Batch;
use crate::store::{Inner, PutConditions, Store, hand_over, validate_key};
use crate::write::{self, StageError, StageOptions, StagedBody};

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: i64,
    /// Metadata the object will carry once completed.
    pub meta: ObjectMeta,
    #[serde(default)]
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
}

/// A part as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    pub extents: Vec<ExtentRef>,
}

/// A part as the client names it when completing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

impl Store {
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        checksum_algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<UploadInfo> {
        validate_key(key)?;
        if let Some(routed) = self.routed() {
            let create = |group: Store| {
                let meta = meta.clone();
                async move { Box::pin(group.create_upload(bucket, key, meta, checksum_algorithm)).await }
            };
            return routed.in_group(bucket, create).await;
        }
        if let Some(remote) = self.remote() {
            let call = MetaCall::CreateUpload {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                meta,
                checksum_algorithm,
            };
            return remote.call(call).await;
        }
        let upload = UploadInfo {
            upload_id: hex::encode(self.fresh_id()),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            initiated_ms: self.now_ms(),
            meta,
            checksum_algorithm,
        };
        self.blocking(move |inner| {
            let _shared = inner.bucket_lock.read();
            inner.bucket_info(&upload.bucket)?;
            let mut batch = inner.batch();
            batch.put(
                CF_UPLOADS,
                &keys::upload_key(&upload.bucket, &upload.key, &upload.upload_id),
                records::encode(&upload)?,
            )?;
            inner.commit(batch)?;
            Ok(upload)
        })
        .await
    }

    pub async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadInfo> {
        if let Some(routed) = self.routed() {
            let find =
                |group: Store| async move { Box::pin(group.upload(bucket, key, upload_id)).await };
            return routed.in_group(bucket, find).await;
        }
        let (bucket, key, upload_id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        if let Some(remote) = self.remote() {
            let call = MetaCall::Upload {
                bucket,
                key,
                upload_id,
            };
            return remote.call(call).await;
        }
        self.blocking(move |inner| inner.upload_info(&bucket, &key, &upload_id))
            .await
    }

    /// Stages a part's body. Parts always go to the pool: completion reuses their
    /// extents as they are.
    pub async fn stage_part<S, E>(
        &self,
        bucket: &str,
        body: S,
        options: &StageOptions,
    ) -> Result<StagedBody, StageError<E>>
    where
        S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>>,
    {
        write::stage(self.pool().clone(), bucket, body, options, 0).await
    }

    /// Commits a staged part, replacing an earlier upload of the same number.
    pub async fn put_part(
        &self,
        upload: &UploadInfo,
        part_number: u32,
        staged: StagedBody,
        checksum: Option<(ChecksumAlgorithm, String)>,
    ) -> Result<PartInfo> {
        staged.check_bucket(&upload.bucket)?;
        if let Some(group) = self.routed_group(&upload.bucket).await {
            let group = group?;
            let put = group.put_part(upload, part_number, staged, checksum);
            return Box::pin(put).await;
        }
        if part_number == 0 || part_number > self.config().max_part_number {
            return Err(StoreError::InvalidArgument(format!(
                "part number must be an integer between 1 and {}",
                self.config().max_part_number
            )));
        }
        let upload = upload.clone();
        let part = PartInfo {
            part_number,
            size: staged.size,
            etag: hex::encode(staged.digests.md5),
            last_modified_ms: self.now_ms(),
            checksum,
            extents: staged.extents.clone(),
        };
        if let Some(remote) = self.remote() {
            let call = MetaCall::PutPart { upload, part };
            return hand_over(staged, remote.clone(), call).await;
        }
        self.blocking(move |inner| {
            inner.commit_part(&upload, &part)?;
            // Only now do the extents belong to the part.
            drop(staged.take_extents());
            Ok(part)
        })
        .await
    }

    /// The commit of [`Store::put_part`], for the metadata service.
    pub(crate) async fn commit_part(&self, upload: UploadInfo, part: PartInfo) -> Result<PartInfo> {
        self.blocking(move |inner| {
            inner.commit_part(&upload, &part)?;
            Ok(part)
        })
        .await
    }

    /// Parts of an upload numbered above `after`, at most `max_parts` of them, and
    /// whether more follow.
    pub async fn list_parts(
        &self,
        upload: &UploadInfo,
        after: u32,
        max_parts: usize,
    ) -> Result<(Vec<PartInfo>, bool)> {
        if let Some(routed) = self.routed() {
            let list = |group: Store| async move {
                Box::pin(group.list_parts(upload, after, max_parts)).await
            };
            return routed.in_group(&upload.bucket, list).await;
        }
        let upload = upload.clone();
        if let Some(remote) = self.remote() {
            let call = MetaCall::ListParts {
                upload,
                after,
                max_parts,
            };
            return remote.call(call).await;
        }
        self.blocking(move |inner| {
            inner.upload_info(&upload.bucket, &upload.key, &upload.upload_id)?;
            let mut parts = inner.parts_of(&upload.upload_id)?;
            parts.retain(|part| part.part_number > after);
            let truncated = parts.len() > max_parts;
            parts.truncate(max_parts);
            Ok((parts, truncated))
        })
        .await
    }

    pub async fn abort_upload(&self, upload: &UploadInfo) -> Result<()> {
        if let Some(routed) = self.routed() {
            let abort = |group: Store| async move { Box::pin(group.abort_upload(upload)).await };
            return routed.in_group(&upload.bucket, abort).await;
        }
        let upload = upload.clone();
        if let Some(remote) = self.remote() {
            return remote.call(MetaCall::AbortUpload { upload }).await;
        }
        self.blocking(move |inner| {
            // Against a bucket's deletion, which drops its uploads: the
            // same parts' extents would be scheduled for deletion twice.
            let _shared = inner.bucket_lock.read();
            let _key_guard = inner.lock_key(&upload.bucket, &upload.key);
            inner.upload_info(&upload.bucket, &upload.key, &upload.upload_id)?;
            let mut batch = inner.batch();
            let mut freed = Vec::new();
            inner.drop_upload(&upload, &mut batch, &mut freed)?;
            inner.schedule_gc(&mut batch, &freed)?;
            inner.commit(batch)
        })
        .await
    }

    /// Assembles the named parts into the object, atomically: the object appears,
    /// the upload and its parts disappear, and parts not named are released.
    pub async fn complete_upload(
        &self,
        upload: &UploadInfo,
        chosen: Vec<CompletedPart>,
        conditions: PutConditions,
    ) -> Result<ObjectInfo> {
        if let Some(routed) = self.routed() {
            let complete = |group: Store| {
                let (chosen, conditions) = (chosen.clone(), conditions.clone());
                async move { Box::pin(group.complete_upload(upload, chosen, conditions)).await }
            };
            return routed.in_group(&upload.bucket, complete).await;
        }
        if chosen.is_empty() {
            return Err(StoreError::InvalidArgument("no parts given".into()));
        }
        if chosen
            .windows(2)
            .any(|pair| pair[0].part_number >= pair[1].part_number)
        {
            return Err(StoreError::InvalidPartOrder);
        }
        let upload = upload.clone();
        if let Some(remote) = self.remote() {
            let call = MetaCall::CompleteUpload {
                upload,
                chosen,
                conditions,
            };
            return remote.call(call).await;
        }
        let min_part_size = self.config().min_part_size;
        self.blocking(move |inner| {
            inner.commit_object(&upload.bucket, &upload.key, &conditions, |inner, batch| {
                inner.upload_info(&upload.bucket, &upload.key, &upload.upload_id)?;
                let stored = inner.parts_of(&upload.upload_id)?;
                // Every named part must exist with its ETag before sizes are judged:
                // AWS answers InvalidPart ahead of EntityTooSmall.
                let mut resolved = Vec::with_capacity(chosen.len());
                for wanted in &chosen {
                    let part = stored
                        .iter()
                        .find(|part| part.part_number == wanted.part_number)
                        .ok_or_else(|| {
                            StoreError::InvalidPart(
                                wanted.part_number,
                                "part was not uploaded".into(),
                            )
                        })?;
                    if wanted.etag.trim_matches('"') != part.etag {
                        return Err(StoreError::InvalidPart(
                            wanted.part_number,
                            "ETag does not match the uploaded part".into(),
                        ));
                    }
                    resolved.push(part);
                }
                let mut md5_of_md5s = Md5::new();
                let mut extents = Vec::new();
                let mut part_sizes = Vec::new();
                for (idx, part) in resolved.iter().enumerate() {
                    if idx + 1 < resolved.len() && part.size < min_part_size {
                        return Err(StoreError::PartTooSmall {
                            part_number: part.part_number,
                            size: part.size,
                        });
                    }
                    let part_md5 = hex::decode(&part.etag)
                        .map_err(|_| StoreError::Corrupt("part ETag is not hex".into()))?;
                    md5_of_md5s.update(&part_md5);
                    extents.extend_from_slice(&part.extents);
                    part_sizes.push(part.size);
                }
                // Parts uploaded but not chosen are released with the upload.
                let mut unused = Vec::new();
                inner.drop_upload(&upload, batch, &mut unused)?;
                // A set: an upload of many parts names many extents, and
                // this runs under the bucket lock.
                let named: std::collections::HashSet<_> = extents.iter().collect();
                unused.retain(|extent| !named.contains(extent));
                inner.schedule_gc(batch, &unused)?;
                Ok(ObjectInfo {
                    bucket: upload.bucket.clone(),
                    key: upload.key.clone(),
                    size: part_sizes.iter().sum(),
                    etag: format!("{}-{}", hex::encode(md5_of_md5s.finalize()), chosen.len()),
                    last_modified_ms: inner.now_ms(),
                    meta: upload.meta.clone(),
                    checksum: None,
                    part_sizes,
                    extents,
                    inline: None,
                    copy_nonce: None,
                })
            })
        })
        .await
    }
}

impl Inner {
    fn commit_part(&self, upload: &UploadInfo, part: &PartInfo) -> Result<()> {
        // Against a bucket's deletion, which drops its uploads and parts: a
        // part committed after it would be named by nothing but itself,
        // and never collected.
        let _shared = self.bucket_lock.read();
        let _key_guard = self.lock_key(&upload.bucket, &upload.key);
        self.upload_info(&upload.bucket, &upload.key, &upload.upload_id)?;
        let part_key = keys::part_key(&upload.upload_id, part.part_number);
        let mut batch = self.batch();
        if let Some(previous) = self.space().get(CF_PARTS, &part_key)? {
            let previous: PartInfo = records::decode(&previous)?;
            self.schedule_gc(&mut batch, &previous.extents)?;
        }
        batch.put(CF_PARTS, &part_key, records::encode(part)?)?;
        self.commit(batch)
    }

    pub(crate) fn upload_info(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<UploadInfo> {
        match self
            .space()
            .get(CF_UPLOADS, &keys::upload_key(bucket, key, upload_id))?
        {
            Some(value) => records::decode(&value),
            None => {
                self.bucket_info(bucket)?;
                Err(StoreError::NoSuchUpload)
            }
        }
    }

    fn parts_of(&self, upload_id: &str) -> Result<Vec<PartInfo>> {
        let prefix = keys::part_prefix(upload_id);
        let mut out = Vec::new();
        for item in self.space().iter_prefix(CF_PARTS, &prefix)? {
            let (_, value) = item?;
            out.push(records::decode(&value)?);
        }
        Ok(out)
    }

    /// Adds the removal of an upload and its parts to `batch`, collecting the
    /// parts' extents into `freed`.
    fn drop_upload(
        &self,
        upload: &UploadInfo,
        batch: &mut Batch<'_>,
        freed: &mut Vec<ExtentRef>,
    ) -> Result<()> {
        for part in self.parts_of(&upload.upload_id)? {
            freed.extend_from_slice(&part.extents);
            batch.delete(
                CF_PARTS,
                &keys::part_key(&upload.upload_id, part.part_number),
            )?;
        }
        batch.delete(
            CF_UPLOADS,
            &keys::upload_key(&upload.bucket, &upload.key, &upload.upload_id),
        )?;
        Ok(())
    }

    pub(crate) fn drop_uploads_of_bucket(
        &self,
        bucket: &str,
        batch: &mut Batch<'_>,
        freed: &mut Vec<ExtentRef>,
    ) -> Result<()> {
        let prefix = keys::bucket_prefix(bucket);
        let mut found = Vec::new();
        for item in self.space().iter_prefix(CF_UPLOADS, &prefix)? {
            let (_, value) = item?;
            found.push(records::decode::<UploadInfo>(&value)?);
        }
        for upload in found {
            self.drop_upload(&upload, batch, freed)?;
        }
        Ok(())
    }
}

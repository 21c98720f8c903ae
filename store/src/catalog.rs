//! The catalog: small records of cluster metadata (accounts, users, keys,
//! token signing keys, domains) kept durably next to the object metadata.
//!
//! Values are opaque bytes to the store — their types belong to `strata-auth`
//! and the gateway — so the layering stays one-way. Every change is one fsynced
//! batch with its change-feed event (`ChangeKind::CatalogPut` /
//! `CatalogDeleted`, the namespace in `bucket`), which is how other gateways
//! and the invalidator learn of it.

use crate::error::{Result, StoreError};
use crate::feed::ChangeKind;
use crate::keys::{self, CF_CATALOG};
use crate::remote::{Base64, Base64Opt, MetaCall};
use crate::store::Store;

/// What [`Store::catalog_update`] does with the record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CatalogWrite {
    /// Leave the record as it is (no event).
    Keep,
    Put(#[serde(with = "crate::remote::base64_bytes")] Vec<u8>),
    Delete,
}

impl Store {
    pub async fn catalog_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.catalog_get(namespace, key)).await;
        }
        validate_name(namespace)?;
        if let Some(remote) = self.remote() {
            let call = MetaCall::CatalogGet {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
            };
            let Base64Opt(value) = remote.call(call).await?;
            return Ok(value);
        }
        let db_key = keys::object_key(namespace, key);
        self.blocking(move |inner| inner.space().get(CF_CATALOG, &db_key))
            .await
    }

    /// Every record of `namespace`, by key.
    pub async fn catalog_list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.catalog_list(namespace)).await;
        }
        validate_name(namespace)?;
        if let Some(remote) = self.remote() {
            let call = MetaCall::CatalogList {
                namespace: namespace.to_owned(),
            };
            let records: Vec<(String, Base64)> = remote.call(call).await?;
            return Ok(records
                .into_iter()
                .map(|(key, Base64(value))| (key, value))
                .collect());
        }
        let prefix = keys::bucket_prefix(namespace);
        self.blocking(move |inner| {
            let mut records = Vec::new();
            for item in inner.space().iter_prefix(CF_CATALOG, &prefix)? {
                let (db_key, value) = item?;
                let key = db_key.get(prefix.len()..).unwrap_or_default();
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| StoreError::Corrupt("catalog key is not UTF-8".into()))?;
                records.push((key, value.to_vec()));
            }
            Ok(records)
        })
        .await
    }

    /// Reads the record, lets `decide` choose what becomes of it, and applies
    /// that durably — all under one lock, so concurrent updates of the catalog
    /// never lose each other's changes. Returns what `decide` returned.
    /// `decide` may run more than once (a store over another gateway's
    /// decides again when another writer came first).
    pub async fn catalog_update<T, F>(&self, namespace: &str, key: &str, mut decide: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(Option<&[u8]>) -> Result<(CatalogWrite, T)> + Send + 'static,
    {
        if let Some(routed) = self.routed() {
            return Box::pin(routed.root.catalog_update(namespace, key, decide)).await;
        }
        validate_name(namespace)?;
        if key.is_empty() || key.contains('\0') {
            return Err(StoreError::InvalidArgument(
                "catalog key is empty or has NUL".into(),
            ));
        }
        if let Some(remote) = self.remote() {
            return self
                .remote_catalog_update(remote, namespace, key, decide)
                .await;
        }
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.blocking(move |inner| {
            let _guard = inner.catalog_lock.lock();
            let db_key = keys::object_key(&namespace, &key);
            let current = inner.space().get(CF_CATALOG, &db_key)?;
            let (write, outcome) = decide(current.as_deref())?;
            let mut batch = inner.batch();
            let kind = match write {
                CatalogWrite::Keep => return Ok(outcome),
                CatalogWrite::Put(value) => {
                    batch.put(CF_CATALOG, &db_key, value)?;
                    ChangeKind::CatalogPut
                }
                CatalogWrite::Delete => {
                    if current.is_none() {
                        return Ok(outcome);
                    }
                    batch.delete(CF_CATALOG, &db_key)?;
                    ChangeKind::CatalogDeleted
                }
            };
            let event = inner.feed_event(&mut batch, kind, &namespace, Some(&key), None)?;
            inner.commit(batch)?;
            inner.publish(event);
            Ok(outcome)
        })
        .await
    }

    /// Writes `value` unconditionally.
    pub async fn catalog_put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<()> {
        self.catalog_update(namespace, key, move |_| {
            Ok((CatalogWrite::Put(value.clone()), ()))
        })
        .await
    }

    /// Deletes the record; whether it existed.
    pub async fn catalog_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        self.catalog_update(namespace, key, |current| {
            Ok((CatalogWrite::Delete, current.is_some()))
        })
        .await
    }
}

fn validate_name(namespace: &str) -> Result<()> {
    if namespace.is_empty() || namespace.contains('\0') {
        return Err(StoreError::InvalidArgument(
            "catalog namespace is empty or has NUL".into(),
        ));
    }
    Ok(())
}

//! Changes to accounts, users and keys: what the admin API and Swift's
//! account POST call. Each is one catalog read-modify-write (durable, on the
//! change feed for every other gateway) and is applied to this gateway's
//! view before the call returns, so a user created here can log in at once
//! and a revoked one cannot.

use std::collections::BTreeMap;

use rand::Rng as _;
use strata_auth::{Role, TokenKeyring, hash_key};
use strata_store::{CatalogWrite, StoreError};

use super::{
    AccountRecord, Directory, DomainRecord, KEYRING_KEY, NS_ACCOUNTS, NS_CLUSTER, NS_DOMAINS,
    NS_USERS, S3KeyRecord, StoredTokenKey, UserRecord, corrupt, decode_keyring, now_ms, user_id,
};
use crate::credentials::{new_access_key, new_secret_key};

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The secrets of a new or re-keyed user; shown once, never stored in clear
/// except the S3 secret (SigV4 needs it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewUserKeys {
    pub account: String,
    pub user: String,
    pub role: String,
    pub swift_key: String,
    pub access_key: String,
    pub secret_key: String,
}

/// Account and user names: 1–64 of `A–Z a–z 0–9 _ . -`, so they fit in
/// `AUTH_<account>` paths and `account:user` logins unescaped.
pub fn validate_name(kind: &str, name: &str) -> Result<(), DirectoryError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!(
            "{kind} names are 1 to 64 letters, digits, '_', '.' or '-': {name:?}"
        )))
    }
}

/// The host a request names, as [`normalize_host`] reads it: the URI's
/// authority when it has one (HTTP/2's `:authority`, or an absolute-form
/// target, which RFC 9112 §3.2.2 puts before the Host header), else the
/// Host header.
pub fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let host = uri
        .authority()
        .map(|authority| authority.host())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
        })?;
    normalize_host(host)
}

/// A Host header as domain records key it: lower-case, without port and
/// trailing dot. `None` for what cannot be a DNS name (IP literals, empty
/// labels, characters outside letters, digits, `-` and `.`).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
        && !name
            .split('.')
            .all(|label| label.bytes().all(|byte| byte.is_ascii_digit()));
    valid.then_some(name)
}

impl Directory {
    /// Maps `host` to `account` (and `container`), replacing any mapping it had.
    pub async fn put_domain(
        &self,
        host: &str,
        account: &str,
        container: Option<&str>,
    ) -> Result<DomainRecord, DirectoryError> {
        let host = normalize_host(host)
            .ok_or_else(|| DirectoryError::Invalid(format!("{host:?} is not a host name")))?;
        if self.account(account).is_none() {
            return Err(DirectoryError::NotFound(format!("account {account}")));
        }
        if container.is_some_and(|name| name.is_empty() || name.contains('/')) {
            return Err(DirectoryError::Invalid(
                "a container name has no '/'".into(),
            ));
        }
        let record = DomainRecord {
            host: host.clone(),
            account: account.to_owned(),
            container: container.map(str::to_owned),
        };
        let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
        self.store.catalog_put(NS_DOMAINS, &host, encoded).await?;
        self.apply(NS_DOMAINS, &host).await;
        Ok(record)
    }

    pub async fn delete_domain(&self, host: &str) -> Result<(), DirectoryError> {
        let host = normalize_host(host)
            .ok_or_else(|| DirectoryError::Invalid(format!("{host:?} is not a host name")))?;
        if !self.store.catalog_delete(NS_DOMAINS, &host).await? {
            return Err(DirectoryError::NotFound(format!("domain {host}")));
        }
        self.apply(NS_DOMAINS, &host).await;
        Ok(())
    }

    pub async fn create_account(&self, name: &str) -> Result<AccountRecord, DirectoryError> {
        validate_name("account", name)?;
        let record = AccountRecord {
            name: name.to_owned(),
            created_ms: now_ms(),
            meta: BTreeMap::new(),
        };
        let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
        let created = self
            .store
            .catalog_update(NS_ACCOUNTS, name, move |current| {
                Ok(match current {
                    Some(_) => (CatalogWrite::Keep, false),
                    None => (CatalogWrite::Put(encoded.clone()), true),
                })
            })
            .await?;
        if !created {
            return Err(DirectoryError::Exists(format!("account {name}")));
        }
        self.apply(NS_ACCOUNTS, name).await;
        Ok(record)
    }

    /// Deletes an account and its users. Its containers are the caller's to
    /// empty first.
    pub async fn delete_account(&self, name: &str) -> Result<(), DirectoryError> {
        if self.account(name).is_none() {
            return Err(DirectoryError::NotFound(format!("account {name}")));
        }
        for user in self.users(name) {
            self.delete_user(name, &user.user).await?;
        }
        self.store.catalog_delete(NS_ACCOUNTS, name).await?;
        self.apply(NS_ACCOUNTS, name).await;
        Ok(())
    }

    /// Changes account metadata with `change`, which may refuse (metadata
    /// over the limits) and so leave the record as it was.
    pub async fn update_account_meta<F>(
        &self,
        name: &str,
        mut change: F,
    ) -> Result<AccountRecord, DirectoryError>
    where
        F: FnMut(&mut BTreeMap<String, String>) -> Result<(), String> + Send + 'static,
    {
        let outcome = self
            .store
            .catalog_update(NS_ACCOUNTS, name, move |current| {
                let Some(current) = current else {
                    return Ok((CatalogWrite::Keep, Err(None)));
                };
                let mut record: AccountRecord = serde_json::from_slice(current).map_err(corrupt)?;
                if let Err(why) = change(&mut record.meta) {
                    return Ok((CatalogWrite::Keep, Err(Some(why))));
                }
                let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
                Ok((CatalogWrite::Put(encoded.clone()), Ok(record)))
            })
            .await?;
        self.apply(NS_ACCOUNTS, name).await;
        outcome.map_err(|why| match why {
            None => DirectoryError::NotFound(format!("account {name}")),
            Some(why) => DirectoryError::Invalid(why),
        })
    }

    /// Creates a user with a new Swift key and one S3 key pair.
    pub async fn create_user(
        &self,
        account: &str,
        user: &str,
        role: Role,
    ) -> Result<NewUserKeys, DirectoryError> {
        validate_name("user", user)?;
        if self.account(account).is_none() {
            return Err(DirectoryError::NotFound(format!("account {account}")));
        }
        let keys = new_keys(account, user, role);
        let record = UserRecord {
            account: account.to_owned(),
            user: user.to_owned(),
            role: role.as_str().to_owned(),
            swift_key_hash: hash_key(&keys.swift_key, &rand::random()),
            s3_keys: vec![S3KeyRecord {
                access_key: keys.access_key.clone(),
                secret_key: keys.secret_key.clone(),
            }],
            // Random, not 0: a user deleted and created again under its
            // name must not bring back the tokens issued before.
            token_generation: rand::random(),
            created_ms: now_ms(),
        };
        let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
        let id = user_id(account, user);
        let created = self
            .store
            .catalog_update(NS_USERS, &id, move |current| {
                Ok(match current {
                    Some(_) => (CatalogWrite::Keep, false),
                    None => (CatalogWrite::Put(encoded.clone()), true),
                })
            })
            .await?;
        if !created {
            return Err(DirectoryError::Exists(format!("user {id}")));
        }
        self.apply(NS_USERS, &id).await;
        Ok(keys)
    }

    /// Gives a user a new Swift key and a new S3 key pair (the old ones stop
    /// working), and revokes their tokens.
    pub async fn rotate_user_keys(
        &self,
        account: &str,
        user: &str,
    ) -> Result<NewUserKeys, DirectoryError> {
        let role = self
            .view
            .read()
            .users
            .get(&user_id(account, user))
            .and_then(UserRecord::role)
            .ok_or_else(|| DirectoryError::NotFound(format!("user {account}:{user}")))?;
        let keys = new_keys(account, user, role);
        let swift_key_hash = hash_key(&keys.swift_key, &rand::random());
        let s3_key = S3KeyRecord {
            access_key: keys.access_key.clone(),
            secret_key: keys.secret_key.clone(),
        };
        self.change_user(account, user, move |record| {
            record.swift_key_hash.clone_from(&swift_key_hash);
            record.s3_keys = vec![s3_key.clone()];
            record.token_generation = record.token_generation.wrapping_add(1);
        })
        .await?;
        Ok(keys)
    }

    /// Makes every token issued to the user so far invalid.
    pub async fn revoke_tokens(&self, account: &str, user: &str) -> Result<(), DirectoryError> {
        self.change_user(account, user, |record| {
            record.token_generation = record.token_generation.wrapping_add(1);
        })
        .await
    }

    pub async fn set_role(
        &self,
        account: &str,
        user: &str,
        role: Role,
    ) -> Result<(), DirectoryError> {
        self.change_user(account, user, move |record| {
            record.role = role.as_str().to_owned();
        })
        .await
    }

    pub async fn delete_user(&self, account: &str, user: &str) -> Result<(), DirectoryError> {
        let id = user_id(account, user);
        if !self.store.catalog_delete(NS_USERS, &id).await? {
            return Err(DirectoryError::NotFound(format!("user {id}")));
        }
        self.apply(NS_USERS, &id).await;
        Ok(())
    }

    /// Starts signing tokens with a new key; the previous keys keep
    /// verifying for `overlap_secs`, then retire.
    pub async fn rotate_signing_key(
        &self,
        now: u64,
        overlap_secs: u64,
    ) -> Result<u32, DirectoryError> {
        let new_id =
            self.store
                .catalog_update(NS_CLUSTER, KEYRING_KEY, move |current| {
                    let mut keyring = match current {
                        Some(value) => decode_keyring(value)
                            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                        None => TokenKeyring::default(),
                    };
                    let mut secret = [0u8; 32];
                    rand::rng().fill(&mut secret);
                    let id = keyring.rotate(secret, now, overlap_secs);
                    let stored: Vec<StoredTokenKey> = keyring
                        .keys()
                        .iter()
                        .map(|key| StoredTokenKey {
                            id: key.id,
                            secret: hex::encode(key.secret),
                            retires_at: key.retires_at,
                        })
                        .collect();
                    let encoded = serde_json::to_vec(&stored).map_err(corrupt)?;
                    Ok((CatalogWrite::Put(encoded.clone()), id))
                })
                .await?;
        self.apply(NS_CLUSTER, KEYRING_KEY).await;
        Ok(new_id)
    }

    async fn change_user<F>(
        &self,
        account: &str,
        user: &str,
        mut change: F,
    ) -> Result<(), DirectoryError>
    where
        F: FnMut(&mut UserRecord) + Send + 'static,
    {
        let id = user_id(account, user);
        let found = self
            .store
            .catalog_update(NS_USERS, &id, move |current| {
                let Some(current) = current else {
                    return Ok((CatalogWrite::Keep, false));
                };
                let mut record: UserRecord = serde_json::from_slice(current).map_err(corrupt)?;
                change(&mut record);
                let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
                Ok((CatalogWrite::Put(encoded.clone()), true))
            })
            .await?;
        if !found {
            return Err(DirectoryError::NotFound(format!("user {id}")));
        }
        self.apply(NS_USERS, &id).await;
        Ok(())
    }

    /// Applies a change this gateway just made without waiting for the feed.
    async fn apply(&self, namespace: &str, key: &str) {
        if let Err(err) = self.refresh(namespace, key).await {
            tracing::error!(error = %err, namespace, key, "could not apply a directory change");
        }
    }
}

fn new_keys(account: &str, user: &str, role: Role) -> NewUserKeys {
    NewUserKeys {
        account: account.to_owned(),
        user: user.to_owned(),
        role: role.as_str().to_owned(),
        swift_key: new_secret_key(),
        access_key: new_access_key(),
        secret_key: new_secret_key(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_normalise_or_are_refused() {
        let check = |host: &str, expected: Option<&str>| {
            assert_eq!(normalize_host(host).as_deref(), expected, "{host:?}");
        };
        check("st.example.com", Some("st.example.com"));
        check("ST.Example.COM.", Some("st.example.com"));
        check("st.example.com:8080", Some("st.example.com"));
        check("localhost", Some("localhost"));
        check("127.0.0.1", None);
        check("127.0.0.1:80", None);
        check("[::1]:80", None);
        check("a..b", None);
        check("bücher.example", None);
        check("a_b.example", None);
        check("host:port", None);
        check("", None);
    }
}

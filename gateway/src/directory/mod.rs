//! Accounts, users and token signing keys: their records in the store's
//! catalog, and the in-memory view every request consults.
//!
//! The view is loaded whole at start and then follows the change feed, so a
//! user created, rotated or deleted through any gateway takes effect here
//! without a restart. Lookups never touch the database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::RwLock;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use strata_auth::{
    Credential, CredentialLookup, Principal, Role, TokenClaims, TokenKey, TokenKeyring, hash_key,
    key_matches,
};
use strata_store::{CatalogWrite, ChangeKind, Store, StoreError};
use tokio::sync::broadcast::error::RecvError;

use crate::wire::unix_now_ms as now_ms;

/// How long a signed request, a token request or a login waits for a stale
/// view to be read again before it is refused (503): as long as metadata
/// calls wait for a feed that stopped answering.
pub const STALE_PATIENCE: Duration = strata_store::FEED_OUTAGE_PATIENCE;
/// The longest pause between attempts to read a stale view again: signed
/// requests wait for it a few seconds at most ([`Directory::current_within`]).
const RELOAD_PAUSE_MAX: Duration = Duration::from_secs(1);

mod manage;

pub use manage::{DirectoryError, NewUserKeys, normalize_host, request_host};

/// How long a start keeps loading accounts while the metadata service
/// cannot answer, and how often it tries.
const START_PATIENCE: Duration = Duration::from_secs(60);
const START_RETRY: Duration = Duration::from_millis(500);

/// Whether `err` is the store's `Unavailable`: no answer now, maybe later.
fn unavailable(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(StoreError::Unavailable(_))))
}

const NS_ACCOUNTS: &str = "accounts";
const NS_USERS: &str = "users";
pub(crate) const NS_CLUSTER: &str = "cluster";
const NS_DOMAINS: &str = "domains";
const KEYRING_KEY: &str = "token-keyring";

/// An account: owns buckets (Swift containers) and users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    pub created_ms: i64,
    /// Account metadata (Swift `X-Account-Meta-*`, TempURL keys), by lower-case name.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// A custom domain: a host name that serves an account's containers (or one
/// container) at the root of its URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Lower-case, without port or trailing dot.
    pub host: String,
    pub account: String,
    /// With a container, `http://host/key`; without, `http://host/container/key`.
    #[serde(default)]
    pub container: Option<String>,
}

/// One S3 access key pair of a user. The secret is kept as is: SigV4 needs
/// it to recompute signatures.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3KeyRecord {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3KeyRecord")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// A user of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub account: String,
    pub user: String,
    pub role: String,
    /// The Swift key, hashed (`strata_auth::hash_key`).
    pub swift_key_hash: String,
    #[serde(default)]
    pub s3_keys: Vec<S3KeyRecord>,
    /// Tokens carrying an older generation are refused: bumping it revokes them.
    #[serde(default)]
    pub token_generation: u32,
    pub created_ms: i64,
}

impl UserRecord {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    fn principal(&self) -> Option<Principal> {
        Some(Principal {
            account: self.account.clone(),
            user: self.user.clone(),
            role: self.role()?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredTokenKey {
    id: u32,
    secret: String,
    #[serde(default)]
    retires_at: Option<u64>,
}

#[derive(Default)]
struct View {
    accounts: HashMap<String, AccountRecord>,
    /// By `account:user`.
    users: HashMap<String, UserRecord>,
    /// Access key → `account:user`.
    access_keys: HashMap<String, String>,
    keyring: TokenKeyring,
    /// By host.
    domains: HashMap<String, DomainRecord>,
    /// Since when changes may have been missed (the feed failed, fell
    /// behind, or a change could not be read) and the view not read again:
    /// a key revoked meanwhile would still be here.
    stale_since: Option<std::time::Instant>,
}

impl View {
    fn mark_stale(&mut self) {
        self.stale_since.get_or_insert_with(std::time::Instant::now);
    }

    fn index_user(&mut self, record: UserRecord) {
        let id = user_id(&record.account, &record.user);
        self.unindex_user(&id);
        for key in &record.s3_keys {
            self.access_keys.insert(key.access_key.clone(), id.clone());
        }
        self.users.insert(id, record);
    }

    fn unindex_user(&mut self, id: &str) {
        if let Some(old) = self.users.remove(id) {
            for key in old.s3_keys {
                if self.access_keys.get(&key.access_key).map(String::as_str) == Some(id) {
                    self.access_keys.remove(&key.access_key);
                }
            }
        }
    }
}

/// The accounts and users every door authenticates against.
#[derive(Clone)]
pub struct Directory {
    store: Store,
    /// The store's hold on its metadata feed, taken once (as the edge's):
    /// asked on every signed request.
    feed: strata_store::FeedLease,
    view: Arc<RwLock<View>>,
    /// Woken each time the view has been read again whole: what requests
    /// waiting for a stale view to be current wait on.
    read_again: Arc<tokio::sync::Notify>,
}

/// How a token request failed; every case is a 401 on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    WrongKey,
    /// The metadata service's feed has not answered for a while: a key
    /// revoked meanwhile may still be here, so none is accepted (the
    /// caller answers 503, not "wrong key").
    Stale,
}

impl Directory {
    /// Loads the directory and follows its changes. With `root`, makes sure
    /// the root account and user exist with those keys (the gateway that
    /// holds the metadata); without, takes them as they are. Over index
    /// groups, only the root group's store is read and followed: its feed
    /// alone says whether the view is current.
    pub async fn open(store: Store, root: Option<&Credential>) -> anyhow::Result<Directory> {
        let store = store.catalog_store();
        let directory = Directory {
            store: store.clone(),
            feed: store.feed_lease(),
            view: Arc::new(RwLock::new(View::default())),
            read_again: Arc::new(tokio::sync::Notify::new()),
        };
        // Subscribe before loading, so no change falls between the two.
        let changes = store.subscribe();
        // A replicated service may still be electing its first leader as
        // its gateways start, and a call then fails with its outcome
        // unknown: the steps are idempotent, and are taken again for a
        // while rather than stop the start.
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            match directory.load(root).await {
                Ok(()) => break,
                Err(err) if unavailable(&err) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(
                        error = %format!("{err:#}"),
                        "the metadata service cannot answer yet: loading accounts again"
                    );
                    tokio::time::sleep(START_RETRY).await;
                }
                Err(err) => return Err(err),
            }
        }
        directory.follow(changes);
        Ok(directory)
    }

    /// What a start reads and makes sure of: every account and user, the
    /// root's keys, the token keyring.
    async fn load(&self, root: Option<&Credential>) -> anyhow::Result<()> {
        self.reload().await?;
        if let Some(root) = root {
            self.ensure_root(root).await?;
        }
        self.ensure_keyring().await?;
        self.reload().await
    }

    /// The account `name`, if it exists.
    pub fn account(&self, name: &str) -> Option<AccountRecord> {
        self.view.read().accounts.get(name).cloned()
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Vec<AccountRecord> {
        let mut accounts: Vec<AccountRecord> =
            self.view.read().accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
        accounts
    }

    /// The users of `account`, by name.
    pub fn users(&self, account: &str) -> Vec<UserRecord> {
        let mut users: Vec<UserRecord> = self
            .view
            .read()
            .users
            .values()
            .filter(|user| user.account == account)
            .cloned()
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// The custom domain `host` names (already normalised), if any.
    pub fn domain(&self, host: &str) -> Option<DomainRecord> {
        self.view.read().domains.get(host).cloned()
    }

    /// Whether any custom domain is mapped.
    pub fn has_domains(&self) -> bool {
        !self.view.read().domains.is_empty()
    }

    /// Every custom domain, by host.
    pub fn domains(&self) -> Vec<DomainRecord> {
        let mut domains: Vec<DomainRecord> = self.view.read().domains.values().cloned().collect();
        domains.sort_by(|a, b| a.host.cmp(&b.host));
        domains
    }

    /// Checks a user's Swift key: the principal it stands for and the user's
    /// token generation. Doors that log in with a password (FTP) use it as
    /// the token endpoint does.
    pub fn check_swift_key(
        &self,
        account: &str,
        user: &str,
        key: &str,
    ) -> Result<(Principal, u32), Refusal> {
        if !self.is_current() {
            return Err(Refusal::Stale);
        }
        let view = self.view.read();
        let record = view
            .users
            .get(&user_id(account, user))
            .ok_or(Refusal::UnknownUser)?;
        if !key_matches(&record.swift_key_hash, key) {
            return Err(Refusal::WrongKey);
        }
        let principal = record.principal().ok_or(Refusal::UnknownUser)?;
        Ok((principal, record.token_generation))
    }

    /// Makes the view stale, as a failover's resync does, since `ago`.
    #[cfg(test)]
    pub(crate) fn mark_stale_for(&self, ago: Duration) {
        let since = std::time::Instant::now().checked_sub(ago);
        self.view.write().stale_since = Some(since.expect("a clock older than `ago`"));
    }

    /// Whether the view holds every change to accounts and keys: the feed
    /// answers, and nothing it may have missed is still to be read again.
    /// Keys are not checked otherwise (callers answer 503).
    pub fn is_current(&self) -> bool {
        self.view.read().stale_since.is_none() && self.feed.holds()
    }

    /// `judge`'s verdict by a view that holds every change: the first one
    /// if the view is current or the verdict did not rest on it
    /// (`rests_on_view` false: an anonymous request); otherwise, once the
    /// view is current again within `patience`, a second verdict by what
    /// was read (a key revoked during the failover is gone by then).
    /// `None` when the view stays stale.
    pub async fn judge_by_current<T>(
        &self,
        patience: Duration,
        judge: impl Fn() -> T,
        rests_on_view: impl Fn(&T) -> bool,
    ) -> Option<T> {
        // Current before the verdict, not after: a reload that ends in
        // between must not pass off a verdict of the view it replaced.
        let current = self.is_current();
        let verdict = judge();
        if current || !rests_on_view(&verdict) {
            return Some(verdict);
        }
        self.current_within(patience).await.then(judge)
    }

    /// [`Directory::is_current`], or current again before the view has been
    /// stale for `patience`: a metadata leader's failover makes the view
    /// stale until it is read again, a second or two, and requests that
    /// come meanwhile wait rather than fail. Later in an outage the answer
    /// is at once, as it is when only the feed's lease lapsed (the view
    /// not marked stale: nothing to wait for). Whoever judged a request by
    /// the stale view judges it again after a wait.
    pub async fn current_within(&self, patience: Duration) -> bool {
        // Most calls: no waiter registered (it locks a Notify every
        // request shares).
        if self.is_current() {
            return true;
        }
        // Fixed at the first stale episode seen: one that follows a reload
        // (the feed lagged again) does not start a new patience.
        let mut deadline = None;
        loop {
            // Registered before the view is looked at: a reload in between
            // still wakes this wait.
            let read_again = self.read_again.notified();
            let mut read_again = std::pin::pin!(read_again);
            read_again.as_mut().enable();
            if self.is_current() {
                return true;
            }
            let Some(since) = self.view.read().stale_since else {
                return false;
            };
            let deadline = *deadline.get_or_insert(since + patience);
            if std::time::Instant::now() >= deadline {
                return false;
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(deadline, read_again).await.is_err() {
                return self.is_current();
            }
        }
    }

    /// The principal the user `account:user` acts as, if it exists, and
    /// the user's token generation: a session that outlives its login
    /// (FTP) holds both, and ends when either changed.
    pub fn principal(&self, account: &str, user: &str) -> Option<(Principal, u32)> {
        let view = self.view.read();
        let record = view.users.get(&user_id(account, user))?;
        Some((record.principal()?, record.token_generation))
    }

    /// The accounts that have a user called `user`: a login name without an
    /// account is accepted when exactly one account has it.
    pub fn accounts_with_user(&self, user: &str) -> Vec<String> {
        let mut accounts: Vec<String> = self
            .view
            .read()
            .users
            .values()
            .filter(|record| record.user == user)
            .map(|record| record.account.clone())
            .collect();
        accounts.sort();
        accounts
    }

    /// Checks a Swift key and issues a token valid for `lifetime_secs` from `now`.
    pub fn issue_token(
        &self,
        account: &str,
        user: &str,
        key: &str,
        now: u64,
        lifetime_secs: u64,
    ) -> Result<(String, TokenClaims), Refusal> {
        let (principal, generation) = self.check_swift_key(account, user, key)?;
        let claims = TokenClaims {
            principal,
            expires_at: now.saturating_add(lifetime_secs),
            generation,
        };
        let token = self
            .view
            .read()
            .keyring
            .issue(&claims)
            .map_err(|_| Refusal::UnknownUser)?;
        Ok((token, claims))
    }

    /// The principal a token stands for, if it verifies, has not expired, and
    /// its user still exists with the same token generation and role.
    pub fn verify_token(&self, token: &str, now: u64) -> Option<Principal> {
        let view = self.view.read();
        let claims = view.keyring.verify(token, now).ok()?;
        let record = view
            .users
            .get(&user_id(&claims.principal.account, &claims.principal.user))?;
        (record.token_generation == claims.generation
            && record.role() == Some(claims.principal.role))
        .then_some(claims.principal)
    }

    async fn ensure_root(&self, root: &Credential) -> anyhow::Result<()> {
        let account = AccountRecord {
            name: root.account.clone(),
            created_ms: now_ms(),
            meta: BTreeMap::new(),
        };
        let encoded = serde_json::to_vec(&account)?;
        self.store
            .catalog_update(NS_ACCOUNTS, &root.account, move |current| {
                let write = match current {
                    Some(_) => CatalogWrite::Keep,
                    None => CatalogWrite::Put(encoded.clone()),
                };
                Ok((write, ()))
            })
            .await?;
        let root = root.clone();
        self.store
            .catalog_update(
                NS_USERS,
                &user_id(&root.account, &root.user),
                move |current| {
                    let existing: Option<UserRecord> = current
                        .map(serde_json::from_slice)
                        .transpose()
                        .map_err(corrupt)?;
                    let key = S3KeyRecord {
                        access_key: root.access_key.clone(),
                        secret_key: root.secret_key.clone(),
                    };
                    let up_to_date = existing.as_ref().is_some_and(|user| {
                        user.s3_keys == [key.clone()]
                            && key_matches(&user.swift_key_hash, &root.secret_key)
                    });
                    if up_to_date {
                        return Ok((CatalogWrite::Keep, ()));
                    }
                    // The root keys come from the environment or the credentials
                    // file at every start; the record follows them.
                    let record = UserRecord {
                        account: root.account.clone(),
                        user: root.user.clone(),
                        role: Role::ResellerAdmin.as_str().to_owned(),
                        swift_key_hash: hash_key(&root.secret_key, &rand::random()),
                        s3_keys: vec![key],
                        token_generation: existing.as_ref().map_or(0, |user| user.token_generation),
                        created_ms: existing
                            .as_ref()
                            .map_or_else(now_ms, |user| user.created_ms),
                    };
                    let encoded = serde_json::to_vec(&record).map_err(corrupt)?;
                    Ok((CatalogWrite::Put(encoded.clone()), ()))
                },
            )
            .await?;
        Ok(())
    }

    async fn ensure_keyring(&self) -> anyhow::Result<()> {
        self.store
            .catalog_update(NS_CLUSTER, KEYRING_KEY, |current| {
                if current.is_some() {
                    return Ok((CatalogWrite::Keep, ()));
                }
                let mut secret = [0u8; 32];
                rand::rng().fill(&mut secret);
                let keys = vec![StoredTokenKey {
                    id: 1,
                    secret: hex::encode(secret),
                    retires_at: None,
                }];
                let encoded = serde_json::to_vec(&keys).map_err(corrupt)?;
                Ok((CatalogWrite::Put(encoded.clone()), ()))
            })
            .await
            .context("creating the token signing key")
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let mut view = View::default();
        for (name, value) in self.store.catalog_list(NS_ACCOUNTS).await? {
            let record: AccountRecord =
                serde_json::from_slice(&value).with_context(|| format!("account record {name}"))?;
            view.accounts.insert(name, record);
        }
        for (id, value) in self.store.catalog_list(NS_USERS).await? {
            let record: UserRecord =
                serde_json::from_slice(&value).with_context(|| format!("user record {id}"))?;
            view.index_user(record);
        }
        if let Some(value) = self.store.catalog_get(NS_CLUSTER, KEYRING_KEY).await? {
            view.keyring = decode_keyring(&value)?;
        }
        for (host, value) in self.store.catalog_list(NS_DOMAINS).await? {
            let record: DomainRecord =
                serde_json::from_slice(&value).with_context(|| format!("domain record {host}"))?;
            view.domains.insert(host, record);
        }
        *self.view.write() = view;
        self.read_again.notify_waiters();
        Ok(())
    }

    async fn refresh(&self, namespace: &str, key: &str) -> anyhow::Result<()> {
        // Other records (the ring) are not read for nothing.
        if !matches!(namespace, NS_ACCOUNTS | NS_USERS | NS_DOMAINS)
            && (namespace, key) != (NS_CLUSTER, KEYRING_KEY)
        {
            return Ok(());
        }
        let value = self.store.catalog_get(namespace, key).await?;
        let mut view = self.view.write();
        match (namespace, value) {
            (NS_ACCOUNTS, Some(value)) => {
                view.accounts
                    .insert(key.to_owned(), serde_json::from_slice(&value)?);
            }
            (NS_ACCOUNTS, None) => {
                view.accounts.remove(key);
            }
            (NS_USERS, Some(value)) => view.index_user(serde_json::from_slice(&value)?),
            (NS_USERS, None) => view.unindex_user(key),
            (NS_DOMAINS, Some(value)) => {
                view.domains
                    .insert(key.to_owned(), serde_json::from_slice(&value)?);
            }
            (NS_DOMAINS, None) => {
                view.domains.remove(key);
            }
            (NS_CLUSTER, Some(value)) if key == KEYRING_KEY => {
                view.keyring = decode_keyring(&value)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies catalog changes as they happen. The task holds the store only
    /// weakly: it ends when the store closes, and never keeps it open.
    fn follow(&self, mut changes: tokio::sync::broadcast::Receiver<strata_store::ChangeEvent>) {
        let store = self.store.downgrade();
        let view = Arc::downgrade(&self.view);
        let (feed, read_again) = (self.feed.clone(), self.read_again.clone());
        tokio::spawn(async move {
            loop {
                let received = changes.recv().await;
                let (Some(store), Some(view)) = (store.upgrade(), view.upgrade()) else {
                    return;
                };
                let directory = Directory {
                    store,
                    feed: feed.clone(),
                    view,
                    read_again: read_again.clone(),
                };
                let outcome = match received {
                    Ok(event) => match (event.kind, event.key.as_deref()) {
                        (ChangeKind::CatalogPut | ChangeKind::CatalogDeleted, Some(key)) => {
                            directory.refresh(&event.bucket, key).await
                        }
                        (ChangeKind::Resync, _) => {
                            directory.view.write().mark_stale();
                            directory.reload().await
                        }
                        _ => Ok(()),
                    },
                    // Missed events: read everything again.
                    Err(RecvError::Lagged(_)) => {
                        directory.view.write().mark_stale();
                        directory.reload().await
                    }
                    Err(RecvError::Closed) => return,
                };
                if let Err(err) = outcome {
                    directory.view.write().mark_stale();
                    tracing::error!(error = %err, "could not refresh accounts and users");
                    // A change left unapplied (the metadata service did not
                    // answer) would keep a revoked key valid: read everything
                    // again until that works.
                    let mut pause = Duration::from_millis(100);
                    while let Err(err) = directory.reload().await {
                        tracing::warn!(error = %err, "reloading accounts and users failed");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RELOAD_PAUSE_MAX);
                    }
                }
            }
        });
    }
}

impl CredentialLookup for Directory {
    fn lookup(&self, access_key: &str) -> Option<Credential> {
        let view = self.view.read();
        let id = view.access_keys.get(access_key)?;
        let record = view.users.get(id)?;
        let key = record
            .s3_keys
            .iter()
            .find(|key| key.access_key == access_key)?;
        Some(Credential {
            access_key: key.access_key.clone(),
            secret_key: key.secret_key.clone(),
            account: record.account.clone(),
            user: record.user.clone(),
            role: record.role()?,
        })
    }
}

fn decode_keyring(value: &[u8]) -> anyhow::Result<TokenKeyring> {
    let stored: Vec<StoredTokenKey> =
        serde_json::from_slice(value).context("token keyring record")?;
    let keys = stored
        .into_iter()
        .map(|key| {
            let mut secret = [0u8; 32];
            hex::decode_to_slice(&key.secret, &mut secret)
                .context("token key is not 32 bytes of hex")?;
            Ok(TokenKey {
                id: key.id,
                secret,
                retires_at: key.retires_at,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TokenKeyring::new(keys))
}

fn corrupt(err: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("catalog record: {err}"))
}

fn user_id(account: &str, user: &str) -> String {
    format!("{account}:{user}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::FutureExt as _;
    use strata_pool::{LocalPool, LocalPoolConfig};
    use strata_store::StoreConfig;

    pub(crate) fn root() -> Credential {
        Credential {
            access_key: "ROOTKEY".into(),
            secret_key: "root/secret".into(),
            account: "admin".into(),
            user: "admin".into(),
            role: Role::ResellerAdmin,
        }
    }

    /// Opens the store in `dir` and a directory over it, waiting for a store
    /// dropped just before to let go of the database lock.
    pub(crate) async fn open(dir: &std::path::Path, root: &Credential) -> (Store, Directory) {
        for _ in 0..100 {
            let pool = LocalPool::open(LocalPoolConfig {
                dir: dir.join("pool"),
            })
            .unwrap();
            if let Ok(store) = Store::open(StoreConfig::new(dir.join("meta")), Arc::new(pool)) {
                let directory = Directory::open(store.clone(), Some(root)).await.unwrap();
                return (store, directory);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("database stayed locked");
    }

    /// Waits for the directory to apply a change it follows from the feed.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen");
    }

    /// `waiting`'s outcome when `directory`'s view is read again while it
    /// waits: it must be waiting first, and be woken by the reload long
    /// before its patience of 600 s would end it.
    async fn reloaded_while_waiting<T>(
        directory: &Directory,
        waiting: impl std::future::Future<Output = T>,
    ) -> T {
        let mut waiting = std::pin::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "answered before the view was read again"
        );
        directory.reload().await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the wait was not woken by the view's reload")
    }

    /// A verdict given by a stale view is given again once the view is
    /// read again: a key revoked meanwhile no longer passes.
    #[tokio::test]
    async fn a_verdict_by_a_stale_view_is_given_again_by_the_view_read() {
        let dir = tempfile::tempdir().unwrap();
        let (store, directory) = open(dir.path(), &root()).await;
        let judge = || directory.lookup("ROOTKEY").is_some();
        let by_current = directory.judge_by_current(Duration::ZERO, judge, |_| true);
        assert_eq!(by_current.await, Some(true));
        // The view misses the revocation (as one stale after a failover
        // would), and reads it when it is read again.
        directory.view.write().mark_stale();
        let mut root_user: UserRecord = serde_json::from_slice(
            &store
                .catalog_get(NS_USERS, "admin:admin")
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        root_user.s3_keys.clear();
        let revoked = serde_json::to_vec(&root_user).unwrap();
        let stale_view = directory.view.read().users.get("admin:admin").cloned();
        store
            .catalog_update(NS_USERS, "admin:admin", move |_| {
                Ok((CatalogWrite::Put(revoked.clone()), ()))
            })
            .await
            .unwrap();
        eventually("the change applied", || {
            directory.lookup("ROOTKEY").is_none()
        })
        .await;
        // Put back as the stale view had it: only a reload mends it.
        if let Some(stale_user) = stale_view {
            directory.view.write().index_user(stale_user);
        }
        assert!(judge(), "the stale view still has the key");
        let by_current = directory.judge_by_current(Duration::from_secs(600), judge, |_| true);
        assert_eq!(
            reloaded_while_waiting(&directory, by_current).await,
            Some(false),
            "judged by the stale view"
        );
        // An anonymous verdict does not wait for the view.
        directory.view.write().mark_stale();
        let anonymous = directory.judge_by_current(Duration::from_secs(60), || 7, |_| false);
        assert_eq!(anonymous.now_or_never(), Some(Some(7)));
        let kept_stale = directory.judge_by_current(Duration::ZERO, judge, |_| true);
        assert_eq!(kept_stale.now_or_never(), Some(None));
    }

    /// A view made stale (a failover's resync) is waited for while young:
    /// a signed request that comes while it is read again goes on once it
    /// is; one that comes after the patience is answered at once.
    #[tokio::test]
    async fn a_stale_view_is_waited_for_while_young() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, directory) = open(dir.path(), &root()).await;
        assert_eq!(
            directory.current_within(Duration::ZERO).now_or_never(),
            Some(true)
        );
        directory.view.write().mark_stale();
        assert!(!directory.is_current());
        assert_eq!(
            directory.current_within(Duration::ZERO).now_or_never(),
            Some(false)
        );
        assert_eq!(
            directory
                .current_within(Duration::from_secs(60))
                .now_or_never(),
            None,
            "waits"
        );
        let waiting = directory.current_within(Duration::from_secs(600));
        assert!(reloaded_while_waiting(&directory, waiting).await);
        assert!(directory.is_current());

        directory.mark_stale_for(Duration::from_secs(5));
        assert_eq!(
            directory
                .current_within(Duration::from_secs(3))
                .now_or_never(),
            Some(false)
        );
    }

    #[tokio::test]
    async fn root_tokens_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let (store, directory) = open(dir.path(), &root()).await;
        let found = directory.lookup("ROOTKEY").unwrap();
        assert_eq!(
            (found.account.as_str(), found.secret_key.as_str()),
            ("admin", "root/secret")
        );
        assert!(directory.lookup("OTHER").is_none());

        assert_eq!(
            directory
                .issue_token("admin", "admin", "wrong", 100, 60)
                .unwrap_err(),
            Refusal::WrongKey
        );
        let (token, claims) = directory
            .issue_token("admin", "admin", "root/secret", 100, 60)
            .unwrap();
        assert_eq!(claims.principal.role, Role::ResellerAdmin);
        assert_eq!(
            directory.verify_token(&token, 159).map(|who| who.role),
            Some(Role::ResellerAdmin)
        );
        assert_eq!(directory.verify_token(&token, 160), None, "expired");

        // Bumping the generation through the catalog revokes the token.
        store
            .catalog_update(NS_USERS, "admin:admin", |current| {
                let mut user: UserRecord = serde_json::from_slice(current.unwrap()).unwrap();
                user.token_generation += 1;
                Ok((CatalogWrite::Put(serde_json::to_vec(&user).unwrap()), ()))
            })
            .await
            .unwrap();
        eventually("revocation", || {
            directory.verify_token(&token, 120).is_none()
        })
        .await;
    }

    #[tokio::test]
    async fn root_keys_follow_the_environment_and_the_keyring_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (store, directory) = open(dir.path(), &root()).await;
        let (token, _) = directory
            .issue_token("admin", "admin", "root/secret", 100, 600)
            .unwrap();
        drop((store, directory));

        let mut rotated = root();
        rotated.access_key = "NEWKEY".into();
        rotated.secret_key = "new/secret".into();
        let (_store, directory) = open(dir.path(), &rotated).await;
        assert!(directory.lookup("ROOTKEY").is_none());
        assert!(directory.lookup("NEWKEY").is_some());
        assert!(
            directory
                .issue_token("admin", "admin", "root/secret", 100, 60)
                .is_err()
        );
        assert!(
            directory
                .issue_token("admin", "admin", "new/secret", 100, 60)
                .is_ok()
        );
        // Same signing key after the restart: the old token still verifies.
        assert!(directory.verify_token(&token, 200).is_some());
    }
}

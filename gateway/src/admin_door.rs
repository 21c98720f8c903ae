//! The admin API the `strata account|user|key` commands talk to: accounts,
//! users, their keys and the token signing key, as JSON under `/admin/v1/`.
//! Every request needs the token of a reseller admin (`X-Auth-Token`).
//!
//! | request | does |
//! |---|---|
//! | `GET /admin/v1/accounts` | accounts with their usage |
//! | `PUT /admin/v1/accounts/NAME` | creates an account (409 if it exists) |
//! | `DELETE /admin/v1/accounts/NAME[?purge=true]` | deletes it; 409 while it holds containers, unless purged |
//! | `GET /admin/v1/accounts/NAME/users` | its users (no secrets) |
//! | `PUT /admin/v1/accounts/NAME/users/USER?role=R` | creates a user; answers its keys, once |
//! | `DELETE /admin/v1/accounts/NAME/users/USER` | deletes the user |
//! | `POST /admin/v1/accounts/NAME/users/USER?op=rotate` | new Swift key and S3 pair; old tokens revoked |
//! | `POST /admin/v1/accounts/NAME/users/USER?op=revoke` | revokes the user's tokens |
//! | `POST /admin/v1/signing-key?overlap=SECS` | new token signing key |
//! | `GET /admin/v1/domains` | custom domains |
//! | `PUT /admin/v1/domains/HOST?account=A[&container=C]` | maps a host to an account (and container) |
//! | `DELETE /admin/v1/domains/HOST` | removes the mapping |

use crate::wire::RequestBody;
use http::{Method, StatusCode};
use serde_json::json;
use strata_auth::Role;
use strata_store::{BucketPin, ListEntry, ListQuery, Store, StoreError};

use crate::directory::{Directory, DirectoryError};
use crate::wire::{Query, Response, empty_response, header_str, json_response, unix_now};

pub const PREFIX: &str = "/admin/v1/";

/// How long the previous signing key keeps verifying by default.
const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;

pub struct AdminDoor {
    pub store: Store,
    pub directory: Directory,
}

/// An admin API failure: status and message, sent as `{"error": …}`.
struct AdminError(StatusCode, String);

impl From<DirectoryError> for AdminError {
    fn from(err: DirectoryError) -> Self {
        let status = match &err {
            DirectoryError::NotFound(_) => StatusCode::NOT_FOUND,
            DirectoryError::Exists(_) => StatusCode::CONFLICT,
            DirectoryError::Invalid(_) => StatusCode::BAD_REQUEST,
            DirectoryError::Store(StoreError::Conflict) => StatusCode::CONFLICT,
            DirectoryError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            DirectoryError::Store(store) if !store.is_server_error() => StatusCode::BAD_REQUEST,
            DirectoryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, err.to_string())
    }
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        DirectoryError::Store(err).into()
    }
}

type AdminResult<T> = Result<T, AdminError>;

impl AdminDoor {
    pub fn serves(path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    pub async fn handle(&self, request: http::Request<RequestBody>) -> Response {
        let outcome = self.answer(&request).await;
        match outcome {
            Ok(response) => response,
            Err(AdminError(status, message)) => {
                if status.is_server_error() {
                    tracing::warn!(%status, %message, "admin request failed");
                }
                json_response(status, json!({ "error": message }).to_string())
            }
        }
    }

    async fn answer(&self, request: &http::Request<RequestBody>) -> AdminResult<Response> {
        let now = unix_now();
        let token = header_str(request.headers(), "x-auth-token").unwrap_or("");
        // Judged by a current view only, as every token and key is.
        let verify = || self.directory.verify_token(token, now);
        let judged = self
            .directory
            .judge_by_current(crate::directory::STALE_PATIENCE, verify, |_| true)
            .await
            .ok_or_else(|| {
                AdminError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the metadata service did not answer; try again".into(),
                )
            })?;
        let principal = judged.ok_or_else(|| {
            AdminError(
                StatusCode::UNAUTHORIZED,
                "a reseller admin token is required".into(),
            )
        })?;
        if principal.role != Role::ResellerAdmin {
            return Err(AdminError(
                StatusCode::FORBIDDEN,
                "only reseller admins may use the admin API".into(),
            ));
        }
        let query = Query::parse(request.uri().query()).unwrap_or_default();
        let path = request
            .uri()
            .path()
            .trim_start_matches(PREFIX)
            .trim_end_matches('/');
        // Names arrive percent-encoded, as the CLI sends them.
        let decoded: Vec<String> = path
            .split('/')
            .map(|segment| {
                percent_encoding::percent_decode_str(segment)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let method = request.method();
        match (method, segments.as_slice()) {
            (&Method::GET, ["accounts"]) => self.list_accounts().await,
            (&Method::PUT, ["accounts", name]) => {
                let record = self.directory.create_account(name).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    json!({ "name": record.name }).to_string(),
                ))
            }
            (&Method::DELETE, ["accounts", name]) => {
                if *name == principal.account {
                    return Err(AdminError(
                        StatusCode::CONFLICT,
                        "an admin cannot delete their own account".into(),
                    ));
                }
                self.delete_account(name, query.get("purge") == Some("true"))
                    .await
            }
            (&Method::GET, ["accounts", name, "users"]) => {
                if self.directory.account(name).is_none() {
                    return Err(DirectoryError::NotFound(format!("account {name}")).into());
                }
                let users: Vec<_> = self
                    .directory
                    .users(name)
                    .into_iter()
                    .map(|user| {
                        json!({
                            "user": user.user,
                            "role": user.role,
                            "access_keys": user.s3_keys.iter().map(|key| key.access_key.clone()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                Ok(json_response(StatusCode::OK, json!(users).to_string()))
            }
            (&Method::PUT, ["accounts", account, "users", user]) => {
                let role = match query.get("role") {
                    None => Role::Writer,
                    Some(text) => Role::parse(text).ok_or_else(|| {
                        AdminError(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "unknown role {text:?}: reader, writer, admin or reseller-admin"
                            ),
                        )
                    })?,
                };
                let keys = self.directory.create_user(account, user, role).await?;
                Ok(json_response(StatusCode::CREATED, json!(keys).to_string()))
            }
            (&Method::DELETE, ["accounts", account, "users", user]) => {
                self.directory.delete_user(account, user).await?;
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            (&Method::POST, ["accounts", account, "users", user]) => match query.get("op") {
                Some("rotate") => {
                    let keys = self.directory.rotate_user_keys(account, user).await?;
                    Ok(json_response(StatusCode::OK, json!(keys).to_string()))
                }
                Some("revoke") => {
                    self.directory.revoke_tokens(account, user).await?;
                    Ok(empty_response(StatusCode::NO_CONTENT))
                }
                _ => Err(AdminError(
                    StatusCode::BAD_REQUEST,
                    "op must be rotate or revoke".into(),
                )),
            },
            (&Method::GET, ["domains"]) => {
                let domains = self.directory.domains();
                Ok(json_response(StatusCode::OK, json!(domains).to_string()))
            }
            (&Method::PUT, ["domains", host]) => {
                let account = query.get("account").ok_or_else(|| {
                    AdminError(StatusCode::BAD_REQUEST, "account is required".into())
                })?;
                let record = self
                    .directory
                    .put_domain(host, account, query.get("container"))
                    .await?;
                Ok(json_response(StatusCode::OK, json!(record).to_string()))
            }
            (&Method::DELETE, ["domains", host]) => {
                self.directory.delete_domain(host).await?;
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            (&Method::POST, ["signing-key"]) => {
                let overlap = match query.get("overlap") {
                    None => DEFAULT_OVERLAP_SECS,
                    Some(text) => text.parse().map_err(|_| {
                        AdminError(
                            StatusCode::BAD_REQUEST,
                            "overlap must be whole seconds".into(),
                        )
                    })?,
                };
                let id = self.directory.rotate_signing_key(now, overlap).await?;
                Ok(json_response(
                    StatusCode::OK,
                    json!({ "key_id": id, "overlap_secs": overlap }).to_string(),
                ))
            }
            _ => Err(AdminError(
                StatusCode::NOT_FOUND,
                format!("no admin operation {method} {path}"),
            )),
        }
    }

    async fn list_accounts(&self) -> AdminResult<Response> {
        let mut accounts = Vec::new();
        for account in self.directory.accounts() {
            let containers = self.store.account_usage(&account.name).await?;
            accounts.push(json!({
                "name": account.name,
                "users": self.directory.users(&account.name).len(),
                "containers": containers.len(),
                "objects": containers.iter().map(|(_, usage)| usage.objects).sum::<u64>(),
                "bytes": containers.iter().map(|(_, usage)| usage.bytes).sum::<u64>(),
            }));
        }
        Ok(json_response(StatusCode::OK, json!(accounts).to_string()))
    }

    /// Deletes an account. With `purge`, its objects and containers go
    /// first; without, an account that holds containers is refused.
    async fn delete_account(&self, name: &str, purge: bool) -> AdminResult<Response> {
        if self.directory.account(name).is_none() {
            return Err(DirectoryError::NotFound(format!("account {name}")).into());
        }
        let buckets = self.store.list_buckets(name).await?;
        if !buckets.is_empty() && !purge {
            return Err(AdminError(
                StatusCode::CONFLICT,
                format!(
                    "account {name} holds {} containers; delete them first or purge",
                    buckets.len()
                ),
            ));
        }
        for bucket in buckets {
            // A bucket of that name deleted and created again since, by
            // another account or not, is not this purge's.
            match self
                .purge_bucket(&bucket.name, &BucketPin::of(&bucket))
                .await
            {
                Ok(()) | Err(StoreError::NoSuchBucket) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.directory.delete_account(name).await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// Deletes bucket `name`, as `pin` names it, and every object in it.
    async fn purge_bucket(&self, name: &str, pin: &BucketPin) -> Result<(), StoreError> {
        loop {
            let query = ListQuery {
                max_keys: 1000,
                ..ListQuery::default()
            };
            let page = self.store.list_objects(name, query).await?;
            if page.entries.is_empty() {
                return self.store.delete_bucket_pinned(name, pin).await;
            }
            for entry in &page.entries {
                if let ListEntry::Object(info) = entry {
                    self.store
                        .delete_object_pinned(name, &info.key, pin)
                        .await?;
                }
            }
        }
    }
}

//! The token endpoints of the auth nodes.
//!
//! * Swift v1.0, as TempAuth answers it: `GET /auth/v1.0` (also
//!   `/auth/v1.0/` and `/v1.0`) with `X-Auth-User: account:user` and
//!   `X-Auth-Key` → 200 with `X-Auth-Token`, `X-Storage-Token`,
//!   `X-Storage-Url` and `X-Auth-Token-Expires`; 401 otherwise.
//! * Keystone v3 password authentication, the subset Swift clients use:
//!   `POST /v3/auth/tokens` with a password identity and a project scope
//!   (project = account, user name = user, password = Swift key) → 201 with
//!   `X-Subject-Token` and a catalog whose `object-store` endpoints point at
//!   `/v1/AUTH_<project>`. `GET /v3` answers version discovery.
//!
//! Both issue the same self-contained signed tokens (`Directory::issue_token`),
//! and refuse keys the same way: slowly, and not at all from an address
//! that guessed too often (`LoginGuard`: 429 with `Retry-After`).

use std::net::IpAddr;

use crate::wire::RequestBody;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::json;

use strata_auth::TokenClaims;

use crate::directory::{Directory, Refusal};
use crate::login_guard::{LoginGuard, REFUSAL_DELAY};
use crate::wire::{Origin, Response, header_str, json_response, text_response, unix_now};

/// Largest Keystone request body.
const MAX_KEYSTONE_BODY: usize = 64 * 1024;

/// Answers token requests.
pub struct TokenDoor {
    pub directory: Directory,
    /// How long issued tokens are valid.
    pub token_lifetime_secs: u64,
    /// Base of storage URLs (`https://storage.example.com`); from the request's
    /// Host when unset.
    pub public_url: Option<String>,
    /// The region Keystone catalogs name.
    pub region: String,
    pub login_guard: LoginGuard,
}

/// Why a token was not issued.
enum NotIssued {
    /// The key was refused.
    Refused,
    /// The client's address is blocked for refused keys.
    Blocked,
    /// See [`Refusal::Stale`].
    Stale,
}

impl TokenDoor {
    /// Whether this door answers `path`.
    pub fn serves(path: &str) -> bool {
        matches!(
            path,
            "/auth/v1.0" | "/auth/v1.0/" | "/v1.0" | "/v1.0/" | "/v3" | "/v3/" | "/v3/auth/tokens"
        )
    }

    /// `client`: the address the request came from.
    pub async fn handle(
        &self,
        request: http::Request<RequestBody>,
        trans_id: &str,
        client: IpAddr,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let base = self.base_url(&parts);
        let mut response = match (path, &parts.method) {
            ("/v3" | "/v3/", &Method::GET | &Method::HEAD) => self.discovery(&base),
            ("/v3/auth/tokens", &Method::POST) => self.keystone(body, &base, client).await,
            ("/v3" | "/v3/" | "/v3/auth/tokens", _) => {
                keystone_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            }
            (_, &Method::GET | &Method::HEAD) => self.swift_v1(&parts.headers, &base, client).await,
            _ => text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        };
        if let Ok(value) = HeaderValue::from_str(trans_id) {
            response.headers_mut().insert("x-trans-id", value.clone());
            response
                .headers_mut()
                .insert("x-openstack-request-id", value);
        }
        response
    }

    /// A token for `account:user` if `key` is theirs, checked as
    /// [`LoginGuard`] says.
    async fn issue(
        &self,
        client: IpAddr,
        account: &str,
        user: &str,
        key: &str,
        now: u64,
    ) -> Result<(String, TokenClaims), NotIssued> {
        // A view being read again after a failover is waited for, a while;
        // before the attempt counts, so that a client that gives up
        // meanwhile is not counted as a failed login.
        self.directory
            .current_within(crate::directory::STALE_PATIENCE)
            .await;
        let Some(attempt) = self.login_guard.attempt(client) else {
            tracing::debug!(%client, account, user, "token refused: too many failed logins");
            return Err(NotIssued::Blocked);
        };
        match self
            .directory
            .issue_token(account, user, key, now, self.token_lifetime_secs)
        {
            Ok(issued) => {
                attempt.succeeded();
                Ok(issued)
            }
            Err(Refusal::Stale) => {
                attempt.succeeded();
                Err(NotIssued::Stale)
            }
            Err(refusal) => {
                tracing::debug!(%client, account, user, ?refusal, "token refused");
                tokio::time::sleep(REFUSAL_DELAY).await;
                Err(NotIssued::Refused)
            }
        }
    }

    /// `response` (a 429) with the longest the block can last from now.
    fn blocked(&self, mut response: Response) -> Response {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(self.login_guard.block().as_secs()),
        );
        response
    }

    /// `base`: the URL the storage URLs handed out start with.
    async fn swift_v1(&self, headers: &HeaderMap, base: &str, client: IpAddr) -> Response {
        let header = |names: &[&str]| names.iter().find_map(|name| header_str(headers, *name));
        let (Some(auth_user), Some(key)) = (
            header(&["x-auth-user", "x-storage-user"]),
            header(&["x-auth-key", "x-storage-pass"]),
        ) else {
            return unauthorized();
        };
        let Some((account, user)) = auth_user.split_once(':') else {
            return unauthorized();
        };
        let now = unix_now();
        let (token, claims) = match self.issue(client, account, user, key, now).await {
            Ok(issued) => issued,
            Err(NotIssued::Refused) => return unauthorized(),
            Err(NotIssued::Blocked) => {
                return self.blocked(text_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    TOO_MANY_FAILURES,
                ));
            }
            Err(NotIssued::Stale) => return stale(),
        };
        let storage_url = storage_url(base, &claims.principal.account);
        let mut response = text_response(StatusCode::OK, "");
        let out = response.headers_mut();
        for (name, value) in [
            ("x-auth-token", token.as_str()),
            ("x-storage-token", token.as_str()),
            ("x-storage-url", storage_url.as_str()),
            (
                "x-auth-token-expires",
                &claims.expires_at.saturating_sub(now).to_string(),
            ),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.insert(name, value);
            }
        }
        response
    }

    async fn keystone(&self, body: RequestBody, base: &str, client: IpAddr) -> Response {
        let body = match http_body_util::Limited::new(body, MAX_KEYSTONE_BODY)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return keystone_error(
                    StatusCode::BAD_REQUEST,
                    "The request body is too large or ended early.",
                );
            }
        };
        let request: KeystoneRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(err) => {
                return keystone_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Expecting to find auth in request body: {err}"),
                );
            }
        };
        let identity = request.auth.identity;
        if !identity.methods.iter().any(|method| method == "password") {
            return keystone_error(
                StatusCode::UNAUTHORIZED,
                "Only password authentication is supported.",
            );
        }
        let Some(password) = identity.password else {
            return keystone_error(StatusCode::BAD_REQUEST, "The password identity is missing.");
        };
        let user = password.user;
        // The project is the account; without a scope, `account:user` names both.
        let project = request
            .auth
            .scope
            .and_then(|scope| scope.project)
            .and_then(|project| project.name.or(project.id));
        let (account, user_name) = match (project, user.name.as_deref().or(user.id.as_deref())) {
            (Some(project), Some(name)) => (project, name.to_owned()),
            (None, Some(name)) => match name.split_once(':') {
                Some((account, user)) => (account.to_owned(), user.to_owned()),
                None => {
                    return keystone_error(
                        StatusCode::UNAUTHORIZED,
                        "A project scope is required.",
                    );
                }
            },
            (_, None) => {
                return keystone_error(StatusCode::BAD_REQUEST, "The user name is missing.");
            }
        };
        let now = unix_now();
        let (token, claims) = match self
            .issue(client, &account, &user_name, &user.password, now)
            .await
        {
            Ok(issued) => issued,
            Err(NotIssued::Refused) => {
                return keystone_error(
                    StatusCode::UNAUTHORIZED,
                    "The request you have made requires authentication.",
                );
            }
            Err(NotIssued::Blocked) => {
                return self.blocked(keystone_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    TOO_MANY_FAILURES.trim_end(),
                ));
            }
            Err(NotIssued::Stale) => {
                return keystone_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The metadata service is unreachable; try again.",
                );
            }
        };
        let url = storage_url(base, &account);
        let endpoint = |interface: &str| {
            json!({
                "id": format!("{account}-{interface}"),
                "interface": interface,
                "region": self.region,
                "region_id": self.region,
                "url": url,
            })
        };
        let domain = json!({"id": "default", "name": "Default"});
        let role = claims.principal.role.as_str();
        let document = json!({
            "token": {
                "methods": ["password"],
                "issued_at": iso_time(now),
                "expires_at": iso_time(claims.expires_at),
                "user": {"id": format!("{account}:{user_name}"), "name": user_name, "domain": domain},
                "project": {"id": account, "name": account, "domain": domain},
                "roles": [{"id": role, "name": role}],
                "catalog": [{
                    "id": "object-store",
                    "type": "object-store",
                    "name": "swift",
                    "endpoints": [endpoint("public"), endpoint("internal"), endpoint("admin")],
                }],
            }
        });
        let mut response = json_response(StatusCode::CREATED, document.to_string());
        if let Ok(value) = HeaderValue::from_str(&token) {
            response.headers_mut().insert("x-subject-token", value);
        }
        response
    }

    fn discovery(&self, base: &str) -> Response {
        let document = json!({
            "version": {
                "id": "v3.14",
                "status": "stable",
                "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": format!("{base}/v3/")}],
                "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
            }
        });
        json_response(StatusCode::OK, document.to_string())
    }

    /// `public_url`, or the gateway as the request reached it: its Host,
    /// over HTTPS when the request came over TLS.
    fn base_url(&self, request: &http::request::Parts) -> String {
        match &self.public_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => Origin::of(request).url(&request.headers, "127.0.0.1"),
        }
    }
}

fn storage_url(base: &str, account: &str) -> String {
    format!("{base}/v1/AUTH_{account}")
}

#[derive(Deserialize)]
struct KeystoneRequest {
    auth: KeystoneAuth,
}

#[derive(Deserialize)]
struct KeystoneAuth {
    identity: KeystoneIdentity,
    #[serde(default)]
    scope: Option<KeystoneScope>,
}

#[derive(Deserialize)]
struct KeystoneIdentity {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<KeystonePassword>,
}

#[derive(Deserialize)]
struct KeystonePassword {
    user: KeystoneUser,
}

#[derive(Deserialize)]
struct KeystoneUser {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
    password: String,
}

#[derive(Deserialize)]
struct KeystoneScope {
    #[serde(default)]
    project: Option<KeystoneProject>,
}

#[derive(Deserialize)]
struct KeystoneProject {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// The answer to an address blocked for refused keys.
const TOO_MANY_FAILURES: &str = "Too many failed logins from this address; try again later.\n";

/// Keys are not checked against a directory that may be stale.
fn stale() -> Response {
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "The metadata service is unreachable; try again.\n",
    )
}

fn unauthorized() -> Response {
    text_response(StatusCode::UNAUTHORIZED, "Unauthorized")
}

fn keystone_error(status: StatusCode, message: &str) -> Response {
    let document = json!({
        "error": {
            "code": status.as_u16(),
            "title": status.canonical_reason().unwrap_or(""),
            "message": message,
        }
    });
    json_response(status, document.to_string())
}

fn iso_time(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

//! The token endpoint of the auth nodes: Swift v1.0 auth as TempAuth answers it.
//!
//! `GET /auth/v1.0` (also `/auth/v1.0/` and `/v1.0`) with `X-Auth-User:
//! account:user` and `X-Auth-Key` → 200 with `X-Auth-Token`,
//! `X-Storage-Token`, `X-Storage-Url` and `X-Auth-Token-Expires`; 401 otherwise.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::directory::Directory;
use crate::s3::{Response, full_body};

/// Answers token requests.
pub struct TokenDoor {
    pub directory: Directory,
    /// How long issued tokens are valid.
    pub token_lifetime_secs: u64,
    /// Base of storage URLs (`https://storage.example.com`); from the request's
    /// Host when unset.
    pub public_url: Option<String>,
}

impl TokenDoor {
    /// Whether this door answers `path`.
    pub fn serves(path: &str) -> bool {
        matches!(path, "/auth/v1.0" | "/auth/v1.0/" | "/v1.0" | "/v1.0/")
    }

    pub fn handle(&self, method: &Method, headers: &HeaderMap, trans_id: &str) -> Response {
        let mut response = if method == Method::GET || method == Method::HEAD {
            self.issue(headers)
        } else {
            text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        };
        if let Ok(value) = HeaderValue::from_str(trans_id) {
            response.headers_mut().insert("x-trans-id", value.clone());
            response
                .headers_mut()
                .insert("x-openstack-request-id", value);
        }
        response
    }

    fn issue(&self, headers: &HeaderMap) -> Response {
        let header = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| headers.get(*name).and_then(|value| value.to_str().ok()))
        };
        let (Some(auth_user), Some(key)) = (
            header(&["x-auth-user", "x-storage-user"]),
            header(&["x-auth-key", "x-storage-pass"]),
        ) else {
            return unauthorized();
        };
        let Some((account, user)) = auth_user.split_once(':') else {
            return unauthorized();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let (token, claims) =
            match self
                .directory
                .issue_token(account, user, key, now, self.token_lifetime_secs)
            {
                Ok(issued) => issued,
                Err(refusal) => {
                    tracing::debug!(account, user, ?refusal, "token refused");
                    return unauthorized();
                }
            };
        let base = match &self.public_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => {
                let host = header(&["host"]).unwrap_or("127.0.0.1");
                format!("http://{host}")
            }
        };
        let storage_url = format!("{base}/v1/AUTH_{}", claims.principal.account);
        let mut response = text(StatusCode::OK, "");
        let headers = response.headers_mut();
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
                headers.insert(name, value);
            }
        }
        response
    }
}

fn unauthorized() -> Response {
    text(StatusCode::UNAUTHORIZED, "Unauthorized")
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = http::Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

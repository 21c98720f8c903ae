//! OpenStack Swift requests: v1.0 authentication (tempauth, swauth and
//! Keystone's v1 shim all speak it) for a token and storage URL, then the
//! object API under `<storage-url>/<container>/<object>`.

use anyhow::{Context, bail};
use http::header::{CONTENT_LENGTH, HeaderName};
use http::{HeaderValue, Method, Request};
use http_body_util::BodyExt;

use crate::body::{PatternBody, PatternSource};
use crate::target::{
    HttpClient, ObjectRequest, encode_path, encode_query_value, exchange, trim_base_url,
};

const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// A Swift account's storage URL, the token that opens it, and the container
/// the run works in.
pub struct SwiftTarget {
    /// `http://host:port/v1/AUTH_account`, without a trailing slash.
    storage_url: String,
    token: HeaderValue,
    container: String,
}

impl std::fmt::Debug for SwiftTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: leave it out.
        formatter
            .debug_struct("SwiftTarget")
            .field("storage_url", &self.storage_url)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl SwiftTarget {
    /// Performs v1.0 authentication: `GET auth_url` with `X-Auth-User` and
    /// `X-Auth-Key`, answered by `X-Auth-Token` and `X-Storage-Url`.
    pub async fn authenticate(
        client: &HttpClient,
        auth_url: &str,
        user: &str,
        key: &str,
        container: &str,
    ) -> anyhow::Result<Self> {
        if container.is_empty() {
            bail!("container name is empty");
        }
        let request = Request::builder()
            .method(Method::GET)
            .uri(auth_url)
            .header("x-auth-user", user)
            .header("x-auth-key", key)
            .body(PatternBody::empty())
            .with_context(|| format!("invalid Swift auth URL {auth_url:?}"))?;
        let response = client
            .request(request)
            .await
            .with_context(|| format!("Swift auth request to {auth_url} failed"))?;
        let (parts, body) = response.into_parts();
        // Read the (tiny) body so the connection returns to the pool.
        body.collect()
            .await
            .with_context(|| format!("Swift auth answer from {auth_url} was cut short"))?;
        if !parts.status.is_success() {
            bail!("Swift auth at {auth_url} answered {}", parts.status);
        }
        let header = |name: &str| -> anyhow::Result<String> {
            let value = parts
                .headers
                .get(name)
                .with_context(|| format!("Swift auth answer has no {name}"))?;
            let text = value
                .to_str()
                .with_context(|| format!("Swift auth answer has a non-ASCII {name}"))?;
            Ok(text.to_owned())
        };
        let token = HeaderValue::from_str(&header("x-auth-token")?)
            .context("Swift auth token is not a valid header value")?;
        let storage_url = header("x-storage-url")?;
        SwiftTarget::with_token(&storage_url, token, container)
    }

    /// A target from a storage URL and token obtained elsewhere.
    pub fn with_token(
        storage_url: &str,
        token: HeaderValue,
        container: &str,
    ) -> anyhow::Result<Self> {
        let storage_url = trim_base_url(storage_url).to_owned();
        let uri: http::Uri = storage_url
            .parse()
            .with_context(|| format!("storage URL {storage_url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("storage URL {storage_url:?} must be http:// (TLS is not supported)");
        }
        Ok(SwiftTarget {
            storage_url,
            token,
            container: container.to_owned(),
        })
    }

    pub fn build(
        &self,
        request: ObjectRequest<'_>,
        source: &PatternSource,
    ) -> anyhow::Result<Request<PatternBody>> {
        let container_url = format!("{}/{}", self.storage_url, encode_path(&self.container));
        let object_url = |key: &str| format!("{container_url}/{}", encode_path(key));
        let (method, url, body, content_length) = match request {
            ObjectRequest::CreateBucket => (
                Method::PUT,
                container_url.clone(),
                PatternBody::empty(),
                Some(0),
            ),
            ObjectRequest::Put { key, size, seed } => (
                Method::PUT,
                object_url(key),
                source.body(size, seed),
                Some(size),
            ),
            ObjectRequest::Get { key } => {
                (Method::GET, object_url(key), PatternBody::empty(), None)
            }
            ObjectRequest::Head { key } => {
                (Method::HEAD, object_url(key), PatternBody::empty(), None)
            }
            ObjectRequest::Delete { key } => {
                (Method::DELETE, object_url(key), PatternBody::empty(), None)
            }
            ObjectRequest::List {
                prefix,
                start_after,
                limit,
            } => {
                let mut url = format!(
                    "{container_url}?limit={limit}&format=json&prefix={}",
                    encode_query_value(prefix)
                );
                if let Some(start_after) = start_after {
                    url.push_str("&marker=");
                    url.push_str(&encode_query_value(start_after));
                }
                (Method::GET, url, PatternBody::empty(), None)
            }
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(&url)
            .header(X_AUTH_TOKEN, self.token.clone());
        if let Some(content_length) = content_length {
            builder = builder.header(CONTENT_LENGTH, content_length);
        }
        builder.body(body).context("invalid request")
    }
}

/// Checks that the token works before the clock starts: a HEAD on the account.
pub async fn check_account(client: &HttpClient, target: &SwiftTarget) -> anyhow::Result<()> {
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(&target.storage_url)
        .header(X_AUTH_TOKEN, target.token.clone())
        .body(PatternBody::empty())
        .context("invalid request")?;
    let answer = exchange(client, request).await?;
    if !answer.status.is_success() {
        bail!(
            "HEAD {} answered {}: token or storage URL rejected",
            target.storage_url,
            answer.status
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(request: ObjectRequest<'_>, expected_method: &str, expected_uri: &str) {
        let target = SwiftTarget::with_token(
            "http://127.0.0.1:8080/v1/AUTH_test/",
            HeaderValue::from_static("AUTH_tk1"),
            "bench",
        )
        .unwrap();
        let built = target.build(request, &PatternSource::new()).unwrap();
        assert_eq!(built.method().as_str(), expected_method);
        assert_eq!(built.uri().to_string(), expected_uri);
        assert_eq!(
            built.headers().get("x-auth-token"),
            Some(&HeaderValue::from_static("AUTH_tk1"))
        );
    }

    #[test]
    fn requests() {
        let base = "http://127.0.0.1:8080/v1/AUTH_test/bench";
        check(ObjectRequest::CreateBucket, "PUT", base);
        check(
            ObjectRequest::Put {
                key: "p/0001",
                size: 10,
                seed: 0,
            },
            "PUT",
            &format!("{base}/p/0001"),
        );
        check(
            ObjectRequest::Get { key: "p/0001" },
            "GET",
            &format!("{base}/p/0001"),
        );
        check(
            ObjectRequest::Head { key: "k" },
            "HEAD",
            &format!("{base}/k"),
        );
        check(
            ObjectRequest::Delete { key: "k" },
            "DELETE",
            &format!("{base}/k"),
        );
        check(
            ObjectRequest::List {
                prefix: "p/",
                start_after: None,
                limit: 1000,
            },
            "GET",
            &format!("{base}?limit=1000&format=json&prefix=p%2F"),
        );
        check(
            ObjectRequest::List {
                prefix: "p/",
                start_after: Some("p/0999"),
                limit: 1000,
            },
            "GET",
            &format!("{base}?limit=1000&format=json&prefix=p%2F&marker=p%2F0999"),
        );
    }
}

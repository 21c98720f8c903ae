//! The client side of the admin API, for `strata account|user|key`: logs in
//! at `/auth/v1.0` as a reseller admin, then calls `/admin/v1/`.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    /// Logs in to the gateway at `base` (`http://127.0.0.1:8080`, or
    /// `https://…`, trusting the system's CAs and those of `ca_file`) as
    /// `account:user` with `key`.
    pub async fn login(
        base: &str,
        login: &str,
        key: &str,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<AdminClient> {
        let client = strata_mount::http_client(ca_file)?;
        let base = base.trim_end_matches('/').to_owned();
        let request = Request::get(format!("{base}/auth/v1.0"))
            .header("x-auth-user", login)
            .header("x-auth-key", key)
            .body(Full::new(Bytes::new()))?;
        let response = client.request(request).await.map_err(|err| {
            anyhow::anyhow!("connecting to {base}: {}", strata_mount::with_causes(&err))
        })?;
        if response.status() != StatusCode::OK {
            bail!("logging in as {login} at {base}: {}", response.status());
        }
        let token = response
            .headers()
            .get("x-auth-token")
            .and_then(|value| value.to_str().ok())
            .context("the gateway issued no token")?
            .to_owned();
        Ok(AdminClient {
            base,
            token,
            client,
        })
    }

    /// Calls `method /admin/v1/<path>`; a non-2xx answer is an error carrying
    /// the server's message.
    pub async fn call(&self, method: Method, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{}{path}", self.base, crate::admin_door::PREFIX);
        let request = Request::builder()
            .method(method)
            .uri(&url)
            .header("x-auth-token", &self.token)
            .body(Full::new(Bytes::new()))?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| url.clone())?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)
                .with_context(|| format!("{url} answered {status} with no JSON"))?
        };
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}

//! The metadata service over HTTP: how gateways that name another gateway in
//! `cluster.metadata` reach its store, and how that gateway answers them.
//!
//! ```text
//! POST /internal/v1/meta?sha256=HEX   body: a JSON call   → 200 JSON answer
//! ```
//!
//! Requests are signed with the cluster secret like every request between
//! members, and the body's digest is part of what is signed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use strata_pool::NodeClient;
use strata_pool::wire::{self, ClusterSecret};
use strata_store::{MetaTransport, Store};

use crate::wire::{Response, full_body, text_response};

pub const META_PATH: &str = "/internal/v1/meta";

/// Largest call accepted (a multipart completion of 10,000 parts is ~1 MB).
const MAX_CALL_BYTES: usize = 16 << 20;

/// Calls to the metadata service at `address` (`HOST:PORT`).
pub struct HttpMetaTransport {
    client: NodeClient,
    address: String,
}

impl HttpMetaTransport {
    pub fn new(secret: ClusterSecret, address: String) -> Self {
        HttpMetaTransport {
            client: NodeClient::new(secret, Duration::from_secs(30)),
            address,
        }
    }
}

#[async_trait]
impl MetaTransport for HttpMetaTransport {
    async fn call(&self, request: Bytes, timeout: Duration) -> Result<Bytes, String> {
        let (status, body) = self
            .client
            .with_timeout(timeout)
            .post_bound(&self.address, META_PATH, request)
            .await
            .map_err(|err| err.to_string())?;
        if status != StatusCode::OK {
            return Err(format!(
                "{} answered {status}: {}",
                self.address,
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(body)
    }
}

/// Whether a request is for the metadata service: its path, signed as
/// members sign (so an S3 object `v1/meta` in a bucket `internal` stays
/// reachable).
pub fn serves(request: &hyper::Request<Incoming>) -> bool {
    request.uri().path() == META_PATH && request.headers().contains_key(wire::AUTH_HEADER)
}

/// Answers a call from another gateway, if it carries the cluster's signature.
pub async fn handle(
    store: &Store,
    secret: Option<&ClusterSecret>,
    request: hyper::Request<Incoming>,
) -> Response {
    let Some(secret) = secret else {
        return text_response(
            StatusCode::NOT_FOUND,
            "this gateway is not a metadata service (it has no cluster secret)\n",
        );
    };
    if request.method() != http::Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    if store.is_remote() {
        return text_response(
            StatusCode::MISDIRECTED_REQUEST,
            "this gateway takes its metadata from another; ask that one\n",
        );
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let signature = request
        .headers()
        .get(wire::AUTH_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // The signature (which covers the body's digest in the query) is checked
    // before a stranger's body is read.
    if !secret.verify("POST", &path_and_query, &signature) {
        tracing::warn!("metadata call without a valid cluster signature refused");
        return text_response(StatusCode::FORBIDDEN, "bad or missing cluster signature\n");
    }
    let body = match http_body_util::Limited::new(request.into_body(), MAX_CALL_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("metadata call not read: {err}\n"),
            );
        }
    };
    if !wire::body_matches(&path_and_query, &body) {
        tracing::warn!("metadata call whose body is not the one signed refused");
        return text_response(StatusCode::FORBIDDEN, "body does not match its signature\n");
    }
    let answer = store.serve_meta(&body).await;
    let mut response = http::Response::new(full_body(Bytes::from(answer)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

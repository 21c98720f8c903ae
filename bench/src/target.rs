//! Where requests go: the HTTP client, the protocol-neutral [`ObjectRequest`],
//! and the [`Target`] that turns it into a signed S3 or authenticated Swift
//! request.

use std::time::Duration;

use anyhow::Context;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::{PatternBody, PatternSource};
use crate::s3::S3Target;
use crate::swift::SwiftTarget;

/// The one HTTP/1.1 client shared by every worker of a run.
pub type HttpClient = Client<HttpConnector, PatternBody>;

/// Builds a keep-alive client whose idle pool holds one connection per worker,
/// so that steady state opens no new connections.
pub fn http_client(pool_size: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    // Small requests would otherwise wait on Nagle's algorithm.
    connector.set_nodelay(true);
    // A server that drops SYNs (full accept queue) would otherwise stall a
    // worker for a minute of kernel retries; fail it as an error instead.
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// One storage operation, before it is spelled in a protocol.
#[derive(Debug, Clone, Copy)]
pub enum ObjectRequest<'a> {
    /// Create the bucket (S3) or container (Swift); "already exists" is fine.
    CreateBucket,
    Put {
        key: &'a str,
        size: u64,
        /// Picks where in the pattern the body starts, so objects differ.
        seed: u64,
    },
    Get {
        key: &'a str,
    },
    Head {
        key: &'a str,
    },
    Delete {
        key: &'a str,
    },
    /// One page of the listing under `prefix`, after `start_after` if given.
    List {
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: u32,
    },
}

/// The service under test.
#[derive(Debug)]
pub enum Target {
    S3(S3Target),
    Swift(SwiftTarget),
}

impl Target {
    /// Spells `request` for this service, signed or carrying its token.
    pub fn build(
        &self,
        request: ObjectRequest<'_>,
        source: &PatternSource,
    ) -> anyhow::Result<Request<PatternBody>> {
        match self {
            Target::S3(s3) => s3.build(request, source),
            Target::Swift(swift) => swift.build(request, source),
        }
    }

    /// The protocol name, the default label in reports.
    pub fn protocol(&self) -> &'static str {
        match self {
            Target::S3(_) => "s3",
            Target::Swift(_) => "swift",
        }
    }
}

/// What came back for one request, once its body has been read to the end.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    /// Body bytes received (not the Content-Length header: HEAD has none).
    pub body_len: u64,
}

/// Sends `request` and reads the response body to the end, frame by frame, so
/// that a 1 GiB GET is counted without being held in memory and the
/// connection goes back to the pool.
pub async fn exchange(
    client: &HttpClient,
    request: Request<PatternBody>,
) -> anyhow::Result<Exchange> {
    let response = client.request(request).await.context("request failed")?;
    let status = response.status();
    let mut body = response.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("response body failed")?;
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
        }
    }
    Ok(Exchange { status, body_len })
}

/// AWS `UriEncode` for query values: everything but unreserved characters.
/// Swift accepts the same spelling.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As [`QUERY_VALUE`], but `/` separates path segments and stays literal.
const PATH: &AsciiSet = &QUERY_VALUE.remove(b'/');

/// Percent-encodes an object key (or bucket name) for a URL path.
pub fn encode_path(text: &str) -> String {
    utf8_percent_encode(text, PATH).to_string()
}

/// Percent-encodes a query-string value.
pub fn encode_query_value(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// Drops trailing slashes so that `format!("{base}/{path}")` has exactly one.
pub fn trim_base_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_path: &str, expected_query: &str) {
        assert_eq!(encode_path(input), expected_path, "path {input:?}");
        assert_eq!(encode_query_value(input), expected_query, "query {input:?}");
    }

    #[test]
    fn encodings() {
        check(
            "bench-1/0000000001",
            "bench-1/0000000001",
            "bench-1%2F0000000001",
        );
        check("a b+c", "a%20b%2Bc", "a%20b%2Bc");
        check("~x_y.z", "~x_y.z", "~x_y.z");
        check("é", "%C3%A9", "%C3%A9");
        check("", "", "");
    }
}

//! S3 requests: path-style URLs signed with SigV4 by the `aws-sigv4` crate.
//!
//! Bodies are sent with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, so the client
//! never hashes what it uploads: the generator measures the server, not
//! SHA-256 on the client's cores. Signing costs a handful of HMACs per
//! request.

use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Method, Request};

use crate::body::{PatternBody, PatternSource};
use crate::target::{ObjectRequest, encode_path, encode_query_value, trim_base_url};

/// An S3 endpoint, bucket and the credentials to sign with.
pub struct S3Target {
    /// `http://host[:port]`, without a trailing slash.
    endpoint: String,
    /// The Host header value, signed and sent as is.
    host: HeaderValue,
    bucket: String,
    region: String,
    identity: Identity,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds the secret key: leave it out.
        formatter
            .debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Target {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> anyhow::Result<Self> {
        let endpoint = trim_base_url(endpoint).to_owned();
        let uri: http::Uri = endpoint
            .parse()
            .with_context(|| format!("endpoint {endpoint:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("endpoint {endpoint:?} must be http:// (TLS is not supported)");
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("endpoint {endpoint:?} must not have a path: URLs are path-style");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("endpoint {endpoint:?} has no host"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .with_context(|| format!("endpoint {endpoint:?} has an invalid host"))?;
        if bucket.is_empty() {
            bail!("bucket name is empty");
        }
        let identity = Credentials::new(access_key, secret_key, None, None, "strata-bench").into();
        Ok(S3Target {
            endpoint,
            host,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            identity,
        })
    }

    pub fn build(
        &self,
        request: ObjectRequest<'_>,
        source: &PatternSource,
    ) -> anyhow::Result<Request<PatternBody>> {
        let bucket = encode_path(&self.bucket);
        let (method, path_and_query, body, content_length) = match request {
            ObjectRequest::CreateBucket => {
                (Method::PUT, format!("/{bucket}"), PatternBody::empty(), 0)
            }
            ObjectRequest::Put { key, size, seed } => (
                Method::PUT,
                format!("/{bucket}/{}", encode_path(key)),
                source.body(size, seed),
                size,
            ),
            ObjectRequest::Get { key } => (
                Method::GET,
                format!("/{bucket}/{}", encode_path(key)),
                PatternBody::empty(),
                0,
            ),
            ObjectRequest::Head { key } => (
                Method::HEAD,
                format!("/{bucket}/{}", encode_path(key)),
                PatternBody::empty(),
                0,
            ),
            ObjectRequest::Delete { key } => (
                Method::DELETE,
                format!("/{bucket}/{}", encode_path(key)),
                PatternBody::empty(),
                0,
            ),
            ObjectRequest::List {
                prefix,
                start_after,
                limit,
            } => {
                let mut path = format!(
                    "/{bucket}?list-type=2&max-keys={limit}&prefix={}",
                    encode_query_value(prefix)
                );
                if let Some(start_after) = start_after {
                    path.push_str("&start-after=");
                    path.push_str(&encode_query_value(start_after));
                }
                (Method::GET, path, PatternBody::empty(), 0)
            }
        };
        self.signed(method, &path_and_query, body, content_length)
    }

    fn signed(
        &self,
        method: Method,
        path_and_query: &str,
        body: PatternBody,
        content_length: u64,
    ) -> anyhow::Result<Request<PatternBody>> {
        let uri = format!("{}{path_and_query}", self.endpoint);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(HOST, self.host.clone());
        // GET, HEAD and DELETE carry no Content-Length, as SDKs send them.
        if method == Method::PUT {
            builder = builder.header(CONTENT_LENGTH, content_length);
        }
        let mut request = builder.body(body).context("invalid request")?;

        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        // S3 signs the path exactly as sent: encoded once, never normalised.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .context("invalid signing parameters")?
            .into();
        let host = self.host.to_str().context("host is not ASCII")?;
        let signable = SignableRequest::new(
            method.as_str(),
            uri.as_str(),
            std::iter::once(("host", host)),
            SignableBody::UnsignedPayload,
        )
        .context("request cannot be signed")?;
        let (instructions, _signature) = sign(signable, &params)
            .context("signing failed")?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(request: ObjectRequest<'_>, expected_method: &str, expected_uri: &str) {
        let target =
            S3Target::new("http://127.0.0.1:8080/", "bench", "us-east-1", "AK", "SK").unwrap();
        let built = target.build(request, &PatternSource::new()).unwrap();
        assert_eq!(built.method().as_str(), expected_method);
        assert_eq!(built.uri().to_string(), expected_uri);
        let header = |name: &str| {
            built
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        assert_eq!(header("host").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            header("x-amz-content-sha256").as_deref(),
            Some("UNSIGNED-PAYLOAD")
        );
        let authorization = header("authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AK/"),
            "{authorization}"
        );
        assert!(
            authorization.contains("/us-east-1/s3/aws4_request"),
            "{authorization}"
        );
        assert!(
            authorization.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"),
            "{authorization}"
        );
    }

    #[test]
    fn requests() {
        check(
            ObjectRequest::CreateBucket,
            "PUT",
            "http://127.0.0.1:8080/bench",
        );
        check(
            ObjectRequest::Put {
                key: "p/0001",
                size: 4096,
                seed: 1,
            },
            "PUT",
            "http://127.0.0.1:8080/bench/p/0001",
        );
        check(
            ObjectRequest::Get { key: "p/a b" },
            "GET",
            "http://127.0.0.1:8080/bench/p/a%20b",
        );
        check(
            ObjectRequest::Head { key: "k" },
            "HEAD",
            "http://127.0.0.1:8080/bench/k",
        );
        check(
            ObjectRequest::Delete { key: "k" },
            "DELETE",
            "http://127.0.0.1:8080/bench/k",
        );
        check(
            ObjectRequest::List {
                prefix: "p/",
                start_after: Some("p/0999"),
                limit: 1000,
            },
            "GET",
            "http://127.0.0.1:8080/bench?list-type=2&max-keys=1000&prefix=p%2F&start-after=p%2F0999",
        );
    }

    #[test]
    fn rejected_endpoints() {
        for endpoint in ["https://s3.example", "127.0.0.1:8080", "http://h/base", ""] {
            assert!(
                S3Target::new(endpoint, "b", "us-east-1", "a", "s").is_err(),
                "{endpoint}"
            );
        }
    }
}

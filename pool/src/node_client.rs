//! Signed requests to storage nodes: what gateways and replicators send.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::tls::ClusterTls;
use crate::wire::{self, ClusterSecret, Digests, NodeStatus, PartitionListing};
use crate::{ExtentFilter, ExtentId, LeadCounts, MAX_EXTENT_LEN};

/// Why a request to a node failed. `Unavailable` means "try another replica";
/// the others are answers from a node that is up.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No usable answer. `reached` is false only when the request certainly
    /// never got to the node (no connection could be made), so whatever it
    /// asked was not done; otherwise it may have been.
    #[error("node {node} unavailable: {detail}")]
    Unavailable {
        node: String,
        detail: String,
        reached: bool,
    },
    #[error("extent not on node")]
    NotFound,
    #[error("extent deleted on node")]
    Deleted,
    #[error("extent damaged on node")]
    Corrupt,
    #[error("range outside the extent ({extent_len} bytes)")]
    OutOfRange { extent_len: u64 },
    #[error("node {node} answered {status}: {detail}")]
    Refused {
        node: String,
        status: StatusCode,
        detail: String,
    },
}

impl NodeError {
    /// Whether the request certainly never got to the node, so that nothing
    /// it asked for was done there.
    pub fn never_reached(&self) -> bool {
        matches!(self, NodeError::Unavailable { reached: false, .. })
    }
}

/// Largest JSON answer read (a listing of a big partition, a ring).
const MAX_JSON_LEN: usize = 256 * 1024 * 1024;

/// Bodies shorter than this are checksummed where they are (sealed, or
/// checked by a node): a hop to the blocking pool costs more than that.
pub(crate) const SEAL_ON_RUNTIME_BELOW: usize = 64 * 1024;

/// An extent's bytes ready to PUT on any number of nodes
/// ([`NodeClient::seal`]).
#[derive(Clone)]
pub struct SealedExtent {
    data: Bytes,
    crc: u32,
    /// The SHA-256 a plain-text PUT's signed query names; `None` over TLS.
    digest: Option<String>,
}

/// What a request to a node carries.
enum Outgoing<'a> {
    Bytes(Bytes),
    /// An extent to store, sealed for every node it goes to.
    Extent(&'a SealedExtent),
}

impl Outgoing<'_> {
    fn data(&self) -> &Bytes {
        match self {
            Outgoing::Bytes(data) => data,
            Outgoing::Extent(extent) => &extent.data,
        }
    }
}

impl From<Bytes> for Outgoing<'_> {
    fn from(data: Bytes) -> Self {
        Outgoing::Bytes(data)
    }
}

/// A pooled HTTP client for every node of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct NodeClient {
    http: Connections,
    secret: ClusterSecret,
    timeout: Duration,
}

/// The pooled connections to members: plain, or TLS only (never plain
/// for a cluster that speaks TLS).
#[derive(Clone)]
enum Connections {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<WithDeadline<HttpsConnector<HttpConnector>>, Full<Bytes>>),
}

/// The longest a TLS connection may take to open, handshake included: a
/// member that takes the TCP connection and then stalls is passed over as
/// one that could not be reached (the request never left), not waited out
/// as one that may have done it.
const TLS_OPENING_TIMEOUT: Duration = Duration::from_secs(4);

/// A connector whose connections must be open within `limit`.
#[derive(Clone)]
struct WithDeadline<C> {
    inner: C,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<http::Uri> for WithDeadline<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let opening = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, opening).await {
                Ok(opened) => opened.map_err(Into::into),
                Err(_) => Err(format!("no connection within {limit:?}").into()),
            }
        })
    }
}

impl Connections {
    fn new(tls: Option<&ClusterTls>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let mut builder = Client::builder(TokioExecutor::new());
        // Below what members cut idle connections after (`IDLE_TIMEOUT`,
        // one to two periods), so a pooled connection is not taken as its
        // member closes it.
        builder.pool_idle_timeout(crate::IDLE_TIMEOUT * 2 / 3);
        match tls {
            None => Connections::Plain(builder.build(connector)),
            Some(tls) => {
                connector.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls.client_config()).clone())
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                Connections::Tls(builder.build(WithDeadline {
                    inner: connector,
                    limit: TLS_OPENING_TIMEOUT,
                }))
            }
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, Connections::Tls(_))
    }

    fn scheme(&self) -> &'static str {
        match self.is_tls() {
            false => "http",
            true => "https",
        }
    }

    fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Connections::Plain(client) => client.request(request),
            Connections::Tls(client) => client.request(request),
        }
    }
}

impl NodeClient {
    /// Requests signed with `secret`, over TLS when the cluster speaks it.
    pub fn new(secret: ClusterSecret, tls: Option<&ClusterTls>, timeout: Duration) -> Self {
        NodeClient {
            http: Connections::new(tls),
            secret,
            timeout,
        }
    }

    /// POSTs `body` to `path` on any member of the cluster (the metadata
    /// service too), the body's SHA-256 in the signed query so that a
    /// captured signature cannot carry another body, and random bytes so
    /// that the receiver can refuse it sent again ([`wire::ReplayGuard`]).
    pub async fn post_bound(
        &self,
        member: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), NodeError> {
        self.post_call(member, path, body, rand::random(), 0).await
    }

    /// [`NodeClient::post_bound`] with the random bytes given: each
    /// attempt of one metadata change carries the same, so that the
    /// service applies one of them at most ([`wire::CallSignature`]),
    /// whichever member they reach; `attempt` numbers them, so that each
    /// signs differently (a member takes one signature once).
    pub async fn post_call(
        &self,
        member: &str,
        path: &str,
        body: Bytes,
        nonce: u64,
        attempt: u32,
    ) -> Result<(StatusCode, Bytes), NodeError> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let path_and_query = format!(
            "{path}{separator}{}={}&{}={}&{}={attempt}&{}={}",
            wire::BODY_DIGEST_PARAM,
            wire::body_digest(&body),
            wire::NONCE_PARAM,
            wire::nonce_text(nonce),
            wire::ATTEMPT_PARAM,
            wire::ANSWER_WITHIN_PARAM,
            self.timeout.as_millis(),
        );
        self.send(member, Method::POST, &path_and_query, body, MAX_JSON_LEN)
            .await
    }

    /// Whether calls go over TLS (the cluster has a CA).
    pub fn over_tls(&self) -> bool {
        self.http.is_tls()
    }

    /// The same client, connections included, with another time limit per
    /// request.
    pub fn with_timeout(&self, timeout: Duration) -> NodeClient {
        NodeClient {
            timeout,
            ..self.clone()
        }
    }

    /// `data`, an extent to PUT, with its CRC32C and (in plain text) its
    /// SHA-256 taken once for every node it goes to, and off the async
    /// runtime when large: at 4 MiB they are milliseconds, which would hold
    /// a gateway's connection thread and the hits it serves.
    pub async fn seal(&self, data: Bytes) -> SealedExtent {
        let with_digest = !self.http.is_tls();
        let seal = move |data: Bytes| SealedExtent {
            crc: crc32c::crc32c(&data),
            digest: with_digest.then(|| wire::body_digest(&data)),
            data,
        };
        if data.len() < SEAL_ON_RUNTIME_BELOW {
            return seal(data);
        }
        let kept = data.clone();
        match tokio::task::spawn_blocking(move || seal(data)).await {
            Ok(sealed) => sealed,
            // The blocking pool is shutting down: here, then.
            Err(_) => seal(kept),
        }
    }

    /// One signed request to `node`, its answer read up to `limit` bytes.
    /// An extent's body ([`Outgoing::Extent`]) goes with the CRC32C and
    /// digest [`NodeClient::seal`] took; any other PUT's digest is taken
    /// here.
    async fn send<'a>(
        &self,
        node: &str,
        method: Method,
        path_and_query: &str,
        body: impl Into<Outgoing<'a>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), NodeError> {
        let body = body.into();
        let unavailable = |detail: String, reached: bool| NodeError::Unavailable {
            node: node.to_owned(),
            detail,
            reached,
        };
        // In plain text a PUT's signature covers its body too, by its
        // digest in the signed query (the node's `body_as_signed`).
        let bound;
        let path_and_query = match method == Method::PUT && !self.http.is_tls() {
            true => {
                let separator = if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                let digest = match &body {
                    Outgoing::Extent(SealedExtent {
                        digest: Some(digest),
                        ..
                    }) => digest.clone(),
                    _ => wire::body_digest(body.data()),
                };
                bound = format!(
                    "{path_and_query}{separator}{}={digest}",
                    wire::BODY_DIGEST_PARAM,
                );
                bound.as_str()
            }
            false => path_and_query,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}://{node}{path_and_query}", self.http.scheme()))
            .header(
                wire::AUTH_HEADER,
                self.secret
                    .sign(method.as_str(), path_and_query, self.http.is_tls()),
            );
        if let Outgoing::Extent(extent) = &body {
            builder = builder.header(wire::CRC_HEADER, extent.crc);
        }
        let request = builder
            .body(Full::new(body.data().clone()))
            .map_err(|err| unavailable(err.to_string(), false))?;
        let exchange = async {
            // A connection that could not be made carried nothing.
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| unavailable(format!("{err:?}"), !err.is_connect()))?;
            let status = response.status();
            let crc = response.headers().get(wire::CRC_HEADER).map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.parse::<u32>().ok())
            });
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|err| unavailable(err.to_string(), true))?
                .to_bytes();
            // An extent's bytes come with their CRC32C (a node of an
            // earlier version sends none): damage in transit is a failed
            // read, never bytes served or copied by a repair.
            if let Some(crc) = crc
                && crc != Some(crc32c::crc32c(&body))
            {
                return Err(unavailable(
                    "answer damaged in transit (CRC32C mismatch)".into(),
                    true,
                ));
            }
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(
                format!("no answer within {:?}", self.timeout),
                true,
            )),
        }
    }

    fn refused(node: &str, status: StatusCode, body: &Bytes) -> NodeError {
        match status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => {
                NodeError::Unavailable {
                    node: node.to_owned(),
                    detail: String::from_utf8_lossy(body).trim().to_owned(),
                    reached: true,
                }
            }
            _ => NodeError::Refused {
                node: node.to_owned(),
                status,
                detail: String::from_utf8_lossy(body).trim().to_owned(),
            },
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> Result<T, NodeError> {
        let (status, body) = self
            .send(
                node,
                Method::GET,
                path_and_query,
                Bytes::new(),
                MAX_JSON_LEN,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(Self::refused(node, status, &body));
        }
        serde_json::from_slice(&body).map_err(|err| NodeError::Refused {
            node: node.to_owned(),
            status,
            detail: format!("unreadable answer: {err}"),
        })
    }

    /// Whether the node answers at all: the cheapest signed request.
    pub async fn ping(&self, node: &str) -> Result<(), NodeError> {
        let (status, body) = self
            .send(node, Method::GET, "/v1/ping", Bytes::new(), 4096)
            .await?;
        match status {
            StatusCode::NO_CONTENT => Ok(()),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// Stores `extent` (from [`NodeClient::seal`]) as `id` on `node`;
    /// returns once the node fsynced it.
    pub async fn put_extent(
        &self,
        node: &str,
        id: ExtentId,
        extent: &SealedExtent,
    ) -> Result<(), NodeError> {
        let path = format!("/v1/extents/{id}");
        let (status, body) = self
            .send(node, Method::PUT, &path, Outgoing::Extent(extent), 4096)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::CREATED => Ok(()),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    pub async fn read_extent(
        &self,
        node: &str,
        id: ExtentId,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, NodeError> {
        let path = format!("/v1/extents/{id}?offset={offset}&len={len}");
        let (status, body) = self
            .send(node, Method::GET, &path, Bytes::new(), MAX_EXTENT_LEN + 1)
            .await?;
        match status {
            StatusCode::OK if body.len() as u64 == len => Ok(body),
            StatusCode::OK => Err(NodeError::Unavailable {
                node: node.to_owned(),
                detail: format!("short read: {} of {len} bytes", body.len()),
                reached: true,
            }),
            StatusCode::NOT_FOUND => Err(NodeError::NotFound),
            StatusCode::GONE => Err(NodeError::Deleted),
            StatusCode::UNPROCESSABLE_ENTITY => Err(NodeError::Corrupt),
            StatusCode::RANGE_NOT_SATISFIABLE => Err(NodeError::OutOfRange {
                extent_len: String::from_utf8_lossy(&body).trim().parse().unwrap_or(0),
            }),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// Reads a whole extent (for repair and replication).
    pub async fn read_whole(&self, node: &str, id: ExtentId) -> Result<Bytes, NodeError> {
        let path = format!("/v1/extents/{id}");
        let (status, body) = self
            .send(node, Method::GET, &path, Bytes::new(), MAX_EXTENT_LEN + 1)
            .await?;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::NOT_FOUND => Err(NodeError::NotFound),
            StatusCode::GONE => Err(NodeError::Deleted),
            StatusCode::UNPROCESSABLE_ENTITY => Err(NodeError::Corrupt),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// Deletes a copy; `at` dates the tombstone (a replicator passing on an
    /// older deletion), the node's clock when `None`.
    pub async fn delete_extent(
        &self,
        node: &str,
        id: ExtentId,
        at: Option<u64>,
    ) -> Result<(), NodeError> {
        let path = match at {
            Some(at) => format!("/v1/extents/{id}?at={at}"),
            None => format!("/v1/extents/{id}"),
        };
        let (status, body) = self
            .send(node, Method::DELETE, &path, Bytes::new(), 4096)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// The extents the node holds that the filter covers (its age to the
    /// second). A node of an earlier version lists every first byte, and
    /// one before tags every tag: the caller filters again.
    pub async fn list_extents(
        &self,
        node: &str,
        filter: &ExtentFilter,
    ) -> Result<Vec<ExtentId>, NodeError> {
        let query = wire::filter_query(filter);
        self.json(node, &format!("/v1/extents?{query}")).await
    }

    /// How many extents [`NodeClient::list_extents`] would name, by first
    /// byte. A node of an earlier version does not count (404).
    pub async fn count_extents(
        &self,
        node: &str,
        filter: &ExtentFilter,
    ) -> Result<LeadCounts, NodeError> {
        let query = wire::filter_query(filter);
        let counts: Vec<u64> = self
            .json(node, &format!("/v1/extent-counts?{query}"))
            .await?;
        counts
            .try_into()
            .map_err(|counts: Vec<u64>| NodeError::Refused {
                node: node.to_owned(),
                status: StatusCode::OK,
                detail: format!("{} counts, not one per first byte", counts.len()),
            })
    }

    /// Digests of every partition the node holds, and its ring version.
    pub async fn digests(&self, node: &str) -> Result<Digests, NodeError> {
        self.json(node, "/v1/digests").await
    }

    pub async fn partition(&self, node: &str, part: u32) -> Result<PartitionListing, NodeError> {
        self.json(node, &format!("/v1/partitions/{part}")).await
    }

    pub async fn status(&self, node: &str) -> Result<NodeStatus, NodeError> {
        self.json(node, "/v1/status").await
    }

    /// The node's ring bytes, if it has one.
    pub async fn ring(&self, node: &str) -> Result<Option<Bytes>, NodeError> {
        let (status, body) = self
            .send(node, Method::GET, "/v1/ring", Bytes::new(), MAX_JSON_LEN)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// The metadata service that claimed the node, if one did.
    pub async fn owner(&self, node: &str) -> Result<Option<String>, NodeError> {
        let (status, body) = self
            .send(node, Method::GET, "/v1/owner", Bytes::new(), 4096)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(String::from_utf8_lossy(&body).trim().to_owned())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// Claims a node for the metadata service `service` (`NodeError::Refused`
    /// with 409 when another service holds it).
    pub async fn claim(&self, node: &str, service: &str) -> Result<(), NodeError> {
        let body = Bytes::from(service.to_owned());
        let (status, body) = self
            .send(node, Method::PUT, "/v1/owner", body, 4096)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(Self::refused(node, status, &body)),
        }
    }

    /// Offers a ring to a node; it keeps it if it is newer than its own.
    pub async fn push_ring(&self, node: &str, ring: Bytes) -> Result<(), NodeError> {
        let (status, body) = self.send(node, Method::PUT, "/v1/ring", ring, 4096).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(Self::refused(node, status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A node at a loopback address that answers one request with `answer`
    /// (head and body, as sent on the wire).
    async fn node_answering(answer: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = stream.write_all(&answer).await;
        });
        address
    }

    /// A node at a loopback address that takes one request whole, answers
    /// 204, and hands over the request's head (lower-cased) and body.
    async fn node_recording() -> (String, tokio::sync::oneshot::Receiver<(String, Vec<u8>)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (recorded, record) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buffer = [0; 65536];
            let head_end = loop {
                if let Some(at) = request.windows(4).position(|window| window == b"\r\n\r\n") {
                    break at + 4;
                }
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            };
            let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse().ok())
                .expect("a content-length");
            while request.len() < head_end + length {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            let _ = recorded.send((head, request[head_end..].to_vec()));
        });
        (address, record)
    }

    /// A sealed extent (large enough to be sealed on the blocking pool)
    /// goes out with the CRC32C and, in plain text, the SHA-256 of the
    /// bytes sent.
    #[tokio::test]
    async fn a_sealed_extent_carries_the_checksums_of_its_bytes() {
        let secret = ClusterSecret::new("correct horse battery staple").expect("secret");
        let client = NodeClient::new(secret, None, Duration::from_secs(5));
        let id = ExtentId::from_hex(&"cd".repeat(16)).expect("id");
        let data: Vec<u8> = (0..SEAL_ON_RUNTIME_BELOW * 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let extent = client.seal(Bytes::from(data.clone())).await;
        for _ in 0..2 {
            let (node, record) = node_recording().await;
            client.put_extent(&node, id, &extent).await.expect("stored");
            let (head, body) = record.await.expect("recorded");
            assert_eq!(body, data);
            let digest = format!("{}={}", wire::BODY_DIGEST_PARAM, wire::body_digest(&data));
            assert!(head.contains(&digest), "{head}");
            let crc = format!("{}: {}", wire::CRC_HEADER, crc32c::crc32c(&data));
            assert!(head.contains(&crc.to_lowercase()), "{head}");
        }
    }

    fn extent_answer(body: &[u8], crc: u32) -> Vec<u8> {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}: {crc}\r\n\r\n",
            body.len(),
            wire::CRC_HEADER
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    /// An extent's bytes that do not match the CRC32C the node sent with
    /// them are a failed read (the next copy is asked), never bytes served
    /// or copied by a repair.
    #[tokio::test]
    async fn bytes_damaged_in_transit_are_a_failed_read() {
        let secret = ClusterSecret::new("correct horse battery staple").expect("secret");
        let client = NodeClient::new(secret, None, Duration::from_secs(5));
        let id = ExtentId::from_hex(&"ab".repeat(16)).expect("id");
        let sent = b"the extent's bytes";

        let intact = node_answering(extent_answer(sent, crc32c::crc32c(sent))).await;
        let read = client
            .read_whole(&intact, id)
            .await
            .expect("an intact read");
        assert_eq!(&read[..], sent);

        let mut damaged = sent.to_vec();
        damaged[3] ^= 0x20;
        let node = node_answering(extent_answer(&damaged, crc32c::crc32c(sent))).await;
        match client.read_whole(&node, id).await {
            Err(NodeError::Unavailable { detail, .. }) => {
                assert!(detail.contains("CRC32C"), "{detail}")
            }
            other => panic!("damaged bytes read as {other:?}"),
        }
        let node = node_answering(extent_answer(&damaged, crc32c::crc32c(sent))).await;
        let ranged = client.read_extent(&node, id, 0, damaged.len() as u64).await;
        assert!(ranged.is_err(), "a damaged range read as {ranged:?}");
    }
}

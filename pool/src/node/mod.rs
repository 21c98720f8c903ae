//! `strata node`: a storage node. It keeps extents for the partitions the ring
//! gives its devices in a [`LocalPool`], answers the internal protocol
//! ([`crate::wire`]) and runs the replicator and the auditor. Calls under
//! `/internal/v1/` (the metadata groups a node may host) go, once signed, to
//! the [`InternalCalls`] its composition root gives it: the pool knows
//! nothing of the store or the metadata service.

mod index;
mod replicator;

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use strata_ring::Ring;
use tokio::net::TcpListener;

use crate::idle_deadline::{IdleDeadline, RequestCount};
use crate::listener::{Accepted, CappedListener};
use crate::local::sync_dir;
use crate::lock;
use crate::node_client::{NodeClient, SEAL_ON_RUNTIME_BELOW};
use crate::tls::ClusterTls;
use crate::wire::{self, ClusterSecret, Digests, NodeStatus, ReplicationStatus, query_param};
use crate::{ExtentId, LocalPool, LocalPoolConfig, MAX_EXTENT_LEN, Pool, PoolError};
use index::{Index, State};

pub use replicator::ReplicatorConfig;

/// How a storage node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Extents, tombstones and the ring live here.
    pub data: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The address the ring names this node by (defaults to `listen`).
    pub advertise: Option<String>,
    pub secret: ClusterSecret,
    /// TLS, when the cluster speaks it: the node then serves TLS only and
    /// calls its peers over TLS.
    pub tls: Option<ClusterTls>,
    /// A ring to start from when the data directory has none (or an older one).
    pub ring: Option<Ring>,
    /// The cluster this node belongs to: rings of other clusters are refused.
    /// Taken from the first ring when not given.
    pub cluster_id: Option<String>,
    pub replicator: ReplicatorConfig,
    /// Connections held open at once; `None`: half the open file limit.
    pub max_connections: Option<usize>,
    /// Who answers the calls under [`INTERNAL_PREFIX`]; `None`: 404.
    pub internal: Option<InternalCalls>,
}

/// The path under which a node hands calls to [`NodeConfig::internal`].
pub const INTERNAL_PREFIX: &str = "/internal/v1/";

/// A call as a node reads it: its body counted for the idle deadline
/// ([`RequestCount::request_body`]).
pub type NodeRequest = Request<crate::CountedBody<Incoming>>;

/// An answer of a node, whole.
pub type NodeResponse = Response<Full<Bytes>>;

/// The answer to a call, to come.
pub type NodeAnswer = std::pin::Pin<Box<dyn Future<Output = NodeResponse> + Send>>;

/// Answers a call under [`INTERNAL_PREFIX`], which it checks is signed with
/// the cluster's secret (given the call, and whether it came over TLS: the
/// node checks no signature of these), and reports what
/// answers them in the node's status ([`NodeStatus::index_groups`]).
#[derive(Clone)]
pub struct InternalCalls {
    answer: Arc<dyn Fn(NodeRequest, bool) -> NodeAnswer + Send + Sync>,
    report: Arc<dyn Fn() -> Option<serde_json::Value> + Send + Sync>,
}

impl InternalCalls {
    pub fn new(
        answer: impl Fn(NodeRequest, bool) -> NodeAnswer + Send + Sync + 'static,
        report: impl Fn() -> Option<serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        InternalCalls {
            answer: Arc::new(answer),
            report: Arc::new(report),
        }
    }
}

impl std::fmt::Debug for InternalCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalCalls")
    }
}

/// A storage node's shared state. Its mutexes are held briefly and never
/// two at once, except `index` then `status`, and `ring_install` (the
/// slowest: it covers an fsync) over the others.
pub(crate) struct Node {
    address: String,
    /// Every name the ring uses for this node: its address, and those learnt
    /// by the replicator when a name answered with this node's id (a node
    /// behind a proxy or listening on 0.0.0.0 is named otherwise). A name
    /// that stops answering keeps its standing; one that answers with
    /// another id loses it.
    names: Mutex<HashSet<String>>,
    /// Random, kept in `DATA/node-id`: who this node is, whatever name a
    /// peer or the ring uses for it.
    node_id: String,
    /// Tombstones older than this are reclaimed, and not created.
    reclaim_age: Duration,
    data: PathBuf,
    pool: LocalPool,
    secret: ClusterSecret,
    /// The node serves TLS only (the cluster has a CA).
    serves_tls: bool,
    client: NodeClient,
    ring: Mutex<Option<Arc<Ring>>>,
    /// Held while a newer ring is written to disk and installed, or the
    /// owner (`claim`).
    ring_install: Mutex<()>,
    index: Mutex<Index>,
    status: Mutex<ReplicationStatus>,
    /// Extent writes refused since start, and the reason of the last one.
    refusals: Mutex<(u64, Option<String>)>,
    internal: Option<InternalCalls>,
}

const RING_FILE: &str = "ring";
/// The id of the metadata service whose records name this node's extents.
const OWNER_FILE: &str = "owner";

enum Claim {
    Taken,
    /// Another service's id.
    Another(String),
    /// Not an id.
    Invalid,
}
const TOMBSTONES: &str = "tombstones";

/// Opens the node's data, binds, prints `listening on http://ADDR` and serves
/// until the future is dropped.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    fs::create_dir_all(&config.data)?;
    let pool = LocalPool::open(LocalPoolConfig {
        dir: config.data.join("pool"),
    })?;
    let listener = CappedListener::new(
        TcpListener::bind(config.listen).await?,
        crate::connection_cap(config.max_connections),
    );
    let local = listener.local_addr()?;
    let address = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());

    let mut index = Index::default();
    for (id, len) in pool.scan().await? {
        index.set(id, State::Live { len });
    }
    let tombstones = config.data.join(TOMBSTONES);
    fs::create_dir_all(&tombstones)?;
    // Its entry in the data directory is what keeps every tombstone.
    sync_dir(&config.data)?;
    for (id, at) in read_tombstones(&tombstones)? {
        // A crash between a tombstone and the removal of its data.
        if let Some(State::Live { .. }) = index.get(id) {
            pool.delete_extent(id).await?;
        }
        index.set(id, State::Deleted { at });
    }

    let node = Arc::new(Node {
        address: address.clone(),
        names: Mutex::new(HashSet::from([address.clone()])),
        node_id: load_or_create_id(&config.data, "node-id")?,
        reclaim_age: config.replicator.reclaim_age,
        data: config.data.clone(),
        pool,
        secret: config.secret.clone(),
        serves_tls: config.tls.is_some(),
        client: NodeClient::new(
            config.secret.clone(),
            config.tls.as_ref(),
            config.replicator.peer_timeout,
        ),
        ring: Mutex::new(None),
        ring_install: Mutex::new(()),
        index: Mutex::new(index),
        status: Mutex::new(ReplicationStatus::default()),
        refusals: Mutex::new((0, None)),
        internal: config.internal.clone(),
    });
    let stored = match fs::read(config.data.join(RING_FILE)) {
        Ok(bytes) => Some(Ring::from_bytes(&bytes)?),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err.into()),
    };
    let cluster_id = config
        .cluster_id
        .clone()
        .or_else(|| stored.as_ref().map(|ring| ring.cluster_id().to_owned()));
    for ring in [stored, config.ring.clone()].into_iter().flatten() {
        if let Some(cluster) = &cluster_id {
            ring.ensure_cluster(cluster)?;
        }
        node.offer_ring(ring)?;
    }
    if !node.ring_nodes().contains(&address) && node.current_ring().is_some() {
        tracing::warn!(%address, "the ring names no device on this node's address");
    }

    // Tests and scripts wait for this line; keep its shape.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{local}");
    tracing::info!(%local, %address, data = %config.data.display(), "storage node serving");

    tokio::spawn(replicator::run(node.clone(), config.replicator.clone()));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // `IdleDeadline` cuts idle connections, with one timer for all
        // of a connection's requests.
        .header_read_timeout(None)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let acceptor = config.tls.as_ref().and_then(ClusterTls::acceptor);
    loop {
        let Accepted {
            stream,
            peer,
            permit,
        } = listener.accept().await;
        let node = node.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                serve_connection(&builder, stream, node, crate::IDLE_TIMEOUT).await;
                return;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(&builder, stream, node, crate::IDLE_TIMEOUT).await
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Serves the calls of one connection, plain or TLS, cut once idle for
/// [`crate::IDLE_TIMEOUT`].
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    node: Arc<Node>,
    idle_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(RequestCount::default());
    let stream = TokioIo::new(IdleDeadline::within(stream, requests.clone(), idle_timeout));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let node = node.clone();
        let in_progress = requests.start();
        // A member that stops sending an extent is not busy: cut once idle.
        let request = request.map(|body| requests.request_body(body));
        async move {
            let response = node.handle(request).await;
            Ok::<_, Infallible>(response.map(|body| in_progress.answer(body)))
        }
    });
    let _ = builder.serve_connection(stream, service).await;
}

/// The longest a caller may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The random id kept in `data/file`, made (and fsynced) the first time:
/// who a process is across restarts, whatever address it has.
pub fn load_or_create_id(data: &Path, file: &str) -> io::Result<String> {
    if let Some(id) = read_text(&data.join(file))?.filter(|id| !id.is_empty()) {
        return Ok(id);
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    write_durably(data, file, id.as_bytes())?;
    Ok(id)
}

/// The metadata service that claimed the node whose data directory is
/// `data` (what `GET /v1/owner` answers), if one did.
pub fn owner(data: &Path) -> io::Result<Option<String>> {
    Ok(read_text(&data.join(OWNER_FILE))?.filter(|owner| !owner.is_empty()))
}

/// A small text file of the node's, trimmed; `None` if there is none.
fn read_text(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old file or
/// the new one, whole: written to a temporary name, fsynced, renamed, and
/// the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    fs::write(&temp, bytes)?;
    fs::File::open(&temp)?.sync_all()?;
    fs::rename(&temp, dir.join(name))?;
    sync_dir(dir)
}

fn read_tombstones(dir: &Path) -> io::Result<Vec<(ExtentId, u64)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(ExtentId::from_hex) else {
            continue;
        };
        let at = fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(wire::unix_now);
        found.push((id, at));
    }
    Ok(found)
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> NodeResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The answer to a PUT whose body is not the one its signature names
/// ([`Node::body_as_signed`]).
fn unsigned_body() -> NodeResponse {
    reply(
        StatusCode::UNAUTHORIZED,
        "request body not signed with this cluster's secret\n",
    )
}

fn json_reply(value: &impl serde::Serialize) -> NodeResponse {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, body),
        Err(err) => reply(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

fn query_u64(query: &str, name: &str) -> Option<u64> {
    query_param(query, name).and_then(|value| value.parse().ok())
}

impl Node {
    pub(crate) fn current_ring(&self) -> Option<Arc<Ring>> {
        lock(&self.ring).clone()
    }

    fn ring_nodes(&self) -> Vec<String> {
        self.current_ring()
            .map(|ring| ring.devices().map(|device| device.node.clone()).collect())
            .unwrap_or_default()
    }

    /// Takes a ring if it is of this node's cluster and newer than the one it
    /// has; persists it first, so a restart keeps it.
    pub(crate) fn offer_ring(&self, ring: Ring) -> anyhow::Result<bool> {
        // One installation at a time; readers of the current ring do not
        // wait for the file's fsync.
        let _installing = lock(&self.ring_install);
        if let Some(current) = self.current_ring() {
            ring.ensure_cluster(current.cluster_id())?;
            if current.part_power() != ring.part_power() {
                anyhow::bail!("a ring of another part power cannot replace this one");
            }
            if ring.version() <= current.version() {
                return Ok(false);
            }
        }
        write_durably(&self.data, RING_FILE, &ring.to_bytes())?;
        tracing::info!(version = ring.version(), "ring installed");
        let ring = Arc::new(ring);
        *lock(&self.ring) = Some(ring.clone());
        // Never hold both locks: digests and status take the index first.
        lock(&self.index).set_ring(ring);
        Ok(true)
    }

    /// [`Node::offer_ring`] of a serialised ring, parsed and installed on
    /// the blocking pool: the file's fsync (and a large ring's parse) must
    /// not hold a runtime worker that serves other calls' extents.
    pub(crate) async fn offer_ring_bytes(self: &Arc<Self>, bytes: Bytes) -> anyhow::Result<bool> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || node.offer_ring(Ring::from_bytes(&bytes)?))
            .await
            .map_err(anyhow::Error::from)?
    }

    /// Partitions for which one of this node's devices is a primary.
    fn primary_partitions(&self, ring: &Ring) -> HashSet<u32> {
        let names = self.names();
        ring.partitions()
            .filter(|part| {
                ring.primaries(*part).iter().any(|device| {
                    ring.device(*device)
                        .is_some_and(|device| names.contains(&device.node))
                })
            })
            .map(|part| part.index())
            .collect()
    }

    pub(crate) fn names(&self) -> HashSet<String> {
        lock(&self.names).clone()
    }

    /// Records whether `name` answered with this node's id.
    pub(crate) fn learn_name(&self, name: &str, is_mine: bool) {
        let mut names = lock(&self.names);
        if is_mine {
            names.insert(name.to_owned());
        } else if name != self.address {
            names.remove(name);
        }
    }

    async fn handle(self: &Arc<Self>, request: NodeRequest) -> NodeResponse {
        // Internal calls are checked where they are answered (their
        // signature, body digest and replay, once): a Raft message is not
        // verified twice.
        if request.uri().path().starts_with(INTERNAL_PREFIX) {
            return match &self.internal {
                Some(internal) => (internal.answer)(request, self.serves_tls).await,
                None => reply(StatusCode::NOT_FOUND, "this node hosts no metadata group\n"),
            };
        }
        let method = request.method().clone();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let signed = request
            .headers()
            .get(wire::AUTH_HEADER)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|header| {
                // A node of a TLS cluster takes nothing else.
                let over_tls = self.serves_tls;
                self.secret
                    .verify(method.as_str(), &path_and_query, header, over_tls)
            });
        if !signed {
            return reply(
                StatusCode::UNAUTHORIZED,
                "request not signed with this cluster's secret\n",
            );
        }
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::PUT, ["v1", "extents", id]) => match ExtentId::from_hex(id) {
                Some(id) => self.put(id, request, &path_and_query).await,
                None => reply(StatusCode::BAD_REQUEST, "bad extent id\n"),
            },
            (&Method::GET, ["v1", "extents", id]) => match ExtentId::from_hex(id) {
                Some(id) => self.get(id, &query).await,
                None => reply(StatusCode::BAD_REQUEST, "bad extent id\n"),
            },
            (&Method::DELETE, ["v1", "extents", id]) => match ExtentId::from_hex(id) {
                Some(id) => self.delete(id, query_u64(&query, "at")).await,
                None => reply(StatusCode::BAD_REQUEST, "bad extent id\n"),
            },
            (&Method::GET, ["v1", "extents"]) => match wire::parse_filter_query(&query) {
                Ok(filter) => match self.pool.list_extents(&filter).await {
                    Ok(ids) => json_reply(&ids),
                    Err(err) => reply(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
                },
                Err(why) => reply(StatusCode::BAD_REQUEST, format!("{why}\n")),
            },
            (&Method::GET, ["v1", "extent-counts"]) => match wire::parse_filter_query(&query) {
                Ok(filter) => match self.pool.count_extents(&filter).await {
                    Ok(counts) => json_reply(&counts.as_slice()),
                    Err(err) => reply(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
                },
                Err(why) => reply(StatusCode::BAD_REQUEST, format!("{why}\n")),
            },
            (&Method::GET, ["v1", "digests"]) => json_reply(&self.digests()),
            (&Method::GET, ["v1", "partitions", part]) => match part.parse::<u32>() {
                Ok(part) => json_reply(&lock(&self.index).listing(part)),
                Err(_) => reply(StatusCode::BAD_REQUEST, "bad partition\n"),
            },
            (&Method::GET, ["v1", "status"]) => json_reply(&self.status()),
            (&Method::GET, ["v1", "ping"]) => reply(StatusCode::NO_CONTENT, ""),
            (&Method::GET, ["v1", "ring"]) => match self.current_ring() {
                Some(ring) => reply(StatusCode::OK, ring.to_bytes()),
                None => reply(StatusCode::NOT_FOUND, "no ring yet\n"),
            },
            (&Method::PUT, ["v1", "ring"]) => {
                let body = match read_body(request, 256 * 1024 * 1024).await {
                    Ok(body) => body,
                    Err(response) => return response,
                };
                // A ring of up to 256 MiB: hashed off the runtime too.
                let node = self.clone();
                let signed = path_and_query.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    (node.body_as_signed(&signed, &body).is_ok(), body)
                })
                .await;
                let body = match checked {
                    Ok((true, body)) => body,
                    Ok((false, _)) => return unsigned_body(),
                    Err(err) => {
                        return reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"));
                    }
                };
                match self.offer_ring_bytes(body).await {
                    Ok(_) => reply(StatusCode::NO_CONTENT, ""),
                    Err(err) => reply(StatusCode::CONFLICT, format!("{err:#}\n")),
                }
            }
            (&Method::GET, ["v1", "owner"]) => match read_text(&self.data.join(OWNER_FILE)) {
                Ok(Some(owner)) => reply(StatusCode::OK, owner),
                Ok(None) => reply(
                    StatusCode::NOT_FOUND,
                    "no metadata service claimed this node\n",
                ),
                Err(err) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
            },
            (&Method::PUT, ["v1", "owner"]) => {
                let body = match read_body(request, 1024).await {
                    Ok(body) => body,
                    Err(response) => return response,
                };
                if let Err(response) = self.body_as_signed(&path_and_query, &body) {
                    return response;
                }
                let node = self.clone();
                let claimed = tokio::task::spawn_blocking(move || node.claim(&body))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|claimed| claimed);
                match claimed {
                    Ok(Claim::Taken) => reply(StatusCode::NO_CONTENT, ""),
                    Ok(Claim::Another(owner)) => reply(
                        StatusCode::CONFLICT,
                        format!("this node holds the extents of metadata service {owner}\n"),
                    ),
                    Ok(Claim::Invalid) => reply(
                        StatusCode::BAD_REQUEST,
                        "a metadata service id is 1 to 64 letters and digits\n",
                    ),
                    // The node's disk, not the request.
                    Err(err) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "no such resource\n"),
        }
    }

    /// Records `body`, a metadata service's id, as the one whose records
    /// name this node's extents, unless another already is: only that
    /// service may delete extents its records do not name (`Claim::Taken`
    /// for it). Persisted before the answer.
    fn claim(&self, body: &[u8]) -> io::Result<Claim> {
        let Some(claimed) = std::str::from_utf8(body).ok().map(str::trim).filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        }) else {
            return Ok(Claim::Invalid);
        };
        let _one_at_a_time = lock(&self.ring_install);
        match read_text(&self.data.join(OWNER_FILE))? {
            Some(owner) if owner == claimed => return Ok(Claim::Taken),
            Some(owner) => return Ok(Claim::Another(owner)),
            None => {}
        }
        write_durably(&self.data, OWNER_FILE, claimed.as_bytes())?;
        tracing::info!(
            service = claimed,
            "this node now holds the extents of a metadata service"
        );
        Ok(Claim::Taken)
    }

    /// Whether a PUT's body is the one its sender signed. In plain text
    /// the signed query names the body's SHA-256 (`wire::BODY_DIGEST_PARAM`):
    /// otherwise a request captured on the network could be sent again,
    /// within the signature's five minutes, with another body (an extent's
    /// bytes with their CRC32C, a ring). Over TLS nobody can capture one,
    /// and the digest is not asked for.
    #[allow(clippy::result_large_err)]
    fn body_as_signed(&self, path_and_query: &str, body: &[u8]) -> Result<(), NodeResponse> {
        match self.serves_tls || wire::body_matches(path_and_query, body) {
            true => Ok(()),
            false => Err(unsigned_body()),
        }
    }

    async fn put(
        self: &Arc<Self>,
        id: ExtentId,
        request: NodeRequest,
        path_and_query: &str,
    ) -> NodeResponse {
        let expected_crc = request
            .headers()
            .get(wire::CRC_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u32>().ok());
        let body = match read_body(request, MAX_EXTENT_LEN).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let check = |node: &Node, path_and_query: &str, body: &[u8]| {
            (
                node.body_as_signed(path_and_query, body),
                crc32c::crc32c(body),
            )
        };
        // Milliseconds of hashing at 4 MiB: on the blocking pool, not the
        // worker that serves the node's other calls.
        let checked = if body.len() < SEAL_ON_RUNTIME_BELOW {
            Ok(check(self, path_and_query, &body))
        } else {
            let body = body.clone();
            let path_and_query = path_and_query.to_owned();
            let node = self.clone();
            tokio::task::spawn_blocking(move || check(&node, &path_and_query, &body)).await
        };
        let crc = match checked {
            Ok((Ok(()), crc)) => crc,
            Ok((Err(response), _)) => return response,
            Err(err) => return reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
        };
        if expected_crc != Some(crc) {
            return reply(
                StatusCode::BAD_REQUEST,
                "extent checksum missing or wrong\n",
            );
        }
        if let Some(State::Deleted { .. }) = lock(&self.index).get(id) {
            return reply(StatusCode::GONE, "extent was deleted\n");
        }
        let len = body.len() as u64;
        match self.pool.put_extent(id, body).await {
            Ok(()) => {
                let deleted_meanwhile = {
                    let mut index = lock(&self.index);
                    let deleted = matches!(index.get(id), Some(State::Deleted { .. }));
                    if !deleted {
                        index.set(id, State::Live { len });
                    }
                    deleted
                };
                if deleted_meanwhile {
                    // A deletion won the race: its tombstone stands.
                    let _ = self.pool.delete_extent(id).await;
                    return reply(StatusCode::GONE, "extent was deleted\n");
                }
                reply(StatusCode::NO_CONTENT, "")
            }
            Err(err) => {
                let reason = match &err {
                    PoolError::Poisoned => "this node's disk failed an fsync".to_owned(),
                    PoolError::Io(err) if err.kind() == io::ErrorKind::StorageFull => {
                        "disk full".to_owned()
                    }
                    err => err.to_string(),
                };
                let mut refusals = lock(&self.refusals);
                refusals.0 += 1;
                if refusals.1.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(%id, %reason, "refused an extent write");
                }
                refusals.1 = Some(reason.clone());
                reply(StatusCode::INSUFFICIENT_STORAGE, format!("{reason}\n"))
            }
        }
    }

    async fn get(&self, id: ExtentId, query: &str) -> NodeResponse {
        if let Some(State::Deleted { .. }) = lock(&self.index).get(id) {
            return reply(StatusCode::GONE, "extent was deleted\n");
        }
        let range = query_u64(query, "offset").zip(query_u64(query, "len"));
        let read = match range {
            Some((offset, len)) => self.pool.read_extent(id, offset, len).await,
            None => self.pool.read_whole(id).await,
        };
        match read {
            Ok(bytes) => {
                // Checked by the reader: TCP's checksum misses some damage
                // in transit, and a repair would store what it read.
                let crc = crc32c::crc32c(&bytes);
                let mut answer = reply(StatusCode::OK, bytes);
                answer
                    .headers_mut()
                    .insert(wire::CRC_HEADER, http::HeaderValue::from(crc));
                answer
            }
            Err(PoolError::NotFound(_)) => reply(StatusCode::NOT_FOUND, "no such extent\n"),
            Err(PoolError::OutOfRange { extent_len, .. }) => {
                reply(StatusCode::RANGE_NOT_SATISFIABLE, extent_len.to_string())
            }
            Err(PoolError::Corrupt { detail, .. }) => {
                tracing::warn!(%id, %detail, "damaged extent quarantined on read");
                self.quarantine(id).await;
                reply(StatusCode::UNPROCESSABLE_ENTITY, "extent damaged\n")
            }
            Err(err) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
        }
    }

    pub(crate) async fn quarantine(&self, id: ExtentId) {
        match self.pool.quarantine(id).await {
            Ok(true) => lock(&self.status).corrupt_quarantined += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::error!(%id, error = %err, "could not quarantine a damaged extent");
                return;
            }
        }
        // What is on disk decides, looked at under the index's lock: a
        // repair that lands later records itself after this.
        let mut index = lock(&self.index);
        match self.pool.stored_len(id) {
            Some(_) if matches!(index.get(id), Some(State::Deleted { .. })) => {}
            Some(len) => index.set(id, State::Live { len }),
            None => index.forget_live(id),
        }
    }

    /// Records the deletion (a tombstone file, fsynced) before removing the
    /// data, so a crash between the two leaves a tombstone and no live copy.
    /// `at` dates the deletion (never later than now); a deletion already
    /// past the reclaim age removes the data and leaves no tombstone, so
    /// replicas reclaiming at slightly different times do not recreate each
    /// other's tombstones.
    pub(crate) async fn delete(&self, id: ExtentId, at: Option<u64>) -> NodeResponse {
        let now = wire::unix_now();
        let at = at.map_or(now, |at| at.min(now));
        if at < now.saturating_sub(self.reclaim_age.as_secs()) {
            self.reclaim(id);
            return match self.pool.delete_extent(id).await {
                Ok(()) => reply(StatusCode::NO_CONTENT, ""),
                Err(err) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
            };
        }
        if let Some(State::Deleted { at: recorded }) = lock(&self.index).get(id)
            && recorded <= at
        {
            return reply(StatusCode::NO_CONTENT, "");
        }
        let dir = self.data.join(TOMBSTONES);
        let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let path = dir.join(id.to_hex());
            fs::write(&path, at.to_string())?;
            fs::File::open(&path)?.sync_all()?;
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|result| result);
        if let Err(err) = written {
            return reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"));
        }
        lock(&self.index).set(id, State::Deleted { at });
        match self.pool.delete_extent(id).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, ""),
            Err(err) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
        }
    }

    /// Forgets a tombstone past the reclaim age.
    pub(crate) fn reclaim(&self, id: ExtentId) {
        let _ = fs::remove_file(self.data.join(TOMBSTONES).join(id.to_hex()));
        lock(&self.index).remove(id);
    }

    fn digests(&self) -> Digests {
        let ring_version = self.current_ring().map(|ring| ring.version());
        let mut index = lock(&self.index);
        let mut digests = Digests {
            node_id: self.node_id.clone(),
            ring_version,
            ..Digests::default()
        };
        for part in index.partitions() {
            if let Some((digest, live_bytes)) = index.summary(part) {
                digests.partitions.insert(part, digest);
                digests.live_bytes.insert(part, live_bytes);
            }
        }
        digests
    }

    fn status(&self) -> NodeStatus {
        let ring = self.current_ring();
        let primary = ring
            .as_ref()
            .map(|ring| self.primary_partitions(ring))
            .unwrap_or_default();
        let refusals = lock(&self.refusals).clone();
        // Before the index's lock: the report asks the groups' members.
        let index_groups = self
            .internal
            .as_ref()
            .and_then(|internal| (internal.report)());
        let index = lock(&self.index);
        let (extents, bytes, tombstones) = index.totals();
        let mut primary_partitions = 0;
        let mut handoff_extents = 0;
        let mut handoff_bytes = 0;
        if ring.is_some() {
            primary_partitions = primary.len() as u64;
            for part in index.partitions() {
                if !primary.contains(&part) {
                    let (count, bytes) = index.live_in(part);
                    handoff_extents += count;
                    handoff_bytes += bytes;
                }
            }
        }
        NodeStatus {
            node: self.address.clone(),
            ring_version: ring.map(|ring| ring.version()),
            extents,
            bytes,
            tombstones,
            primary_partitions,
            handoff_extents,
            handoff_bytes,
            replication: lock(&self.status).clone(),
            writes_refused: refusals.0,
            last_write_refusal: refusals.1,
            disk_failed: self.pool.is_poisoned(),
            index_groups,
        }
    }
}

async fn read_body(request: NodeRequest, limit: usize) -> Result<Bytes, NodeResponse> {
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(reply(
            StatusCode::BAD_REQUEST,
            format!("body unreadable or over {limit} bytes: {err}\n"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn node(data: &Path, secret: &ClusterSecret) -> Arc<Node> {
        let pool = LocalPool::open(LocalPoolConfig {
            dir: data.join("pool"),
        })
        .expect("pool");
        Arc::new(Node {
            address: "127.0.0.1:1".into(),
            names: Mutex::new(HashSet::from(["127.0.0.1:1".to_owned()])),
            node_id: "test".into(),
            reclaim_age: Duration::from_secs(3600),
            data: data.to_owned(),
            pool,
            secret: secret.clone(),
            serves_tls: false,
            client: NodeClient::new(secret.clone(), None, Duration::from_secs(1)),
            ring: Mutex::new(None),
            ring_install: Mutex::new(()),
            index: Mutex::new(Index::default()),
            status: Mutex::new(ReplicationStatus::default()),
            refusals: Mutex::new((0, None)),
            internal: None,
        })
    }

    const LIMIT: Duration = Duration::from_millis(200);

    /// A signed extent write whose body stops coming is cut once idle: a
    /// handler waiting for its body is not busy, or a member that stalls
    /// mid-extent would hold the connection (and its permit) for ever.
    #[tokio::test]
    async fn an_extent_whose_body_stops_coming_is_cut() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let secret = ClusterSecret::new("correct horse battery staple").expect("secret");
        let node = node(dir.path(), &secret);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().header_read_timeout(None).keep_alive(true);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served =
            tokio::spawn(async move { serve_connection(&builder, server, node, LIMIT).await });

        let path = format!("/v1/extents/{}", "ab".repeat(16));
        let signature = secret.sign("PUT", &path, false);
        let head = format!(
            "PUT {path} HTTP/1.1\r\nhost: n\r\n{}: {signature}\r\ncontent-length: 1000\r\n\r\n",
            wire::AUTH_HEADER
        );
        client.write_all(head.as_bytes()).await.expect("head");
        client.write_all(&[7; 10]).await.expect("first bytes");
        // Cut within a few periods (checked once a period, so within two).
        let mut answer = Vec::new();
        let read = tokio::time::timeout(LIMIT * 5, client.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "the stalled upload still holds its connection"
        );
        served.await.expect("connection task");
    }
}

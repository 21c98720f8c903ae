//! The composition root: opens the pool and the store, loads credentials, and
//! serves HTTP until the process is stopped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::{HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use strata_auth::SigV4Config;
use strata_pool::{
    ALL_TAGS, Accepted, CappedListener, ClusterTls, ConnectionGauge, LocalPool, LocalPoolConfig,
    Pool, RingPool, RingPoolConfig,
};
use strata_store::{FeedFollower, FollowerTag, Store, StoreConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::address_range::AddressRange;
use crate::admin_door::AdminDoor;
use crate::config::Limits;
use crate::config::{Config, DoorKind};
use crate::connection_threads::ConnectionThreads;
use crate::credentials::{self, RootKeys};
use crate::directory::{Directory, DomainRecord, request_host};
use crate::edge::EdgeCache;
use crate::edge::arena::{RamArena, SendingStream};
use crate::metadata::{HttpMetaTransport, HttpRaftTransport, Internal};
use crate::s3::{Response, S3Door};
use crate::swift::SwiftDoor;
use crate::token_door::TokenDoor;
use crate::wire::{OverTls, PathAsSent, RequestBody, text_response};
use strata_meta::{GroupId, Joining, MetaLog, MetaService, Tuning};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("creating data directory {}", config.data.display()))?;
    // Before the file is read: a rewrite from now on is picked up.
    let ring_loaded = config
        .cluster
        .ring
        .as_deref()
        .and_then(crate::ring_share::stamp);
    let cluster_tls = config.cluster_tls()?;
    let listener_certificates = config.listener_tls()?;
    let listener_tls = match &listener_certificates {
        Some(certificates) => {
            certificates.spawn_rereading();
            Some(certificates.acceptor()?)
        }
        None => None,
    };
    let (pool, cluster) = open_pool(&config, cluster_tls.as_ref()).await?;
    let cluster_secret = match &config.cluster.secret_file {
        Some(path) => Some(crate::cluster_cli::load_secret(path)?),
        None => None,
    };
    let mut store_config = StoreConfig::new(config.data.join("meta"));
    store_config.max_object_size = config.limits.max_object_size;
    store_config.gc_grace = Duration::from_secs(config.gc_grace_secs);
    store_config.orphan_sweep_batch = config.cluster.orphan_sweep_batch;
    if cluster.is_some() {
        // Not the store's own sweep: the nodes hold the extents of every
        // gateway of the cluster, and only the metadata service (its
        // leader) knows every record (`orphan_sweep`).
        store_config.orphan_age = None;
    }
    // The listener answers members' internal calls from the start: the
    // members of a replicated metadata service elect a leader before any of
    // them can open its doors.
    let listener = CappedListener::new(
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?,
        strata_pool::connection_cap(config.limits.max_connections),
    );
    let connections = listener.gauge();
    let local = listener.local_addr()?;
    let addresses = config.cluster.metadata_addresses();
    store_config.follower = FollowerTag {
        id: strata_pool::node::load_or_create_id(&config.data, "gateway-id")
            .context("reading the gateway's id")?,
        name: format!("{}:{}", host_name(), local.port()),
    };
    let service = match (config.cluster.metadata_member, &cluster_secret) {
        (Some(member), Some(secret)) => {
            let mut replica_config = store_config.clone();
            replica_config.log_replica = true;
            let replica = Store::open(replica_config.clone(), pool.clone())
                .context("opening the metadata replica")?;
            let joining = match config.cluster.metadata_join {
                true => Joining::Added,
                false => Joining::Founding(config.cluster.metadata_members().into_iter().collect()),
            };
            // One log database for the member's groups: one fsync covers
            // the appends of all.
            let log = MetaLog::open(&config.data.join("raft"))
                .map_err(|why| anyhow::anyhow!("opening the metadata log: {why}"))?;
            let transport = Arc::new(HttpRaftTransport::new(secret.clone(), cluster_tls.as_ref()));
            let tuning = Tuning {
                idle_before_hibernating: Some(config.cluster.metadata_hibernate_after_secs)
                    .filter(|secs| *secs > 0)
                    .map(Duration::from_secs),
                ..Tuning::default()
            };
            let mut groups = BTreeMap::new();
            // Held by storage nodes, when `index_nodes` names them.
            let local_groups = match config.cluster.index_nodes.is_empty() {
                true => config.index_groups,
                false => 0,
            };
            for index in 1..=local_groups {
                let group_replica = replica
                    .open_group(index, replica_config.clone())
                    .context("opening an index group's replica")?;
                let group = MetaService::start_group(
                    member,
                    GroupId::Index(index),
                    joining.clone(),
                    &log,
                    group_replica,
                    transport.clone(),
                    tuning,
                )
                .await
                .map_err(|why| anyhow::anyhow!("starting index group {index}: {why}"))?;
                groups.insert(index, group);
            }
            if !groups.is_empty() {
                tokio::spawn(strata_meta::compact_index_groups_after_split(
                    replica.clone(),
                    groups.values().cloned().collect(),
                ));
            }
            let service = MetaService::start_group(
                member,
                GroupId::Root,
                joining,
                &log,
                replica,
                transport,
                tuning,
            )
            .await
            .map_err(|why| anyhow::anyhow!("starting the metadata service: {why}"))?;
            tracing::info!(member, "member of the replicated metadata service");
            Some((service, groups))
        }
        _ => None,
    };
    let (service, index_services) = match service {
        Some((service, groups)) => (Some(service), groups),
        None => (None, BTreeMap::new()),
    };
    let served = Arc::new(Served {
        doors: std::sync::OnceLock::new(),
        internal: Internal {
            secret: cluster_secret.clone(),
            requires_tls: cluster_tls.is_some(),
            store: std::sync::OnceLock::new(),
            service,
            index_services,
            replays: strata_pool::wire::ReplayGuard::new(),
        },
    });
    let threads = match config.limits.connection_threads() {
        0 => None,
        count => Some(Arc::new(ConnectionThreads::start(count)?)),
    };
    // Before the doors: the connections accepted while they open send the
    // cache's bodies from it once they do.
    let arena = crate::edge::arena_for(&config.cache);
    let mut accepting = tokio::spawn(accept_loop(
        listener,
        listener_tls,
        served.clone(),
        config.limits.clone(),
        threads.clone(),
        arena.clone(),
    ));
    let store = match &cluster_secret {
        Some(secret) if !addresses.is_empty() => {
            let transport = match &served.internal.service {
                Some(member) => HttpMetaTransport::of_member(
                    secret.clone(),
                    cluster_tls.as_ref(),
                    addresses.clone(),
                    member.clone(),
                ),
                None => {
                    HttpMetaTransport::new(secret.clone(), cluster_tls.as_ref(), addresses.clone())
                }
            };
            let store = Store::connect(store_config.clone(), pool.clone(), Arc::new(transport))
                .await
                .with_context(|| format!("reaching the metadata service at {addresses:?}"))?;
            tracing::info!(?addresses, "metadata from the metadata service");
            if config.index_groups == 0 {
                let groups = store.index_groups().await?;
                if groups > 0 {
                    anyhow::bail!(
                        "the metadata service keeps its buckets' objects in {groups} index \
                         groups: set index_groups = {groups}"
                    );
                }
                store
            } else if config.cluster.index_nodes.is_empty() {
                let mut groups = Vec::new();
                for group in 1..=config.index_groups {
                    let transport = HttpMetaTransport::for_index_group(
                        secret.clone(),
                        cluster_tls.as_ref(),
                        addresses.clone(),
                        group,
                        served.internal.index_service(group).cloned(),
                    );
                    let connected =
                        Store::connect(store_config.clone(), pool.clone(), Arc::new(transport))
                            .await
                            .with_context(|| format!("reaching index group {group}"))?;
                    groups.push(connected);
                }
                Store::route(store, groups)
                    .await
                    .context("spreading buckets over index groups")?
            } else {
                let (groups, held_by) = connect_node_groups(
                    &config,
                    &store_config,
                    &pool,
                    secret,
                    cluster_tls.as_ref(),
                )
                .await?;
                Store::route_held_by(store, groups, Some(held_by))
                    .await
                    .context("spreading buckets over index groups")?
            }
        }
        // The root here, the index groups on storage nodes.
        Some(secret) if !config.cluster.index_nodes.is_empty() => {
            let root = Store::open(store_config.clone(), pool.clone())
                .context("opening the metadata store")?;
            let (groups, held_by) =
                connect_node_groups(&config, &store_config, &pool, secret, cluster_tls.as_ref())
                    .await?;
            Store::route_held_by(root, groups, Some(held_by))
                .await
                .context("spreading buckets over the index groups on the storage nodes")?
        }
        _ if config.index_groups > 0 => {
            let root =
                Store::open(store_config.clone(), pool).context("opening the metadata store")?;
            let groups = (1..=config.index_groups)
                .map(|group| root.open_group(group, store_config.clone()))
                .collect::<Result<Vec<_>, _>>()
                .context("opening the metadata store's index groups")?;
            Store::route(root, groups)
                .await
                .context("spreading buckets over index groups")?
        }
        _ => {
            let store = Store::open(store_config, pool).context("opening the metadata store")?;
            let groups = store.index_groups().await?;
            if groups > 0 {
                anyhow::bail!(
                    "the data directory keeps its buckets' objects in {groups} index groups: \
                     set index_groups = {groups}"
                );
            }
            store
        }
    };

    // The root account's keys belong to the gateway that holds the metadata;
    // the others take them from its catalog.
    // Of the members of a replicated service, the first holds them.
    let holds_root = match config.cluster.metadata_member {
        Some(member) => member == 1,
        None => !store.is_remote(),
    };
    let root = match !holds_root {
        true => {
            if credentials::in_environment() {
                tracing::warn!(
                    "root keys in the environment are not used: the metadata service's are"
                );
            }
            None
        }
        false => Some(credentials::load_or_create(&config.data)?),
    };
    if let Some(RootKeys::FromEnvironment(credential)) = &root
        && let length = credential.secret_key.chars().count()
        && length < credentials::STRONG_SECRET_LEN
    {
        // S3 signatures are checked as fast as they come, without a count
        // per address (the token endpoints have one).
        tracing::warn!(
            "{} has {length} characters: a guessable root secret; use {} random \
             ones (the generated secret has 40)",
            credentials::ENV_SECRET_KEY,
            credentials::STRONG_SECRET_LEN
        );
    }
    if let Some(RootKeys::Generated(credential)) = &root {
        println!(
            "created root account {}: access key {} secret key {} (stored in {}, shown only once)",
            credential.account,
            credential.access_key,
            credential.secret_key,
            config.data.display()
        );
    }
    let directory = Directory::open(store.clone(), root.as_ref().map(RootKeys::credential))
        .await
        .context("loading accounts and users")?;
    let mut orphan_sweeps = Vec::new();
    if let (Some(pool), Some(ring_path)) = (&cluster, &config.cluster.ring) {
        crate::ring_share::share(&store, pool, ring_path.clone(), ring_loaded).await?;
        tokio::spawn(pool.clone().watch_health());
        let service = crate::orphan_sweep::service_id(&store).await?;
        crate::orphan_sweep::claim_nodes(pool, &service).await?;
        use crate::orphan_sweep::Records;
        let index_services: Vec<_> = served.internal.index_services.values().cloned().collect();
        let member_of =
            |leads: &Arc<MetaService>, caught_up: &[Arc<MetaService>]| Records::Member {
                leads: Arc::downgrade(leads),
                caught_up: caught_up.iter().map(Arc::downgrade).collect(),
            };
        let sweeps = match (&served.internal.service, store.is_remote()) {
            // Index groups on storage nodes: each group's leader there
            // sweeps its buckets' extents; a root sees none of their
            // records (`Store::sweep_orphans` refuses).
            _ if !config.cluster.index_nodes.is_empty() => {
                tracing::info!(
                    "orphan sweep left to the storage nodes, which hold the index groups"
                );
                Vec::new()
            }
            // Extents not tagged by bucket (the buckets were split into the
            // groups, or a version that did not tag used them first): no
            // group can tell its own, so the root's leader sweeps them all
            // against every space of its database, once its replica of
            // each group caught up with the group's leader.
            (Some(root), _) if !index_services.is_empty() && !store.index_extents_tagged() => {
                vec![(
                    member_of(root, &index_services),
                    ALL_TAGS,
                    "root".to_owned(),
                )]
            }
            // Tagged: each index group's leader sweeps the extents of its
            // buckets against its replica alone, with no other group to
            // wait for. The root group holds no object records.
            (Some(_), _) if !index_services.is_empty() => index_services
                .iter()
                .enumerate()
                .filter_map(|(index, group)| {
                    let tags = strata_store::group_tags(index, index_services.len())?;
                    Some((member_of(group, &[]), tags, (index + 1).to_string()))
                })
                .collect(),
            (Some(root), _) => vec![(member_of(root, &[]), ALL_TAGS, "root".to_owned())],
            // A routed store's root reads every group's records.
            (None, false) => {
                let records = Records::Local(store.downgrade());
                vec![(records, ALL_TAGS, "root".to_owned())]
            }
            (None, true) => Vec::new(),
        };
        for (records, tags, group) in sweeps {
            let counts = crate::orphan_sweep::SweepCounts::new(group);
            orphan_sweeps.push(counts.clone());
            crate::orphan_sweep::spawn_sweeper(
                records,
                tags,
                pool.clone(),
                service.clone(),
                Duration::from_secs(config.cluster.orphan_age_secs),
                counts,
            );
        }
    }
    if config.cluster.metadata_member.is_some()
        && directory.account(credentials::ROOT_ACCOUNT).is_none()
    {
        tracing::warn!(
            "the metadata service has no root account: member 1 creates it, and \
             cluster.metadata names no member 1 (found a group with a member 1)"
        );
    }

    let edge = EdgeCache::new(config.cache.clone(), &store, arena)?;
    if let Some(ftp) = crate::ftp::start(
        &config.ftp,
        store.clone(),
        directory.clone(),
        config.region.clone(),
        config.limits.max_object_size,
    )
    .await?
    {
        // Tests and scripts wait for this line; keep its shape.
        println!("ftp listening on ftp://{ftp}");
    }
    // Metadata calls before this are answered 503 (starting).
    let _ = served.internal.store.set(store.clone());
    let doors = Arc::new(Doors {
        connections,
        connection_threads: threads.clone(),
        orphan_sweeps,
        metadata_service: served.internal.service.clone(),
        index_services: served.internal.index_services.clone(),
        edge: edge.clone(),
        cluster,
        served: config.only.clone(),
        directory: directory.clone(),
        storage_domain: config.storage_domain.clone(),
        metrics_from: config.metrics_from.clone(),
        tokens: TokenDoor {
            directory: directory.clone(),
            token_lifetime_secs: config.token_lifetime_secs,
            public_url: config.public_url.clone(),
            region: config.region.clone(),
            login_guard: crate::login_guard::LoginGuard::new(
                config.limits.max_failed_logins,
                Duration::from_secs(config.limits.login_block_secs),
            ),
        },
        admin: AdminDoor {
            store: store.clone(),
            directory: directory.clone(),
        },
        swift: SwiftDoor {
            store: store.clone(),
            directory: directory.clone(),
            limits: config.limits.clone(),
            region: config.region.clone(),
            edge: edge.clone(),
        },
        s3: S3Door {
            store,
            credentials: directory,
            sigv4: SigV4Config::new(config.region.clone()),
            region: config.region.clone(),
            s3_domain: config.s3_domain.clone(),
            limits: config.limits.clone(),
            edge: edge.clone(),
        },
    });

    if served.doors.set(doors).is_err() {
        anyhow::bail!("doors opened twice");
    }
    // Tests and scripts wait for this line; keep its shape.
    println!("listening on http://{local}");
    tracing::info!(%local, data = %config.data.display(), "strata serving");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        ended = &mut accepting => ended.context("accept loop")?,
        () = &mut shutdown => tracing::info!("shutting down"),
    }
    accepting.abort();
    // Before the metadata service: the commits requests started finish
    // while it still answers.
    if let Some(threads) = threads {
        tokio::task::spawn_blocking(move || threads.stop())
            .await
            .context("stopping the connection threads")?;
    }
    for group in served.internal.index_services.values() {
        group.shutdown().await;
    }
    if let Some(service) = &served.internal.service {
        service.shutdown().await;
    }
    Ok(())
}

/// What a connection is answered by: the internal endpoints from the
/// start, the doors once they are open.
struct Served {
    doors: std::sync::OnceLock<Arc<Doors>>,
    internal: Internal,
}

impl Served {
    /// `peer`: the address the request came from.
    async fn handle(&self, request: hyper::Request<RequestBody>, peer: IpAddr) -> Response {
        if crate::metadata::serves(&request) {
            // Boxed, as the doors' other paths (`SwiftDoor::dispatch`).
            return Box::pin(crate::metadata::handle(&self.internal, request)).await;
        }
        match self.doors.get() {
            Some(doors) => doors.handle(request, peer).await,
            None => text_response(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        }
    }
}

/// Accepts the HTTP port's connections and serves each on one of
/// `threads`, or on this runtime without them. Plain connections send the
/// bodies of `arena` with `sendfile`.
async fn accept_loop(
    listener: CappedListener,
    tls: Option<TlsAcceptor>,
    served: Arc<Served>,
    limits: Limits,
    threads: Option<Arc<ConnectionThreads>>,
    arena: Option<Arc<RamArena>>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // `IdleDeadline` cuts idle connections and trickled heads, with
        // one timer for all of a connection's requests.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    // HTTP/2 (offered to TLS clients through ALPN) sends no pings of its
    // own: their writes would count as progress and keep idle connections
    // for ever, and `IdleDeadline` finds the peers that went away (their
    // connections stop taking bytes).
    builder
        .http2()
        .max_header_list_size(limits.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
    loop {
        let Accepted {
            stream,
            peer,
            permit,
        } = listener.accept().await;
        let served = served.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let arena = arena.clone();
        let accepted = move |stream: TcpStream| async move {
            let _permit = permit;
            let plain = |stream| SendingStream::new(stream, arena);
            let Some(acceptor) = tls else {
                serve_connection(&builder, plain(stream), served, false, peer, idle_timeout).await;
                return;
            };
            // One port for both: a TLS connection opens with a handshake
            // record, an HTTP one with a method's letter.
            let mut first = [0u8; 1];
            match tokio::time::timeout(strata_pool::FIRST_BYTE_TIMEOUT, stream.peek(&mut first))
                .await
            {
                Ok(Ok(1)) if first[0] == strata_pool::TLS_HANDSHAKE_BYTE => {}
                Ok(Ok(1)) => {
                    serve_connection(&builder, plain(stream), served, false, peer, idle_timeout)
                        .await;
                    return;
                }
                _ => return,
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(&builder, stream, served, true, peer, idle_timeout).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "no TLS handshake in time"),
            }
        };
        match &threads {
            Some(threads) => threads.serve(stream, peer, accepted),
            None => {
                tokio::spawn(accepted(stream));
            }
        }
    }
}

/// The longest a TLS handshake may take once it started.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the requests of one connection, plain or TLS (`over_tls`), cut
/// once idle for `idle_timeout` (`[limits] idle_timeout_secs`).
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    served: Arc<Served>,
    over_tls: bool,
    peer: std::net::SocketAddr,
    idle_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let requests = Arc::new(strata_pool::RequestCount::default());
    let io = TokioIo::new(strata_pool::IdleDeadline::within(
        stream,
        requests.clone(),
        idle_timeout,
    ));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        // Now, before the request's work: its connection thread's core
        // may be owed to the threads waiting for it.
        crate::connection_threads::step_aside_if_due();
        let served = served.clone();
        let in_progress = requests.start();
        let mut request = request.map(|body| requests.request_body(body));
        if over_tls {
            request.extensions_mut().insert(OverTls);
        }
        async move {
            let expects_continue = expects_continue_without_body(request.headers());
            let may_leave_body_unread =
                request.version() <= http::Version::HTTP_11 && frames_a_body(request.headers());
            let mut response = served.handle(request, peer.ip()).await;
            let status = response.status();
            if expects_continue
                || (may_leave_body_unread && (status.is_client_error() || status.is_server_error()))
            {
                response
                    .headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| in_progress.answer(body)))
        }
    });
    if let Err(err) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// This machine's name, for telling gateways apart in another's metrics.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

/// The gateways following this one's change feed, as their polls confirmed
/// them: how many events each has yet to apply, and since when it is silent.
fn feed_follower_metrics(followers: &[FeedFollower]) -> String {
    // Those polling now; the series below also name those silent for less
    // than the hold (an hour), whose changes are kept for them.
    let current = followers.iter().filter(|f| f.is_current()).count();
    let mut out = format!("# TYPE strata_feed_followers gauge\nstrata_feed_followers {current}\n");
    if followers.is_empty() {
        return out;
    }
    let mut gauge = |name: &str, value: &dyn Fn(&FeedFollower) -> String| {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for follower in followers {
            out.push_str(&format!(
                "{name}{{follower=\"{}\",id=\"{}\"}} {}\n",
                label_value(&follower.name),
                label_value(&follower.id),
                value(follower)
            ));
        }
    };
    gauge("strata_feed_follower_behind_events", &|follower| {
        follower.behind.to_string()
    });
    gauge("strata_feed_follower_idle_seconds", &|follower| {
        format!("{:.3}", follower.idle.as_secs_f64())
    });
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge of a member's view of a Raft group: its name after
/// `strata_metadata_` (the root group's) or `strata_metadata_group_` (an
/// index group's), and its value.
type StatusGauge = (&'static str, fn(&strata_meta::MetaStatus) -> u64);

/// What is shown of every group, the root's and each index group's (a
/// leader of 0: none known).
const GROUP_GAUGES: [StatusGauge; 5] = [
    ("leader", |status| status.leader.unwrap_or(0)),
    ("last_applied", |status| status.last_applied.unwrap_or(0)),
    ("purged_index", |status| status.purged.unwrap_or(0)),
    ("hibernating", |status| u64::from(status.hibernating)),
    ("stopped", |status| u64::from(status.stopped.is_some())),
];

/// What is shown of the root group only.
const ROOT_GAUGES: [StatusGauge; 4] = [
    ("member", |status| status.id),
    ("term", |status| status.term),
    ("snapshot_index", |status| status.snapshot.unwrap_or(0)),
    ("log_version", |status| u64::from(status.log_version)),
];

/// A member's view of the replicated metadata service's root group.
fn metadata_metrics(status: &strata_meta::MetaStatus) -> String {
    let mut out = String::new();
    for (name, value) in ROOT_GAUGES.iter().chain(&GROUP_GAUGES) {
        let name = format!("strata_metadata_{name}");
        out.push_str(&format!("# TYPE {name} gauge\n{name} {}\n", value(status)));
    }
    out
}

/// One connected store per index group, each at the nodes that hold its
/// positions now (`cluster.index_nodes`, `cluster.index_replaced`), and
/// who holds them, as the root records it.
async fn connect_node_groups(
    config: &Config,
    store_config: &StoreConfig,
    pool: &Arc<dyn Pool>,
    secret: &strata_pool::wire::ClusterSecret,
    tls: Option<&ClusterTls>,
) -> anyhow::Result<(Vec<Store>, String)> {
    let nodes = config.cluster.index_nodes()?;
    let current = nodes.current();
    let mut groups = Vec::new();
    for group in 1..=config.index_groups {
        let members = crate::node_index::group_members(&current, group);
        let transport = HttpMetaTransport::for_index_group(
            secret.clone(),
            tls,
            members.into_values().collect(),
            group,
            None,
        );
        let connected = Store::connect(store_config.clone(), pool.clone(), Arc::new(transport))
            .await
            .with_context(|| format!("reaching index group {group} on the storage nodes"))?;
        groups.push(connected);
    }
    tracing::info!(
        nodes = ?config.cluster.index_nodes,
        replaced = ?config.cluster.index_replaced,
        "index groups on the storage nodes"
    );
    Ok((groups, nodes.held_by()))
}

/// Each index group's view of its Raft group, labelled by group number
/// (each series' samples together, as the text format wants them).
fn index_group_metrics(groups: &BTreeMap<u16, Arc<MetaService>>) -> String {
    let statuses: Vec<_> = groups
        .iter()
        .map(|(number, group)| (*number, group.status()))
        .collect();
    let mut out = String::new();
    if statuses.is_empty() {
        return out;
    }
    for (name, value) in &GROUP_GAUGES {
        let name = format!("strata_metadata_group_{name}");
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for (number, status) in &statuses {
            out.push_str(&format!("{name}{{group=\"{number}\"}} {}\n", value(status)));
        }
    }
    out
}

/// The embedded pool in `data/pool`, or the storage nodes of the ring (then
/// also returned as itself, for its metrics).
async fn open_pool(
    config: &Config,
    tls: Option<&ClusterTls>,
) -> anyhow::Result<(Arc<dyn Pool>, Option<RingPool>)> {
    let (Some(ring_path), Some(secret)) = (&config.cluster.ring, &config.cluster.secret_file)
    else {
        let pool = LocalPool::open(LocalPoolConfig {
            dir: config.data.join("pool"),
        })
        .context("opening the extent pool")?;
        return Ok((Arc::new(pool), None));
    };
    let ring = crate::cluster_cli::load_ring(ring_path)?;
    let pool = RingPool::new(
        ring,
        RingPoolConfig {
            secret: crate::cluster_cli::load_secret(secret)?,
            tls: tls.cloned(),
            write_quorum: config.cluster.write_quorum,
            node_timeout: Duration::from_secs(config.cluster.node_timeout_secs),
        },
    )
    .with_context(|| {
        format!(
            "cluster.write_quorum against the ring {}",
            ring_path.display()
        )
    })?;
    let refused = pool.announce_ring().await;
    // A node that refuses the ring as another cluster's must not get writes.
    for (node, err) in &refused {
        if let strata_pool::NodeError::Refused { status, detail, .. } = err
            && *status == StatusCode::CONFLICT
        {
            anyhow::bail!(
                "storage node {node} refused the ring {}: {detail} (a ring of another cluster?)",
                ring_path.display()
            );
        }
    }
    let ring = pool.ring();
    tracing::info!(
        version = ring.version(),
        partitions = ring.partition_count(),
        replicas = ring.replicas(),
        unreachable = refused.len(),
        "extents on the ring's storage nodes"
    );
    Ok((Arc::new(pool.clone()), Some(pool)))
}

/// Every door of this gateway; a request goes to exactly one.
struct Doors {
    /// The HTTP listener's connections, for `/metrics`.
    connections: ConnectionGauge,
    /// Which threads serve them, for `/metrics`.
    connection_threads: Option<Arc<ConnectionThreads>>,
    /// What each orphan sweeper did, for `/metrics` (on a ring).
    orphan_sweeps: Vec<Arc<crate::orphan_sweep::SweepCounts>>,
    /// This gateway's membership of a replicated metadata service, for
    /// `/metrics`.
    metadata_service: Option<Arc<MetaService>>,
    /// Its memberships of the service's index groups, by number from 1.
    index_services: BTreeMap<u16, Arc<MetaService>>,
    /// The doors this process answers for (`--only`).
    served: Vec<DoorKind>,
    /// Where custom domains are looked up.
    directory: Directory,
    /// Swift domain_remap's storage domain, if configured.
    storage_domain: Option<String>,
    edge: Arc<EdgeCache>,
    /// The storage nodes' pool, when extents live on a ring.
    cluster: Option<RingPool>,
    /// Who may read `/metrics`.
    metrics_from: Vec<AddressRange>,
    tokens: TokenDoor,
    admin: AdminDoor,
    swift: SwiftDoor,
    s3: S3Door,
}

impl Doors {
    async fn handle(&self, request: hyper::Request<RequestBody>, peer: IpAddr) -> Response {
        let (request, remapped) = match self.remap_domain(request) {
            Ok(remapped) => remapped,
            Err(response) => return response,
        };
        // The gateway's own paths, only on its own names: on a customer's
        // domain or a bucket's host, /health and /metrics are objects.
        // A bucket's own host: S3's whatever the path, below.
        let virtual_host = self.s3.is_virtual_host(request.uri(), request.headers());
        let own_host = || !remapped && !virtual_host;
        if crate::s3::is_health_check(request.method(), request.uri(), request.headers())
            && own_host()
        {
            return text_response(StatusCode::OK, "ok\n");
        }
        if request.uri().path() == "/metrics"
            && request.method() == http::Method::GET
            && !request.headers().contains_key(http::header::AUTHORIZATION)
            && own_host()
        {
            if !self.metrics_from.iter().any(|range| range.contains(peer)) {
                return text_response(
                    StatusCode::FORBIDDEN,
                    "Forbidden: /metrics is served to the addresses of metrics_from only\n",
                );
            }
            let mut metrics = self.edge.metrics_text();
            metrics.push_str(&self.connections.metrics_text());
            if let Some(threads) = &self.connection_threads {
                metrics.push_str(&threads.metrics_text());
            }
            if let Some(cluster) = &self.cluster {
                metrics.push_str(&cluster.metrics_text());
            }
            if !self.orphan_sweeps.is_empty() {
                metrics.push_str(&crate::orphan_sweep::metrics_text(&self.orphan_sweeps));
            }
            let followers = match &self.metadata_service {
                Some(service) => {
                    metrics.push_str(&metadata_metrics(&service.status()));
                    metrics.push_str(&index_group_metrics(&self.index_services));
                    service.feed_followers()
                }
                None => self.admin.store.feed_followers(),
            };
            metrics.push_str(&feed_follower_metrics(&followers));
            return text_response(StatusCode::OK, metrics);
        }
        // RFC 9112 §3.2: one Host header, and one at all in HTTP/1.1 (an
        // absolute-form target names the host itself). Two could route by
        // one and sign or cache by the other. (Health probes that send none
        // were answered above.)
        let hosts = request.headers().get_all(http::header::HOST).iter().count();
        if hosts > 1
            || (hosts == 0
                && request.version() == http::Version::HTTP_11
                && request.uri().authority().is_none())
        {
            return text_response(StatusCode::BAD_REQUEST, "Bad Request: one Host header\n");
        }
        let path = request.uri().path();
        // A bucket's own host, or an AWS signature, is S3's whatever the
        // path (a website's page `/info`, a bucket called `v1.0`); the
        // other doors' paths are the gateway's own names only.
        let s3_request = virtual_host || crate::s3::is_aws_signed(request.uri(), request.headers());
        let kind = if remapped {
            DoorKind::Swift
        } else if s3_request {
            DoorKind::S3
        } else if TokenDoor::serves(path) || AdminDoor::serves(path) {
            DoorKind::Auth
        } else if SwiftDoor::serves(path) {
            DoorKind::Swift
        } else {
            DoorKind::S3
        };
        if !self.served.contains(&kind) {
            return text_response(StatusCode::NOT_FOUND, "Not served by this gateway\n");
        }
        match kind {
            // Boxed but the Swift door, whose hits are the edge's hot path
            // (see `SwiftDoor::dispatch`).
            DoorKind::Auth if AdminDoor::serves(path) => Box::pin(self.admin.handle(request)).await,
            DoorKind::Auth => {
                let trans_id = format!("tx{}", hex::encode(rand::random::<[u8; 12]>()));
                Box::pin(self.tokens.handle(request, &trans_id, peer)).await
            }
            DoorKind::Swift => self.swift.handle(request).await,
            DoorKind::S3 => Box::pin(self.s3.handle(request)).await,
        }
    }
}

impl Doors {
    /// `container.account.<storage domain>` or `account.<storage domain>`
    /// (the account label may carry Swift's `auth-` prefix), as Swift's
    /// domain_remap reads them.
    fn remapped_host(&self, host: &str) -> Option<DomainRecord> {
        let domain = self.storage_domain.as_deref()?;
        let labels = host.strip_suffix(domain)?.strip_suffix('.')?;
        let (container, account) = match labels.rsplit_once('.') {
            Some((container, account)) if !container.contains('.') => (Some(container), account),
            Some(_) => return None,
            None => (None, labels),
        };
        let account = account.strip_prefix("auth-").unwrap_or(account);
        self.directory.account(account)?;
        Some(DomainRecord {
            host: host.to_owned(),
            account: account.to_owned(),
            container: container.map(str::to_owned),
        })
    }

    /// A request to a custom domain becomes the Swift request it stands for:
    /// `http://st.example.com/logo.gif` → `/v1/AUTH_admin/public/logo.gif`
    /// for a domain mapped to `admin/public`. Whether the object may be read
    /// is then the Swift door's decision, as for any Swift URL.
    #[allow(clippy::result_large_err)]
    fn remap_domain(
        &self,
        mut request: hyper::Request<RequestBody>,
    ) -> Result<(hyper::Request<RequestBody>, bool), Response> {
        if self.storage_domain.is_none() && !self.directory.has_domains() {
            return Ok((request, false));
        }
        let host = request_host(request.uri(), request.headers());
        let domain = host.as_deref().and_then(|host| {
            self.directory
                .domain(host)
                .or_else(|| self.remapped_host(host))
        });
        let Some(domain) = domain else {
            return Ok((request, false));
        };
        let mut path = format!("/v1/AUTH_{}", domain.account);
        if let Some(container) = &domain.container {
            path.push('/');
            path.extend(utf8_percent_encode(container, NON_ALPHANUMERIC));
        }
        path.push_str(request.uri().path());
        if let Some(query) = request.uri().query() {
            path.push('?');
            path.push_str(query);
        }
        match path.parse() {
            Ok(uri) => {
                let path_as_sent = PathAsSent(request.uri().path().to_owned());
                request.extensions_mut().insert(path_as_sent);
                *request.uri_mut() = uri;
                Ok((request, true))
            }
            Err(_) => Err(text_response(StatusCode::BAD_REQUEST, "Bad Request\n")),
        }
    }
}

/// A request that asks for `100 Continue` but frames no content. RFC 9110
/// §10.1.1 lets a server skip the interim response then, and hyper does; but
/// botocore (every Python S3 tool) sends `Expect: 100-continue` with empty
/// uploads too, keeps the early final status on the pooled connection, and
/// misreads the next response on it (boto/botocore#3755: `aws s3 sync` of a
/// tree with an empty file stalled and lost an UploadPart). Closing such a
/// connection after its response resets the client's state, at the price of
/// one reconnect per empty upload.
fn expects_continue_without_body(headers: &http::HeaderMap) -> bool {
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue || headers.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    match headers.get(http::header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => true,
    }
}

/// Whether an HTTP/1 request carries content. An error answer often goes out
/// before that content is read (a PUT to a missing bucket is refused on its
/// headers), and hyper then closes the connection after the response unless
/// the unread rest was already buffered; whether the response says so
/// depends on when hyper notices. A client that reuses the connection then
/// fails its next request (`RemoteDisconnected` in botocore, which does not
/// retry it with `AWS_MAX_ATTEMPTS=1`). So error answers to such requests
/// always say `Connection: close`; errors are rare enough that the lost
/// keep-alive costs nothing measurable.
fn frames_a_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    /// The root group's gauges, each typed, with the names dashboards use.
    #[test]
    fn a_members_view_of_the_root_group_is_one_gauge_each() {
        let status = strata_meta::MetaStatus {
            id: 2,
            leader: Some(3),
            term: 7,
            last_log_index: Some(41),
            last_applied: Some(40),
            snapshot: None,
            purged: Some(12),
            hibernating: true,
            log_version: 2,
            runs_log_version: 2,
            stopped: Some("storage error".into()),
            voters: vec![1, 2, 3],
        };
        let text = metadata_metrics(&status);
        let expected = [
            ("member", 2),
            ("term", 7),
            ("snapshot_index", 0),
            ("log_version", 2),
            ("leader", 3),
            ("last_applied", 40),
            ("purged_index", 12),
            ("hibernating", 1),
            ("stopped", 1),
        ];
        let mut lines = text.lines();
        for (name, value) in expected {
            let name = format!("strata_metadata_{name}");
            assert_eq!(lines.next(), Some(format!("# TYPE {name} gauge").as_str()));
            assert_eq!(lines.next(), Some(format!("{name} {value}").as_str()));
        }
        assert_eq!(lines.next(), None, "{text}");
    }

    #[test]
    fn only_bodiless_continue_requests_close_their_connection() {
        let cases = [
            (
                &[("expect", "100-continue"), ("content-length", "0")][..],
                true,
            ),
            (&[("expect", "100-Continue")][..], true),
            (
                &[("expect", "100-continue"), ("content-length", "5")][..],
                false,
            ),
            (
                &[("expect", "100-continue"), ("transfer-encoding", "chunked")][..],
                false,
            ),
            (&[("content-length", "0")][..], false),
            (&[][..], false),
        ];
        for (pairs, closes) in cases {
            assert_eq!(
                expects_continue_without_body(&headers(pairs)),
                closes,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn requests_with_content_are_told_apart_from_bodiless_ones() {
        let cases = [
            (&[("content-length", "1")][..], true),
            (&[("transfer-encoding", "chunked")][..], true),
            (&[("content-length", "0")][..], false),
            (&[][..], false),
        ];
        for (pairs, framed) in cases {
            assert_eq!(frames_a_body(&headers(pairs)), framed, "{pairs:?}");
        }
    }
}

//! The one typed configuration of a gateway, assembled from the TOML file, the
//! environment and flags, and validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Everything a gateway needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Data directory (metadata, extents, root credentials).
    pub data: PathBuf,
    /// Region reported to clients and expected in SigV4 scopes.
    pub region: String,
    /// Root domain for virtual-hosted–style S3 requests.
    pub s3_domain: Option<String>,
    /// Swift's domain_remap: `container.account.<storage_domain>/key` and
    /// `account.<storage_domain>/container/key` serve Swift paths.
    pub storage_domain: Option<String>,
    /// Base of the storage URLs the token endpoint hands out
    /// (`https://storage.example.com`); from the request's Host when unset.
    pub public_url: Option<String>,
    /// How long Swift tokens are valid, in seconds.
    pub token_lifetime_secs: u64,
    /// The doors this process serves; the others answer 404 (an auth node
    /// runs with `only = ["auth"]`).
    pub only: Vec<DoorKind>,
    pub limits: Limits,
    /// The edge cache (`[cache]`).
    pub cache: crate::edge::CacheConfig,
    /// The FTP door (`[ftp]`), off unless it has a listen address.
    pub ftp: crate::ftp::FtpConfig,
    /// Storage nodes (`[cluster]`); without a ring, extents stay in `data`.
    pub cluster: ClusterConfig,
    /// Seconds a replaced or deleted object's extents are kept, so that
    /// reads already streaming them finish.
    pub gc_grace_secs: u64,
    /// Index groups the buckets' objects are spread over, beside the root
    /// group's bucket records and catalog (`docs/design/index-on-the-ring.md`);
    /// 0 keeps everything in one. Kept for good once set: a data
    /// directory that already holds buckets moves their objects into
    /// the groups at the first start with them (`store/src/split.rs`),
    /// which a replicated metadata service cannot do yet; a gateway that
    /// takes its metadata from another names the same number. The members of a
    /// replicated metadata service run one Raft group per index group
    /// beside the root's, whose members `strata metadata add/remove`
    /// change alike.
    pub index_groups: u16,
    /// PEM certificate chain: the listener also speaks TLS (HTTPS) with it,
    /// on the same port as plain HTTP, to clients and cluster members.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A directory of `HOST.pem` files (certificate chain and key; `_.`
    /// for a wildcard) presented to clients that ask for HOST over TLS,
    /// reread while serving; `tls_cert` serves the other names.
    pub tls_cert_dir: Option<PathBuf>,
    /// Who may read `/metrics` (host names, member ids, ring versions,
    /// traffic): addresses and CIDR ranges; loopback and the private
    /// networks unless set. Others get 403.
    pub metrics_from: Vec<crate::address_range::AddressRange>,
}

/// Where a gateway keeps extents when it is part of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The ring file (`strata ring rebalance` writes it); its devices name
    /// the storage nodes.
    pub ring: Option<PathBuf>,
    /// File holding the cluster secret every node and gateway shares.
    pub secret_file: Option<PathBuf>,
    /// Copies fsynced before a write succeeds (default: the ring's replicas).
    pub write_quorum: Option<usize>,
    /// Longest wait for one storage node request, in seconds.
    pub node_timeout_secs: u64,
    /// `HOST:PORT` of the gateway that holds the cluster's metadata (the
    /// metadata service), or of every member of a replicated metadata
    /// service, comma-separated, each optionally with its member id
    /// (`ID=HOST:PORT`; without ids, a member's id is its position, from
    /// 1). Without it, this gateway holds the metadata in `data` and serves
    /// it to the gateways that name it here.
    pub metadata: Option<String>,
    /// This gateway is member N (its id in `metadata`) of the replicated
    /// metadata service: it keeps a replica in `data` and takes part in the
    /// Raft group of the members listed there.
    pub metadata_member: Option<u64>,
    /// This member was added to a running group (`strata metadata add`):
    /// it waits to be sent the log instead of founding a group with the
    /// members listed in `metadata`.
    pub metadata_join: bool,
    /// Extents on the nodes that no record names and that are older than
    /// this (a gateway killed between storing a body and committing it)
    /// are deleted by the metadata service (its leader), in seconds. It
    /// must be longer than any upload takes: an upload's first extents are
    /// named by no record until it commits.
    pub orphan_age_secs: u64,
    /// About how many of the pool's extents the orphan sweep takes at once
    /// (the embedded store's as well): it lists the pool, and collects the
    /// records' references, a span of ids' first bytes at a time, each
    /// span holding about this many extents (or one first byte's, should
    /// that hold more). Each span scans the records once.
    pub orphan_sweep_batch: u64,
    /// A metadata group (the root group, or an index group) that took no
    /// change for this long, every member holding its log, stops its
    /// heartbeats until the next change (a follower asked for something
    /// while its leader is gone stands for election), in seconds: a member
    /// may run many groups, and most are idle most of the time. 0: never,
    /// and 0 while any member runs a version from before it.
    pub metadata_hibernate_after_secs: u64,
    /// `HOST:PORT` of the storage nodes that hold the index groups
    /// (`index_groups`), as their ring names them, in the order every node
    /// (`strata node --index-nodes`) and gateway is given: each group is a
    /// Raft group of three of them (`crate::node_index`). Empty: the
    /// groups are with the root group, on the gateways.
    pub index_nodes: Vec<String>,
    /// Nodes of `index_nodes` lost for good and the nodes that replaced
    /// them, `"OLD=NEW"` each, as the new nodes were given them (`strata
    /// node --index-replaced`): `index_nodes` itself never changes once the
    /// groups exist.
    pub index_replaced: Vec<String>,
    /// PEM file of the cluster's CA: members speak TLS to each other. Calls
    /// to nodes and members go over TLS and trust the certificates this CA
    /// signed, and only those; metadata calls that arrive in plain text are
    /// refused. A gateway that members call (it holds the metadata, or is a
    /// member) presents `tls_cert`.
    pub tls_ca: Option<PathBuf>,
}

impl ClusterConfig {
    /// The addresses in `metadata` (one, or every member of a replicated
    /// service).
    pub fn metadata_addresses(&self) -> Vec<String> {
        self.metadata_members()
            .into_iter()
            .map(|(_, address)| address)
            .collect()
    }

    /// The members in `metadata` (validated) with their ids.
    pub fn metadata_members(&self) -> Vec<(u64, String)> {
        self.metadata
            .as_deref()
            .and_then(|metadata| parse_metadata_members(metadata).ok())
            .unwrap_or_default()
    }

    /// The storage nodes that hold the index groups (validated at load).
    pub fn index_nodes(&self) -> anyhow::Result<crate::node_index::IndexNodes> {
        crate::node_index::IndexNodes::new(&self.index_nodes, &self.index_replaced)
    }
}

/// Refuses a `metadata` list that writes `https://` when no cluster CA is
/// given: its calls would go in plain text, whatever the list says.
pub fn refuse_https_without_ca(metadata: &str, has_ca: bool) -> anyhow::Result<()> {
    if !has_ca && metadata.contains("https://") {
        bail!(
            "cluster.metadata {metadata:?} names https:// members, but no cluster CA is given \
             (cluster.tls_ca, --cluster-tls-ca): members are called over TLS only with one"
        );
    }
    Ok(())
}

/// The members a `metadata` list names, `HOST:PORT` or `ID=HOST:PORT`
/// each (all with ids or none: a member's id is then its position, from
/// 1), with their ids.
pub fn parse_metadata_members(metadata: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut members: Vec<(u64, String)> = Vec::new();
    let mut with_ids = None;
    for (position, entry) in (1..).zip(metadata.split(',')) {
        let (id, address) = match entry.trim().split_once('=') {
            Some((id, address)) => {
                let id = id.trim().parse::<u64>().ok().filter(|id| *id > 0);
                let id = id.with_context(|| {
                    format!("cluster.metadata entry {entry:?}: a member id is a number from 1")
                })?;
                (id, address)
            }
            None => (position, entry),
        };
        if *with_ids.get_or_insert(entry.contains('=')) != entry.contains('=') {
            bail!("cluster.metadata {metadata:?} gives ids to some members only: all or none");
        }
        let address = address
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        if address.is_empty() || address.contains(['/', ' ', '=']) {
            bail!(
                "cluster.metadata {metadata:?} must be HOST:PORT (or ID=HOST:PORT) of gateways, \
                 comma-separated"
            );
        }
        if members.iter().any(|(_, known)| known == address) {
            bail!("cluster.metadata names {address} twice");
        }
        if members.iter().any(|(known, _)| *known == id) {
            bail!("cluster.metadata names member {id} twice");
        }
        members.push((id, address.to_owned()));
    }
    Ok(members)
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            ring: None,
            secret_file: None,
            write_quorum: None,
            node_timeout_secs: 10,
            metadata: None,
            metadata_member: None,
            metadata_join: false,
            orphan_age_secs: 24 * 3600,
            orphan_sweep_batch: strata_store::DEFAULT_ORPHAN_SWEEP_BATCH,
            metadata_hibernate_after_secs: strata_meta::Tuning::default()
                .idle_before_hibernating
                .map_or(0, |idle| idle.as_secs()),
            index_nodes: Vec::new(),
            index_replaced: Vec::new(),
            tls_ca: None,
        }
    }
}

/// A family of endpoints a gateway can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DoorKind {
    /// Token endpoints (`/auth/v1.0`, `/v3/auth/tokens`) and the admin API.
    Auth,
    /// The Swift API (`/v1/AUTH_…`, `/info`).
    Swift,
    /// The S3 API (everything else).
    S3,
}

impl DoorKind {
    pub const ALL: [DoorKind; 3] = [DoorKind::Auth, DoorKind::Swift, DoorKind::S3];
}

/// The most `[limits] connection_threads`: far above any machine's cores.
const MAX_CONNECTION_THREADS: usize = 1024;

/// The longest `[limits] idle_timeout_secs`: connections are a capped
/// resource, and one idle longer is better opened again.
const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
/// The longest `[limits] login_block_secs`.
const MAX_LOGIN_BLOCK_SECS: u64 = 30 * 24 * 3600;

/// The most `index_groups` for now: each is a Raft group on a replicated
/// service's members (whose heartbeats stop while it is idle), a
/// connection and a feed long poll from every gateway, and background
/// tasks; until those cost nothing either
/// (`docs/design/index-on-the-ring.md`), a few.
pub(crate) const MAX_INDEX_GROUPS: u16 = 16;

/// Request limits: what is refused, and with which error, is decided here rather
/// than by accident of buffer sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest single PUT (S3: 5 GiB).
    pub max_object_size: u64,
    /// Largest request head (request line plus headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest XML request body (DeleteObjects, CompleteMultipartUpload …).
    pub max_xml_body: usize,
    /// Largest total size of user metadata on an object (S3: 2 KiB).
    pub max_user_metadata: usize,
    /// Connections held open at once, on the HTTP port; more wait in the
    /// kernel's backlog. Default: half the open file limit (raised to its
    /// hard limit at start).
    pub max_connections: Option<usize>,
    /// Refused keys an address may send the token endpoints, each within
    /// `login_block_secs` of the one before, before its token requests are
    /// refused (429) for `login_block_secs`; 0: never (behind a proxy,
    /// where every client has the proxy's address).
    pub max_failed_logins: u32,
    pub login_block_secs: u64,
    /// Seconds an HTTP connection may go without starting a request,
    /// without the gateway working on one (a handler running, but not one
    /// waiting for more of its request's body; an answer's next piece not
    /// ready) and without sending a byte of an answer, before it is cut
    /// (checked once a period, so it goes after one to two): the
    /// keep-alive timeout and the time a client may take over a request's
    /// head, between two pieces of its body or stop reading an answer, as
    /// nginx's `keepalive_timeout`, `client_header_timeout`,
    /// `client_body_timeout` and `send_timeout`.
    /// (An HTTP/2 client's own pings are answered, and count as bytes sent.)
    pub idle_timeout_secs: u64,
    /// Threads that serve the HTTP port's connections, each holding its
    /// connections from accept to close (`connection_threads.rs`); 0: the
    /// runtime the rest of the gateway runs on serves them. Default: one
    /// per core.
    pub connection_threads: Option<usize>,
}

impl Limits {
    /// `connection_threads`, its default filled in.
    pub fn connection_threads(&self) -> usize {
        self.connection_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_size: 5 * 1024 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_xml_body: 2 * 1024 * 1024,
            max_user_metadata: 2048,
            max_connections: None,
            max_failed_logins: 5,
            login_block_secs: 300,
            idle_timeout_secs: strata_pool::IDLE_TIMEOUT.as_secs(),
            connection_threads: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_owned(),
            data: PathBuf::from("strata-data"),
            region: "us-east-1".to_owned(),
            s3_domain: None,
            storage_domain: None,
            public_url: None,
            token_lifetime_secs: 24 * 3600,
            only: DoorKind::ALL.to_vec(),
            limits: Limits::default(),
            cache: crate::edge::CacheConfig::default(),
            ftp: crate::ftp::FtpConfig::default(),
            cluster: ClusterConfig::default(),
            gc_grace_secs: 600,
            index_groups: 0,
            tls_cert: None,
            tls_key: None,
            tls_cert_dir: None,
            metrics_from: crate::address_range::AddressRange::private_networks(),
        }
    }
}

/// Values given on the command line or in the environment.
#[derive(Debug, Default)]
pub struct ConfigOverrides {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub region: Option<String>,
    pub s3_domain: Option<String>,
    pub only: Option<Vec<DoorKind>>,
    pub storage_domain: Option<String>,
    pub ftp_listen: Option<String>,
    pub ftp_passive_ports: Option<String>,
    pub ftp_passive_host: Option<String>,
    pub ftp_tls_cert: Option<PathBuf>,
    pub ftp_tls_key: Option<PathBuf>,
    pub ftp_require_tls: bool,
    pub ring: Option<PathBuf>,
    pub cluster_secret_file: Option<PathBuf>,
    pub metadata: Option<String>,
    pub metadata_member: Option<u64>,
    pub metadata_join: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_cert_dir: Option<PathBuf>,
    pub cluster_tls_ca: Option<PathBuf>,
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: ConfigOverrides) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                Self::parse_toml(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(data) = overrides.data {
            config.data = data;
        }
        if let Some(region) = overrides.region {
            config.region = region;
        }
        if let Some(domain) = overrides.s3_domain {
            config.s3_domain = Some(domain);
        }
        if let Some(only) = overrides.only {
            config.only = only;
        }
        if let Some(domain) = overrides.storage_domain {
            config.storage_domain = Some(domain);
        }
        if let Some(listen) = overrides.ftp_listen {
            config.ftp.listen = Some(listen);
        }
        if let Some(ports) = overrides.ftp_passive_ports {
            config.ftp.passive_ports = ports;
        }
        if let Some(host) = overrides.ftp_passive_host {
            config.ftp.passive_host = Some(host);
        }
        if let Some(cert) = overrides.ftp_tls_cert {
            config.ftp.tls_cert = Some(cert);
        }
        if let Some(key) = overrides.ftp_tls_key {
            config.ftp.tls_key = Some(key);
        }
        config.ftp.require_tls |= overrides.ftp_require_tls;
        if let Some(ring) = overrides.ring {
            config.cluster.ring = Some(ring);
        }
        if let Some(secret) = overrides.cluster_secret_file {
            config.cluster.secret_file = Some(secret);
        }
        if let Some(metadata) = overrides.metadata {
            config.cluster.metadata = Some(metadata);
        }
        if let Some(member) = overrides.metadata_member {
            config.cluster.metadata_member = Some(member);
        }
        config.cluster.metadata_join |= overrides.metadata_join;
        if let Some(cert) = overrides.tls_cert {
            config.tls_cert = Some(cert);
        }
        if let Some(key) = overrides.tls_key {
            config.tls_key = Some(key);
        }
        if let Some(dir) = overrides.tls_cert_dir {
            config.tls_cert_dir = Some(dir);
        }
        if let Some(ca) = overrides.cluster_tls_ca {
            config.cluster.tls_ca = Some(ca);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn parse_toml(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }

    /// The certificates the listener presents, if it speaks TLS.
    pub fn listener_tls(
        &self,
    ) -> anyhow::Result<Option<Arc<crate::listener_tls::ListenerCertificates>>> {
        let default = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        if default.is_none() && self.tls_cert_dir.is_none() {
            return Ok(None);
        }
        crate::listener_tls::ListenerCertificates::load(default, self.tls_cert_dir.as_deref())
            .map(Some)
    }

    /// How this gateway calls nodes and members: over TLS with a cluster CA.
    pub fn cluster_tls(&self) -> anyhow::Result<Option<strata_pool::ClusterTls>> {
        crate::cluster_cli::load_cluster_tls(self.cluster.tls_ca.as_deref(), None)
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("listen address {:?} is not HOST:PORT", self.listen))
    }

    fn validate(&mut self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!("region {:?} must be letters, digits and '-'", self.region);
        }
        if let Some(domain) = &mut self.s3_domain {
            *domain = domain.trim_matches('.').to_ascii_lowercase();
            if domain.is_empty() {
                self.s3_domain = None;
            }
        }
        if let Some(domain) = &mut self.storage_domain {
            *domain = domain.trim_matches('.').to_ascii_lowercase();
            if domain.is_empty() {
                self.storage_domain = None;
            }
        }
        if self.storage_domain.is_some() && self.storage_domain == self.s3_domain {
            bail!("storage_domain and s3_domain must differ");
        }
        self.cache.validate()?;
        if self.limits.login_block_secs > MAX_LOGIN_BLOCK_SECS {
            bail!("login_block_secs must be at most {MAX_LOGIN_BLOCK_SECS} (30 days)");
        }
        if self.cluster.ring.is_some() != self.cluster.secret_file.is_some() {
            bail!("a cluster needs both a ring and a cluster secret file");
        }
        if let Some(metadata) = &mut self.cluster.metadata {
            refuse_https_without_ca(metadata, self.cluster.tls_ca.is_some())?;
            let members = parse_metadata_members(metadata)?;
            // Kept with every id written out.
            *metadata = members
                .iter()
                .map(|(id, address)| format!("{id}={address}"))
                .collect::<Vec<_>>()
                .join(",");
            if let Some(member) = self.cluster.metadata_member
                && !members.iter().any(|(id, _)| *id == member)
            {
                bail!(
                    "cluster.metadata_member {member} is not a member of cluster.metadata \
                     (its id, or without ids its position from 1)"
                );
            }
            if self.cluster.ring.is_none() {
                bail!("cluster.metadata needs a ring: gateways that share metadata share a pool");
            }
        }
        if self.cluster.metadata_join && self.cluster.metadata_member.is_none() {
            anyhow::bail!(
                "cluster.metadata_join needs cluster.metadata_member: the member that joins"
            );
        }
        if self.cluster.metadata_member.is_some() && self.cluster.metadata.is_none() {
            bail!("cluster.metadata_member needs cluster.metadata, the list of members");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together");
        }
        if self.cluster.tls_ca.is_some() {
            if self.cluster.ring.is_none() {
                bail!("cluster.tls_ca is for a cluster: it needs a ring and a cluster secret");
            }
            // Members and the gateway holding the metadata are called by
            // the others, over TLS only.
            let is_called =
                self.cluster.metadata.is_none() || self.cluster.metadata_member.is_some();
            if is_called && self.tls_cert.is_none() {
                bail!(
                    "cluster.tls_ca on a gateway that other gateways call (it holds the metadata \
                     or is a member of its service) needs tls_cert and tls_key"
                );
            }
        }
        if self.index_groups > MAX_INDEX_GROUPS {
            bail!("index_groups must be at most {MAX_INDEX_GROUPS}");
        }
        if !self.cluster.index_replaced.is_empty() && self.cluster.index_nodes.is_empty() {
            bail!("cluster.index_replaced replaces nodes of cluster.index_nodes: set it");
        }
        if !self.cluster.index_nodes.is_empty() {
            self.cluster
                .index_nodes()
                .context("cluster.index_nodes and cluster.index_replaced")?;
            if self.cluster.ring.is_none() {
                bail!("cluster.index_nodes names storage nodes: it needs a ring and a secret");
            }
            if self.index_groups == 0 {
                bail!("cluster.index_nodes holds index groups: set index_groups");
            }
        }
        if self.cluster.orphan_age_secs < 2 {
            bail!("cluster.orphan_age_secs must be at least 2");
        }
        if self.cluster.orphan_sweep_batch == 0 {
            bail!("cluster.orphan_sweep_batch must be at least 1");
        }
        if self.cluster.write_quorum == Some(0) {
            bail!("cluster.write_quorum must be at least 1");
        }
        if self.cluster.node_timeout_secs == 0 {
            bail!("cluster.node_timeout_secs must be positive");
        }
        if self.only.is_empty() {
            bail!("only must name at least one of auth, swift, s3");
        }
        if self.token_lifetime_secs == 0 {
            bail!("token_lifetime_secs must be positive");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("public_url {url:?} must start with http:// or https://");
        }
        if self.limits.max_header_bytes < 8192 {
            bail!("limits.max_header_bytes must be at least 8192");
        }
        if self
            .limits
            .connection_threads
            .is_some_and(|count| count > MAX_CONNECTION_THREADS)
        {
            bail!("limits.connection_threads must be at most {MAX_CONNECTION_THREADS}");
        }
        if self.limits.max_connections == Some(0) {
            bail!("limits.max_connections must be positive");
        }
        if !(1..=MAX_IDLE_TIMEOUT_SECS).contains(&self.limits.idle_timeout_secs) {
            bail!("limits.idle_timeout_secs must be from 1 to {MAX_IDLE_TIMEOUT_SECS} (one hour)");
        }
        self.ftp.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_refused() {
        let config = Config::parse_toml("listen = \"0.0.0.0:9000\"\nregion = \"eu-1\"\n").unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.data, PathBuf::from("strata-data"));
        assert!(Config::parse_toml("lsten = \"x\"").is_err());
        assert!(Config::parse_toml("[limits]\nmax_object_size = 10\n").is_ok());
        let metrics = Config::parse_toml("metrics_from = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(metrics.metrics_from.len(), 2);
        let refused = Config::parse_toml("metrics_from = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            format!("{refused:#}").contains("10.0.0.0/33"),
            "{refused:#}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ns3_domain = \"S3.Example.com.\"\n",
        )
        .unwrap();
        let overrides = ConfigOverrides {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&path), overrides).unwrap();
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.s3_domain.as_deref(), Some("s3.example.com"));
        let bad = ConfigOverrides {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::load(None, bad).is_err());
        std::fs::write(&path, "[cluster]\nwrite_quorum = 0\n").unwrap();
        let refused = Config::load(Some(&path), ConfigOverrides::default()).unwrap_err();
        assert!(refused.to_string().contains("write_quorum"), "{refused}");
    }

    /// Index groups on storage nodes need a cluster, groups to hold, and
    /// a list of `HOST:PORT`s.
    #[test]
    fn index_nodes_need_a_ring_groups_and_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, secret) = (dir.path().join("ring"), dir.path().join("secret"));
        let file = dir.path().join("strata.toml");
        let load = |toml: &str, cluster: bool, member: Option<u64>| {
            std::fs::write(&file, toml).unwrap();
            let overrides = ConfigOverrides {
                ring: cluster.then(|| ring.clone()),
                cluster_secret_file: cluster.then(|| secret.clone()),
                metadata: member.map(|_| "a:1,b:2,c:3".into()),
                metadata_member: member,
                ..Default::default()
            };
            Config::load(Some(&file), overrides).map(|config| config.cluster.index_nodes)
        };
        let nodes = "[cluster]\nindex_nodes = [\"n1:7000\", \"n2:7000\", \"n3:7000\"]\n";
        let held = load(&format!("index_groups = 4\n{nodes}"), true, None).unwrap();
        assert_eq!(held, ["n1:7000", "n2:7000", "n3:7000"]);
        // Beside a replicated root group too.
        load(&format!("index_groups = 4\n{nodes}"), true, Some(1)).unwrap();
        // With a node replaced: the list stays as the groups were founded.
        let replaced = format!("index_groups = 4\n{nodes}index_replaced = [\"n2:7000=n4:7000\"]\n");
        assert_eq!(
            load(&replaced, true, None).unwrap(),
            ["n1:7000", "n2:7000", "n3:7000"]
        );
        for (toml, cluster, member, why) in [
            (
                format!("index_groups = 4\n{nodes}"),
                false,
                None,
                "needs a ring",
            ),
            (nodes.to_owned(), true, None, "set index_groups"),
            (
                "index_groups = 4\n[cluster]\nindex_nodes = [\"n1\"]\n".to_owned(),
                true,
                None,
                "HOST:PORT",
            ),
            (
                "index_groups = 4\n[cluster]\nindex_replaced = [\"n1:7000=n4:7000\"]\n".to_owned(),
                true,
                None,
                "set it",
            ),
            (
                format!("index_groups = 4\n{nodes}index_replaced = [\"n9:7000=n4:7000\"]\n"),
                true,
                None,
                "no node of the list",
            ),
        ] {
            let refused = format!("{:#}", load(&toml, cluster, member).unwrap_err());
            assert!(refused.contains(why), "{toml}: {refused}");
        }
    }

    /// Members of a replicated metadata service are named by position or
    /// by id; a member must be one of them.
    #[test]
    fn metadata_members_are_named_by_position_or_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, secret) = (dir.path().join("ring"), dir.path().join("secret"));
        let load = |metadata: &str, member: Option<u64>| {
            let overrides = ConfigOverrides {
                ring: Some(ring.clone()),
                cluster_secret_file: Some(secret.clone()),
                metadata: Some(metadata.into()),
                metadata_member: member,
                ..Default::default()
            };
            Config::load(None, overrides).map(|config| config.cluster)
        };
        let positional = load("a:1, http://b:2/,c:3", Some(3)).unwrap();
        assert_eq!(
            positional.metadata_members(),
            [(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())]
        );
        let named = load("4=d:4,2=b:2,3=c:3", Some(4)).unwrap();
        assert_eq!(
            named.metadata_members(),
            [(4, "d:4".into()), (2, "b:2".into()), (3, "c:3".into())]
        );
        assert_eq!(named.metadata_addresses(), ["d:4", "b:2", "c:3"]);
        for (bad, member, why) in [
            ("4=d:4,2=b:2", Some(1), "not a member"),
            ("a:1,b:2", Some(3), "not a member"),
            ("4=d:4,b:2", None, "all or none"),
            ("0=a:1", None, "from 1"),
            ("x=a:1", None, "from 1"),
            ("1=a:1,1=b:2", None, "member 1 twice"),
            ("1=a:1,2=a:1", None, "a:1 twice"),
            ("1=a:1=2", None, "HOST:PORT"),
        ] {
            let refused = load(bad, member).unwrap_err().to_string();
            assert!(refused.contains(why), "{bad}: {refused}");
        }
    }

    /// A cluster's CA needs a cluster, and a certificate on every gateway
    /// that others call; a certificate goes with its key.
    #[test]
    fn tls_settings_go_together() {
        let load = |toml: &str| Config::parse_toml(toml).and_then(|mut c| c.validate().map(|_| c));
        let cluster = "[cluster]\nring = \"r\"\nsecret_file = \"s\"\ntls_ca = \"ca.pem\"\n";
        let certificate = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        assert!(load(certificate).is_ok(), "HTTPS without a cluster");
        assert!(load(&format!("{certificate}{cluster}")).is_ok());
        let client = format!("{cluster}metadata = \"https://a:1\"\n");
        assert!(
            load(&client).is_ok(),
            "a gateway nobody calls needs no certificate"
        );
        for (toml, why) in [
            ("tls_cert = \"c.pem\"\n".to_owned(), "go together"),
            (
                "[cluster]\ntls_ca = \"ca.pem\"\n".to_owned(),
                "needs a ring",
            ),
            (cluster.to_owned(), "needs tls_cert"),
            (format!("{client}metadata_member = 1\n"), "needs tls_cert"),
            (
                "[cluster]\nring = \"r\"\nsecret_file = \"s\"\nmetadata = \"https://a:1\"\n"
                    .to_owned(),
                "no cluster CA",
            ),
        ] {
            let refused = load(&toml).unwrap_err().to_string();
            assert!(refused.contains(why), "{toml}: {refused}");
        }
    }

    /// Fills held in memory are bounded (64 MiB); fills written to an SSD
    /// zone are bounded by the zone.
    #[test]
    fn cached_objects_are_bounded_by_what_one_fill_may_hold_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        let load = |toml: &str| {
            std::fs::write(&path, toml).unwrap();
            Config::load(Some(&path), ConfigOverrides::default())
        };
        assert!(load("[cache]\nmax_object_bytes = 67108864\n").is_ok());
        let refused = load("[cache]\nmax_object_bytes = 67108865\n").unwrap_err();
        assert!(
            refused.to_string().contains("cache.max_object_bytes"),
            "{refused}"
        );
        let zone = format!(
            "[[cache.zone]]\npath = \"{}\"\nmax_bytes = \"1G\"\n",
            dir.path().join("zone").display()
        );
        assert!(
            load(&format!(
                "[cache]\nmax_object_bytes = 1099511627776\n{zone}"
            ))
            .is_ok()
        );
    }
}

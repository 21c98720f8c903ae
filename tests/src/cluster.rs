//! A cluster on loopback: storage nodes (`strata node`, each on its own port
//! and data directory), the ring and secret files they share, and gateways
//! (`strata serve --ring`) in front of them.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;

use crate::certs::Certificates;
use crate::proxy::{Partition, Proxy};
use crate::server::strata_binary;
use crate::{Server, ToolOutput, run_tool};

/// How long a node may take to accept connections after it was spawned.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// One `strata node` child. Killed when dropped.
pub struct StorageNode {
    /// The node's name in the ring: where everyone reaches it.
    pub address: String,
    /// Where the process listens: its address, or behind a proxy another.
    listen: String,
    proxy: Option<Proxy>,
    /// The node's device id in the ring.
    pub device: u32,
    data: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// The partition the node is host `.1` of, if it is behind a front.
    host: Option<(Arc<Partition>, usize)>,
}

impl StorageNode {
    fn spawn(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("opening the node log")?;
        let mut command = Command::new(strata_binary()?);
        command
            .arg("node")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(&self.listen)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command.spawn().context("spawning strata node")?;
        if let Some((partition, host)) = &self.host {
            partition.place(*host, child.id());
        }
        self.child = Some(child);
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        while TcpStream::connect(&self.listen).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                bail!(
                    "strata node on {} did not start ({exited:?}); log tail:\n{}",
                    self.address,
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Gives the node `args` too from its next start.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing strata node")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Whether the node's process exits within `bound`, and how.
    pub fn exits_within(&mut self, bound: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + bound;
        while let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Starts the node again on the same address and data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Cuts the node off the network: requests to it hang (its own requests
    /// to others still pass). Only for clusters started behind proxies.
    pub fn cut_off(&self) -> Result<()> {
        self.proxy
            .as_ref()
            .context("the node is not behind a proxy")?
            .cut();
        Ok(())
    }

    /// Lets `bytes` more of the node's replies through, then holds the
    /// rest until [`StorageNode::reconnect`]. Only behind proxies.
    pub fn throttle(&self, bytes: u64) -> Result<()> {
        self.proxy
            .as_ref()
            .context("the node is not behind a proxy")?
            .throttle(bytes);
        Ok(())
    }

    pub fn reconnect(&self) -> Result<()> {
        self.proxy
            .as_ref()
            .context("the node is not behind a proxy")?
            .heal();
        Ok(())
    }

    /// Sets a command-line option of `strata node` for the next (re)start.
    pub fn set_option(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|arg| arg == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value.to_owned(),
            _ => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log_tail(&self, n_lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n_lines)..].join("\n")
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Storage nodes with a ring builder, the ring and the cluster secret.
pub struct Cluster {
    /// Dropped first: nodes stop before their files are removed.
    pub nodes: Vec<StorageNode>,
    /// Whether every node is reached through a [`Proxy`] that can cut it off.
    behind_proxies: bool,
    /// With `behind_proxies`, the partition whose fronts the proxies are
    /// (node `i` is its host `i`).
    partition: Option<Arc<Partition>>,
    /// Members speak TLS, with certificates of this CA.
    tls: Option<Certificates>,
    /// Index groups the nodes hold (0: none).
    index_groups: u16,
    /// The nodes the index groups were founded on, in order.
    index_nodes: Vec<String>,
    /// Nodes of `index_nodes` replaced, `OLD=NEW` each.
    index_replaced: Vec<String>,
    dir: TempDir,
}

impl Cluster {
    /// `n_nodes` nodes, each in its own zone, in a ring of `2^part_power`
    /// partitions and `replicas` copies; every node replicates each second.
    pub fn start(n_nodes: usize, part_power: u8, replicas: u8) -> Result<Cluster> {
        Self::start_with(n_nodes, part_power, replicas, false, None, false, 0)
    }

    /// Like [`Cluster::start`], with the nodes holding `groups` index
    /// groups (`--index-groups`, and `--index-nodes` naming every node in
    /// order): gateways started with [`Cluster::index_config`] keep their
    /// buckets' objects there.
    pub fn start_holding_index_groups(
        n_nodes: usize,
        part_power: u8,
        replicas: u8,
        groups: u16,
    ) -> Result<Cluster> {
        Self::start_with(n_nodes, part_power, replicas, false, None, false, groups)
    }

    /// Like [`Cluster::start`], with members that speak TLS to each other:
    /// nodes serve TLS only, and gateways (started with the cluster's
    /// arguments) present a certificate of the cluster's CA, [`Cluster::tls`].
    pub fn start_with_tls(n_nodes: usize, part_power: u8, replicas: u8) -> Result<Cluster> {
        Self::start_with(n_nodes, part_power, replicas, false, None, true, 0)
    }

    /// Like [`Cluster::start`], with each node behind a proxy: the ring names
    /// the proxy, so gateways and peers alike reach the node through it.
    pub fn start_behind_proxies(n_nodes: usize, part_power: u8, replicas: u8) -> Result<Cluster> {
        Self::start_with(n_nodes, part_power, replicas, true, None, false, 0)
    }

    /// Like [`Cluster::start_behind_proxies`], with the proxies the fronts
    /// of `partition`, node `i` its host `i`: links between two nodes can
    /// be cut while each still reaches the rest.
    pub fn start_partitionable(
        partition: &Arc<Partition>,
        n_nodes: usize,
        part_power: u8,
        replicas: u8,
    ) -> Result<Cluster> {
        Self::start_with(
            n_nodes,
            part_power,
            replicas,
            true,
            Some(partition.clone()),
            false,
            0,
        )
    }

    fn start_with(
        n_nodes: usize,
        part_power: u8,
        replicas: u8,
        behind_proxies: bool,
        partition: Option<Arc<Partition>>,
        tls: bool,
        index_groups: u16,
    ) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-cluster-")
            .tempdir()?;
        let tls = match tls {
            true => Some(Certificates::make(&dir.path().join("tls"))?),
            false => None,
        };
        fs::write(
            dir.path().join("secret"),
            format!("e2e-cluster-secret-{:016x}\n", rand::random::<u64>()),
        )?;
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            behind_proxies,
            partition,
            tls,
            index_groups,
            index_nodes: Vec::new(),
            index_replaced: Vec::new(),
        };
        cluster.strata_ok(&[
            "ring",
            "create",
            &cluster.builder(),
            "--part-power",
            &part_power.to_string(),
            "--replicas",
            &replicas.to_string(),
            "--cluster-id",
            "e2e",
            // Tests rebalance again within seconds, after the replicator
            // moved what the last rebalance asked (`wait_settled`).
            "--min-part-hours",
            "0",
        ])?;
        for _ in 0..n_nodes {
            cluster.add_node_to_builder()?;
        }
        cluster.rebalance()?;
        if index_groups > 0 {
            cluster.index_nodes = cluster
                .nodes
                .iter()
                .map(|node| node.address.clone())
                .collect();
            let args = cluster.index_args();
            for node in &mut cluster.nodes {
                node.args.extend(args.iter().cloned());
            }
        }
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        Ok(cluster)
    }

    fn builder(&self) -> String {
        self.dir.path().join("ring.builder").display().to_string()
    }

    pub fn ring(&self) -> String {
        self.dir
            .path()
            .join("ring.builder.ring")
            .display()
            .to_string()
    }

    pub fn secret(&self) -> String {
        self.dir.path().join("secret").display().to_string()
    }

    /// A metadata call `body` signed with the cluster's secret as members
    /// sign theirs, with a nonce of its own, to be sent in plain text or
    /// over TLS: its path and its `x-strata-auth` header line. What a
    /// member's call shows someone watching a plain-text network.
    pub fn signed_meta_call(&self, body: &str, over_tls: bool) -> Result<(String, String)> {
        self.signed_meta_attempt(body, over_tls, rand::random(), 0)
    }

    /// Attempt number `attempt` of a metadata call whose attempts all
    /// carry `nonce`, as a member's are, each signed when it is sent.
    pub fn signed_meta_attempt(
        &self,
        body: &str,
        over_tls: bool,
        nonce: u64,
        attempt: u32,
    ) -> Result<(String, String)> {
        let path = format!(
            "/internal/v1/meta?sha256={}&nonce={nonce:016x}&attempt={attempt}",
            crate::sha256_hex(body.as_bytes()),
        );
        let signature = self.signature("POST", &path, over_tls)?;
        Ok((path, signature))
    }

    /// The `x-strata-auth` header line that signs `method path_and_query`
    /// with the cluster's secret, now, as members sign their requests.
    pub fn signature(&self, method: &str, path_and_query: &str, over_tls: bool) -> Result<String> {
        use hmac::Mac as _;
        let secret = fs::read_to_string(self.secret())?;
        let time = unix_now();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.trim().as_bytes())?;
        mac.update(format!("{method}\n{path_and_query}\n{time}").as_bytes());
        if over_tls {
            mac.update(b"\ntls");
        }
        Ok(format!(
            "x-strata-auth: {time}:{}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// The CA and the certificate of a cluster that speaks TLS.
    pub fn tls(&self) -> Option<&Certificates> {
        self.tls.as_ref()
    }

    /// What every command of the cluster is given: `--ring`, then
    /// `--cluster-secret-file` and, if it speaks TLS, `--cluster-tls-ca`.
    pub fn cluster_args(&self) -> Vec<String> {
        let mut args = vec![
            "--ring".into(),
            self.ring(),
            "--cluster-secret-file".into(),
            self.secret(),
        ];
        if let Some(tls) = &self.tls {
            args.extend(["--cluster-tls-ca".into(), tls.ca.display().to_string()]);
        }
        args
    }

    /// What a gateway or a node of the cluster is given: the cluster's
    /// arguments and, if it speaks TLS, the certificate it presents.
    fn member_args(&self) -> Vec<String> {
        let mut args = self.cluster_args();
        if let Some(tls) = &self.tls {
            args.extend([
                "--tls-cert".into(),
                tls.cert.display().to_string(),
                "--tls-key".into(),
                tls.key.display().to_string(),
            ]);
        }
        args
    }

    /// `strata serve` with extents on this cluster.
    pub fn gateway(&self) -> Result<Server> {
        self.gateway_with_config("")
    }

    /// Like [`Cluster::gateway`], with a config file (empty: none).
    pub fn gateway_with_config(&self, toml: &str) -> Result<Server> {
        let args = self.member_args();
        Server::start_with_config_and_args(
            toml,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// A second gateway over this cluster that takes its metadata from
    /// `service` (`--metadata`), a gateway started with [`Cluster::gateway`].
    pub fn gateway_over(&self, service: &Server) -> Result<Server> {
        self.gateway_over_address(&format!("127.0.0.1:{}", service.port()))
    }

    /// Like [`Cluster::gateway_over`], with a config file (empty: none).
    pub fn gateway_over_with_config(&self, service: &Server, toml: &str) -> Result<Server> {
        self.gateway_over_address_with_config(&format!("127.0.0.1:{}", service.port()), toml)
    }

    /// A second gateway that reaches the metadata service at `address` (a
    /// [`crate::Proxy`] in front of it, say).
    pub fn gateway_over_address(&self, address: &str) -> Result<Server> {
        self.gateway_over_address_with_config(address, "")
    }

    /// Like [`Cluster::gateway_over_address`], with a config file (empty:
    /// none).
    pub fn gateway_over_address_with_config(&self, address: &str, toml: &str) -> Result<Server> {
        let args = self.metadata_args(address);
        Server::start_with_config_and_args(
            toml,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Like [`Cluster::gateway_over`], with a ring file of its own at
    /// `ring` (a copy, which a rebalance does not rewrite).
    pub fn gateway_over_with_ring(&self, service: &Server, ring: &str) -> Result<Server> {
        let mut args = self.metadata_args(&format!("127.0.0.1:{}", service.port()));
        args[1] = ring.to_owned();
        Server::start_with_config_and_args("", &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The arguments of a gateway on this cluster whose metadata service is
    /// at `metadata` (the ring's path second).
    fn metadata_args(&self, metadata: &str) -> Vec<String> {
        let mut args = self.member_args();
        args.extend(["--metadata".into(), metadata.into()]);
        args
    }

    /// Starts `n` gateways that are the members of a replicated metadata
    /// service (all at once: none is ready before a majority is up).
    pub fn metadata_group(&self, n: usize) -> Result<Vec<Server>> {
        self.metadata_group_with_config(n, "")
    }

    /// Like [`Cluster::metadata_group`], each member with a config file
    /// (empty: none).
    pub fn metadata_group_with_config(&self, n: usize, toml: &str) -> Result<Vec<Server>> {
        let addresses = free_addresses(n)?;
        self.start_metadata_group(&addresses, &addresses.join(","), toml)
    }

    /// Starts `n` members of a replicated metadata service, each reached
    /// by the others (and by whoever is given the returned `--metadata`
    /// list) only through its front proxy in `partition`, as host `index`
    /// (from 0), so that the test can cut links between them.
    pub fn metadata_group_behind(
        &self,
        partition: &Arc<Partition>,
        n: usize,
    ) -> Result<(Vec<Server>, Vec<Proxy>)> {
        // The members' ports stay taken while the fronts pick theirs: a
        // front on a member's port would hand that member the others'
        // messages for another (openraft's core panics at answers from
        // the wrong member).
        let (reserved, addresses) = reserve_ports(n)?;
        let fronts = addresses
            .iter()
            .enumerate()
            .map(|(host, address)| Proxy::front(partition, host, "127.0.0.1:0", address))
            .collect::<Result<Vec<_>>>()?;
        drop(reserved);
        let listed: Vec<&str> = fronts.iter().map(|front| front.address.as_str()).collect();
        let members = self.start_metadata_group(&addresses, &listed.join(","), "")?;
        for (host, member) in members.iter().enumerate() {
            partition.place(host, member.pid().context("a member is not running")?);
        }
        Ok((members, fronts))
    }

    /// Starts the members listening on `addresses`, each told the members
    /// are `members` (all at once: none is ready before a majority is up).
    fn start_metadata_group(
        &self,
        addresses: &[String],
        members: &str,
        toml: &str,
    ) -> Result<Vec<Server>> {
        std::thread::scope(|scope| {
            let starting: Vec<_> = addresses
                .iter()
                .enumerate()
                .map(|(index, address)| {
                    let mut args = self.metadata_args(members);
                    args.extend(["--metadata-member".into(), (index + 1).to_string()]);
                    scope.spawn(move || {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        Server::start_listening_on(address, toml, &args)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("starting a member panicked"))?
                })
                .collect()
        })
    }

    /// Starts a gateway that joins the replicated metadata service whose
    /// members are at `members` (ids 1, 2, …) as member `members.len() +
    /// 1`, to be added with `strata metadata add`. Its `--metadata` names
    /// every member with its id, itself first: ids, not positions.
    pub fn metadata_joiner(&self, members: &[String]) -> Result<Server> {
        self.metadata_joiner_with_config(members, "")
    }

    /// Like [`Cluster::metadata_joiner`], with a config file (empty: none).
    pub fn metadata_joiner_with_config(&self, members: &[String], toml: &str) -> Result<Server> {
        let address = free_address()?;
        let id = (members.len() + 1).to_string();
        let all = std::iter::once(format!("{id}={address}"))
            .chain(
                (1..)
                    .zip(members)
                    .map(|(id, member)| format!("{id}={member}")),
            )
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<&str> = Vec::new();
        let metadata_args = self.metadata_args(&all);
        args.extend(metadata_args.iter().map(String::as_str));
        args.extend(["--metadata-member", &id, "--metadata-join"]);
        Server::start_listening_on(&address, toml, &args)
    }

    /// `strata metadata ARGS --json` against the replicated metadata
    /// service whose members `members` lists: its answer.
    pub fn metadata_json(&self, members: &str, args: &[&str]) -> Result<serde_json::Value> {
        let secret = self.secret();
        let mut command = vec!["metadata", "--metadata", members];
        command.extend(["--cluster-secret-file", &secret, "--json"]);
        command.extend(args);
        Ok(serde_json::from_slice(&self.strata_ok(&command)?.stdout)?)
    }

    /// Runs `strata ARGS` with the cluster's files at hand.
    pub fn strata(&self, args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new(strata_binary()?);
        command.args(args).env("NO_COLOR", "1");
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    pub fn strata_ok(&self, args: &[&str]) -> Result<ToolOutput> {
        self.strata(args)?.expect_success()
    }

    /// Adds a device for a new node (a free port, its own zone) to the builder;
    /// the node is not started.
    fn add_node_to_builder(&mut self) -> Result<usize> {
        let address = free_address()?;
        let index = self.nodes.len();
        let zone = (index + 1).to_string();
        let added = self.strata_ok(&[
            "ring",
            "add",
            &self.builder(),
            "--node",
            &address,
            "--zone",
            &zone,
            "--weight",
            "100",
        ])?;
        let device = added
            .stdout_text()
            .split_whitespace()
            .nth(2)
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("no device id in {added}"))?;
        let data = self.dir.path().join(format!("node-{index}"));
        let host = self.partition.clone().map(|partition| (partition, index));
        let (listen, proxy) = if self.behind_proxies {
            let listen = free_address()?;
            let proxy = match &host {
                Some((partition, host)) => Proxy::front(partition, *host, &address, &listen)?,
                None => Proxy::start(&address, &listen)?,
            };
            (listen, Some(proxy))
        } else {
            (address.clone(), None)
        };
        self.nodes.push(StorageNode {
            log: self.dir.path().join(format!("node-{index}.log")),
            address,
            listen,
            proxy,
            device,
            data,
            args: [
                self.member_args(),
                vec![
                    "--replication-interval".into(),
                    "1".into(),
                    "--audit-mib-per-sec".into(),
                    "64".into(),
                    "--audit-pause".into(),
                    "1".into(),
                ],
            ]
            .concat(),
            child: None,
            host,
        });
        Ok(index)
    }

    /// Starts one more node in a zone of its own and rebalances onto it.
    pub fn add_node(&mut self) -> Result<usize> {
        let index = self.add_node_to_builder()?;
        self.nodes[index].spawn()?;
        self.rebalance()?;
        Ok(index)
    }

    /// Takes a node's device out of the ring and rebalances; the node runs on.
    pub fn remove_node(&mut self, index: usize) -> Result<()> {
        let device = self.nodes[index].device.to_string();
        self.strata_ok(&["ring", "remove", &self.builder(), &device])?;
        self.rebalance()
    }

    pub fn rebalance(&self) -> Result<()> {
        self.strata_ok(&["ring", "rebalance", &self.builder()])?;
        Ok(())
    }

    /// A node's arguments for holding its index groups.
    fn index_args(&self) -> Vec<String> {
        let mut args = vec![
            "--index-groups".into(),
            self.index_groups.to_string(),
            "--index-nodes".into(),
            self.index_nodes.join(","),
        ];
        if !self.index_replaced.is_empty() {
            args.extend(["--index-replaced".into(), self.index_replaced.join(",")]);
        }
        args
    }

    /// Replaces node `index`, lost for good, in the index groups and the
    /// ring: a new node (a free port, a zone and data of its own) started
    /// with `--index-replaced OLD=NEW` joins the groups of the old one's
    /// position and takes it out of them, and the ring trades the old
    /// device for the new one. Gateways started with
    /// [`Cluster::index_config`] from now on name it. The new node's index.
    pub fn replace_index_node(&mut self, index: usize) -> Result<usize> {
        ensure!(self.index_groups > 0, "the nodes hold no index group");
        let new = self.add_node_to_builder()?;
        let entry = format!("{}={}", self.nodes[index].address, self.nodes[new].address);
        self.index_replaced.push(entry);
        let args = self.index_args();
        self.nodes[new].args.extend(args);
        self.nodes[new].spawn()?;
        self.remove_node(index)?;
        Ok(new)
    }

    /// The config of a gateway whose buckets keep their objects in the
    /// index groups the nodes hold ([`Cluster::start_holding_index_groups`]).
    pub fn index_config(&self) -> String {
        let quoted = |names: &[String]| {
            let quoted: Vec<_> = names.iter().map(|name| format!("{name:?}")).collect();
            quoted.join(", ")
        };
        format!(
            "index_groups = {}\n[cluster]\nindex_nodes = [{}]\nindex_replaced = [{}]\n",
            self.index_groups,
            quoted(&self.index_nodes),
            quoted(&self.index_replaced)
        )
    }

    /// Metadata call `body` (a `MetaCall` in JSON) to index group `group`
    /// at node `node`, signed as members sign theirs: the status and the
    /// answer.
    pub fn node_meta_call(&self, node: usize, group: u16, body: &str) -> Result<(u16, String)> {
        self.node_call(node, &format!("/internal/v1/meta/{group}"), body)
    }

    /// Membership call `body` (a `MembershipChange` in JSON) to index
    /// group `group` at node `node`, signed as members sign theirs: the
    /// status and the answer.
    pub fn node_members_call(&self, node: usize, group: u16, body: &str) -> Result<(u16, String)> {
        self.node_call(node, &format!("/internal/v1/members/{group}"), body)
    }

    /// A signed internal call `POST path` to node `node` with `body`.
    fn node_call(&self, node: usize, path: &str, body: &str) -> Result<(u16, String)> {
        let path = format!(
            "{path}?sha256={}&nonce={:016x}&attempt=0",
            crate::sha256_hex(body.as_bytes()),
            rand::random::<u64>()
        );
        let signature = self.signature("POST", &path, false)?;
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-X", "POST", "-H", &signature])
            .args(["--data-binary", body, "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.nodes[node].address));
        let output = run_tool(&mut command, TOOL_TIMEOUT)?;
        let text = output.stdout_text();
        let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status
            .trim()
            .parse()
            .with_context(|| format!("no status from curl: {output}"))?;
        Ok((status, answer.to_owned()))
    }

    /// `strata status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        self.status_with(&self.cluster_args())
    }

    /// `strata status --json ARGS`.
    pub fn status_with(&self, args: &[String]) -> Result<serde_json::Value> {
        let mut command = vec!["status", "--json"];
        command.extend(args.iter().map(String::as_str));
        self.strata_ok(&command)?.json()
    }

    /// Waits until `strata status` says replication has settled, in passes
    /// that every node started after `since` (unix seconds): all nodes up on
    /// the current ring, nothing out of sync, no handoff data left.
    pub fn wait_settled(&self, since: u64, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status()?;
            let fresh = status["reports"].as_array().is_some_and(|reports| {
                reports.iter().all(|report| {
                    report["status"]["replication"]["last_pass_started"]
                        .as_u64()
                        .is_some_and(|started| started > since)
                })
            });
            if fresh && status["settled"] == true {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("replication did not settle within {timeout:?}; last status:\n{status:#}");
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A loopback address with a port nobody listens on now.
fn free_address() -> Result<String> {
    Ok(reserve_port()?.local_addr()?.to_string())
}

/// `n` loopback addresses nobody listens on now, all different.
fn free_addresses(n: usize) -> Result<Vec<String>> {
    Ok(reserve_ports(n)?.1)
}

/// `n` ports held ([`reserve_port`]) and their addresses: none repeats
/// while the listeners live.
fn reserve_ports(n: usize) -> Result<(Vec<TcpListener>, Vec<String>)> {
    let reserved = (0..n).map(|_| reserve_port()).collect::<Result<Vec<_>>>()?;
    let addresses = (reserved.iter())
        .map(|listener| Ok(listener.local_addr()?.to_string()))
        .collect::<Result<Vec<_>>>()?;
    Ok((reserved, addresses))
}

/// A loopback listener on a port below the kernel's ephemeral range. The
/// processes a test starts are told their ports before they bind them, and
/// a port the kernel hands out meanwhile (to a bind on port 0 or to an
/// outgoing connection, of this test or of another running beside it)
/// would be taken from under them; below the range, only other such
/// picks, at random and checked by binding, can take it.
fn reserve_port() -> Result<TcpListener> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let ephemeral_start = range
        .as_deref()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_start > LOWEST + 1_000 {
        for _ in 0..100 {
            let port = rand::random_range(LOWEST..ephemeral_start);
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                return Ok(listener);
            }
        }
    }
    // A range that starts low, or ports below it all taken: the kernel's
    // choice.
    Ok(TcpListener::bind("127.0.0.1:0")?)
}

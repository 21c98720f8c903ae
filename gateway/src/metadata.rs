//! The metadata service over HTTP: how gateways that name other gateways in
//! `cluster.metadata` reach the metadata, and how those gateways answer —
//! one gateway's own store, or the members of a replicated service
//! (`strata_meta`), which also send each other Raft's messages.
//!
//! ```text
//! POST /internal/v1/meta?sha256=HEX         a JSON call  → 200 JSON answer
//!                                                         421 {"leader": ADDR|null}: ask the leader
//!                                                         503 no quorum, or outcome unknown
//! POST /internal/v1/raft/{append,vote,snapshot}?sha256=HEX  → 200 JSON Result (root group)
//! POST /internal/v1/raft/{index}/{append,vote,snapshot}?sha256=HEX  (index group: 404 until
//!                                                         gateways run index groups)
//! POST /internal/v1/members?sha256=HEX      a JSON MembershipChange → 200 JSON Membership
//!                                                         421 {"leader": ADDR|null}: ask the leader
//! ```
//!
//! Requests are signed with the cluster secret like every request between
//! members, and the body's digest is part of what is signed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::wire::RequestBody;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt as _;
use strata_meta::{GroupId, MembershipChange, MetaService, RaftRpc, RaftTransport, Routed};
use strata_pool::wire::{self, ClusterSecret};
use strata_pool::{ClusterTls, NodeClient};
use strata_store::{MetaTransport, Store, TransportError};

use crate::wire::{OverTls, Response, full_body, text_response};

pub const META_PATH: &str = "/internal/v1/meta";

/// Where the calls of index group `group` go (0: the root group's, at
/// [`META_PATH`] as before there were groups).
fn meta_path(group: u16) -> String {
    group_path(META_PATH, group)
}

/// The group a path under [`META_PATH`] names.
fn parse_meta_path(path: &str) -> Option<u16> {
    parse_group_path(META_PATH, path)
}

/// `base` for the root group, `base/{group}` for an index group.
fn group_path(base: &str, group: u16) -> String {
    match group {
        0 => base.to_owned(),
        group => format!("{base}/{group}"),
    }
}

/// The group a path of [`group_path`]'s names.
fn parse_group_path(base: &str, path: &str) -> Option<u16> {
    match path.strip_prefix(base)? {
        "" => Some(0),
        // The root group's path has no number.
        rest => parse_group_number(rest.strip_prefix('/')?).filter(|group| *group != 0),
    }
}

/// A group's number as paths write it: decimal digits without a leading
/// zero, so that each group has one path (`u16::from_str` would also take
/// `+1` and `01`).
fn parse_group_number(number: &str) -> Option<u16> {
    let digits = number.bytes().all(|byte| byte.is_ascii_digit());
    let canonical = digits && (number == "0" || !number.starts_with('0'));
    number.parse().ok().filter(|_| canonical)
}

/// Largest call accepted (a multipart completion of 10,000 parts is ~1 MB).
const MAX_CALL_BYTES: usize = 16 << 20;
/// Largest Raft message accepted (a batch of up to 32 entries).
const MAX_RAFT_BYTES: usize = 64 << 20;

pub const RAFT_PATH: &str = "/internal/v1/raft/";

/// Where `group`'s Raft messages go: the root group's where they went
/// before there were groups; an index group's one level below, which a
/// member that has no groups answers with a 404, never as the root's.
fn raft_path(group: GroupId, rpc: RaftRpc) -> String {
    match group {
        GroupId::Root => format!("{RAFT_PATH}{}", rpc.name()),
        GroupId::Index(index) => format!("{RAFT_PATH}{index}/{}", rpc.name()),
    }
}

/// The query parameter naming the member a Raft message is for.
const RAFT_TARGET_PARAM: &str = "to";

/// The member a Raft message's query names, if it names one.
fn raft_target(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(to) = query.and_then(|query| wire::query_param(query, RAFT_TARGET_PARAM)) else {
        return Ok(None);
    };
    to.parse()
        .map(Some)
        .map_err(|_| format!("{RAFT_TARGET_PARAM}={to} is not a member id\n"))
}

/// The group and message a path under [`RAFT_PATH`] names.
fn parse_raft_path(path: &str) -> Option<(GroupId, RaftRpc)> {
    let rest = path.strip_prefix(RAFT_PATH)?;
    let (group, name) = match rest.split_once('/') {
        None => (GroupId::Root, rest),
        Some((index, name)) => (GroupId::Index(parse_group_number(index)?), name),
    };
    Some((group, RaftRpc::from_name(name)?))
}

/// Changes (or shows) a replicated service's members: `strata metadata`.
pub const MEMBERS_PATH: &str = "/internal/v1/members";

/// A member's own view of a group ([`strata_meta::MetaStatus`]), answered
/// with or without a leader: what `strata metadata` shows when no member
/// leads.
const VIEW_PATH: &str = "/internal/v1/view";

/// Where a member's view of group `group` is asked (0: the root group's).
pub fn view_path(group: u16) -> String {
    group_path(VIEW_PATH, group)
}

/// Where the membership changes of index group `group` go (0: the root
/// group's, at [`MEMBERS_PATH`]).
pub fn members_path(group: u16) -> String {
    group_path(MEMBERS_PATH, group)
}

/// The group a path under [`MEMBERS_PATH`] names.
fn parse_members_path(path: &str) -> Option<u16> {
    parse_group_path(MEMBERS_PATH, path)
}

/// How much sooner than its caller stops waiting a member answers a long
/// poll: time for the answer to travel.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// How long a call waits for a group without a leader to elect one, from
/// when it first finds none (a feed's long poll may have waited its whole
/// wait at the last leader before).
const LEADER_PATIENCE: Duration = Duration::from_secs(10);

/// How long a gateway that is not a member waits on a member's answer
/// before it asks another, every as long again, whether it leads now: a
/// leader answers within a few seconds, or says it cannot (a long poll of
/// the feed is given its wait on top).
const LEADER_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Calls to the metadata service: one gateway, or the members of a
/// replicated service, of which the one that answered last (the leader) is
/// asked first; on a member, its own member is asked before any.
pub struct HttpMetaTransport {
    client: NodeClient,
    /// The members configured, then any leader a member named that was
    /// not among them (one added since).
    addresses: parking_lot::RwLock<Vec<String>>,
    /// Index in `addresses` of the member asked first.
    leader: AtomicUsize,
    /// This gateway's own member of the service, when it is one.
    local: Option<Arc<MetaService>>,
    /// Where calls go: the root group's path, or an index group's.
    path: String,
}

impl HttpMetaTransport {
    pub fn new(secret: ClusterSecret, tls: Option<&ClusterTls>, addresses: Vec<String>) -> Self {
        HttpMetaTransport {
            client: NodeClient::new(secret, tls, Duration::from_secs(30)),
            addresses: parking_lot::RwLock::new(addresses),
            leader: AtomicUsize::new(0),
            local: None,
            path: META_PATH.to_owned(),
        }
    }

    /// The transport of index group `group`'s calls (`Store::route`), to
    /// a gateway that holds the metadata alone or to a replicated service,
    /// `local` this gateway's member of the group if it is one.
    pub fn for_index_group(
        secret: ClusterSecret,
        tls: Option<&ClusterTls>,
        addresses: Vec<String>,
        group: u16,
        local: Option<Arc<MetaService>>,
    ) -> Self {
        HttpMetaTransport {
            path: meta_path(group),
            local,
            ..HttpMetaTransport::new(secret, tls, addresses)
        }
    }

    /// The transport of a gateway that is itself the member `local`: each
    /// call goes to its own member first, which answers when it leads and
    /// otherwise names the leader it follows. Its view of who leads is the
    /// group's, so a leader cut off by a partition is left as soon as the
    /// others elect another, instead of being asked until a call times out.
    pub fn of_member(
        secret: ClusterSecret,
        tls: Option<&ClusterTls>,
        addresses: Vec<String>,
        local: Arc<MetaService>,
    ) -> Self {
        HttpMetaTransport {
            local: Some(local),
            ..HttpMetaTransport::new(secret, tls, addresses)
        }
    }

    /// The index of `address` among the members, learnt if it is new.
    fn index_of(&self, address: &str) -> usize {
        if let Some(index) = self
            .addresses
            .read()
            .iter()
            .position(|known| known == address)
        {
            return index;
        }
        let mut addresses = self.addresses.write();
        match addresses.iter().position(|known| known == address) {
            Some(index) => index,
            None => {
                tracing::info!(address, "a metadata member not configured leads: asking it");
                addresses.push(address.to_owned());
                addresses.len() - 1
            }
        }
    }

    /// The next call asks the member after the one at `index` first.
    fn ask_next_first(&self, index: usize, n_members: usize) {
        self.leader
            .store((index + 1) % n_members, Ordering::Relaxed);
    }

    /// Resolves once the member at `waited_on` is known not to lead: this
    /// gateway's own member follows another, or (on a gateway that is not a
    /// member) another member confirmed with a majority that it leads. A
    /// call waiting on a leader that a partition cut off from the others
    /// then stops waiting when they elect a new one, not when its timeout
    /// ends.
    async fn deposed(&self, waited_on: &str, request: &Bytes) {
        if let Some(local) = &self.local {
            return local.leader_moved_from(waited_on).await;
        }
        // A long poll is held that long by design: asking about it before
        // then would cost the others requests for nothing, all the time.
        tokio::time::sleep(LEADER_PROBE_INTERVAL).await;
        tokio::time::sleep(Store::meta_call_wait(request)).await;
        let probe = Bytes::from(Store::leader_probe_call());
        let mut next: Option<String> = None;
        let mut pause = false;
        for turn in 0usize.. {
            if pause {
                tokio::time::sleep(LEADER_PROBE_INTERVAL).await;
            }
            let following_hint = next.is_some();
            // The leader another member named last, else each in turn.
            let other = next.take().or_else(|| {
                let addresses = self.addresses.read();
                let others: Vec<&String> = addresses
                    .iter()
                    .filter(|address| *address != waited_on)
                    .collect();
                (!others.is_empty()).then(|| others[turn % others.len()].clone())
            });
            // One service alone: nobody else to ask.
            let Some(other) = other else {
                return std::future::pending().await;
            };
            let client = self.client.with_timeout(LEADER_PROBE_INTERVAL);
            match client.post_bound(&other, &self.path, probe.clone()).await {
                // A leader answers a read once a majority confirmed it
                // leads: then `waited_on` does not.
                Ok((StatusCode::OK, _)) => return,
                // Only a hint: members that have not heard of an election
                // still name the old leader, so it is asked, not believed.
                Ok((StatusCode::MISDIRECTED_REQUEST, body)) => {
                    next = leader_hint(&body).filter(|leader| leader != waited_on);
                }
                _ => {}
            }
            // A leader just named is asked at once, once: members with
            // stale views may name each other.
            pause = next.is_none() || following_hint;
        }
    }

    /// Asks this gateway's own member, if it is one: `Ok` with the
    /// answer, or the refusal to return, or `Err` with the member to send
    /// the call to (`None`: not a member, or it knows no leader, as while
    /// it joins: the members configured are asked then).
    /// `nonce`: the call's, which the member records as the others would
    /// (an attempt it refused elsewhere, replayed, is then refused too).
    async fn ask_local(
        &self,
        request: &Bytes,
        nonce: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Result<Bytes, TransportError>, Option<usize>> {
        let Some(local) = &self.local else {
            return Err(None);
        };
        let signature = wire::CallSignature::for_nonce(nonce, wire::unix_now());
        let answer_by = deadline.into_std().checked_sub(ANSWER_MARGIN);
        let call = local.call_first(request, Some(signature), answer_by);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Routed::Answer(answer)) => Ok(Ok(Bytes::from(answer))),
            // Not confirmed by a majority: as a leader's 503.
            Ok(Routed::Unavailable(why)) => Ok(Err(TransportError::Unknown(why))),
            Err(_) => Ok(Err(TransportError::Unknown(
                "the metadata service did not answer in time".into(),
            ))),
            Ok(Routed::NotLeader(leader)) => Err(leader.map(|leader| self.index_of(&leader))),
        }
    }
}

/// What a member that is not the leader answers.
#[derive(serde::Serialize, serde::Deserialize)]
struct NotLeader {
    leader: Option<String>,
}

/// What a member that is not the leader answers with (421), naming the
/// leader it follows, if any.
pub(crate) fn not_leader_body(leader: Option<String>) -> Vec<u8> {
    serde_json::to_vec(&NotLeader { leader }).unwrap_or_default()
}

/// The leader a 421 answer (`NotLeader`) names, if any.
pub(crate) fn leader_hint(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<NotLeader>(body)
        .ok()
        .and_then(|not_leader| not_leader.leader)
}

#[async_trait]
impl MetaTransport for HttpMetaTransport {
    async fn call(&self, request: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut election_deadline = None;
        // Every attempt of this call carries the same nonce: the service
        // applies one of them at most, whichever member each reached
        // (`wire::CallSignature`).
        let nonce = rand::random::<u64>();
        let mut attempt = 0;
        let mut index = match self.ask_local(&request, nonce, deadline).await {
            Ok(outcome) => return outcome,
            Err(leader) => leader.unwrap_or_else(|| self.leader.load(Ordering::Relaxed)),
        };
        let mut not_sent = 0;
        // Members that answered that they do not keep the group.
        let mut missing = std::collections::BTreeSet::new();
        // A change that reached a member in plain text, even one that
        // refused it, may have been captured, and applied later by a
        // replay: not "nothing was done", so its staged body is kept (the
        // orphan sweep takes it if nothing names it).
        let writes = Store::meta_call_writes(&request) == Some(true);
        let mut sent_in_clear = false;
        let unsent = |sent_in_clear: bool, why: String| match sent_in_clear {
            false => TransportError::NotSent(why),
            true => TransportError::Unknown(format!(
                "{why} (a refused attempt went in plain text, and a replay could still apply it)"
            )),
        };
        loop {
            let (n_members, address) = {
                let addresses = self.addresses.read();
                index %= addresses.len().max(1);
                (addresses.len(), addresses.get(index).cloned())
            };
            let Some(address) = address else {
                return Err(unsent(
                    sent_in_clear,
                    "no metadata service configured".into(),
                ));
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                // Only calls that nothing was done for come round again.
                return Err(unsent(
                    sent_in_clear,
                    format!("no member of the metadata service answered within {timeout:?}"),
                ));
            }
            let client = self.client.with_timeout(left);
            attempt += 1;
            let attempt = client.post_call(&address, &self.path, request.clone(), nonce, attempt);
            // `None`: the member asked was deposed and will not answer.
            let sent = tokio::select! {
                sent = attempt => Some(sent),
                () = self.deposed(&address, &request) => None,
            };
            sent_in_clear |= writes
                && !self.client.over_tls()
                && match &sent {
                    Some(Ok(_)) => true,
                    Some(Err(err)) => !err.never_reached(),
                    None => false,
                };
            // Where to go when nothing was done here: the leader a member
            // named, else the next member.
            let hint = match sent {
                // A member that could not be reached received nothing. One
                // service alone is simply unavailable; in a group the others
                // elect a leader (its last leader may still be named by the
                // rest meanwhile).
                Some(Err(err)) if err.never_reached() && n_members == 1 => {
                    return Err(unsent(sent_in_clear, err.to_string()));
                }
                Some(Err(err)) if err.never_reached() => None,
                Some(Ok((StatusCode::OK, body))) => {
                    self.leader.store(index, Ordering::Relaxed);
                    return Ok(body);
                }
                Some(Ok((StatusCode::MISDIRECTED_REQUEST, body))) => {
                    leader_hint(&body).map(|leader| self.index_of(&leader))
                }
                // In a group, a read changes nothing wherever it arrived:
                // one that got no answer, or a 503 (a leader cut off from
                // the others), goes on to the next member (or the leader
                // this gateway's member follows), and so does the next call.
                None | Some(Err(_)) | Some(Ok((StatusCode::SERVICE_UNAVAILABLE, _)))
                    if n_members > 1 && Store::meta_call_writes(&request) == Some(false) =>
                {
                    self.ask_next_first(index, n_members);
                    None
                }
                None => {
                    // Not asked first again.
                    self.ask_next_first(index, n_members);
                    return Err(TransportError::Unknown(format!(
                        "{address} was deposed while the call waited for its answer"
                    )));
                }
                Some(Err(err)) => {
                    // The request may have been applied: not sent again, but
                    // the next call starts with another member.
                    self.ask_next_first(index, n_members);
                    return Err(TransportError::Unknown(err.to_string()));
                }
                // No such endpoint there (a group it does not keep): nothing
                // was done, and the same answer everywhere on gateways,
                // which run alike; a storage node restarted without the
                // group may be one of three. Given up once every member
                // said so. A refusal sent in plain text could still be
                // replayed where the endpoint exists.
                Some(Ok((StatusCode::NOT_FOUND, body))) => {
                    let why = format!(
                        "{address} answered 404: {}",
                        String::from_utf8_lossy(&body).trim()
                    );
                    missing.insert(index);
                    if missing.len() >= n_members {
                        return Err(match sent_in_clear && writes {
                            true => TransportError::Unknown(why),
                            false => TransportError::Refused(why),
                        });
                    }
                    self.ask_next_first(index, n_members);
                    None
                }
                // A leader that could not confirm the outcome (503), among
                // others: it may still apply.
                Some(Ok((status, body))) => {
                    return Err(TransportError::Unknown(format!(
                        "{address} answered {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )));
                }
            };
            // While members disagree or are down (an election under way),
            // each round of them is asked again after a pause, not in a
            // tight loop.
            not_sent += 1;
            if not_sent % n_members == 0 {
                // Every member so far was unreachable or not the leader:
                // none of them took the call.
                let now = tokio::time::Instant::now();
                if now >= *election_deadline.get_or_insert(now + LEADER_PATIENCE) {
                    return Err(unsent(
                        sent_in_clear,
                        "the metadata service has no leader".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            index = match hint {
                Some(leader) if leader != index => leader,
                _ if self.local.is_some() => {
                    // The member asked is not (or no longer) the leader and
                    // named none: this gateway's member learns of the next
                    // one first. Each time after a pause (unless the round's
                    // pause was just taken), not in a tight loop.
                    if not_sent % n_members != 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    match self.ask_local(&request, nonce, deadline).await {
                        Ok(outcome) => return outcome,
                        Err(leader) => leader.unwrap_or((index + 1) % n_members),
                    }
                }
                _ => (index + 1) % n_members,
            };
        }
    }
}

/// Raft's messages to other members of the replicated metadata service.
pub struct HttpRaftTransport {
    client: NodeClient,
}

impl HttpRaftTransport {
    pub fn new(secret: ClusterSecret, tls: Option<&ClusterTls>) -> Self {
        HttpRaftTransport {
            client: NodeClient::new(secret, tls, Duration::from_secs(5)),
        }
    }
}

#[async_trait]
impl RaftTransport for HttpRaftTransport {
    async fn send(
        &self,
        address: &str,
        group: GroupId,
        target: Option<u64>,
        rpc: RaftRpc,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let mut path = raft_path(group, rpc);
        if let Some(target) = target {
            path.push_str(&format!("?{RAFT_TARGET_PARAM}={target}"));
        }
        let (status, body) = self
            .client
            .with_timeout(timeout)
            .post_bound(address, &path, body)
            .await
            .map_err(|err| err.to_string())?;
        if status != StatusCode::OK {
            return Err(format!(
                "{address} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(body)
    }
}

/// Who answers this gateway's internal endpoints.
pub struct Internal {
    pub secret: Option<ClusterSecret>,
    /// Members speak TLS: a call that came in plain text is refused (a
    /// member never sends one, so it is someone else's).
    pub requires_tls: bool,
    /// The store, when this gateway holds the metadata alone.
    pub store: std::sync::OnceLock<Store>,
    /// This gateway's membership of a replicated metadata service.
    pub service: Option<Arc<MetaService>>,
    /// Its memberships of the service's index groups, by number from 1: a
    /// member of the service holds every group, a storage node those
    /// placed on it (`crate::node_index`), with no root group.
    pub index_services: BTreeMap<u16, Arc<MetaService>>,
    /// The signed calls already taken (a replayed one is refused).
    pub replays: wire::ReplayGuard,
}

impl Internal {
    /// This process's member of index group `index` (from 1), if it is one.
    pub(crate) fn index_service(&self, index: u16) -> Option<&Arc<MetaService>> {
        self.index_services.get(&index)
    }

    /// This process's member of group `group` (0: `root`, the root
    /// group's), if it keeps that group.
    fn member_of(&self, group: u16) -> Option<&Arc<MetaService>> {
        match group {
            0 => self.service.as_ref(),
            index => self.index_service(index),
        }
    }

    /// Whether this process is a member of any group: its calls go to
    /// its members, not to a store it holds alone.
    fn is_member(&self) -> bool {
        self.service.is_some() || !self.index_services.is_empty()
    }
}

/// The answer to a member's call on a gateway that is not one.
fn not_a_member() -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        "this process is not a member of a replicated metadata service\n",
    )
}

/// The answer to a call for an index group this member does not keep.
fn no_such_group(group: u16) -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        format!("this member keeps no index group {group}\n"),
    )
}

/// Whether a request is for the metadata service: its path, signed as
/// members sign (so an S3 object `v1/meta` in a bucket `internal` stays
/// reachable).
pub fn serves(request: &hyper::Request<RequestBody>) -> bool {
    let path = request.uri().path();
    (parse_meta_path(path).is_some()
        || parse_members_path(path).is_some()
        || parse_group_path(VIEW_PATH, path).is_some()
        || path.starts_with(RAFT_PATH))
        && request.headers().contains_key(wire::AUTH_HEADER)
}

/// Answers a metadata call or a Raft message from another gateway, if it
/// carries the cluster's signature.
pub async fn handle(internal: &Internal, request: hyper::Request<RequestBody>) -> Response {
    let Some(secret) = &internal.secret else {
        return text_response(
            StatusCode::NOT_FOUND,
            "this gateway is not a metadata service (it has no cluster secret)\n",
        );
    };
    if request.method() != http::Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    let path = request.uri().path().to_owned();
    let raft_target = raft_target(request.uri().query());
    // Taken now: the time to read the body counts.
    let answer_by = request
        .uri()
        .path_and_query()
        .and_then(|pq| wire::answer_within(pq.as_str()))
        .and_then(|within| {
            std::time::Instant::now().checked_add(within.saturating_sub(ANSWER_MARGIN))
        });
    let limit = match path.starts_with(RAFT_PATH) {
        true => MAX_RAFT_BYTES,
        false => MAX_CALL_BYTES,
    };
    let over_tls = request.extensions().get::<OverTls>().is_some();
    let (body, signature) =
        match signed_body(secret, &internal.replays, request, over_tls, limit).await {
            Ok(signed) => signed,
            Err(response) => return response,
        };
    // Refused only once its signature was taken: a call that a misconfigured
    // member sent in plain text cannot be replayed over TLS.
    if internal.requires_tls && !over_tls {
        return text_response(
            StatusCode::FORBIDDEN,
            "members of this cluster speak TLS: call over https\n",
        );
    }
    if path.starts_with(RAFT_PATH) {
        let Some((group, rpc)) = parse_raft_path(&path) else {
            return text_response(StatusCode::NOT_FOUND, "no such raft endpoint here\n");
        };
        let service = match group {
            GroupId::Root => internal.service.as_ref(),
            GroupId::Index(index) => internal.index_service(index),
        };
        let Some(service) = service else {
            return text_response(
                StatusCode::NOT_FOUND,
                format!("this process is not a member of the metadata service's {group}\n"),
            );
        };
        let to = match raft_target {
            Ok(to) => to,
            Err(why) => return text_response(StatusCode::BAD_REQUEST, why),
        };
        return match service.handle_rpc(rpc, &body, to).await {
            Ok(answer) => json_response(StatusCode::OK, answer),
            Err(why) => text_response(StatusCode::BAD_REQUEST, format!("{why}\n")),
        };
    }
    if let Some(group) = parse_group_path(VIEW_PATH, &path) {
        if !internal.is_member() {
            return not_a_member();
        }
        return match internal.member_of(group) {
            Some(service) => json_response(
                StatusCode::OK,
                serde_json::to_vec(&service.status()).unwrap_or_default(),
            ),
            None => no_such_group(group),
        };
    }
    if let Some(group) = parse_members_path(&path) {
        if !internal.is_member() {
            return not_a_member();
        }
        let change = match serde_json::from_slice::<MembershipChange>(&body) {
            Ok(change) => change,
            Err(err) => {
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("not a membership change: {err}\n"),
                );
            }
        };
        let Some(service) = internal.member_of(group) else {
            return no_such_group(group);
        };
        return match service.change_membership(change).await {
            Ok(mut membership) => {
                // Who changes the root's members changes the groups' next.
                if group == 0 {
                    membership.index_groups = internal.index_services.len() as u16;
                }
                json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&membership).unwrap_or_default(),
                )
            }
            Err(refusal) => routed_response(refusal),
        };
    }
    let group = parse_meta_path(&path).unwrap_or_default();
    if internal.is_member() {
        let Some(service) = internal.member_of(group) else {
            return no_such_group(group);
        };
        return routed_response(service.call(&body, signature, answer_by).await);
    }
    match internal.store.get() {
        Some(store) if !store.is_remote() => match store.group_store(group) {
            Some(store) => json_response(
                StatusCode::OK,
                store.serve_meta_by(&body, signature, answer_by).await,
            ),
            None => text_response(
                StatusCode::NOT_FOUND,
                format!("this gateway keeps no index group {group}\n"),
            ),
        },
        Some(_) => text_response(
            StatusCode::MISDIRECTED_REQUEST,
            "this gateway takes its metadata from another; ask that one\n",
        ),
        None => text_response(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
    }
}

/// The body of a request signed with the cluster secret (for the kind of
/// connection it came on, `over_tls`), whose digest is part of what is
/// signed, and that this process did not take before, with its signature
/// (for the store to refuse a replay this process cannot tell); the
/// signature is checked before a stranger's body is read.
async fn signed_body(
    secret: &ClusterSecret,
    replays: &wire::ReplayGuard,
    request: hyper::Request<RequestBody>,
    over_tls: bool,
    limit: usize,
) -> Result<(Bytes, Option<wire::CallSignature>), Response> {
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
    if !secret.verify("POST", &path_and_query, &signature, over_tls) {
        tracing::warn!("internal call without a valid cluster signature refused");
        return Err(text_response(
            StatusCode::FORBIDDEN,
            "bad or missing cluster signature\n",
        ));
    }
    let body = match http_body_util::Limited::new(request.into_body(), limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return Err(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("internal call not read: {err}\n"),
            ));
        }
    };
    if !wire::body_matches(&path_and_query, &body) {
        tracing::warn!("internal call whose body is not the one signed refused");
        return Err(text_response(
            StatusCode::FORBIDDEN,
            "body does not match its signature\n",
        ));
    }
    // Checked last: a request refused above must not use up its signature.
    match replays.first_use(&path_and_query, &signature) {
        Ok(true) => Ok((body, wire::CallSignature::of(&path_and_query, &signature))),
        Ok(false) => {
            tracing::warn!("internal call taken before refused (a replay)");
            Err(text_response(
                StatusCode::FORBIDDEN,
                "this signed call was taken before\n",
            ))
        }
        Err(wire::ReplayGuardFull) => Err(text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signed calls to tell a replay; try again\n",
        )),
    }
}

/// A call the service did not answer: where the leader is, or why not.
fn routed_response(refusal: Routed) -> Response {
    match refusal {
        Routed::Answer(answer) => json_response(StatusCode::OK, answer),
        Routed::NotLeader(leader) => {
            json_response(StatusCode::MISDIRECTED_REQUEST, not_leader_body(leader))
        }
        Routed::Unavailable(why) => {
            text_response(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = http::Response::new(full_body(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_paths_name_their_group_and_message() {
        let rpcs = [
            RaftRpc::Append,
            RaftRpc::Vote,
            RaftRpc::Snapshot,
            RaftRpc::Probe,
        ];
        for group in [GroupId::Root, GroupId::Index(0), GroupId::Index(u16::MAX)] {
            for rpc in rpcs {
                assert_eq!(parse_raft_path(&raft_path(group, rpc)), Some((group, rpc)));
            }
        }
        // What members before groups sent is the root group's.
        assert_eq!(
            parse_raft_path("/internal/v1/raft/vote"),
            Some((GroupId::Root, RaftRpc::Vote))
        );
        for path in [
            "/internal/v1/raft/",
            "/internal/v1/raft/elect",
            "/internal/v1/raft//append",
            "/internal/v1/raft/+1/append",
            "/internal/v1/raft/01/append",
            "/internal/v1/raft/00/append",
            "/internal/v1/raft/65536/append",
            "/internal/v1/raft/1/2/append",
            "/internal/v1/raft/1/",
            "/internal/v1/meta",
        ] {
            assert_eq!(parse_raft_path(path), None, "{path}");
        }
    }

    #[test]
    fn raft_messages_name_their_target_member_or_none() {
        assert_eq!(raft_target(None), Ok(None));
        assert_eq!(raft_target(Some("sha256=ab&nonce=1")), Ok(None));
        assert_eq!(raft_target(Some("to=42&sha256=ab")), Ok(Some(42)));
        assert_eq!(raft_target(Some("sha256=ab&to=7")), Ok(Some(7)));
        assert!(raft_target(Some("to=seven")).is_err());
    }

    #[test]
    fn meta_paths_name_their_group() {
        for group in [0, 1, 7, u16::MAX] {
            assert_eq!(parse_meta_path(&meta_path(group)), Some(group));
            assert_eq!(parse_members_path(&members_path(group)), Some(group));
            assert_eq!(parse_group_path(VIEW_PATH, &view_path(group)), Some(group));
        }
        assert_eq!(members_path(0), MEMBERS_PATH);
        assert_eq!(view_path(0), VIEW_PATH);
        assert_eq!(parse_group_path(VIEW_PATH, MEMBERS_PATH), None);
        assert_eq!(parse_members_path("/internal/v1/members/01"), None);
        assert_eq!(parse_members_path("/internal/v1/membersX"), None);
        assert_eq!(parse_members_path("/internal/v1/meta/1"), None);
        assert_eq!(meta_path(0), META_PATH);
        for path in [
            "/internal/v1/meta/",
            "/internal/v1/meta/0",
            "/internal/v1/meta/01",
            "/internal/v1/meta/+1",
            "/internal/v1/meta/65536",
            "/internal/v1/meta/1/2",
            "/internal/v1/metadata",
            "/internal/v1/members",
        ] {
            assert_eq!(parse_meta_path(path), None, "{path}");
        }
    }
}

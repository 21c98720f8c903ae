//! Raft's messages between members: JSON requests and answers carried by a
//! [`RaftTransport`] (the gateway's signed HTTP). An answer is the receiving
//! member's `Result`, so a refusal (a higher term, a fatal error) arrives as
//! Raft's own error, and only a message that got no answer is a network
//! error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{GroupId, TypeConfig};

/// The messages members send each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftRpc {
    Append,
    Vote,
    Snapshot,
    /// Not Raft's: a follower of a hibernating group asks its leader
    /// whether it still leads (`hibernation.rs`), and a leader asks each
    /// member which log version it runs (`versions.rs`).
    Probe,
}

impl RaftRpc {
    /// The message's name in a path.
    pub fn name(self) -> &'static str {
        match self {
            RaftRpc::Append => "append",
            RaftRpc::Vote => "vote",
            RaftRpc::Snapshot => "snapshot",
            RaftRpc::Probe => "probe",
        }
    }

    pub fn from_name(name: &str) -> Option<RaftRpc> {
        [
            RaftRpc::Append,
            RaftRpc::Vote,
            RaftRpc::Snapshot,
            RaftRpc::Probe,
        ]
        .into_iter()
        .find(|rpc| rpc.name() == name)
    }
}

/// What a [`RaftRpc::Probe`] asks besides whether the member leads.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProbeRequest {
    /// The leader's read point: see [`ProbeAnswer::read_point`]. (A plain
    /// probe is `{}`, as before the question.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) read_point: bool,
    /// Whether the leader has heard member `id` acknowledge entries: see
    /// [`ProbeAnswer::acknowledged`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) acknowledged_by: Option<u64>,
}

/// The answer to a [`RaftRpc::Probe`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProbeAnswer {
    /// The member leads the group.
    pub(crate) leading: bool,
    /// The newest log version the member applies (`versions.rs`); 0 from
    /// a build before log versions.
    #[serde(default)]
    pub(crate) log_version: u32,
    /// Asked for: the index the leader had applied once a majority
    /// confirmed, after the probe arrived, that it leads. A replica that
    /// applied as far holds every change acknowledged before the probe.
    /// `None` from a member that does not lead, could not confirm it, or
    /// is of a build that does not know the question.
    #[serde(default)]
    pub(crate) read_point: Option<u64>,
    /// Asked for: whether this member, leading, has heard the member asked
    /// about acknowledge entries of its log since it was elected. `None`
    /// from a member that does not lead, or of a build that does not know
    /// the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) acknowledged: Option<bool>,
}

/// The answer of `group`'s member at `address` to a probe, if it gave one
/// within `wait`.
pub(crate) async fn probe(
    transport: &dyn RaftTransport,
    address: &str,
    group: GroupId,
    wait: Duration,
) -> Option<ProbeAnswer> {
    asked(transport, address, group, &ProbeRequest::default(), wait).await
}

/// Whether `group`'s member at `address`, leading, has heard member
/// `member` acknowledge entries of its log ([`ProbeAnswer::acknowledged`]);
/// `None` when it does not lead or did not answer. A member that starts
/// with an empty log while the leader says so has lost its data: it must
/// not vote, nor acknowledge, as the member it was.
pub async fn leader_heard_from(
    transport: &dyn RaftTransport,
    address: &str,
    group: GroupId,
    member: u64,
    wait: Duration,
) -> Option<bool> {
    let request = ProbeRequest {
        acknowledged_by: Some(member),
        ..ProbeRequest::default()
    };
    asked(transport, address, group, &request, wait)
        .await?
        .acknowledged
}

/// The read point of `group`'s leader at `address` ([`ProbeAnswer::read_point`]),
/// if it gave one within the time a leader takes to confirm it leads.
pub(crate) async fn probe_read_point(
    transport: &dyn RaftTransport,
    address: &str,
    group: GroupId,
) -> Option<u64> {
    let request = ProbeRequest {
        read_point: true,
        ..ProbeRequest::default()
    };
    let wait = crate::QUORUM_WAIT + Duration::from_secs(1);
    let answer = asked(transport, address, group, &request, wait).await?;
    answer.read_point
}

async fn asked(
    transport: &dyn RaftTransport,
    address: &str,
    group: GroupId,
    request: &ProbeRequest,
    wait: Duration,
) -> Option<ProbeAnswer> {
    let body = serde_json::to_vec(request).ok()?;
    let sent = transport
        .send(
            address,
            group,
            None,
            RaftRpc::Probe,
            Bytes::from(body),
            wait,
        )
        .await;
    sent.ok()
        .and_then(|bytes| serde_json::from_slice::<ProbeAnswer>(&bytes).ok())
}

/// Carries one message to the member at `address`, for its member of
/// `group`, and brings back its answer's bytes; `Err` when there was no
/// answer.
#[async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// `target` is the member the message is for, which the receiver
    /// checks against its own ([`MetaService::handle_rpc`]); a probe asks
    /// whoever runs the group at `address`.
    ///
    /// [`MetaService::handle_rpc`]: crate::MetaService::handle_rpc
    async fn send(
        &self,
        address: &str,
        group: GroupId,
        target: Option<u64>,
        rpc: RaftRpc,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, String>;
}

pub(crate) struct Network {
    transport: Arc<dyn RaftTransport>,
    group: GroupId,
}

impl Network {
    pub(crate) fn new(transport: Arc<dyn RaftTransport>, group: GroupId) -> Network {
        Network { transport, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            transport: self.transport.clone(),
            group: self.group,
            target,
            address: node.addr.clone(),
        }
    }
}

pub(crate) struct Peer {
    transport: Arc<dyn RaftTransport>,
    group: GroupId,
    target: u64,
    address: String,
}

#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl Peer {
    async fn send<Request, Answer, E>(
        &self,
        rpc: RaftRpc,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Answer, RPCError<u64, BasicNode, E>>
    where
        Request: Serialize,
        Answer: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(request)
            .map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let reply = self
            .transport
            .send(
                &self.address,
                self.group,
                Some(self.target),
                rpc,
                Bytes::from(body),
                option.hard_ttl(),
            )
            .await
            .map_err(|why| RPCError::Unreachable(Unreachable::new(&Failure(why))))?;
        let answer: Result<Answer, E> = serde_json::from_slice(&reply)
            .map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        answer.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RaftRpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.send(RaftRpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.send(RaftRpc::Vote, &rpc, &option).await
    }
}

/// Answers one of Raft's messages from another member with the bytes of
/// its `Result` (a probe is the service's: `MetaService::handle_rpc`).
pub(crate) async fn serve(
    raft: &Raft<TypeConfig>,
    rpc: RaftRpc,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|err| format!("undecodable raft message: {err}"))
    }
    fn encode<T: Serialize>(answer: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(answer).map_err(|err| format!("encoding a raft answer: {err}"))
    }
    match rpc {
        RaftRpc::Append => encode(&raft.append_entries(decode(body)?).await),
        RaftRpc::Vote => encode(&raft.vote(decode(body)?).await),
        RaftRpc::Snapshot => encode(&raft.install_snapshot(decode(body)?).await),
        RaftRpc::Probe => Err("a probe is not one of Raft's messages".into()),
    }
}

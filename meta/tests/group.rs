//! A three-member group in one process: real Raft, real RocksDB logs and
//! replicas; messages go straight to the addressed member instead of over
//! HTTP. What is checked is what the gateway relies on: every member's
//! replica ends up with the same records — the leader's clock and random
//! names included — and a member that is not the leader sends callers on.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use strata_meta::{
    GroupId, Joining, Members, Membership, MembershipChange, MetaLog, MetaService, RaftRpc,
    RaftTransport, Routed, Tuning,
};
use strata_pool::{LocalPool, LocalPoolConfig};
use strata_store::{Store, StoreConfig};

/// Opens a database whose previous instance may still be letting go of its
/// lock: its background tasks end soon after it is dropped, not at once.
/// Any other failure fails at once.
async fn once_released<T, E: std::fmt::Debug>(
    what: &str,
    mut open: impl FnMut() -> Result<T, E>,
) -> T {
    for _ in 0..500 {
        match open() {
            Ok(opened) => return opened,
            Err(err) if still_locked(&format!("{err:?}")) => {}
            Err(err) => panic!("{what}: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: {:?}", open().err());
}

/// Whether opening failed only because the previous instance still holds
/// the database: RocksDB's "While lock file: …/LOCK: Resource temporarily
/// unavailable", or, while this process's previous instance has not closed
/// it yet, "lock hold by current process".
fn still_locked(err: &str) -> bool {
    err.contains("lock file") || err.contains("lock hold by current process")
}

/// Delivers messages to a group's member at an address, if it runs, and
/// counts them.
#[derive(Default)]
struct InProcess {
    members: RwLock<HashMap<(String, GroupId), Weak<MetaService>>>,
    sent: parking_lot::Mutex<HashMap<(GroupId, RaftRpc), u64>>,
    /// Addresses that answer probes only: Raft's own messages to them get
    /// no answer.
    probes_only: RwLock<std::collections::HashSet<String>>,
}

impl InProcess {
    /// The messages of `rpc` sent to members of `group` so far.
    fn sent(&self, group: GroupId, rpc: RaftRpc) -> u64 {
        self.sent.lock().get(&(group, rpc)).copied().unwrap_or(0)
    }
}

impl InProcess {
    fn register(&self, address: String, service: &Arc<MetaService>) {
        let key = (address, service.group());
        self.members.write().insert(key, Arc::downgrade(service));
    }
}

#[async_trait]
impl RaftTransport for InProcess {
    async fn send(
        &self,
        address: &str,
        group: GroupId,
        target: Option<u64>,
        rpc: RaftRpc,
        body: Bytes,
        _timeout: Duration,
    ) -> Result<Bytes, String> {
        *self.sent.lock().entry((group, rpc)).or_default() += 1;
        if rpc != RaftRpc::Probe && self.probes_only.read().contains(address) {
            return Err(format!("{address} takes no Raft message"));
        }
        let key = (address.to_owned(), group);
        let member = self.members.read().get(&key).and_then(Weak::upgrade);
        let member = member.ok_or_else(|| format!("{group} of {address} does not run"))?;
        member.handle_rpc(rpc, &body, target).await.map(Bytes::from)
    }
}

struct Group {
    services: Vec<Option<Arc<MetaService>>>,
    replicas: Vec<Option<Store>>,
    members: Members,
    transport: Arc<InProcess>,
    pool: Arc<LocalPool>,
    tuning: Tuning,
    /// `StoreConfig::feed_retention` of every replica.
    feed_retention: u64,
    /// Members that run an earlier log version than this build's, as a
    /// member of an earlier build does.
    earlier_builds: HashMap<u64, u32>,
    dir: tempfile::TempDir,
}

async fn start_group() -> Group {
    start_group_with(Tuning::default()).await
}

async fn start_group_with(tuning: Tuning) -> Group {
    start_group_tuned(tuning, StoreConfig::new("").feed_retention).await
}

async fn start_group_tuned(tuning: Tuning, feed_retention: u64) -> Group {
    start_group_running(tuning, feed_retention, HashMap::new()).await
}

/// A group whose members in `earlier_builds` run an earlier log version.
async fn start_group_running(
    tuning: Tuning,
    feed_retention: u64,
    earlier_builds: HashMap<u64, u32>,
) -> Group {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pool = Arc::new(
        LocalPool::open(LocalPoolConfig {
            dir: dir.path().join("pool"),
        })
        .expect("pool"),
    );
    let mut group = Group {
        services: vec![None, None, None],
        replicas: vec![None, None, None],
        members: (1..=3).map(|id| (id, format!("member-{id}"))).collect(),
        transport: Arc::new(InProcess::default()),
        pool,
        tuning,
        feed_retention,
        earlier_builds,
        dir,
    };
    // All at once: none can finish starting alone.
    let starting: Vec<_> = (1..=3).map(|id| group.start_member(id)).collect();
    for (index, (service, replica)) in futures_join(starting).await.into_iter().enumerate() {
        group.services[index] = Some(service);
        group.replicas[index] = Some(replica);
    }
    // The first election of members started at once may be followed by
    // another (a member whose timer fired before the winner's heartbeat),
    // which leaves a first change's outcome unknown: the tests' changes
    // start once every member names one leader.
    group.agreed_leader().await;
    group
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut done = Vec::new();
    for task in tasks {
        done.push(task.await.expect("start task"));
    }
    done
}

impl Group {
    /// Starts member `id` over its directories (kept across restarts).
    fn start_member(&self, id: u64) -> tokio::task::JoinHandle<(Arc<MetaService>, Store)> {
        let joining = match self.members.contains_key(&id) {
            true => Joining::Founding(self.members.clone()),
            false => Joining::Added,
        };
        self.start_member_as(id, joining)
    }

    fn start_member_as(
        &self,
        id: u64,
        joining: Joining,
    ) -> tokio::task::JoinHandle<(Arc<MetaService>, Store)> {
        let mut config = StoreConfig::new(self.dir.path().join(format!("replica-{id}")));
        config.log_replica = true;
        config.feed_retention = self.feed_retention;
        let log_dir = self.dir.path().join(format!("log-{id}"));
        let (pool, transport) = (self.pool.clone(), self.transport.clone());
        let mut tuning = self.tuning;
        if let Some(version) = self.earlier_builds.get(&id) {
            tuning.log_version = *version;
        }
        tokio::spawn(async move {
            let replica =
                once_released("replica", || Store::open(config.clone(), pool.clone())).await;
            let mut tries = 0;
            let service = loop {
                // Its log's database may still be closing too.
                let started = MetaService::start_with(
                    id,
                    joining.clone(),
                    &log_dir,
                    replica.clone(),
                    transport.clone(),
                    tuning,
                )
                .await;
                match started {
                    Ok(service) => break service,
                    Err(err) if tries == 500 => panic!("member starts: {err:?}"),
                    Err(_) => tries += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            transport.register(format!("member-{id}"), &service);
            (service, replica)
        })
    }

    async fn restart_member(&mut self, id: u64) {
        let (service, replica) = self.start_member(id).await.expect("restart task");
        let index = id as usize - 1;
        if self.services.len() <= index {
            self.services.resize(index + 1, None);
            self.replicas.resize(index + 1, None);
        }
        self.services[index] = Some(service);
        self.replicas[index] = Some(replica);
    }

    async fn stop_member(&mut self, id: u64) {
        let index = id as usize - 1;
        if let Some(service) = self.services[index].take() {
            service.shutdown().await;
        }
        self.replicas[index] = None;
    }

    fn running(&self) -> impl Iterator<Item = &Arc<MetaService>> {
        self.services.iter().flatten()
    }

    /// Sends `call` to members in turn until the leader takes it.
    async fn call(&self, call: serde_json::Value) -> serde_json::Value {
        call_leader(&self.running().cloned().collect::<Vec<_>>(), call).await
    }

    /// The member that leads, as the running members know it.
    fn leader(&self) -> &Arc<MetaService> {
        // The member that believes it leads: another may not have heard of
        // an election yet (a loaded machine misses heartbeats).
        let leading = |service: &&Arc<MetaService>| {
            let status = service.status();
            status.leader == Some(status.id)
        };
        if let Some(leader) = self.running().find(leading) {
            return leader;
        }
        let id = self
            .running()
            .find_map(|service| service.status().leader)
            .expect("a leader");
        self.running()
            .find(|service| service.status().id == id)
            .expect("the leader runs")
    }

    /// Makes `change` at the leader, again at the next one should
    /// leadership move meanwhile (a loaded machine misses heartbeats; a
    /// change is made once whoever makes it).
    async fn change_at_leader(&self, change: MembershipChange) -> Result<Membership, Routed> {
        for _ in 0..100 {
            match self.leader().change_membership(change.clone()).await {
                Err(Routed::NotLeader(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                made => return made,
            }
        }
        self.leader().change_membership(change).await
    }

    /// The leader every running member names, once they all name the
    /// same one.
    async fn agreed_leader(&self) -> u64 {
        for _ in 0..400 {
            let named: Vec<_> = self
                .running()
                .map(|service| service.status().leader)
                .collect();
            if let Some(Some(leader)) = named.first()
                && named.iter().all(|other| *other == Some(*leader))
            {
                return *leader;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the members do not agree on a leader");
    }

    /// A member that does not lead.
    fn a_follower(&self) -> u64 {
        let leader = self.leader().status().id;
        (1..=3).find(|id| *id != leader).expect("a follower")
    }

    /// Creates the bucket the tests' changes go to, which must succeed.
    async fn create_shared_bucket(&self) {
        let created = self.call(create_bucket_call("acct")).await;
        assert!(created["outcome"]["Ok"].is_object(), "{created}");
    }

    /// Renames an object of the shared bucket, which must succeed.
    async fn rename(&self, from: &str, to: &str) {
        let renamed = self
            .call(serde_json::json!({
                "op": "rename_object", "bucket": "shared", "key": from,
                "to_bucket": "shared", "to_key": to
            }))
            .await;
        assert!(renamed["outcome"]["Ok"].is_object(), "{renamed}");
    }

    /// Waits until every running member applied what the leader applied.
    async fn settle(&self) {
        settle(&self.running().cloned().collect::<Vec<_>>()).await;
    }

    /// Every replica's feed, once they are the same on each (followers
    /// learn that an entry is committed with the leader's next message).
    async fn same_feed_everywhere(&self) -> Vec<strata_store::ChangeEvent> {
        let mut encoded = Vec::new();
        for _ in 0..400 {
            let mut feeds = Vec::new();
            for replica in self.replicas.iter().flatten() {
                feeds.push(replica.feed_since(0, 10_000).await.expect("feed"));
            }
            encoded = feeds
                .iter()
                .map(|feed| serde_json::to_string(feed).expect("events"))
                .collect();
            if encoded.iter().all(|feed| *feed == encoded[0]) {
                return feeds.swap_remove(0);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the replicas' feeds differ:\n{}", encoded.join("\n"));
    }
}

/// Waits until every one of `services` (members of one group) applied
/// what the leader applied: the same index everywhere, still the same
/// after more than a heartbeat (followers learn of a commit with the
/// leader's next message, and the leader's own figure may trail its
/// answer).
async fn settle(services: &[Arc<MetaService>]) {
    let mut agreed: Option<(Option<u64>, tokio::time::Instant)> = None;
    for _ in 0..400 {
        let applied: Vec<_> = services
            .iter()
            .map(|service| service.status().last_applied)
            .collect();
        let same = applied.iter().all(|index| *index == applied[0]) && applied[0].is_some();
        match (same, agreed) {
            (true, Some((index, since))) if index == applied[0] => {
                if since.elapsed() > Duration::from_millis(700) {
                    return;
                }
            }
            (true, _) => agreed = Some((applied[0], tokio::time::Instant::now())),
            (false, _) => agreed = None,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("members did not converge");
}

/// Sends `call` to `services` (members of one group) in turn until the
/// leader takes it.
async fn call_leader(services: &[Arc<MetaService>], call: serde_json::Value) -> serde_json::Value {
    match routed_at_leader(services, &call).await {
        Routed::Answer(answer) => serde_json::from_slice(&answer).expect("JSON answer"),
        Routed::Unavailable(why) => panic!("{call}: {why}"),
        Routed::NotLeader(_) => unreachable!("sent on to the leader"),
    }
}

/// Sends `call` to `services` in turn until one that leads routes it: its
/// answer or its refusal.
async fn routed_at_leader(services: &[Arc<MetaService>], call: &serde_json::Value) -> Routed {
    let request = serde_json::to_vec(call).expect("encodable call");
    for _ in 0..200 {
        for service in services {
            match service.call(&request, None, None).await {
                Routed::NotLeader(_) => {}
                routed => return routed,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no member answered {call}");
}

/// The change that adds member `id` at its address in these tests.
fn adding(id: u64) -> MembershipChange {
    MembershipChange::Add {
        id,
        address: format!("member-{id}"),
        replacing: Vec::new(),
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The call that puts a small object whose body lives in its record.
fn put_call(key: &str, body: &[u8], delete_at: Option<u64>) -> serde_json::Value {
    let info = strata_store::ObjectInfo {
        bucket: "shared".into(),
        key: key.into(),
        size: body.len() as u64,
        etag: "0".repeat(32),
        last_modified_ms: 1,
        meta: strata_store::ObjectMeta {
            delete_at,
            ..Default::default()
        },
        checksum: None,
        part_sizes: Vec::new(),
        extents: Vec::new(),
        inline: Some(Bytes::copy_from_slice(body)),
        copy_nonce: None,
    };
    serde_json::json!({
        "op": "put_object",
        "info": info,
        "conditions": strata_store::PutConditions::default(),
    })
}

/// Deletes `key` of the shared bucket if `owner` owns it.
fn pinned_delete_call(key: &str, owner: &str) -> serde_json::Value {
    serde_json::json!({
        "op": "delete_object", "bucket": "shared", "key": key,
        "pin": strata_store::BucketPin::owned_by(owner),
    })
}

fn create_bucket_call(account: &str) -> serde_json::Value {
    serde_json::json!({
        "op": "create_bucket", "account": account, "name": "shared",
        "region": "r1", "attrs": {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_applies_the_same_changes_alike() {
    let group = start_group().await;
    group.create_shared_bucket().await;
    let upload = group
        .call(serde_json::json!({
            "op": "create_upload", "bucket": "shared", "key": "big",
            "meta": {}, "checksum_algorithm": null
        }))
        .await;
    let upload_id = upload["outcome"]["Ok"]["upload_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no upload id in {upload}"))
        .to_owned();
    // A change refused by the store is refused alike everywhere.
    let refused = group.call(create_bucket_call("other")).await;
    assert!(refused["outcome"]["Err"].is_string(), "{refused}");
    group.settle().await;

    // The bucket's creation (an upload starting is not a change of the feed).
    assert_eq!(group.same_feed_everywhere().await.len(), 1);
    let replicas: Vec<&Store> = group.replicas.iter().flatten().collect();
    let bucket = replicas[0]
        .bucket("shared")
        .await
        .expect("bucket on member 1");
    assert!(bucket.incarnation > 0, "{bucket:?}");
    for replica in &replicas[1..] {
        // The leader's clock and the replicated counter: the same creation
        // time and incarnation everywhere.
        assert_eq!(replica.bucket("shared").await.expect("bucket"), bucket);
        // The leader's random bytes: the same upload id everywhere.
        replica
            .upload("shared", "big", &upload_id)
            .await
            .expect("the upload under the leader's id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_back_from_a_restart_applies_what_it_missed_as_the_others_did() {
    let mut group = start_group().await;
    group.call(create_bucket_call("acct")).await;
    group.call(put_call("kept", b"stays", None)).await;
    group.settle().await;
    let away = group.a_follower();
    group.stop_member(away).await;

    // While it is away: an object that expires soon, renamed before it
    // does (the member applies both after: the leader's clock decides, not
    // its own), the expiry itself, and more changes than one message
    // carries.
    let soon = unix_secs() + 3;
    let put = group
        .call(put_call("brief", b"gone soon", Some(soon)))
        .await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    group.rename("brief", "brief-renamed").await;
    for n in 0..40 {
        group.call(put_call(&format!("many-{n}"), b"x", None)).await;
    }
    tokio::time::sleep(Duration::from_secs(soon + 1 - unix_secs().min(soon + 1))).await;
    let expired = group
        .call(serde_json::from_slice(&Store::expiry_call(unix_secs())).expect("expiry call"))
        .await;
    // The leader's own sweep (every 5 s) may have logged it first.
    assert!(
        [0, 1].contains(&expired["outcome"]["Ok"].as_u64().unwrap_or(9)),
        "{expired}"
    );

    group.restart_member(away).await;
    group.settle().await;
    let feed = group.same_feed_everywhere().await;
    // bucket, 2 puts, rename (a delete and a put), 40 puts, the expiry.
    assert_eq!(feed.len(), 1 + 2 + 2 + 40 + 1, "{feed:?}");
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "kept").await.is_ok());
        assert!(
            replica
                .head_object("shared", "brief-renamed")
                .await
                .is_err()
        );
    }

    // Restarted again with nothing missed: nothing is applied twice.
    group.stop_member(away).await;
    group.restart_member(away).await;
    group.call(put_call("last", b"y", None)).await;
    group.settle().await;
    assert_eq!(group.same_feed_everywhere().await.len(), feed.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_lead_sends_callers_to_the_leader() {
    let group = start_group().await;
    // A change everyone applied: every member has heard from the leader.
    group.call(create_bucket_call("acct")).await;
    group.settle().await;
    // On a loaded machine a late heartbeat can move the leadership
    // between the choice of a follower and its answer: such a round is
    // not this test's case, and it tries again under another name.
    for round in 0..5 {
        let leader = group.agreed_leader().await;
        let follower = group
            .running()
            .find(|service| service.status().id != leader)
            .expect("a follower");
        let name = format!("elsewhere-{round}");
        let request = serde_json::to_vec(&serde_json::json!({
            "op": "create_bucket", "account": "acct", "name": name,
            "region": "r1", "attrs": {}
        }))
        .expect("call");
        let answer = follower.call(&request, None, None).await;
        if group.agreed_leader().await != leader {
            continue;
        }
        match answer {
            Routed::NotLeader(Some(address)) => assert_eq!(address, format!("member-{leader}")),
            other => panic!("a follower answered {other:?}"),
        }
        // Nothing was done there.
        group.settle().await;
        for replica in group.replicas.iter().flatten() {
            assert!(replica.bucket(&name).await.is_err());
        }
        return;
    }
    panic!("the leadership kept moving");
}

/// Raft's messages go by address: a member refuses one meant for another
/// member (a node that took over an address once another's), and changes
/// nothing, while the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_refuses_raft_messages_meant_for_another() {
    let group = start_group().await;
    group.call(create_bucket_call("acct")).await;
    group.settle().await;
    let member = group.running().next().expect("a member");
    let id = member.status().id;
    let before = member.status().last_applied;
    let vote = serde_json::json!({
        "vote": { "leader_id": { "term": 1_000, "node_id": id + 1 }, "committed": false },
        "last_log_id": null
    });
    let body = serde_json::to_vec(&vote).expect("vote");
    let refused = member
        .handle_rpc(RaftRpc::Vote, &body, Some(id + 100))
        .await
        .expect_err("a vote for another member taken");
    assert!(
        refused.contains(&format!("not member {}", id + 100)),
        "{refused}"
    );
    assert_eq!(member.status().last_applied, before);
    assert!(member.status().term < 1_000, "{:?}", member.status());
    // The group takes changes as before.
    group.call(put_call("after", b"one", None)).await;
}

/// A leader says whether it has heard a member acknowledge entries, which
/// a member starting with an empty log asks before it takes part: one that
/// was heard from lost its data. A follower does not say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_says_whether_it_heard_from_a_member() {
    let group = start_group().await;
    group.create_shared_bucket().await;
    group.settle().await;
    let leader = group.agreed_leader().await;
    let follower = group.a_follower();
    let ask = |at: u64, about: u64| {
        let transport = group.transport.clone();
        let group_id = group.leader().group();
        async move {
            let address = format!("member-{at}");
            strata_meta::leader_heard_from(
                &*transport,
                &address,
                group_id,
                about,
                Duration::from_secs(5),
            )
            .await
        }
    };
    assert_eq!(ask(leader, follower).await, Some(true));
    // A member never heard of (the last of a new cluster to start).
    assert_eq!(ask(leader, 9).await, Some(false));
    assert_eq!(ask(follower, leader).await, None);
}

/// openraft keeps a leader that lost its majority leading; it shows the
/// group's members as a leader's answer only once a majority confirms it,
/// as for a read, and refuses otherwise (`strata metadata` then shows each
/// member's own view).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_majority_refuses_to_show_the_members() {
    let mut group = start_group().await;
    group.call(create_bucket_call("acct")).await;
    let leader = group.agreed_leader().await;
    let leading = group
        .running()
        .find(|service| service.status().id == leader)
        .cloned()
        .expect("the leader runs");
    let shown = leading.change_membership(MembershipChange::Show).await;
    assert!(shown.is_ok_and(|shown| shown.leader == Some(leader)));
    for id in (1..=3).filter(|id| *id != leader) {
        group.stop_member(id).await;
    }
    let shown = leading.change_membership(MembershipChange::Show).await;
    assert!(
        matches!(shown, Err(Routed::Unavailable(_) | Routed::NotLeader(_))),
        "{shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_compacted_log_is_sent_a_snapshot() {
    // Chunks far smaller than the snapshot: it goes in many messages,
    // each written into the receiving member's file at its offset.
    let mut group = start_group_with(Tuning {
        snapshot_every: 20,
        keep_after_snapshot: 5,
        snapshot_chunk_bytes: 1024,
        ..Tuning::default()
    })
    .await;
    group.call(create_bucket_call("acct")).await;
    group.call(put_call("before", b"old", None)).await;
    group.settle().await;
    let away = group.a_follower();
    let away_applied = group.services[away as usize - 1]
        .as_ref()
        .and_then(|service| service.status().last_applied)
        .expect("applied entries");
    group.stop_member(away).await;

    // Enough changes for snapshots and purges past what the member has;
    // one of them removes a record the member holds.
    group.rename("before", "after").await;
    for n in 0..80 {
        group.call(put_call(&format!("many-{n}"), b"x", None)).await;
    }
    group.settle().await;
    let mut purged = None;
    for _ in 0..200 {
        purged = group
            .running()
            .filter_map(|service| service.status().purged)
            .min();
        if purged.is_some_and(|purged| purged > away_applied) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        purged.is_some_and(|purged| purged > away_applied),
        "the logs were not purged past entry {away_applied}: {purged:?}"
    );

    group.restart_member(away).await;
    group.settle().await;
    let feed = group.same_feed_everywhere().await;
    // bucket, put, rename (a delete and a put), 80 puts.
    assert_eq!(feed.len(), 1 + 1 + 2 + 80, "{feed:?}");
    let status = group.services[away as usize - 1]
        .as_ref()
        .expect("running")
        .status();
    assert!(
        status.snapshot.is_some(),
        "no snapshot installed: {status:?}"
    );
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "before").await.is_err());
        assert!(replica.head_object("shared", "after").await.is_ok());
        assert!(replica.head_object("shared", "many-79").await.is_ok());
    }

    // It goes on applying, and a restart over the installed snapshot
    // applies nothing twice.
    group.call(put_call("last", b"y", None)).await;
    group.stop_member(away).await;
    group.restart_member(away).await;
    group.call(put_call("later", b"z", None)).await;
    group.settle().await;
    assert_eq!(group.same_feed_everywhere().await.len(), feed.len() + 2);
}

/// Changes that arrive while an entry is being committed share the next
/// entry: 32 concurrent PUTs take fewer than 32 entries, each PUT gets its
/// own answer, and every replica holds every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_log_entries() {
    let group = start_group().await;
    group.create_shared_bucket().await;
    group.settle().await;
    let leader = group.leader().clone();
    let before = leader.status().last_log_index.expect("a log");
    let puts: Vec<_> = (0..32)
        .map(|index| {
            let leader = leader.clone();
            let request = serde_json::to_vec(&put_call(&format!("k{index}"), b"body", None))
                .expect("encodable call");
            tokio::spawn(async move { leader.call(&request, None, None).await })
        })
        .collect();
    for (index, answered) in futures_join(puts).await.into_iter().enumerate() {
        let Routed::Answer(answer) = answered else {
            panic!("PUT {index} not answered: {answered:?}");
        };
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON answer");
        assert!(answer["outcome"]["Ok"].is_object(), "PUT {index}: {answer}");
    }
    let entries = leader.status().last_log_index.expect("a log") - before;
    assert!(
        (1..32).contains(&entries),
        "32 concurrent PUTs took {entries} log entries"
    );
    group.settle().await;
    for replica in group.replicas.iter().flatten() {
        for index in 0..32 {
            replica
                .head_object("shared", &format!("k{index}"))
                .await
                .expect("every object on every replica");
        }
    }
}

/// A member is replaced while the group serves: a fourth one, started to
/// join, is added (it catches up from the log), the first is stopped and
/// taken out, and the group then outlives the loss of another of the
/// original three, which it could not have with the first still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_replaced_while_the_group_serves() {
    let mut group = start_group().await;
    group.create_shared_bucket().await;
    for n in 0..5 {
        let put = group
            .call(put_call(&format!("before-{n}"), b"x", None))
            .await;
        assert!(put["outcome"]["Ok"].is_object(), "{put}");
    }

    group.restart_member(4).await;
    let add = adding(4);
    // Only the leader changes members; the others name it.
    let follower = group.a_follower();
    let refused = group.services[follower as usize - 1]
        .as_ref()
        .expect("runs")
        .change_membership(add.clone())
        .await;
    assert!(matches!(refused, Err(Routed::NotLeader(_))));
    let membership = group
        .change_at_leader(add.clone())
        .await
        .unwrap_or_else(|refusal| panic!("{refusal:?}"));
    assert_eq!(
        membership.members.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // Made again (a run the index groups did not all take), it is done
    // already; at another address, it is refused.
    let again = group.leader().change_membership(add).await;
    assert!(
        again.is_ok_and(|again| again.members == membership.members),
        "adding a voter again"
    );
    let elsewhere = MembershipChange::Add {
        id: 4,
        address: "member-4-moved".into(),
        replacing: Vec::new(),
    };
    assert!(group.leader().change_membership(elsewhere).await.is_err());

    group.stop_member(1).await;
    let put = group.call(put_call("three-of-four", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    let mut removed = None;
    for _ in 0..200 {
        match group
            .leader()
            .change_membership(MembershipChange::Remove { id: 1 })
            .await
        {
            Ok(membership) => {
                removed = Some(membership);
                break;
            }
            // Leadership may still be moving after member 1 stopped.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let removed = removed.expect("member 1 removed");
    assert_eq!(
        removed.members.keys().copied().collect::<Vec<_>>(),
        [2, 3, 4]
    );
    // Removed again, or never a member: nothing to do.
    for id in [1, 9] {
        let again = group
            .leader()
            .change_membership(MembershipChange::Remove { id })
            .await;
        assert!(
            again.is_ok_and(|again| again.members == removed.members),
            "removing member {id} again"
        );
    }

    group.stop_member(2).await;
    let put = group.call(put_call("two-of-three", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    // The member added later holds everything, from before it came too.
    let feed = group.same_feed_everywhere().await;
    let keys: Vec<_> = feed.iter().filter_map(|event| event.key.clone()).collect();
    for key in ["before-0", "before-4", "three-of-four", "two-of-three"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing: {keys:?}");
    }
}

/// A member lost for good is replaced in one change: the new member, once
/// caught up, comes to vote as the lost one leaves, through a joint
/// configuration, so the group never counts four voters; made again, it is
/// done already; and the group then outlives another of the first three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_member_is_replaced_in_one_joint_change() {
    let mut group = start_group().await;
    group.create_shared_bucket().await;
    let put = group.call(put_call("before", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    group.stop_member(2).await;
    // A leader among the others (member 2 may have led).
    let put = group.call(put_call("without-2", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");

    group.restart_member(4).await;
    let replace = MembershipChange::Add {
        id: 4,
        address: "member-4".into(),
        replacing: vec![2],
    };
    let mut replaced = None;
    for _ in 0..200 {
        match group.change_at_leader(replace.clone()).await {
            Ok(membership) => {
                replaced = Some(membership);
                break;
            }
            // Leadership may still be moving after member 2 stopped.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let replaced = replaced.expect("member 2 replaced by member 4");
    assert_eq!(
        replaced.members.keys().copied().collect::<Vec<_>>(),
        [1, 3, 4]
    );
    assert!(replaced.learners.is_empty(), "{replaced:?}");
    let again = group.leader().change_membership(replace).await;
    assert!(
        again.is_ok_and(|again| again.members == replaced.members),
        "replacing again"
    );

    group.stop_member(1).await;
    let put = group.call(put_call("two-of-three", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    let feed = group.same_feed_everywhere().await;
    let keys: Vec<_> = feed.iter().filter_map(|event| event.key.clone()).collect();
    for key in ["before", "two-of-three"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing: {keys:?}");
    }
}

/// The leader may remove itself while it runs: it steps down and sends
/// callers on instead of taking changes it can no longer commit, and the
/// others elect a leader among themselves. A member never made a voter
/// (a learner) can be removed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_leader_removes_itself_and_steps_down() {
    let mut group = start_group().await;
    group.call(create_bucket_call("acct")).await;
    let leader = group.leader().clone();
    let leader_id = leader.status().id;
    let membership = leader
        .change_membership(MembershipChange::Remove { id: leader_id })
        .await
        .unwrap_or_else(|refusal| panic!("{refusal:?}"));
    assert!(
        !membership.members.contains_key(&leader_id),
        "{membership:?}"
    );
    // It steps down once the change is committed (until then, what it
    // commits is committed by the new members).
    let put = serde_json::to_vec(&put_call("during", b"x", None)).expect("call");
    let mut stepped_down = false;
    for _ in 0..100 {
        if let Routed::NotLeader(_) = leader.call(&put, None, None).await {
            stepped_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stepped_down, "the removed leader still takes changes");
    // The others go on; the removed member answers nothing any more.
    group.services[leader_id as usize - 1] = None;
    let answer = group.call(put_call("after", b"x", None)).await;
    assert!(answer["outcome"]["Ok"].is_object(), "{answer}");

    // A learner that never caught up (it says which version it runs, but
    // takes no log) goes.
    group
        .transport
        .probes_only
        .write()
        .insert("member-9".into());
    let (stranded, _stranded_replica) = group
        .start_member_as(9, Joining::Added)
        .await
        .expect("start task");
    let ghost = adding(9);
    let mut learners = Default::default();
    for _ in 0..20 {
        // Sent again until the group's leader took it (an election may
        // still be settling); it never completes: member 9 takes no log.
        let new_leader = group.leader().clone();
        let ghost = ghost.clone();
        let adding = tokio::spawn(async move { new_leader.change_membership(ghost).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // It must still be waiting (member 9 takes no log), unless it
        // went to a member that no longer leads.
        if adding.is_finished() {
            match adding.await {
                Ok(Err(Routed::NotLeader(_))) => continue,
                other => panic!("a member that never answered was added: {other:?}"),
            }
        }
        adding.abort();
        learners = group.leader().membership().learners;
        if learners.contains_key(&9) {
            break;
        }
    }
    assert!(learners.contains_key(&9), "{learners:?}");
    let removed = group
        .leader()
        .change_membership(MembershipChange::Remove { id: 9 })
        .await
        .unwrap_or_else(|refusal| panic!("{refusal:?}"));
    assert!(removed.learners.is_empty(), "{removed:?}");
    stranded.shutdown().await;
    drop(leader);
}

/// The oldest event each running replica's feed keeps.
async fn oldest_events(group: &Group) -> Vec<u64> {
    let mut oldest = Vec::new();
    for replica in group.replicas.iter().flatten() {
        let first = replica.feed_since(0, 1).await.expect("feed");
        oldest.push(first.first().map_or(0, |event| event.seq));
    }
    oldest
}

/// Waits until every running replica's feed starts at event `oldest`.
async fn wait_until_oldest(group: &Group, oldest: u64, patience: Duration) {
    let what = format!("every feed trimmed to start at {oldest}");
    wait_for(&what, patience, || async {
        oldest_events(group)
            .await
            .iter()
            .all(|first| *first == oldest)
    })
    .await;
}

/// Polls `done` every 100 ms; fails the test after `patience`.
async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + patience;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The feed is trimmed through the log, with the marks of the gateways
/// that follow it: every replica keeps what a follower has not confirmed,
/// and so does the next leader, which never saw that follower poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_and_the_next_leader_keep_what_a_follower_has_not_confirmed() {
    let mut group = start_group_tuned(Tuning::default(), 4).await;
    group.call(create_bucket_call("acct")).await;
    group.call(put_call("before", b"x", None)).await;
    let head = group.call(serde_json::json!({"op": "feed_head"})).await;
    let position = head["outcome"]["Ok"].as_u64().expect("feed head");
    // A gateway polls once, confirming `position`, and is not heard of again.
    let poll = |after: u64| {
        serde_json::json!({
            "op": "feed_wait", "after": after, "limit": 100, "wait_ms": 0,
            "follower": {"id": "edge-b", "name": "edge-b:8080"}
        })
    };
    group.call(poll(position)).await;
    for n in 0..12 {
        group
            .call(put_call(&format!("during-{n}"), b"x", None))
            .await;
    }
    // The retention (4) would cut far past the follower; every replica
    // stops right after it (the leader trims once it has led for a lease).
    wait_until_oldest(&group, position + 1, Duration::from_secs(60)).await;

    let old_leader = group.leader().status().id;
    group.stop_member(old_leader).await;
    for n in 0..12 {
        group
            .call(put_call(&format!("after-{n}"), b"x", None))
            .await;
    }
    let new_leader = group.leader().status().id;
    assert_ne!(new_leader, old_leader);
    // The new leader knows the follower from the log...
    let followers = group.replicas[new_leader as usize - 1]
        .as_ref()
        .expect("the new leader runs")
        .feed_followers();
    let [follower] = &followers[..] else {
        panic!("followers: {followers:?}")
    };
    assert_eq!(
        (follower.id.as_str(), follower.position),
        ("edge-b", position)
    );
    // ...and still holds its events once it trims: a second gateway,
    // current, polls it; when the other member has the new leader's record
    // of both, a trim was planned after its lease.
    let head = group.call(serde_json::json!({"op": "feed_head"})).await;
    let head = head["outcome"]["Ok"].as_u64().expect("feed head");
    group
        .call(serde_json::json!({
            "op": "feed_wait", "after": head, "limit": 100, "wait_ms": 0,
            "follower": {"id": "edge-c", "name": "edge-c:8080"}
        }))
        .await;
    let other = (1..=3)
        .find(|id| ![old_leader, new_leader].contains(id))
        .expect("a third member");
    let other = group.replicas[other as usize - 1].clone().expect("it runs");
    wait_for("the new leader's trim", Duration::from_secs(60), || async {
        let ids: Vec<String> = other.feed_followers().into_iter().map(|f| f.id).collect();
        ids == ["edge-b", "edge-c"]
    })
    .await;
    assert_eq!(oldest_events(&group).await, [position + 1, position + 1]);

    // Back, it confirms a few more on the new leader: trimming follows it.
    group.call(poll(position + 5)).await;
    wait_until_oldest(&group, position + 6, Duration::from_secs(30)).await;
}

/// The groups every member of [`SharedMembers`] belongs to.
const GROUPS: [GroupId; 3] = [GroupId::Root, GroupId::Index(1), GroupId::Index(7)];

/// Snapshots every few entries, and logs purged soon after: a member away
/// for a few dozen changes is sent a snapshot (many chunks of one).
const SNAPSHOT_OFTEN: Tuning = Tuning {
    snapshot_every: 20,
    keep_after_snapshot: 5,
    snapshot_chunk_bytes: 1024,
    // Groups fall asleep between the test's steps: losing a leader or a
    // member, and a restart, find them asleep.
    idle_before_hibernating: Some(Duration::from_secs(1)),
    log_version: strata_meta::LOG_VERSION,
    // The root of these members keeps objects of its own beside its groups,
    // and never records index groups: a test of the groups' machinery.
    index_groups_follow_root: false,
};

/// Three members, each in every group of [`GROUPS`], with one log database
/// and one replica database for all its groups.
struct SharedMembers {
    /// Per running member: its log database and its root store.
    databases: HashMap<u64, (MetaLog, Store)>,
    /// Per member and group, while it runs: the service and its replica.
    services: HashMap<(u64, GroupId), (Arc<MetaService>, Store)>,
    members: Members,
    transport: Arc<InProcess>,
    pool: Arc<LocalPool>,
    dir: tempfile::TempDir,
}

impl SharedMembers {
    async fn start() -> SharedMembers {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pool = LocalPool::open(LocalPoolConfig {
            dir: dir.path().join("pool"),
        })
        .expect("pool");
        let mut members = SharedMembers {
            databases: HashMap::new(),
            services: HashMap::new(),
            members: (1..=3).map(|id| (id, format!("member-{id}"))).collect(),
            transport: Arc::new(InProcess::default()),
            pool: Arc::new(pool),
            dir,
        };
        // All at once: no group can finish starting on one member alone.
        let mut starting = Vec::new();
        for id in 1..=3 {
            members.open_databases(id).await;
            for group in GROUPS {
                starting.push(members.start_in(id, group));
            }
        }
        members.started(starting).await;
        members
    }

    async fn open_databases(&mut self, id: u64) {
        let log_dir = self.dir.path().join(format!("log-{id}"));
        let log = once_released("log", || MetaLog::open(&log_dir)).await;
        let config = self.replica_config(id);
        let root =
            once_released("replica", || Store::open(config.clone(), self.pool.clone())).await;
        self.databases.insert(id, (log, root));
    }

    fn replica_config(&self, id: u64) -> StoreConfig {
        let mut config = StoreConfig::new(self.dir.path().join(format!("replica-{id}")));
        config.log_replica = true;
        config
    }

    /// Starts member `id` of `group` over its open databases.
    fn start_in(
        &self,
        id: u64,
        group: GroupId,
    ) -> tokio::task::JoinHandle<(u64, Arc<MetaService>, Store)> {
        let (log, root) = self.databases[&id].clone();
        let replica = match group {
            GroupId::Root => root,
            GroupId::Index(index) => root
                .open_group(index, self.replica_config(id))
                .expect("group replica"),
        };
        let joining = Joining::Founding(self.members.clone());
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let service = MetaService::start_group(
                id,
                group,
                joining,
                &log,
                replica.clone(),
                transport.clone(),
                SNAPSHOT_OFTEN,
            )
            .await
            .expect("member starts");
            transport.register(format!("member-{id}"), &service);
            (id, service, replica)
        })
    }

    async fn started(
        &mut self,
        starting: Vec<tokio::task::JoinHandle<(u64, Arc<MetaService>, Store)>>,
    ) {
        for (id, service, replica) in futures_join(starting).await {
            self.services
                .insert((id, service.group()), (service, replica));
        }
    }

    /// Stops member `id` of `group` only (its databases stay open: its
    /// other groups go on).
    async fn stop_in(&mut self, id: u64, group: GroupId) {
        if let Some((service, _)) = self.services.remove(&(id, group)) {
            service.shutdown().await;
        }
        // Let its tasks end before the group is started again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Stops member `id` in every group and closes its databases.
    async fn stop_member(&mut self, id: u64) {
        for group in GROUPS {
            self.stop_in(id, group).await;
        }
        self.databases.remove(&id);
    }

    fn running(&self, group: GroupId) -> Vec<Arc<MetaService>> {
        (1..=3)
            .filter_map(|id| self.services.get(&(id, group)))
            .map(|(service, _)| service.clone())
            .collect()
    }

    /// Member `id`'s replica of `group`, whether or not that member runs
    /// in the group.
    fn replica(&self, id: u64, group: GroupId) -> Store {
        let (_, root) = &self.databases[&id];
        match group {
            GroupId::Root => root.clone(),
            GroupId::Index(index) => root
                .open_group(index, self.replica_config(id))
                .expect("group replica"),
        }
    }

    async fn call(&self, group: GroupId, call: serde_json::Value) -> serde_json::Value {
        call_leader(&self.running(group), call).await
    }

    async fn settle(&self) {
        for group in GROUPS {
            settle(&self.running(group)).await;
        }
    }

    /// Puts `keys` in every group's bucket, with the group's bytes.
    async fn put_everywhere(&self, keys: &[String]) {
        for group in GROUPS {
            for key in keys {
                let put = self
                    .call(group, put_call(key, &bytes_of(group), None))
                    .await;
                assert!(put["outcome"]["Ok"].is_object(), "{group}: {put}");
            }
        }
    }

    /// Waits until every running member of `group` purged its log past
    /// entry `index`.
    async fn wait_for_purge_past(&self, group: GroupId, index: u64) {
        for _ in 0..400 {
            let purged = self
                .running(group)
                .iter()
                .map(|service| service.status().purged)
                .min();
            if purged.flatten().is_some_and(|purged| purged > index) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the {group}'s logs were not purged past entry {index}");
    }

    /// Checks that every member's replica of every group holds `keys`
    /// with the group's bytes, in the group's bucket, and nothing else.
    async fn assert_each_group_holds(&self, keys: &[String]) {
        for id in 1..=3 {
            for group in GROUPS {
                let replica = self.replica(id, group);
                let bucket = replica.bucket("shared").await.expect("the group's bucket");
                assert_eq!(bucket.account, owner_of(group), "member {id}, {group}");
                for key in keys {
                    let object = replica
                        .head_object("shared", key)
                        .await
                        .unwrap_or_else(|err| panic!("member {id}, {group}, {key}: {err}"));
                    assert_eq!(object.inline.as_deref(), Some(&bytes_of(group)[..]));
                }
                // The bucket's creation and a put per key: no other
                // group's events.
                let feed = replica.feed_since(0, 100).await.expect("feed");
                assert_eq!(feed.len(), 1 + keys.len(), "member {id}, {group}: {feed:?}");
            }
        }
    }
}

fn owner_of(group: GroupId) -> String {
    match group {
        GroupId::Root => "root-owner".into(),
        GroupId::Index(index) => format!("owner-{index}"),
    }
}

fn bytes_of(group: GroupId) -> Vec<u8> {
    format!("the bytes of the {group}").into_bytes()
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_on_the_same_members_keep_their_own_logs_leaders_and_replicas() {
    let mut members = SharedMembers::start().await;
    // The same bucket and key in every group, each with its owner and bytes.
    for group in GROUPS {
        let created = members
            .call(group, create_bucket_call(&owner_of(group)))
            .await;
        assert!(created["outcome"]["Ok"].is_object(), "{group}: {created}");
    }
    let mut keys = names("first", 1);
    members.put_everywhere(&keys).await;
    members.settle().await;
    members.assert_each_group_holds(&keys).await;

    // One group loses its leader; the member goes on in the other groups,
    // and the group goes on with a new leader.
    let group = GroupId::Index(1);
    let leader = members.running(group)[0].status().leader.expect("a leader");
    members.stop_in(leader, group).await;
    let second = names("second", 1);
    members.put_everywhere(&second).await;
    for other in GROUPS.into_iter().filter(|other| *other != group) {
        settle(&members.running(other)).await;
        let replica = members.replica(leader, other);
        assert!(replica.head_object("shared", &second[0]).await.is_ok());
    }
    {
        let behind = members.replica(leader, group);
        assert!(behind.head_object("shared", &second[0]).await.is_err());
    }
    // Back in the group, over the same log database: it catches up.
    let restarted = members.start_in(leader, group);
    members.started(vec![restarted]).await;
    members.settle().await;
    keys.extend(second);
    members.assert_each_group_holds(&keys).await;

    // A whole member away for longer than the logs keep: every group
    // sends it a snapshot of its own replica, and it reads every group's
    // log back from the shared database.
    let applied: Vec<(GroupId, u64)> = GROUPS
        .iter()
        .map(|group| {
            let (service, _) = &members.services[&(3, *group)];
            (
                *group,
                service.status().last_applied.expect("applied entries"),
            )
        })
        .collect();
    members.stop_member(3).await;
    let third = names("third", 30);
    members.put_everywhere(&third).await;
    for (group, applied) in applied {
        members.wait_for_purge_past(group, applied).await;
    }
    members.open_databases(3).await;
    let restarting = GROUPS.map(|group| members.start_in(3, group));
    members.started(restarting.into()).await;
    members.settle().await;
    keys.extend(third);
    members.assert_each_group_holds(&keys).await;
    for group in GROUPS {
        let status = members.services[&(3, group)].0.status();
        assert!(
            status.snapshot.is_some(),
            "{group}: no snapshot installed: {status:?}"
        );
    }
}

/// Waits until every running member of `group` sleeps.
async fn all_hibernating(group: &Group) {
    for _ in 0..200 {
        if group.running().all(|service| service.status().hibernating) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<_> = group.running().map(|service| service.status()).collect();
    panic!("the group does not hibernate: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_hibernates_and_wakes_for_a_change_a_caller_or_a_lost_leader() {
    let mut group = start_group_with(Tuning {
        idle_before_hibernating: Some(Duration::from_secs(1)),
        ..Tuning::default()
    })
    .await;
    group.call(create_bucket_call("acct")).await;
    group.call(put_call("before", b"one", None)).await;

    // Asleep, the group sends nothing: an awake leader sends each follower
    // a heartbeat every 750 ms.
    all_hibernating(&group).await;
    let (leader, term) = (group.agreed_leader().await, group.leader().status().term);
    let appends = group.transport.sent(GroupId::Root, RaftRpc::Append);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        group.transport.sent(GroupId::Root, RaftRpc::Append),
        appends,
        "a hibernating group sent messages"
    );

    // A change wakes it, and is applied everywhere, by the same leader.
    group.call(put_call("after", b"two", None)).await;
    // Raised, the group honours pins: refused alike on every member.
    let refused = group.call(pinned_delete_call("after", "other")).await;
    assert_eq!(refused["outcome"]["Err"], "NoSuchBucket", "{refused}");
    group.settle().await;
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "after").await.is_ok());
    }
    let deleted = group.call(pinned_delete_call("after", "acct")).await;
    assert!(deleted["outcome"]["Ok"].is_object(), "{deleted}");
    group.call(put_call("after", b"two", None)).await;
    assert_eq!(group.leader().status().id, leader);
    assert_eq!(
        group.leader().status().term,
        term,
        "waking took an election"
    );

    // A caller that reaches a follower first is sent to the leader; the
    // follower asks the leader whether it still leads, and the group sleeps
    // on: no heartbeat, no election.
    let follower = group.a_follower();
    let head = serde_json::to_vec(&serde_json::json!({
        "op": "head_object", "bucket": "shared", "key": "after"
    }))
    .expect("encodable call");
    let ask_follower = || async {
        group.services[follower as usize - 1]
            .as_ref()
            .expect("the follower runs")
            .call(&head, None, None)
            .await
    };
    all_hibernating(&group).await;
    let appends = group.transport.sent(GroupId::Root, RaftRpc::Append);
    let probes = group.transport.sent(GroupId::Root, RaftRpc::Probe);
    // Its own gateway, which asks it first and goes on to the leader
    // itself, does not make it probe (every feed poll would).
    let asked = group.services[follower as usize - 1]
        .as_ref()
        .expect("the follower runs")
        .call_first(&head, None, None)
        .await;
    assert!(matches!(asked, Routed::NotLeader(Some(_))), "{asked:?}");
    // A probe goes out from a task of its own, in well under this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(group.transport.sent(GroupId::Root, RaftRpc::Probe), probes);
    let asked = ask_follower().await;
    assert!(matches!(asked, Routed::NotLeader(Some(_))), "{asked:?}");
    wait_for(
        "the follower asks the leader",
        Duration::from_secs(10),
        || async { group.transport.sent(GroupId::Root, RaftRpc::Probe) > probes },
    )
    .await;
    // Longer than an election timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(group.running().all(|service| service.status().hibernating));
    assert_eq!(
        group.transport.sent(GroupId::Root, RaftRpc::Append),
        appends
    );
    assert_eq!(
        group.leader().status().term,
        term,
        "a live leader was deposed"
    );

    // The leader lost while the group sleeps: a follower asked for a read
    // finds it gone, and the group elects another.
    group.stop_member(leader).await;
    let mut answered = None;
    for _ in 0..100 {
        for service in group.running() {
            if let Routed::Answer(answer) = service.call(&head, None, None).await {
                answered = Some(answer);
            }
        }
        if answered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered.is_some(),
        "no member answered a read after the leader was lost"
    );
    let successor = group.agreed_leader().await;
    assert_ne!(successor, leader);
    assert!(group.leader().status().term > term, "no election");
    group.call(put_call("lost", b"three", None)).await;
    group.settle().await;
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "lost").await.is_ok());
    }

    // Back from a restart, the old leader rejoins, and the group sleeps again.
    group.restart_member(leader).await;
    group.settle().await;
    all_hibernating(&group).await;
    assert!(
        group.replicas[leader as usize - 1]
            .as_ref()
            .expect("restarted")
            .head_object("shared", "lost")
            .await
            .is_ok()
    );

    // A follower restarted while the group sleeps falls asleep again
    // rather than standing for election; a leader restarted in place leads
    // again in its term, and the group sleeps on.
    let term = group.leader().status().term;
    for (restarted, what) in [
        (group.a_follower(), "a follower"),
        (successor, "the leader"),
    ] {
        group.stop_member(restarted).await;
        group.restart_member(restarted).await;
        all_hibernating(&group).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(group.agreed_leader().await, successor, "{what} restarted");
        assert_eq!(
            group.leader().status().term,
            term,
            "{what} restarted: an election"
        );
    }
    assert!(group.running().all(|service| service.status().hibernating));
}

/// Every running member's view of the group's log version, once they all
/// have `version`.
async fn log_version_everywhere(group: &Group, version: u32) {
    wait_for(
        &format!("every member at log version {version}"),
        Duration::from_secs(20),
        || async {
            group
                .running()
                .all(|service| service.status().log_version == version)
        },
    )
    .await;
}

/// A rolling upgrade: while a member runs an earlier build, the group keeps
/// to the log version that member applies (here: it does not hibernate,
/// which that build would not follow); once every member runs the newer
/// one, the leader raises it. A member of an earlier build is then not
/// added, and a member is not started again with one (a downgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_raises_its_log_version_once_every_member_runs_it() {
    // A build from before log versions, which does not hibernate.
    let earlier = 0;
    let tuning = Tuning {
        idle_before_hibernating: Some(Duration::from_secs(1)),
        ..Tuning::default()
    };
    let retention = StoreConfig::new("").feed_retention;
    let mut group = start_group_running(tuning, retention, HashMap::from([(3, earlier)])).await;
    group.call(create_bucket_call("acct")).await;
    group.call(put_call("before", b"one", None)).await;
    group.settle().await;
    // Idle for four times what an upgraded group sleeps after.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for service in group.running() {
        let status = service.status();
        assert_eq!(status.log_version, earlier, "{status:?}");
        assert!(
            !status.hibernating,
            "asleep beside an earlier build: {status:?}"
        );
    }
    let runs: Vec<_> = group
        .running()
        .map(|service| service.status().runs_log_version)
        .collect();
    assert_eq!(
        runs,
        [strata_meta::LOG_VERSION, strata_meta::LOG_VERSION, earlier]
    );
    // A show asks each member which it runs.
    let shown = group
        .leader()
        .change_membership(MembershipChange::Show)
        .await
        .unwrap_or_else(|refusal| panic!("{refusal:?}"));
    let current = strata_meta::LOG_VERSION;
    assert_eq!(
        shown.runs,
        [(1, current), (2, current), (3, earlier)].into()
    );
    // A call of a newer log version than the group's is not logged.
    let split = serde_json::json!({"op": "split_into_index_groups", "count": 2});
    let split = serde_json::to_vec(&split).expect("encoded");
    match group.leader().call(&split, None, None).await {
        Routed::Unavailable(why) => assert!(
            why.contains(&format!(
                "needs log version {}",
                strata_store::SPLIT_LOG_VERSION
            )),
            "{why}"
        ),
        other => panic!("a call of a newer version than the group's: {other:?}"),
    }

    // A delete pinned to another owner's bucket: below the version that
    // honours pins, every member applies it without its pin, as a member
    // of the earlier build does.
    let deleted = group.call(pinned_delete_call("before", "other")).await;
    assert!(deleted["outcome"]["Ok"].is_object(), "{deleted}");
    group.settle().await;
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "before").await.is_err());
    }

    // Member 3 upgraded: the group is raised, and then sleeps.
    group.stop_member(3).await;
    group.earlier_builds.clear();
    group.restart_member(3).await;
    log_version_everywhere(&group, strata_meta::LOG_VERSION).await;
    all_hibernating(&group).await;
    group.call(put_call("after", b"two", None)).await;
    // Raised, the group honours pins: refused alike on every member.
    let refused = group.call(pinned_delete_call("after", "other")).await;
    assert_eq!(refused["outcome"]["Err"], "NoSuchBucket", "{refused}");
    group.settle().await;
    for replica in group.replicas.iter().flatten() {
        assert!(replica.head_object("shared", "after").await.is_ok());
    }
    let deleted = group.call(pinned_delete_call("after", "acct")).await;
    assert!(deleted["outcome"]["Ok"].is_object(), "{deleted}");
    group.call(put_call("after", b"two", None)).await;

    // A member of the earlier build is not added: it could not apply the
    // log.
    group.earlier_builds.insert(4, earlier);
    let (joiner, _joiner_replica) = group
        .start_member_as(4, Joining::Added)
        .await
        .expect("start task");
    let add = adding(4);
    let refused = group.leader().change_membership(add).await;
    match refused {
        Err(Routed::Unavailable(why)) => assert!(
            why.contains(&format!("runs log version {earlier}")),
            "{why}"
        ),
        other => panic!("a member of an earlier build added: {other:?}"),
    }
    let membership = group.leader().membership();
    assert!(
        !membership.members.contains_key(&4) && !membership.learners.contains_key(&4),
        "{membership:?}"
    );
    joiner.shutdown().await;
    // Nor one that does not say which it runs (nothing runs there).
    let add = adding(5);
    match group.leader().change_membership(add).await {
        Err(Routed::Unavailable(why)) => assert!(why.contains("does not say"), "{why}"),
        other => panic!("a member that does not answer added: {other:?}"),
    }

    // Nor does a member start again with the earlier build.
    group.stop_member(2).await;
    let mut config = StoreConfig::new(group.dir.path().join("replica-2"));
    config.log_replica = true;
    let pool = group.pool.clone();
    let replica = once_released("replica", || Store::open(config.clone(), pool.clone())).await;
    let tuning = Tuning {
        log_version: earlier,
        ..group.tuning
    };
    let mut refusal = None;
    for _ in 0..500 {
        let started = MetaService::start_with(
            2,
            Joining::Founding(group.members.clone()),
            &group.dir.path().join("log-2"),
            replica.clone(),
            group.transport.clone(),
            tuning,
        )
        .await;
        match started {
            Ok(_) => panic!("a member downgraded below its group's log version started"),
            // Its log's database may still be closing.
            Err(err) if still_locked(&err) => {}
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refusal = refusal.expect("refused, not only locked");
    assert!(
        refusal.contains(&format!("runs log version {earlier}")),
        "{refusal}"
    );
}

/// A member's root replica (a log replica) in `dir`, and its configuration.
fn lone_root_replica(dir: &std::path::Path) -> (Store, StoreConfig) {
    let pool = Arc::new(
        LocalPool::open(LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .expect("pool"),
    );
    let mut config = StoreConfig::new(dir.join("replica"));
    config.log_replica = true;
    let root = Store::open(config.clone(), pool).expect("root replica");
    (root, config)
}

/// Index group 1 of a service of one member, over `group` (a group
/// replica opened beside its member's root), its log in `dir`.
async fn lone_index_group(dir: &std::path::Path, group: Store) -> Arc<MetaService> {
    let log = MetaLog::open(&dir.join("log")).expect("log");
    let transport = Arc::new(InProcess::default());
    let member: Members = [(1, "member-1".to_string())].into();
    let service = MetaService::start_group(
        1,
        GroupId::Index(1),
        Joining::Founding(member),
        &log,
        group,
        transport.clone(),
        Tuning::default(),
    )
    .await
    .expect("member starts");
    transport.register("member-1".into(), &service);
    service
}

/// An index group's leader answers no read of objects before its member's
/// root recorded the index groups (a root still to split would leave the
/// replica without the records it moves), but reads its feed at once: a
/// gateway's start connects to every group before it records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_groups_reads_of_objects_wait_for_its_members_root() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (root, config) = lone_root_replica(dir.path());
    let group = root.open_group(1, config).expect("group replica");
    let service = lone_index_group(dir.path(), group).await;
    let services = [service.clone()];
    let ask = |call: serde_json::Value| {
        let services = services.clone();
        async move { routed_at_leader(&services, &call).await }
    };
    let head = serde_json::json!({"op": "head_object", "bucket": "b", "key": "k"});
    let feed_head = serde_json::json!({"op": "feed_head"});

    assert!(matches!(ask(feed_head.clone()).await, Routed::Answer(_)));
    match ask(head.clone()).await {
        Routed::Unavailable(why) => assert!(why.contains("waits for this member's root"), "{why}"),
        other => panic!("a read of objects before the root recorded groups: {other:?}"),
    }
    let recorded = root
        .serve_meta(br#"{"op": "record_index_groups", "count": 1}"#, None)
        .await;
    assert!(String::from_utf8_lossy(&recorded).contains("Ok"));
    match ask(head).await {
        // Answered by the replica: no such bucket there.
        Routed::Answer(answer) => {
            let answer = String::from_utf8_lossy(&answer).into_owned();
            assert!(answer.contains("NoSuchBucket"), "{answer}");
        }
        other => panic!("a read of objects once the root recorded groups: {other:?}"),
    }
    service.shutdown().await;
}

/// What the orphan sweep of a split service relies on: a follower's
/// replica is caught up only once it applied what the leader had when a
/// majority confirmed, after the question, that it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_caught_up_once_it_applied_the_leaders_read_point() {
    let group = start_group().await;
    group.create_shared_bucket().await;
    group.settle().await;
    let follower_id = group.a_follower();
    let follower = group.services[follower_id as usize - 1]
        .clone()
        .expect("the follower runs");
    let follower_replica = group.replicas[follower_id as usize - 1]
        .clone()
        .expect("the follower's replica");
    follower
        .caught_up(Duration::from_secs(10))
        .await
        .expect("a settled follower is caught up");

    // Cut off from the log (it still answers and sends probes), the
    // follower misses a change the two others acknowledge.
    let address = format!("member-{follower_id}");
    group.transport.probes_only.write().insert(address.clone());
    let put = group.call(put_call("missed", b"x", None)).await;
    assert!(put["outcome"]["Ok"].is_object(), "{put}");
    match follower.caught_up(Duration::from_millis(500)).await {
        Err(why) => assert!(
            why.contains("did not catch up within")
                && why.contains("applying up to the leader's read point"),
            "{why}"
        ),
        Ok(()) => panic!("a follower that missed a change is caught up"),
    }
    assert!(
        follower_replica
            .head_object("shared", "missed")
            .await
            .is_err()
    );

    // Taking the log again, it applies up to the read point.
    group.transport.probes_only.write().remove(&address);
    follower
        .caught_up(Duration::from_secs(10))
        .await
        .expect("the follower catches up");
    follower_replica
        .head_object("shared", "missed")
        .await
        .expect("the change applied at the read point");
    group
        .leader()
        .caught_up(Duration::from_secs(10))
        .await
        .expect("the leader is caught up");

    // Cut off past its election timeout, the follower stands for election
    // and forgets its leader: asked then, it waits for the group's next
    // leader instead of giving up at once.
    let leader = follower.status().leader;
    group.transport.probes_only.write().insert(address.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while follower.status().leader == leader {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a cut-off follower kept its leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let transport = group.transport.clone();
    let reconnect = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        transport.probes_only.write().remove(&address);
    });
    follower
        .caught_up(Duration::from_secs(10))
        .await
        .expect("a follower without a leader waits for one");
    reconnect.await.expect("reconnected");

    // A member shut down did not stop on its own: its status says nothing.
    follower.shutdown().await;
    assert_eq!(follower.status().stopped, None);
}

/// An index group's replica that its member's root split did not seed (an
/// install cut short wiped it) stops at the first call rather than apply
/// it over nothing, and says why in its status (`strata metadata` and
/// `/metrics` show it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseeded_index_group_replica_stops_and_says_why() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (root, config) = lone_root_replica(dir.path());
    root.create_bucket("acct", "shared", "r")
        .await
        .expect("bucket");
    let split = root
        .serve_meta(br#"{"op": "split_into_index_groups", "count": 1}"#, None)
        .await;
    assert!(String::from_utf8_lossy(&split).contains("Ok"), "{split:?}");
    let group = root.open_group(1, config).expect("group replica");
    group.wipe_replica().await.expect("wiped");
    let service = lone_index_group(dir.path(), group).await;
    assert_eq!(service.status().stopped, None);

    let services = [service.clone()];
    let put = routed_at_leader(&services, &put_call("k", b"x", None)).await;
    assert!(!matches!(put, Routed::Answer(_)), "{put:?}");
    let mut stopped = None;
    for _ in 0..200 {
        stopped = service.status().stopped;
        if stopped.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let why = stopped.expect("the replica stopped");
    assert!(why.contains("holds none"), "{why}");
    service.shutdown().await;
}

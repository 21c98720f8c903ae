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
use strata_meta::{Members, MetaService, RaftRpc, RaftTransport, Routed};
use strata_pool::{LocalPool, LocalPoolConfig};
use strata_store::{Store, StoreConfig};

/// Delivers messages to the member at an address, if it runs.
#[derive(Default)]
struct InProcess {
    members: RwLock<HashMap<String, Weak<MetaService>>>,
}

#[async_trait]
impl RaftTransport for InProcess {
    async fn send(
        &self,
        address: &str,
        rpc: RaftRpc,
        body: Bytes,
        _timeout: Duration,
    ) -> Result<Bytes, String> {
        let member = self.members.read().get(address).and_then(Weak::upgrade);
        let member = member.ok_or_else(|| format!("{address} does not run"))?;
        member.handle_rpc(rpc, &body).await.map(Bytes::from)
    }
}

struct Group {
    services: Vec<Arc<MetaService>>,
    replicas: Vec<Store>,
    _dir: tempfile::TempDir,
}

async fn start_group() -> Group {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pool = Arc::new(
        LocalPool::open(LocalPoolConfig {
            dir: dir.path().join("pool"),
        })
        .expect("pool"),
    );
    let members: Members = (1..=3).map(|id| (id, format!("member-{id}"))).collect();
    let transport = Arc::new(InProcess::default());
    let mut starting = Vec::new();
    for id in 1..=3u64 {
        let mut config = StoreConfig::new(dir.path().join(format!("replica-{id}")));
        config.background_expiry = false;
        let replica = Store::open(config, pool.clone()).expect("replica");
        let (members, transport) = (members.clone(), transport.clone());
        let log_dir = dir.path().join(format!("log-{id}"));
        starting.push(tokio::spawn(async move {
            let service = MetaService::start(id, members, &log_dir, replica.clone(), transport)
                .await
                .expect("member starts");
            (service, replica)
        }));
    }
    let mut group = Group {
        services: Vec::new(),
        replicas: Vec::new(),
        _dir: dir,
    };
    for started in starting {
        let (service, replica) = started.await.expect("start task");
        transport.members.write().insert(
            format!("member-{}", service.status().id),
            Arc::downgrade(&service),
        );
        group.services.push(service);
        group.replicas.push(replica);
    }
    group
}

impl Group {
    /// Sends `call` to members in turn until one answers.
    async fn call(&self, call: serde_json::Value) -> serde_json::Value {
        let request = serde_json::to_vec(&call).expect("encodable call");
        for _ in 0..200 {
            for service in &self.services {
                match service.call(&request).await {
                    Routed::Answer(answer) => {
                        return serde_json::from_slice(&answer).expect("JSON answer");
                    }
                    Routed::NotLeader(_) | Routed::Unavailable(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no member answered {call}");
    }

    /// Waits until every member applied what the leader applied.
    async fn settle(&self) {
        for _ in 0..200 {
            let applied: Vec<_> = self
                .services
                .iter()
                .map(|service| service.status().last_applied)
                .collect();
            if applied
                .iter()
                .all(|index| *index == applied[0] && index.is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("members did not converge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_applies_the_same_changes_alike() {
    let group = start_group().await;
    let created = group
        .call(serde_json::json!({
            "op": "create_bucket", "account": "acct", "name": "shared",
            "region": "r1", "attrs": {}
        }))
        .await;
    assert!(created["outcome"]["Ok"].is_object(), "{created}");
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
    let refused = group
        .call(serde_json::json!({
            "op": "create_bucket", "account": "other", "name": "shared",
            "region": "r1", "attrs": {}
        }))
        .await;
    assert!(refused["outcome"]["Err"].is_string(), "{refused}");
    group.settle().await;

    let first = &group.replicas[0];
    let bucket = first.bucket("shared").await.expect("bucket on member 1");
    let feed = first.feed_since(0, 100).await.expect("feed of member 1");
    // The bucket's creation (an upload starting is not a change of the feed).
    assert_eq!(feed.len(), 1, "{feed:?}");
    for replica in &group.replicas[1..] {
        // The leader's clock: the same creation time everywhere.
        assert_eq!(replica.bucket("shared").await.expect("bucket"), bucket);
        // The leader's random bytes: the same upload id everywhere.
        replica
            .upload("shared", "big", &upload_id)
            .await
            .expect("the upload under the leader's id");
        let events = replica.feed_since(0, 100).await.expect("feed");
        assert_eq!(
            serde_json::to_string(&events).expect("events"),
            serde_json::to_string(&feed).expect("events"),
            "the feeds differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_lead_sends_callers_to_the_leader() {
    let group = start_group().await;
    // Any read settles who leads.
    group.call(serde_json::json!({"op": "feed_head"})).await;
    let leader = group
        .services
        .iter()
        .find_map(|service| service.status().leader)
        .expect("a leader");
    let follower = group
        .services
        .iter()
        .find(|service| service.status().id != leader)
        .expect("a follower");
    let request = serde_json::to_vec(&serde_json::json!({
        "op": "create_bucket", "account": "acct", "name": "elsewhere",
        "region": "r1", "attrs": {}
    }))
    .expect("call");
    match follower.call(&request).await {
        Routed::NotLeader(Some(address)) => assert_eq!(address, format!("member-{leader}")),
        other => panic!("a follower answered {other:?}"),
    }
    // Nothing was done there.
    group.settle().await;
    for replica in &group.replicas {
        assert!(replica.bucket("elsewhere").await.is_err());
    }
}

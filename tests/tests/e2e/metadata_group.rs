//! Three gateways that are the members of a replicated metadata service
//! (`--metadata A,B,C --metadata-member N`: a Raft group) over one cluster of
//! storage nodes, and a gateway that is not a member. Whatever was
//! acknowledged survives the loss of the leader; without a majority the
//! last member refuses changes rather than diverge; members that come back
//! catch up from the log; a leader cut off from the others by a network
//! partition refuses everything until it rejoins, and then takes their log.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_tests::{Cluster, HttpResponse, Partition, Server, Signing, unique_bucket};

/// The log version this build runs (`strata_meta::LOG_VERSION`; the harness
/// depends on no strata crate): 3 since bucket pins.
const LOG_VERSION: u64 = 4;

/// How long the group may take to elect a new leader and take changes
/// again (a follower stands for election after 2.5–3 s without a
/// heartbeat; the bound leaves room for a loaded CI machine).
const FAILOVER_BOUND: Duration = Duration::from_secs(20);

/// The member a member believes leads (0: none).
fn believed_leader(member: &Server) -> Result<u64> {
    member.metric("strata_metadata_leader")
}

/// The leader all running members agree on.
fn agreed_leader(members: &[&Server]) -> Result<u64> {
    let started = Instant::now();
    loop {
        let views = members
            .iter()
            .map(|member| believed_leader(member))
            .collect::<Result<Vec<_>>>()?;
        if views[0] != 0 && views.iter().all(|view| *view == views[0]) {
            return Ok(views[0]);
        }
        if started.elapsed() > FAILOVER_BOUND {
            bail!("members do not agree on a leader: {views:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `HOST:PORT` of each gateway, as `--metadata` names them.
pub(crate) fn addresses_of(gateways: &[Server]) -> Vec<String> {
    gateways.iter().map(address_of).collect()
}

/// The `HOST:PORT` of `gateway`, as a member is named.
pub(crate) fn address_of(gateway: &Server) -> String {
    gateway.endpoint().trim_start_matches("http://").to_owned()
}

fn put(gateway: &Server, bucket: &str, key: &str, body: &[u8]) -> Result<u16> {
    Ok(gateway
        .http(
            "PUT",
            &format!("/{bucket}/{key}"),
            Signing::Root,
            Some(body),
            &[],
        )?
        .status)
}

/// What a GET of `bucket/key` answers: status and body.
fn get(gateway: &Server, bucket: &str, key: &str) -> Result<(u16, Vec<u8>)> {
    let response = gateway.http("GET", &format!("/{bucket}/{key}"), Signing::Root, None, &[])?;
    Ok((response.status, response.body))
}

/// PUTs `object` through `gateway` until it is taken, within
/// [`FAILOVER_BOUND`] of the `event` that just happened (a group that lost
/// its leader takes no change until it elected another).
fn put_again_within_bound(
    gateway: &Server,
    (bucket, key, body): (&str, &str, &[u8]),
    event: &str,
) -> Result<()> {
    let since = Instant::now();
    while put(gateway, bucket, key, body)? != 200 {
        ensure!(
            since.elapsed() < FAILOVER_BOUND,
            "no change taken within {FAILOVER_BOUND:?} of {event}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("changes taken again {:?} after {event}", since.elapsed());
    Ok(())
}

/// Checks that `member`, without a majority, answers 503 to a PUT of
/// `bucket/minority` and to a GET of `bucket/known` (which exists) instead
/// of answering on its own.
fn refuses_without_majority(member: &Server, bucket: &str, known: &str) -> Result<()> {
    let status = put(member, bucket, "minority", b"must not diverge")?;
    ensure!(
        status == 503,
        "a member without a majority answered a PUT with {status}"
    );
    let (status, _) = get(member, bucket, known)?;
    ensure!(
        status == 503,
        "a member without a majority answered a GET with {status}"
    );
    Ok(())
}

/// Waits until `gateway` reads `bucket/key` again: a gateway whose feed
/// failed refuses calls, after waiting up to 3 s for it, until its next
/// poll is answered (clients retry a 503; the load script does not).
fn until_serving(gateway: &Server, bucket: &str, key: &str) -> Result<()> {
    until_status(gateway, bucket, key, 200)
}

/// Waits until a GET of `bucket/key` through `gateway` answers `status`.
fn until_status(gateway: &Server, bucket: &str, key: &str, status: u16) -> Result<()> {
    let started = Instant::now();
    loop {
        let answered = get(gateway, bucket, key)?.0;
        if answered == status {
            return Ok(());
        }
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "{} still answers {answered} for {bucket}/{key}, not {status}",
            gateway.endpoint()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replicated_metadata_service_outlives_its_leader_and_refuses_changes_without_a_majority()
-> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    let mut members = cluster.metadata_group(3)?;
    let addresses = addresses_of(&members);
    let outsider = cluster.gateway_over_address(&addresses.join(","))?;

    // Changes through any member read back through every other and the
    // outsider.
    let bucket = unique_bucket("raft");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    members[1].python_ok("cluster_load.py", &["write", &bucket, "40"])?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "40"])?;
    outsider.python_ok("cluster_load.py", &["write", &bucket, "10", "40"])?;
    members[0].python_ok("cluster_load.py", &["verify", &bucket, "50"])?;

    // The leader dies: the others elect another and take changes again.
    let all: Vec<&Server> = members.iter().collect();
    let leader = agreed_leader(&all)? as usize - 1;
    members[leader].kill9()?;
    let survivors: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    put_again_within_bound(
        &members[survivors[0]],
        (&bucket, "after-failover", b"new leader"),
        "the leader's death",
    )?;
    // Nothing acknowledged before was lost, and everyone sees the new change.
    until_serving(&members[survivors[1]], &bucket, "after-failover")?;
    until_serving(&outsider, &bucket, "after-failover")?;
    members[survivors[1]].python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
    outsider.python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
    ensure!(get(&outsider, &bucket, "after-failover")? == (200, b"new leader".to_vec()));
    // The new leader answers the feed: it knows the gateways that follow it
    // (both members' doors and the outsider) once each has polled.
    let alive: Vec<&Server> = survivors.iter().map(|index| &members[*index]).collect();
    let new_leader_index = agreed_leader(&alive)? as usize - 1;
    let new_leader = &members[new_leader_index];
    let started = Instant::now();
    while new_leader.metric("strata_feed_followers")? != 3 {
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "the new leader's followers:\n{}",
            new_leader.metrics()?
        );
        thread::sleep(Duration::from_millis(100));
    }

    // A second death, of the follower, leaves one member of three: the
    // leader, which refuses changes and reads (503) instead of answering
    // on its own.
    let follower = survivors
        .iter()
        .copied()
        .find(|index| *index != new_leader_index)
        .context("no follower left")?;
    members[follower].kill9()?;
    refuses_without_majority(&members[new_leader_index], &bucket, "after-failover")?;
    // `strata metadata` gets no leader's answer (that leader has no
    // majority to confirm it), and shows what each member sees.
    shows_each_members_view(&cluster, &addresses, new_leader_index as u64 + 1)?;

    // Back to a majority: the members that were away catch up from the log.
    members[leader].restart()?;
    members[follower].restart()?;
    let all: Vec<&Server> = members.iter().collect();
    agreed_leader(&all)?;
    for member in &members {
        until_serving(member, &bucket, "after-failover")?;
        member.python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
        ensure!(get(member, &bucket, "after-failover")? == (200, b"new leader".to_vec()));
    }
    same_log_applied(&members)
}

/// Checks that `strata metadata` fails for want of a leader's answer, and
/// prints each member's own view of the group: the member `alive` answers
/// (naming itself or no one as the leader: openraft keeps a leader without
/// a majority leading), the others are unreachable.
fn shows_each_members_view(cluster: &Cluster, addresses: &[String], alive: u64) -> Result<()> {
    let secret = cluster.secret();
    let listed = addresses.join(",");
    let args = ["metadata", "--json", "--metadata", &listed];
    let shown = cluster.strata(&[&args[..], &["--cluster-secret-file", &secret]].concat())?;
    ensure!(!shown.status.success(), "no leader, yet {shown}");
    let views: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    ensure!(views["error"].is_string(), "{views:#}");
    let members = views["views"].as_array().context("no views")?;
    ensure!(members.len() == 3, "{views:#}");
    for (id, entry) in (1..).zip(members) {
        ensure!(entry["member"] == id, "{views:#}");
        match id == alive {
            true => {
                let view = &entry["view"];
                let leader = &view["leader"];
                ensure!(view["id"] == id, "{views:#}");
                ensure!(leader.is_null() || *leader == id, "{views:#}");
                // A failover happened: past the first election's term.
                ensure!(view["term"].as_u64() > Some(1), "{views:#}");
                // And it says which log version it runs (this build's).
                ensure!(view["runs_log_version"] == LOG_VERSION, "{views:#}");
            }
            false => ensure!(entry["error"].is_string(), "{views:#}"),
        }
    }
    Ok(())
}

/// A member's change, captured on a plain-text network and sent again to
/// the next leader after the one that took it died (a member whose memory
/// of the signatures it took never saw it), is refused by the log: the
/// object written since stays. Before, it deleted it.
#[test]
fn a_captured_change_replayed_to_the_next_leader_is_refused() -> Result<()> {
    let cluster = Cluster::start(1, 2, 1)?;
    let mut members = cluster.metadata_group(3)?;
    let bucket = unique_bucket("replay");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    ensure!(put(&members[0], &bucket, "kept", b"first")? == 200);
    let all: Vec<&Server> = members.iter().collect();
    let leader = agreed_leader(&all)? as usize - 1;

    let delete = format!(r#"{{"op":"delete_object","bucket":"{bucket}","key":"kept"}}"#);
    let captured = cluster.signed_meta_call(&delete, false)?;
    let send = |member: &Server| post_meta(member, &delete, &captured);
    deleted_then_written_again(&members[leader], &send(&members[leader])?, &bucket)?;

    members[leader].kill9()?;
    let survivors: Vec<&Server> = (0..3)
        .filter(|index| *index != leader)
        .map(|index| &members[index])
        .collect();
    let started = Instant::now();
    let next = loop {
        let next = agreed_leader(&survivors)? as usize - 1;
        if next != leader {
            break &members[next];
        }
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "no other leader after the leader's death"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let replayed = send(next)?;
    ensure!(
        replayed.status == 200 && replayed.body_text().contains("was taken before"),
        "the replayed call got {}: {}",
        replayed.status,
        replayed.body_text()
    );
    ensure!(
        get(next, &bucket, "kept")? == (200, b"second".to_vec()),
        "the replay deleted the object written since"
    );
    members[leader].restart()?;
    let all: Vec<&Server> = members.iter().collect();
    agreed_leader(&all)?;
    same_log_applied(&members)
}

/// A change's attempt that a member refused because it does not lead,
/// captured and sent to the leader after the attempt the leader took (the
/// same change, signed anew), is refused: the object written since stays.
/// Attempts to one member within a second are each answered.
#[test]
fn a_captured_attempt_refused_by_a_follower_is_not_applied_beside_the_one_taken() -> Result<()> {
    let cluster = Cluster::start(1, 2, 1)?;
    let members = cluster.metadata_group(3)?;
    let bucket = unique_bucket("attempt");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    ensure!(put(&members[0], &bucket, "kept", b"first")? == 200);
    let all: Vec<&Server> = members.iter().collect();
    let leader = agreed_leader(&all)? as usize - 1;
    let follower = (leader + 1) % members.len();

    let delete = format!(r#"{{"op":"delete_object","bucket":"{bucket}","key":"kept"}}"#);
    let nonce = rand::random::<u64>();
    let send = |member: &Server, attempt: &(String, String)| post_meta(member, &delete, attempt);
    // Two attempts to the follower within a second, as a sender whose
    // members name each other as leader makes them: each is refused as
    // not the leader, neither as taken before.
    let refused_attempt = cluster.signed_meta_attempt(&delete, false, nonce, 1)?;
    for attempt in [
        &refused_attempt,
        &cluster.signed_meta_attempt(&delete, false, nonce, 2)?,
    ] {
        let refused = send(&members[follower], attempt)?;
        ensure!(
            refused.status == 421,
            "a follower answered {}: {}",
            refused.status,
            refused.body_text()
        );
    }
    let taken = send(
        &members[leader],
        &cluster.signed_meta_attempt(&delete, false, nonce, 3)?,
    )?;
    deleted_then_written_again(&members[leader], &taken, &bucket)?;

    let replayed = send(&members[leader], &refused_attempt)?;
    ensure!(
        replayed.status == 200 && replayed.body_text().contains("was taken before"),
        "the captured attempt got {}: {}",
        replayed.status,
        replayed.body_text()
    );
    ensure!(
        get(&members[leader], &bucket, "kept")? == (200, b"second".to_vec()),
        "the captured attempt deleted the object written since"
    );
    Ok(())
}

/// POSTs the metadata call `body` to `member` as `signed` (its path and
/// `x-strata-auth` header line) says, as another member would.
fn post_meta(
    member: &Server,
    body: &str,
    (path, header): &(String, String),
) -> Result<HttpResponse> {
    let (_, signature) = header.split_once(": ").context("a header line")?;
    member.http(
        "POST",
        path,
        Signing::Anonymous,
        Some(body.as_bytes()),
        &[("x-strata-auth", signature)],
    )
}

/// Checks that the signed delete of `bucket/kept` that `leader` answered
/// with `taken` was applied, then writes the object again ("second").
fn deleted_then_written_again(leader: &Server, taken: &HttpResponse, bucket: &str) -> Result<()> {
    ensure!(
        taken.status == 200 && !taken.body_text().contains("Err"),
        "the signed delete got {}: {}",
        taken.status,
        taken.body_text()
    );
    until_status(leader, bucket, "kept", 404)?;
    ensure!(put(leader, bucket, "kept", b"second")? == 200);
    Ok(())
}

/// Waits until every member applied the same amount of the log (calls are
/// answered by the leader's replica; this is what says the others hold
/// the same).
fn same_log_applied(members: &[Server]) -> Result<()> {
    let started = Instant::now();
    loop {
        let applied = members
            .iter()
            .map(|member| member.metric("strata_metadata_last_applied"))
            .collect::<Result<Vec<_>>>()?;
        if applied.iter().all(|index| *index == applied[0]) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "members applied different amounts of the log: {applied:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The leader is cut off from the other members, both ways, while every
/// process runs on (each member reaches the others only through proxies
/// that tell who is calling). The majority elects another leader and goes
/// on, and so does a gateway that is not a member, on the majority's side;
/// the old leader, which has not heard that it lost, refuses
/// changes and reads instead of answering alone. Healed, it takes the
/// majority's log: the change it was sent while cut off is nowhere.
#[test]
fn a_partitioned_leader_refuses_changes_and_rejoins_without_diverging() -> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    let partition = Partition::new();
    let (members, fronts) = cluster.metadata_group_behind(&partition, 3)?;
    let listed: Vec<&str> = fronts.iter().map(|front| front.address.as_str()).collect();
    // A gateway that is not a member: host 3, on the majority's side.
    let outsider = cluster.gateway_over_address(&listed.join(","))?;
    partition.place(3, outsider.pid().context("the outsider is not running")?);
    let bucket = unique_bucket("split");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    members[1].python_ok("cluster_load.py", &["write", &bucket, "20"])?;
    // The outsider's calls go to the leader from here on.
    ensure!(put(&outsider, &bucket, "before-split", b"everyone")? == 200);

    let all: Vec<&Server> = members.iter().collect();
    let leader = agreed_leader(&all)? as usize - 1;
    let majority: Vec<usize> = (0..3).filter(|member| *member != leader).collect();
    partition.isolate(leader, &[majority[0], majority[1], 3]);
    put_again_within_bound(
        &members[majority[0]],
        (&bucket, "after-split", b"majority"),
        "the split",
    )?;
    let majority_leader = agreed_leader(&[&members[majority[0]], &members[majority[1]]])?;
    ensure!(
        majority_leader as usize - 1 != leader,
        "the majority follows the member it cannot reach"
    );

    // The outsider's next call goes to the old leader, whose connections
    // hang; the outsider gives up on it once another member answers as
    // leader, not when the call times out (30 s), and goes there.
    put_again_within_bound(
        &outsider,
        (&bucket, "through-outsider", b"outsider"),
        "the outsider's first call after the split",
    )?;
    until_serving(&outsider, &bucket, "after-split")?;

    // The old leader still runs and still believes it leads, but it can
    // confirm nothing with a majority.
    refuses_without_majority(&members[leader], &bucket, "before-split")?;

    partition.heal();
    agreed_leader(&all)?;
    for member in &members {
        until_serving(member, &bucket, "after-split")?;
        ensure!(get(member, &bucket, "after-split")? == (200, b"majority".to_vec()));
        ensure!(get(member, &bucket, "before-split")? == (200, b"everyone".to_vec()));
        ensure!(get(member, &bucket, "through-outsider")? == (200, b"outsider".to_vec()));
        let (status, _) = get(member, &bucket, "minority")?;
        ensure!(
            status == 404,
            "{}: the change sent to the cut-off leader answers {status}",
            member.endpoint()
        );
        member.python_ok("cluster_load.py", &["verify", &bucket, "20"])?;
    }
    same_log_applied(&members)
}

/// A member is replaced with `strata metadata`: a gateway started to join
/// is added and catches up, a founding member is killed and removed, and
/// the group then outlives the death of a second founder, which it could
/// not with the first still counted. The added member serves what was
/// written before it came.
#[test]
fn a_member_is_replaced_with_strata_metadata() -> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    let mut members = cluster.metadata_group(3)?;
    let addresses = addresses_of(&members);
    let bucket = unique_bucket("swap");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    members[1].python_ok("cluster_load.py", &["write", &bucket, "20"])?;

    let joiner = cluster.metadata_joiner(&addresses)?;
    let joiner_address = address_of(&joiner);
    let listed = addresses.join(",");
    let metadata = |args: &[&str]| cluster.metadata_json(&listed, args);
    let voters = |membership: &serde_json::Value| -> Vec<String> {
        membership["members"]
            .as_object()
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    };
    let added = metadata(&["add", "4", &joiner_address])?;
    ensure!(voters(&added) == ["1", "2", "3", "4"], "{added}");
    ensure!(added["members"]["4"] == joiner_address.as_str(), "{added}");
    // Every member runs this build: the leader, which asks each which log
    // version it runs (a probe over the cluster's HTTP), raised the group's
    // to it, and a show says what each runs.
    let every_member_at_this_build = serde_json::json!({
        "1": LOG_VERSION, "2": LOG_VERSION, "3": LOG_VERSION, "4": LOG_VERSION
    });
    crate::cluster::within(FAILOVER_BOUND, Duration::from_millis(500), || {
        let shown = metadata(&["show"])?;
        let raised =
            shown["log_version"] == LOG_VERSION && shown["runs"] == every_member_at_this_build;
        Ok((!raised).then(|| shown.to_string()))
    })?;
    joiner.python_ok("cluster_load.py", &["verify", &bucket, "20"])?;

    members[0].kill9()?;
    let killed_at = Instant::now();
    let removed = loop {
        // Refused while the others elect a leader, if member 1 led.
        match metadata(&["remove", "1"]) {
            Ok(removed) => break removed,
            Err(err) if killed_at.elapsed() > FAILOVER_BOUND => return Err(err),
            Err(_) => thread::sleep(Duration::from_millis(500)),
        }
    };
    ensure!(voters(&removed) == ["2", "3", "4"], "{removed}");
    ensure!(voters(&metadata(&["show"])?) == ["2", "3", "4"]);

    members[1].kill9()?;
    put_again_within_bound(
        &joiner,
        (&bucket, "after", b"two of three"),
        "member 2's death (members 3 and 4 left)",
    )?;
    until_serving(&members[2], &bucket, "after")?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "20"])?;
    ensure!(get(&joiner, &bucket, "after")? == (200, b"two of three".to_vec()));
    Ok(())
}

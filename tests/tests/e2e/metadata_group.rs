//! Three gateways that are the members of a replicated metadata service
//! (`--metadata A,B,C --metadata-member N`: a Raft group) over one cluster of
//! storage nodes, and a gateway that is not a member. Whatever was
//! acknowledged survives the loss of the leader; without a majority the
//! last member refuses changes rather than diverge; members that come back
//! catch up from the log.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_tests::{Cluster, Server, Signing, unique_bucket};

/// How long the group may take to elect a new leader and take changes
/// again (a follower stands for election after 2.5–3 s without a
/// heartbeat; the bound leaves room for a loaded CI machine).
const FAILOVER_BOUND: Duration = Duration::from_secs(20);

/// A member's gauge `name` from its `/metrics`.
fn gauge(member: &Server, name: &str) -> Result<u64> {
    let metrics = member.http("GET", "/metrics", Signing::Anonymous, None, &[])?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics:\n{text}"))
}

/// The member a member believes leads (0: none).
fn believed_leader(member: &Server) -> Result<u64> {
    gauge(member, "strata_metadata_leader")
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
fn addresses_of(gateways: &[Server]) -> Vec<String> {
    gateways
        .iter()
        .map(|gateway| gateway.endpoint().trim_start_matches("http://").to_owned())
        .collect()
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

/// Waits until `gateway` reads `bucket/key` again: a gateway whose feed
/// failed refuses calls at once until its next poll is answered (clients
/// retry a 503; the load script does not).
fn until_serving(gateway: &Server, bucket: &str, key: &str) -> Result<()> {
    let started = Instant::now();
    while get(gateway, bucket, key)?.0 != 200 {
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "{} does not serve {bucket}/{key} again",
            gateway.endpoint()
        );
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
    let killed_at = Instant::now();
    loop {
        if put(
            &members[survivors[0]],
            &bucket,
            "after-failover",
            b"new leader",
        )? == 200
        {
            break;
        }
        ensure!(
            killed_at.elapsed() < FAILOVER_BOUND,
            "no change accepted within {FAILOVER_BOUND:?} of the leader's death"
        );
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "changes accepted again {:?} after the leader died",
        killed_at.elapsed()
    );
    // Nothing acknowledged before was lost, and everyone sees the new change.
    until_serving(&members[survivors[1]], &bucket, "after-failover")?;
    until_serving(&outsider, &bucket, "after-failover")?;
    members[survivors[1]].python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
    outsider.python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
    ensure!(get(&outsider, &bucket, "after-failover")? == (200, b"new leader".to_vec()));

    // A second death leaves one member of three: it refuses changes and
    // reads (503) instead of answering on its own.
    members[survivors[1]].kill9()?;
    let lone = &members[survivors[0]];
    let status = put(lone, &bucket, "minority", b"must not diverge")?;
    ensure!(
        status == 503,
        "a member without a majority answered a PUT with {status}"
    );
    let (status, _) = get(lone, &bucket, "after-failover")?;
    ensure!(
        status == 503,
        "a member without a majority answered a GET with {status}"
    );

    // Back to a majority: the members that were away catch up from the log.
    members[leader].restart()?;
    members[survivors[1]].restart()?;
    let all: Vec<&Server> = members.iter().collect();
    agreed_leader(&all)?;
    for member in &members {
        until_serving(member, &bucket, "after-failover")?;
        member.python_ok("cluster_load.py", &["verify", &bucket, "50"])?;
        ensure!(get(member, &bucket, "after-failover")? == (200, b"new leader".to_vec()));
    }
    // Every member applied the same log (calls are answered by the leader's
    // replica; this is what says the others hold the same).
    let started = Instant::now();
    loop {
        let applied = members
            .iter()
            .map(|member| gauge(member, "strata_metadata_last_applied"))
            .collect::<Result<Vec<_>>>()?;
        if applied.iter().all(|index| *index == applied[0]) {
            break;
        }
        ensure!(
            started.elapsed() < FAILOVER_BOUND,
            "members applied different amounts of the log: {applied:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
    let joiner_address = joiner.endpoint().trim_start_matches("http://").to_owned();
    let (listed, secret) = (addresses.join(","), cluster.secret());
    let metadata = |args: &[&str]| -> Result<serde_json::Value> {
        let mut command = vec!["metadata", "--metadata", &listed];
        command.extend(["--cluster-secret-file", &secret, "--json"]);
        command.extend(args);
        Ok(serde_json::from_slice(
            &cluster.strata_ok(&command)?.stdout,
        )?)
    };
    let voters = |membership: &serde_json::Value| -> Vec<String> {
        membership["members"]
            .as_object()
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    };
    let added = metadata(&["add", "4", &joiner_address])?;
    ensure!(voters(&added) == ["1", "2", "3", "4"], "{added}");
    ensure!(added["members"]["4"] == joiner_address.as_str(), "{added}");
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
    let killed_at = Instant::now();
    while put(&joiner, &bucket, "after", b"two of three")? != 200 {
        ensure!(
            killed_at.elapsed() < FAILOVER_BOUND,
            "no change accepted by members 3 and 4 within {FAILOVER_BOUND:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    until_serving(&members[2], &bucket, "after")?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "20"])?;
    ensure!(get(&joiner, &bucket, "after")? == (200, b"two of three".to_vec()));
    Ok(())
}

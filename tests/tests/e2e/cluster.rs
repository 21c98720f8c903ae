//! The cluster on loopback: storage nodes (`strata node`) holding the extents
//! of a gateway (`strata serve --ring`), two copies of each. Nodes are
//! SIGKILLed during uploads, brought back, corrupted, added and removed;
//! every acknowledged object must read back byte-identical throughout, and
//! `strata status` must report the cluster settled before anything is
//! assumed repaired.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_tests::{
    Certificates, Cluster, KillOnDrop, Partition, Server, Signing, SwiftUser, Tmpfs,
    assert_same_tree, random_bytes, unique_bucket, unix_now, utf8, write_tree,
};

const OBJECTS: usize = 1000;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn node_loss_during_uploads_repair_and_corruption() -> Result<()> {
    let (mut cluster, server, bucket) = three_nodes_and_a_bucket("cluster")?;
    // A second gateway over the first one's metadata: writes and reads go
    // through both.
    let second = cluster.gateway_over(&server)?;

    // A node dies a tenth of the way into the upload (every other object
    // through S3, the rest through Swift); no write may fail.
    let acked = upload_killing_node(&server, &mut cluster, &bucket, 1, OBJECTS / 10)?;
    ensure!(acked == OBJECTS, "{acked} of {OBJECTS} writes acknowledged");

    // Swift writes and reads go through the same pool.
    let work = server.work_dir("cluster")?;
    let (container, tree) = swift_tree(&second, &work, "cluster-swift")?;

    let verify = |when| verify_all(&server, &bucket, &work, &container, &tree, when);
    // Everything reads back while the node is down, through both APIs and
    // both gateways.
    verify("node 1 down")?;
    verify_all(
        &second,
        &bucket,
        &work,
        &container,
        &tree,
        "node 1 down, second gateway",
    )?;

    // The gateway's /metrics shows the cluster's health too.
    within_settle_timeout(|| {
        let unreachable = server.metric("strata_cluster_nodes{state=\"unreachable\"}")?;
        Ok((unreachable != 1).then(|| format!("{unreachable} nodes unreachable in /metrics")))
    })?;
    ensure!(server.metric("strata_cluster_settled")? == 0);

    // The node returns; the replicator restores every second copy.
    let since = unix_now();
    cluster.nodes[1].restart()?;
    let settled = cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    within_settle_timeout(|| {
        let settled = server.metric("strata_cluster_settled")?;
        let up = server.metric("strata_cluster_nodes{state=\"up\"}")?;
        Ok((settled != 1 || up != 3)
            .then(|| format!("settled {settled}, {up} nodes up in /metrics")))
    })?;
    let pushed = replication_total(&settled, "extents_pushed");
    ensure!(
        pushed > 0,
        "nothing was replicated after the node returned:\n{settled:#}"
    );

    // Proof that two copies exist again: lose another node, read everything.
    cluster.nodes[0].kill9()?;
    verify("node 0 down after repair")?;
    let since = unix_now();
    cluster.nodes[0].restart()?;
    cluster.wait_settled(since, SETTLE_TIMEOUT)?;

    // A damaged extent is detected (on read or by the auditor), quarantined
    // and replaced by a good copy; readers never see the damage.
    let (victim, original) = corrupt_largest_extent(cluster.nodes[2].data_dir())?;
    verify("an extent corrupted")?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let restored = fs::read(&victim).is_ok_and(|bytes| bytes == original);
        let status = cluster.status()?;
        let quarantined = replication_total(&status, "corrupt_quarantined");
        if restored && quarantined >= 1 && status["settled"] == true {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the corrupted extent {} was not replaced (restored: {restored}, quarantined: {quarantined}):\n{status:#}\n{}",
                victim.display(),
                cluster.nodes[2].log_tail(30)
            );
        }
        thread::sleep(Duration::from_millis(250));
    }

    // The gateway counted the copies it sent to handoff nodes.
    let handoffs = server.metric("strata_pool_handoff_writes_total")?;
    ensure!(handoffs > 0, "no write went to a handoff node");
    Ok(())
}

/// The index on the storage nodes (`docs/design/index-on-the-ring.md`,
/// step 3): four index groups, each a Raft group of the three nodes, the
/// root group with the first gateway. A node is SIGKILLed a tenth of the
/// way into the upload: every write is acknowledged, every object and
/// listing reads back through both gateways while it is down, and once
/// back it catches up in every group.
#[test]
fn index_groups_on_the_nodes_outlive_a_node_killed() -> Result<()> {
    const GROUPS: u16 = 4;
    let mut cluster = Cluster::start_holding_index_groups(3, 6, 2, GROUPS)?;
    let index = cluster.index_config();
    let mut server = cluster.gateway_with_config(&index)?;
    let second = cluster.gateway_over_with_config(&server, &index)?;
    let bucket = unique_bucket("index-nodes");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;

    // The changes a group's leader held when it died are answered 503
    // (whether they were applied is not known): the writer sends them
    // again, as SDKs do.
    let acked = upload_with_killing_node(
        "write-retrying",
        &server,
        &mut cluster,
        &bucket,
        (1, OBJECTS / 10),
    )?;
    ensure!(acked == OBJECTS, "{acked} of {OBJECTS} writes acknowledged");
    let work = server.work_dir("index-nodes")?;
    let (container, tree) = swift_tree(&second, &work, "index-nodes-swift")?;
    for gateway in [&server, &second] {
        verify_all(gateway, &bucket, &work, &container, &tree, "node 1 down")?;
        ensure_listed(gateway, &bucket, OBJECTS)?;
    }

    // The records are on the nodes: the bucket's index group there (at
    // its leader, whichever node that is) has the object just written.
    let one_more = work.join("one-more");
    fs::write(&one_more, b"one more")?;
    second.aws_ok(&[
        "s3",
        "cp",
        utf8(&one_more)?,
        &format!("s3://{bucket}/one-more"),
    ])?;
    let head = format!(r#"{{"op":"head_object","bucket":"{bucket}","key":"one-more"}}"#);
    let mut answers = Vec::new();
    for group in 1..=GROUPS {
        for node in [0, 2] {
            answers.push(cluster.node_meta_call(node, group, &head)?);
        }
    }
    let found = answers.iter().any(|(status, answer)| {
        *status == 200 && answer.contains(r#""Ok""#) && answer.contains(r#""size":8"#)
    });
    ensure!(
        found,
        "no index group on the nodes has {bucket}/one-more: {answers:?}"
    );

    // `strata status` names the member that does not answer (node 1 is
    // member 2 of every group).
    let status = cluster.status()?;
    let missing: Vec<_> = status["index_groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|group| group["missing"].clone())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        status["index_groups_caught_up"] == false
            && missing == vec![serde_json::json!([2]); GROUPS as usize],
        "with node 1 down: {status:#}"
    );

    // Back, the node catches up with the others in every group, as
    // `strata status` reports it.
    cluster.nodes[1].restart()?;
    within_settle_timeout(|| {
        let status = cluster.status()?;
        let groups = index_group_reports(&status);
        let members = groups
            .iter()
            .map(|group| group["members"].as_array().map_or(0, Vec::len))
            .collect::<Vec<_>>();
        let caught_up = status["index_groups_caught_up"] == true;
        Ok((!caught_up || members != [3; GROUPS as usize])
            .then(|| format!("index groups not caught up, with {members:?} members: {groups:#?}")))
    })?;
    verify_all(&second, &bucket, &work, &container, &tree, "node 1 back")?;

    // The root keeps who holds its groups: restarted without the list,
    // the gateway that holds it is refused rather than serve groups of
    // its own, empty.
    server.rewrite_config(&format!("index_groups = {GROUPS}\n"))?;
    ensure!(server.restart().is_err(), "started with the groups at home");
    let log = server.log_tail(20);
    ensure!(log.contains("held elsewhere"), "{log}");
    server.rewrite_config(&index)?;
    server.restart()?;
    let listed = server.aws_ok(&["s3", "ls", &format!("s3://{bucket}/")])?;
    ensure!(
        listed.stdout_text().lines().count() == OBJECTS + 1,
        "after the restart, the listing shows {listed}"
    );
    Ok(())
}

/// A node lost for good, with its disk, is replaced in the index groups:
/// the new node joins each group of its position, caught up before it
/// votes, and takes the old member out, so that losing one more node still
/// leaves every group a majority. A reader runs throughout without a
/// failed read.
#[test]
fn an_index_node_lost_for_good_is_replaced_in_its_groups() -> Result<()> {
    const GROUPS: u16 = 4;
    const COUNT: usize = 100;
    let mut cluster = Cluster::start_holding_index_groups(3, 6, 2, GROUPS)?;
    let server = cluster.gateway_with_config(&cluster.index_config())?;
    let bucket = unique_bucket("index-replaced");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.python_ok("cluster_load.py", &["write", &bucket, &COUNT.to_string()])?;
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
    let work = server.work_dir("index-replaced")?;
    let stop = work.join("stop");
    let reader = Reader::start(&server, &bucket, COUNT, utf8(&stop)?)?;

    // A node (a member of every group) is lost with its disk: the one that
    // leads fewest groups, so that a leader elsewhere has heard its member.
    // Started again empty under its address, it is refused before it
    // serves, rather than vote as the member it was with none of its log.
    let mut leaders: Vec<Option<u64>> = Vec::new();
    within_settle_timeout(|| {
        leaders = index_group_reports(&cluster.status()?)
            .iter()
            .map(|group| group["leader"].as_u64())
            .collect();
        let every_group_led =
            leaders.len() == GROUPS as usize && leaders.iter().all(Option::is_some);
        Ok((!every_group_led).then(|| format!("not every group has a leader: {leaders:?}")))
    })?;
    let leads = |node: usize| {
        let member = node as u64 + 1;
        leaders
            .iter()
            .filter(|leader| **leader == Some(member))
            .count()
    };
    // Three nodes, four groups: it leads one at most.
    let lost = (0..3).min_by_key(|node| leads(*node)).unwrap_or(1);
    let others: Vec<usize> = (0..3).filter(|node| *node != lost).collect();
    let (down_next, left) = (others[0], others[1]);
    cluster.nodes[lost].kill9()?;
    fs::remove_dir_all(cluster.nodes[lost].data_dir())?;
    let _ = cluster.nodes[lost].restart();
    let exited = cluster.nodes[lost].exits_within(Duration::from_secs(30))?;
    let log = cluster.nodes[lost].log_tail(10);
    ensure!(
        exited.is_some_and(|status| !status.success()) && log.contains("its data was lost"),
        "node {lost} started again on an empty disk ({exited:?}), leaders {leaders:?}: {log}"
    );
    let since = unix_now();
    let new = cluster.replace_index_node(lost)?;
    let mut expected = vec![
        cluster.nodes[down_next].address.clone(),
        cluster.nodes[left].address.clone(),
        cluster.nodes[new].address.clone(),
    ];
    expected.sort();
    within_settle_timeout(|| {
        let status = cluster.status()?;
        let groups = index_group_reports(&status);
        let held: Vec<Vec<String>> = groups
            .iter()
            .map(|group| {
                let mut nodes: Vec<String> = group["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|member| member["node"].as_str().map(str::to_owned))
                    .collect();
                nodes.sort();
                nodes
            })
            .collect();
        // Three voters, each among those that answered (`missing` empty):
        // the new node votes and no member's view keeps the lost one.
        let replaced = status["index_groups_caught_up"] == true
            && held == vec![expected.clone(); GROUPS as usize]
            && groups.iter().all(|group| {
                group.get("missing").is_none()
                    && group["voters"]
                        .as_array()
                        .is_some_and(|voters| voters.len() == 3)
            });
        Ok((!replaced).then(|| format!("the lost node is not replaced yet: {groups:#?}")))
    })?;
    cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    fs::write(&stop, "")?;
    let output = reader.finish()?;
    ensure!(output.contains("none failed"), "reader: {output}");
    eprintln!("reader while node {lost} was replaced: {}", output.trim());

    // One more node down: every group keeps two of its three members,
    // which it would not have with the lost node's member still in it.
    // The first gateway still names the groups' founding nodes, and finds
    // their leaders through the one left; a gateway started now names the
    // new node.
    cluster.nodes[down_next].kill9()?;
    // Every group's leader shows its members, which it does only once a
    // majority confirms it leads.
    within(SETTLE_TIMEOUT, Duration::from_millis(500), || {
        for group in 1..=GROUPS {
            let mut answers = Vec::new();
            for node in [left, new] {
                answers.push(cluster.node_members_call(node, group, r#"{"op":"show"}"#)?);
            }
            if !answers.iter().any(|(status, _)| *status == 200) {
                return Ok(Some(format!(
                    "index group {group} shows no leader: {answers:?}"
                )));
            }
        }
        Ok(None)
    })?;
    let second = cluster.gateway_over_with_config(&server, &cluster.index_config())?;
    for (name, gateway) in [("first", &server), ("second", &second)] {
        ensure_listed(gateway, &bucket, COUNT).with_context(|| format!("the {name} gateway"))?;
        gateway.python_ok("cluster_load.py", &["verify", &bucket, &COUNT.to_string()])?;
    }
    second.python_ok(
        "cluster_load.py",
        &["write", &bucket, "10", &COUNT.to_string()],
    )?;
    server.python_ok(
        "cluster_load.py",
        &["verify", &bucket, "10", &COUNT.to_string()],
    )?;
    Ok(())
}

/// The index groups in `strata status --json`.
fn index_group_reports(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["index_groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Fails unless S3's listing of `bucket` through `gateway` counts `count`
/// keys.
fn ensure_listed(gateway: &Server, bucket: &str, count: usize) -> Result<()> {
    let listed = gateway.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        bucket,
        "--query",
        "length(Contents)",
    ])?;
    ensure!(
        listed.stdout_text().trim() == count.to_string(),
        "the listing shows {listed} keys, not {count}"
    );
    Ok(())
}

#[test]
fn a_node_cut_off_from_the_network() -> Result<()> {
    let mut cluster = Cluster::start_behind_proxies(3, 6, 2)?;
    let mut server = cluster.gateway()?;
    let bucket = unique_bucket("partition");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.python_ok("cluster_load.py", &["write", &bucket, "100"])?;
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;

    // Node 2 is cut off while a reader runs and writes go on: requests to it
    // hang rather than fail, which costs a timeout, not a failed request.
    let work = server.work_dir("partition")?;
    let stop = work.join("stop");
    let reader = Reader::start(&server, &bucket, 100, utf8(&stop)?)?;
    thread::sleep(Duration::from_millis(500));
    cluster.nodes[2].cut_off()?;
    server.python_ok("cluster_load.py", &["write", &bucket, "200", "100"])?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "300"])?;
    fs::write(&stop, "")?;
    let output = reader.finish()?;
    ensure!(output.contains("none failed"), "reader: {output}");
    eprintln!("reader while node 2 was cut off: {}", output.trim());
    let status = cluster.status()?;
    ensure!(
        status["nodes_up"] == 2 && status["settled"] == false,
        "node 2 is cut off, yet:\n{status:#}"
    );
    let handoffs = server.metric("strata_pool_handoff_writes_total")?;
    ensure!(handoffs > 0, "no write went to a handoff node");

    // A gateway that starts meanwhile is not stopped by the silent node.
    server.restart()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "300"])?;

    // Reconnected, it gets every copy written meanwhile: the cluster settles
    // and another node can go.
    cluster.nodes[2].reconnect()?;
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
    cluster.nodes[0].kill9()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "300"])?;

    // With no node reachable, requests get a clear 503 (at once, once the
    // gateway knows), and writes work again as soon as the nodes are back.
    cluster.nodes[1].cut_off()?;
    cluster.nodes[2].cut_off()?;
    let body = vec![7u8; 20_000];
    let path = format!("/{bucket}/while-cut-off");
    for _ in 0..2 {
        server
            .http("PUT", &path, Signing::Root, Some(&body), &[])?
            .expect_s3_error(503, "ServiceUnavailable")?;
        server
            .http(
                "GET",
                &format!("/{bucket}/load-00000"),
                Signing::Root,
                None,
                &[],
            )?
            .expect_s3_error(503, "ServiceUnavailable")?;
    }
    cluster.nodes[1].reconnect()?;
    cluster.nodes[2].reconnect()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let put = server.http("PUT", &path, Signing::Root, Some(&body), &[])?;
        if put.status == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "writes did not resume after the nodes came back:\n{put}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let read = server.http("GET", &path, Signing::Root, None, &[])?;
    ensure!(read.status == 200 && read.body == body, "{read}");
    Ok(())
}

#[test]
fn nodes_refuse_strangers() -> Result<()> {
    let cluster = Cluster::start(1, 2, 1)?;
    let node = &cluster.nodes[0].address;
    let url = format!("http://{node}/v1/extents/00000000000000000000000000000000");
    let unsigned = cluster_curl(&["-X", "PUT", "--data-binary", "forged", &url])?;
    ensure!(unsigned == "401", "an unsigned PUT got {unsigned}");
    let forged = cluster_curl(&["-H", "x-strata-auth: 1:00", &url])?;
    ensure!(forged == "401", "a forged signature got {forged}");

    // In plain text a PUT's signature covers its body: a request seen on
    // the network, sent again with other bytes (and their CRC32C), or one
    // whose signature names no body, is refused.
    let put = |path: &str, headers: &[&str], body: &str| {
        let url = format!("http://{node}{path}");
        let mut args = vec!["-X", "PUT"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.extend(["--data-binary", body, &url]);
        cluster_curl(&args)
    };
    let put_extent = |path: &str, signature: &str, body: &str| {
        let crc = format!("x-strata-crc32c: {}", crc32c::crc32c(body.as_bytes()));
        put(path, &[signature, &crc], body)
    };
    // Extent `id`'s path, signed for the bytes "signed bytes".
    let signed_path = |id: &str| {
        format!(
            "/v1/extents/{id}?sha256={}",
            strata_tests::sha256_hex(b"signed bytes")
        )
    };
    let path = signed_path("0123456789abcdef0123456789abcdef");
    let signature = cluster.signature("PUT", &path, false)?;
    let stored = put_extent(&path, &signature, "signed bytes")?;
    ensure!(stored == "204", "a signed PUT got {stored}");
    let replayed = put_extent(&path, &signature, "other bytes!")?;
    ensure!(
        replayed == "401",
        "a PUT sent again with other bytes got {replayed}"
    );
    // Signed, but the bytes are not those of their CRC32C.
    let damaged_path = signed_path("0123456789abcdef0123456789abcded");
    let wrong_crc = format!("x-strata-crc32c: {}", crc32c::crc32c(b"signed bytes") ^ 1);
    let signature = cluster.signature("PUT", &damaged_path, false)?;
    let damaged = put(&damaged_path, &[&signature, &wrong_crc], "signed bytes")?;
    ensure!(
        damaged == "400",
        "a PUT whose bytes fail their CRC32C got {damaged}"
    );
    // A ring's body is bound to its signature as an extent's is.
    let ring_path = format!(
        "/v1/ring?sha256={}",
        strata_tests::sha256_hex(b"the ring that was signed")
    );
    let signature = cluster.signature("PUT", &ring_path, false)?;
    let ring = put(&ring_path, &[&signature], "another ring")?;
    ensure!(ring == "401", "a ring sent with other bytes got {ring}");
    let unbound = "/v1/extents/0123456789abcdef0123456789abcdee";
    let signature = cluster.signature("PUT", unbound, false)?;
    let refused = put_extent(unbound, &signature, "no digest")?;
    ensure!(
        refused == "401",
        "a PUT whose signature names no body got {refused}"
    );
    let extent = "/v1/extents/0123456789abcdef0123456789abcdef";
    let mut read = std::process::Command::new("curl");
    read.args(["-s", "-i", "-H", &cluster.signature("GET", extent, false)?])
        .arg(format!("http://{node}{extent}"));
    let answer = strata_tests::run_tool(&mut read, Duration::from_secs(30))?.stdout_text();
    let (head, held) = answer.split_once("\r\n\r\n").unwrap_or_default();
    ensure!(held == "signed bytes", "the extent holds {held:?}");
    // With its CRC32C, which the reader checks.
    let crc = format!("x-strata-crc32c: {}", crc32c::crc32c(b"signed bytes"));
    ensure!(
        head.lines().any(|line| line.eq_ignore_ascii_case(&crc)),
        "no {crc} in\n{head}"
    );

    // `strata status` with another cluster's secret is refused by every node.
    let other_secret = tempfile::NamedTempFile::new()?;
    fs::write(other_secret.path(), "another-cluster-secret-0000\n")?;
    let status = cluster
        .strata_ok(&[
            "status",
            "--json",
            "--ring",
            &cluster.ring(),
            "--cluster-secret-file",
            utf8(other_secret.path())?,
        ])?
        .json()?;
    ensure!(
        status["nodes_up"] == 0 && status["settled"] == false,
        "a wrong secret was accepted:\n{status:#}"
    );
    let error = status["reports"][0]["error"].as_str().unwrap_or_default();
    ensure!(error.contains("401"), "no 401 in {error}");

    // A gateway holding a ring of another cluster does not start: the node
    // refuses the ring, and the gateway refuses to write where it would.
    let foreign = tempfile::tempdir()?;
    let builder = foreign.path().join("other.builder");
    let builder = utf8(&builder)?;
    cluster.strata_ok(&[
        "ring",
        "create",
        builder,
        "--part-power",
        "2",
        "--replicas",
        "1",
        "--cluster-id",
        "other",
    ])?;
    cluster.strata_ok(&[
        "ring", "add", builder, "--node", node, "--zone", "1", "--weight", "1",
    ])?;
    cluster.strata_ok(&["ring", "rebalance", builder])?;
    let refused = Server::serve_until_exit(&[
        "--ring",
        &format!("{builder}.ring"),
        "--cluster-secret-file",
        &cluster.secret(),
    ])?;
    ensure!(
        !refused.success(),
        "a gateway with a foreign ring started:\n{refused}"
    );
    ensure!(
        refused.stderr_text().contains("another cluster"),
        "no reason given:\n{refused}"
    );
    // The right ring works.
    let gateway = cluster.gateway()?;
    ensure!(gateway.get_status("/health")? == 200, "gateway unhealthy");
    Ok(())
}

/// A signed internal call is taken once: sent again within its time
/// window (a captured metadata change replayed), it is refused.
#[test]
fn a_replayed_internal_call_is_refused() -> Result<()> {
    let cluster = Cluster::start(1, 2, 1)?;
    let server = cluster.gateway()?;
    let (path, signature) = cluster.signed_meta_call(FEED_HEAD, false)?;
    let url = format!("{}{path}", server.endpoint());
    let send = || {
        cluster_curl(&[
            "-X",
            "POST",
            "-H",
            &signature,
            "--data-binary",
            FEED_HEAD,
            &url,
        ])
    };
    let first = send()?;
    ensure!(first == "200", "the signed call got {first}");
    let replayed = send()?;
    ensure!(replayed == "403", "the replayed call got {replayed}");
    Ok(())
}

/// A metadata call that changes nothing.
const FEED_HEAD: &str = r#"{"op":"feed_head"}"#;

/// Members that speak TLS: nodes serve TLS only; the members of a
/// replicated metadata service send Raft's messages, and gateways their
/// metadata calls and bodies, over TLS; a gateway serves HTTPS beside HTTP
/// on one port; a metadata call in plain text is refused however well
/// signed; a CA other than the cluster's trusts no member.
#[test]
fn a_cluster_speaking_tls_keeps_member_calls_off_plain_text() -> Result<()> {
    let cluster = Cluster::start_with_tls(3, 6, 2)?;
    let ca = utf8(&cluster.tls().context("the cluster's certificates")?.ca)?.to_owned();
    let mut members = cluster.metadata_group(3)?;
    let addresses: Vec<String> = members
        .iter()
        .map(|member| format!("127.0.0.1:{}", member.port()))
        .collect();
    let addresses = addresses.join(",");
    let outsider = cluster.gateway_over_address(&addresses)?;
    let bucket = unique_bucket("tls");
    outsider.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    outsider.python_ok("cluster_load.py", &["write", &bucket, "40"])?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "40"])?;
    let mut ask_leader = vec!["metadata", "--json", "--metadata", &addresses];
    let cluster_args = cluster.cluster_args();
    ask_leader.extend(cluster_args[2..].iter().map(String::as_str));
    let membership = cluster.strata_ok(&ask_leader)?.json()?;
    let leader = membership["leader"]
        .as_u64()
        .and_then(|id| usize::try_from(id).ok())
        .with_context(|| format!("no leader in {membership:#}"))?;
    let follower = format!("https://127.0.0.1:{}", members[leader % 3].port());
    let service = &mut members[leader - 1];
    // Nodes replicate to each other, and `strata status` asks them, over TLS.
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;

    // A node does not answer plain HTTP; over TLS it answers (refusing an
    // unsigned request).
    let node = format!("{}/v1/status", cluster.nodes[0].address);
    let plain = cluster_curl(&[&format!("http://{node}")])?;
    ensure!(plain == "000", "a node answered plain HTTP with {plain}");
    let unsigned = cluster_curl(&["--cacert", &ca, &format!("https://{node}")])?;
    ensure!(
        unsigned == "401",
        "a node answered an unsigned call over TLS with {unsigned}"
    );

    // The gateway's port speaks both; metadata calls only over TLS.
    let https = format!("https://127.0.0.1:{}", service.port());
    let health = cluster_curl(&["--cacert", &ca, &format!("{https}/health")])?;
    ensure!(health == "200", "/health over TLS got {health}");
    let untrusted = cluster_curl(&[&format!("{https}/health")])?;
    ensure!(
        untrusted == "000",
        "curl trusted the cluster's CA by itself: {untrusted}"
    );
    // HTTP/1.1, as members send their calls: a refusal sent before the body
    // was read ends an HTTP/2 stream early, which curl 7.88 reports as a
    // framing error (exit 92) instead of the answer.
    let call = |base: &str, extra: &[&str], (path, signature): &(String, String)| {
        let mut args = vec!["--http1.1", "-X", "POST", "-H", signature];
        args.extend(["--data-binary", FEED_HEAD]);
        args.extend(extra);
        let url = format!("{base}{path}");
        args.push(&url);
        cluster_curl(&args)
    };
    let captured = cluster.signed_meta_call(FEED_HEAD, false)?;
    let in_plain_text = call(service.endpoint(), &[], &captured)?;
    ensure!(
        in_plain_text == "403",
        "a plain-text metadata call got {in_plain_text}"
    );
    // What a plain-text call showed the network cannot be replayed over
    // TLS, to the member it reached nor to another (which, taking it,
    // would answer that it does not lead: 421).
    for member in [&https, &follower] {
        let replayed = call(member, &["--cacert", &ca], &captured)?;
        ensure!(
            replayed == "403",
            "a captured call replayed over TLS to {member} got {replayed}"
        );
    }
    let over_tls = call(
        &https,
        &["--cacert", &ca],
        &cluster.signed_meta_call(FEED_HEAD, true)?,
    )?;
    ensure!(over_tls == "200", "a call over TLS got {over_tls}");

    // Members of another CA are not trusted.
    let elsewhere = tempfile::Builder::new()
        .prefix("strata-other-ca-")
        .tempdir()?;
    let other = Certificates::make(elsewhere.path())?;
    let mut args = cluster.cluster_args();
    let ca_position = args.len() - 1;
    args[ca_position] = utf8(&other.ca)?.to_owned();
    let status = cluster.status_with(&args)?;
    ensure!(
        status["nodes_up"] == 0,
        "nodes answered through another CA:\n{status:#}"
    );
    let errors = status["reports"].to_string();
    ensure!(errors.contains("InvalidCertificate"), "{status:#}");
    outsider.aws_ok(&["s3", "ls", &format!("s3://{bucket}")])?;
    service.assert_healthy()
}

#[test]
fn add_and_remove_nodes_while_reading() -> Result<()> {
    let (mut cluster, server, bucket) = three_nodes_and_a_bucket("rebalance")?;
    let count = 200;
    server.python_ok("cluster_load.py", &["write", &bucket, &count.to_string()])?;
    let since = unix_now();
    cluster.wait_settled(since, SETTLE_TIMEOUT)?;

    let work = server.work_dir("rebalance")?;
    let stop = work.join("stop");
    let reader = Reader::start(&server, &bucket, count, utf8(&stop)?)?;

    // A fourth node joins: partitions move to it, one replica at a time.
    cluster.add_node()?;
    let since = unix_now();
    let status = cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    let new_node = &status["reports"][3]["status"];
    ensure!(
        new_node["extents"].as_u64().unwrap_or(0) > 0,
        "the new node received nothing:\n{status:#}"
    );

    // A node leaves: its replicas move to the others.
    cluster.remove_node(0)?;
    let since = unix_now();
    cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    fs::write(&stop, "")?;
    let output = reader.finish()?;
    ensure!(output.contains("none failed"), "reader: {output}");

    // The removed node's copies are no longer needed.
    cluster.nodes[0].kill9()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, &count.to_string()])?;
    Ok(())
}

/// A storage node cut off from another node and from the gateway, both
/// ways, while a third reaches everyone: uploads go on (the copies meant
/// for the cut-off node go to a handoff) and read back; the nodes report
/// the peer unreachable; the handoff copies stay until the cut-off node can
/// confirm it has them, and once healed every extent ends on exactly two
/// nodes, with nothing lost.
#[test]
fn nodes_cut_off_from_each_other() -> Result<()> {
    let partition = Partition::new();
    let cluster = Cluster::start_partitionable(&partition, 3, 4, 2)?;
    let server = cluster.gateway()?;
    // The gateway is host 3 of the partition.
    partition.place(3, server.pid().context("the gateway is not running")?);
    let bucket = unique_bucket("node-split");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.python_ok("cluster_load.py", &["write", &bucket, "50"])?;
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;

    partition.isolate(1, &[0, 3]);
    server.python_ok("cluster_load.py", &["write", &bucket, "100", "50"])?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "150"])?;
    within_settle_timeout(|| {
        let status = cluster.status()?;
        let unreachable = replication_total(&status, "last_pass_unreachable")
            + replication_total(&status, "last_pass_failures");
        Ok((unreachable == 0)
            .then(|| format!("no node found a peer unreachable while cut off:\n{status:#}")))
    })?;
    // Node 2 carries what node 1 missed to it; node 0 keeps the handoff
    // copies it took for node 1, which it may drop only once node 1
    // confirmed it has them: some extents are on three nodes.
    let copies_between = |wanted: (usize, usize), when: &str| {
        within_settle_timeout(|| {
            let mut copies: BTreeMap<String, usize> = BTreeMap::new();
            for (_, name) in extent_files(&cluster)? {
                *copies.entry(name).or_default() += 1;
            }
            let fewest = copies.values().copied().min().unwrap_or(0);
            let most = copies.values().copied().max().unwrap_or(0);
            Ok(((fewest, most) != wanted)
                .then(|| format!("{when}, extents have {fewest} to {most} copies, not {wanted:?}")))
        })
    };
    copies_between((2, 3), "while cut off")?;

    partition.heal();
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
    copies_between((2, 2), "healed and settled")?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "150"])?;
    Ok(())
}

/// A ring rewritten beside one gateway reaches another gateway, whose own
/// ring file stays old, through the metadata service: it routes by the new
/// ring within seconds, and again when it restarts with its old file.
#[test]
fn a_new_ring_reaches_every_gateway_through_the_metadata() -> Result<()> {
    let (mut cluster, first, bucket) = three_nodes_and_a_bucket("ring-share")?;
    let copies = tempfile::tempdir()?;
    let old_ring = copies.path().join("old.ring");
    fs::copy(cluster.ring(), &old_ring)?;
    let mut second = cluster.gateway_over_with_ring(&first, utf8(&old_ring)?)?;
    let version = "strata_pool_ring_version";
    let before = second.metric(version)?;
    ensure!(first.metric(version)? == before);

    // A fourth node joins: the rebalance rewrites the first gateway's file.
    cluster.add_node()?;
    let started = Instant::now();
    let after = loop {
        let first_version = first.metric(version)?;
        if first_version > before && second.metric(version)? == first_version {
            break first_version;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the second gateway kept ring version {} while the first has {first_version}",
            second.metric(version)?
        );
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "ring version {after} reached the second gateway {:?} after the rebalance",
        started.elapsed()
    );
    second.python_ok("cluster_load.py", &["write", &bucket, "50"])?;
    first.python_ok("cluster_load.py", &["verify", &bucket, "50"])?;

    // `strata status` with the old file shows the cluster by the nodes' ring.
    let status = cluster
        .strata_ok(&[
            "status",
            "--json",
            "--ring",
            utf8(&old_ring)?,
            "--cluster-secret-file",
            &cluster.secret(),
        ])?
        .json()?;
    ensure!(
        status["ring_version"] == after && status["nodes"] == 4,
        "status with an old ring file:\n{status:#}"
    );

    // Restarted with its old ring file, it starts with the cluster's.
    second.restart()?;
    ensure!(
        second.metric(version)? == after,
        "restarted with an old ring file, the second gateway runs version {}",
        second.metric(version)?
    );
    Ok(())
}

#[test]
fn a_node_whose_disk_fills() -> Result<()> {
    let (mut cluster, server, bucket) = three_nodes_and_a_bucket("disk-full")?;
    // Node 2's data moves onto an 8 MiB tmpfs: it fills early in the upload.
    let tmpfs = move_to_tmpfs(&mut cluster, 2, "8m", NewDisk::WithData)?;

    let count = 300;
    server.python_ok("cluster_load.py", &["write", &bucket, &count.to_string()])?;
    server.python_ok("cluster_load.py", &["verify", &bucket, &count.to_string()])?;
    let status = cluster.status()?;
    ensure!(
        status["settled"] == false,
        "a full node cannot hold its copies, yet the cluster says settled:\n{status:#}"
    );
    // The full node says why it is short of copies.
    let full = status["reports"]
        .as_array()
        .and_then(|reports| {
            reports
                .iter()
                .find(|report| report["node"] == cluster.nodes[2].address.as_str())
        })
        .with_context(|| format!("no report of node 2 in {status:#}"))?;
    ensure!(
        full["status"]["writes_refused"].as_u64() > Some(0)
            && full["status"]["last_write_refusal"] == "disk full"
            && full["status"]["disk_failed"] == false,
        "node 2 does not say it refused writes: {full:#}"
    );
    within_settle_timeout(|| {
        let refused = server.metric("strata_cluster_writes_refused")?;
        Ok((refused == 0).then(|| "/metrics shows no refused writes".to_owned()))
    })?;

    // More room: the replicators complete node 2, and it can stand in for
    // the others.
    tmpfs.resize("1g")?;
    let since = unix_now();
    cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    cluster.nodes[0].kill9()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, &count.to_string()])?;
    stop_over_tmpfs(cluster, tmpfs)
}

/// What a node moved to a new disk takes along.
enum NewDisk {
    /// Everything.
    WithData,
    /// Its identity and its ring (the files at the top of its directory):
    /// a replaced disk.
    Empty,
}

/// Restarts node `index` on a tmpfs of `size`, mounted over its data
/// directory (its old disk is kept beside it).
fn move_to_tmpfs(cluster: &mut Cluster, index: usize, size: &str, take: NewDisk) -> Result<Tmpfs> {
    cluster.nodes[index].kill9()?;
    let data = cluster.nodes[index].data_dir().to_path_buf();
    let old_disk = data.with_extension("old-disk");
    fs::rename(&data, &old_disk)?;
    fs::create_dir(&data)?;
    let tmpfs = Tmpfs::mount(&data, size)?;
    match take {
        NewDisk::WithData => copy_tree(&old_disk, &data)?,
        NewDisk::Empty => {
            for entry in fs::read_dir(&old_disk)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    fs::copy(entry.path(), data.join(entry.file_name()))?;
                }
            }
        }
    }
    cluster.nodes[index].restart()?;
    Ok(tmpfs)
}

/// Nodes stop before their disk goes, and the disk before the cluster's
/// directory (a mount point inside it would keep it from being removed).
fn stop_over_tmpfs(mut cluster: Cluster, tmpfs: Tmpfs) -> Result<()> {
    for node in &mut cluster.nodes {
        node.kill9()?;
    }
    drop(tmpfs);
    drop(cluster);
    Ok(())
}

#[test]
fn a_node_back_with_an_old_copy() -> Result<()> {
    let mut cluster = Cluster::start(3, 6, 2)?;
    // Deleted objects' extents go after one second instead of ten minutes.
    let server = cluster.gateway_with_config("gc_grace_secs = 1\n")?;
    let bucket = unique_bucket("old-copy");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.python_ok("cluster_load.py", &["write", &bucket, "200"])?;
    cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;

    // A copy of node 2 as it is now...
    cluster.nodes[2].kill9()?;
    let data = cluster.nodes[2].data_dir().to_path_buf();
    let snapshot = data.with_extension("snapshot");
    copy_tree(&data, &snapshot)?;
    cluster.nodes[2].restart()?;

    // ...goes stale: half the objects are deleted, new ones written.
    server.python_ok("cluster_load.py", &["delete", &bucket, "100"])?;
    server.python_ok("cluster_load.py", &["write", &bucket, "100", "200"])?;
    // The gateway deletes the extents of deleted objects after the grace
    // period, on its 5 s tick: wait until the tombstones stop growing.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut seen = 0;
    let settled = loop {
        let status = cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
        let now = tombstones(&status);
        if now > 0 && now == seen {
            break status;
        }
        seen = now;
        ensure!(
            Instant::now() < deadline,
            "the deleted objects' extents were never all deleted:\n{status:#}"
        );
        thread::sleep(Duration::from_secs(6));
    };
    let extents_now = extents(&settled);
    let files_before = extent_files(&cluster)?;

    // Node 2 comes back with the old copy: deleted extents it still holds
    // must not return, the new ones must reach it.
    cluster.nodes[2].kill9()?;
    fs::remove_dir_all(&data)?;
    fs::rename(&snapshot, &data)?;
    let since = unix_now();
    cluster.nodes[2].restart()?;
    let settled = cluster.wait_settled(since, SETTLE_TIMEOUT)?;
    let files_after = extent_files(&cluster)?;
    let appeared: Vec<_> = files_after.difference(&files_before).collect();
    let vanished: Vec<_> = files_before.difference(&files_after).collect();
    ensure!(
        extents(&settled) == extents_now && appeared.is_empty() && vanished.is_empty(),
        "{} extent copies after the old node returned, {extents_now} before; appeared {appeared:?}, vanished {vanished:?}:\n{settled:#}",
        extents(&settled)
    );
    cluster.nodes[0].kill9()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, "200", "100"])?;
    Ok(())
}

/// A peer holding a newer ring that a node cannot take (another part
/// power: an operator's mistake, or a format of a later build) does not
/// stop the node's replicator: it goes on restoring the peer's copies by
/// its own ring.
#[test]
fn a_ring_a_node_refuses_does_not_stop_its_replicator() -> Result<()> {
    let mut cluster = Cluster::start(2, 2, 2)?;
    let server = cluster.gateway()?;
    let bucket = unique_bucket("refused-ring");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    for index in 0..8 {
        let path = format!("/{bucket}/object-{index}");
        let body = random_bytes(40_000 + index);
        server
            .http("PUT", &path, Signing::Root, Some(&body), &[])?
            .expect_status(200)?;
    }
    let copies = node_extent_files(cluster.nodes[0].data_dir())?.len();
    ensure!(copies >= 8, "node 0 holds {copies} extents");

    // A ring of the same cluster and nodes, of another part power and a
    // later version: node 1 is started on it, with an empty disk.
    let foreign = tempfile::tempdir()?;
    let other = foreign.path().join("other.builder");
    let other = utf8(&other)?;
    let create = [
        "ring",
        "create",
        other,
        "--part-power",
        "3",
        "--replicas",
        "2",
    ];
    cluster.strata_ok(&[&create[..], &["--cluster-id", "e2e"]].concat())?;
    for (zone, node) in (1..).zip(&cluster.nodes) {
        let zone = zone.to_string();
        cluster.strata_ok(&[
            "ring",
            "add",
            other,
            "--node",
            &node.address,
            "--zone",
            &zone,
            "--weight",
            "1",
        ])?;
    }
    for weight in ["2", "3", "4", "5"] {
        cluster.strata_ok(&["ring", "set-weight", other, "0", weight])?;
    }
    cluster.strata_ok(&["ring", "rebalance", other])?;
    let data = cluster.nodes[1].data_dir().to_path_buf();
    cluster.nodes[1].kill9()?;
    fs::remove_dir_all(data.join("pool"))?;
    fs::remove_file(data.join("ring"))?;
    cluster.nodes[1].set_option("--ring", &format!("{other}.ring"));
    cluster.nodes[1].restart()?;

    // Node 0 refuses that ring, and still sends node 1 every copy it lacks.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let restored = node_extent_files(&data).map_or(0, |files| files.len());
        if restored == copies {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "node 1 got {restored} of {copies} copies back; node 0's log:\n{}",
            cluster.nodes[0].log_tail(20)
        );
        thread::sleep(Duration::from_millis(250));
    }
    ensure!(
        cluster.nodes[0]
            .log_tail(200)
            .contains("refused a peer's ring"),
        "node 0 took the other ring:\n{}",
        cluster.nodes[0].log_tail(20)
    );
    Ok(())
}

/// Extents that no record names, left by a gateway killed in the middle of
/// an upload, are deleted by the metadata service once older than
/// `orphan_age_secs`; committed extents are not, though the sweep takes
/// the pool in spans of one extent's first byte each. A gateway with a
/// metadata service of its own does not start over nodes that serve
/// another.
#[test]
fn extents_no_record_names_are_swept() -> Result<()> {
    let cluster = Cluster::start(3, 4, 2)?;
    let service =
        cluster.gateway_with_config("[cluster]\norphan_age_secs = 5\norphan_sweep_batch = 1\n")?;
    let mut second = cluster.gateway_over(&service)?;
    orphans_swept(&cluster, &service, &mut second, "orphans")?;
    // `/metrics` counts the rounds and what they deleted (two extents of
    // two copies each are at least one extent).
    let deleted = service.metric(r#"strata_orphan_extents_deleted_total{group="root"}"#)?;
    ensure!(deleted >= 1, "{deleted} orphaned extents deleted");
    let swept =
        service.metric(r#"strata_orphan_sweep_rounds_total{group="root",outcome="swept"}"#)?;
    ensure!(swept >= 1, "{swept} sweeps");
    let last = r#"strata_orphan_sweep_last_swept_timestamp_seconds{group="root"}"#;
    ensure!(service.metric(last)? > 0);
    // A span per first byte: the nodes' counts split every sweep of the
    // three kept extents (unless all three ids begin alike, once in 65,536).
    let spans = service.metric(r#"strata_orphan_sweep_spans_total{group="root"}"#)?;
    ensure!(spans > swept, "{spans} spans in {swept} sweeps");

    // Another metadata service over the same nodes is refused.
    let refused = Server::serve_until_exit(&[
        "--ring",
        &cluster.ring(),
        "--cluster-secret-file",
        &cluster.secret(),
    ])?;
    ensure!(
        !refused.success(),
        "a second metadata service started:\n{refused}"
    );
    ensure!(
        refused.stderr_text().contains("another metadata service"),
        "no reason given:\n{refused}"
    );
    Ok(())
}

/// The whole index replicated: the root group on three gateways (a
/// replicated metadata service), the index groups on the three nodes. A
/// node, then a gateway, is lost: what was written before and after reads
/// back through the others, the listing whole.
#[test]
fn a_replicated_root_beside_index_groups_on_the_nodes() -> Result<()> {
    let mut cluster = Cluster::start_holding_index_groups(3, 4, 2, 4)?;
    let mut members = cluster.metadata_group_with_config(3, &cluster.index_config())?;
    let bucket = unique_bucket("replicated-root");
    members[0].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    members[1].python_ok("cluster_load.py", &["write-retrying", &bucket, "40"])?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "40"])?;

    cluster.nodes[0].kill9()?;
    members[0].python_ok("cluster_load.py", &["write-retrying", &bucket, "40", "40"])?;
    members[0].kill9()?;
    // Until the root group elects a leader among the two left.
    within_settle_timeout(|| {
        let listed = members[1].aws(&["s3", "ls", &format!("s3://{bucket}/")])?;
        let keys = listed.stdout_text().lines().count();
        Ok((!listed.success() || keys != 80).then(|| format!("{keys} keys listed: {listed}")))
    })?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "80"])?;
    members[1].python_ok("cluster_load.py", &["write-retrying", &bucket, "10", "80"])?;
    members[2].python_ok("cluster_load.py", &["verify", &bucket, "90"])?;

    // A member restarted without the list is refused: the other members
    // hold no index group, and the root group records who does.
    members[1].rewrite_config("index_groups = 4\n")?;
    ensure!(
        members[1].restart().is_err(),
        "started with the groups at home"
    );
    let log = members[1].log_tail(400);
    // Its own groups' members find no peer (the others hold none), and
    // its calls to the groups none of the others keep.
    ensure!(
        [
            "keeps no index group",
            "held elsewhere",
            "not a member of the metadata service's index group"
        ]
        .iter()
        .any(|why| log.contains(why)),
        "{log}"
    );
    Ok(())
}

/// With the index groups on the nodes, the leader of the group of the
/// bucket an upload was cut short in deletes the extents it left, and
/// none that a record names: each group sweeps the extents tagged with its
/// buckets' hashes against its own replica.
#[test]
fn index_groups_on_the_nodes_sweep_their_orphans() -> Result<()> {
    let mut cluster = Cluster::start_holding_index_groups(3, 4, 2, 4)?;
    for node in &mut cluster.nodes {
        node.add_args(&["--orphan-age-secs", "5"]);
        node.restart()?;
    }
    let service = cluster.gateway_with_config(&cluster.index_config())?;
    let mut second = cluster.gateway_over_with_config(&service, &cluster.index_config())?;
    orphans_swept(&cluster, &service, &mut second, "node-orphans")
}

/// Writes a 9 MiB object (three extents of two copies each) to a new
/// container (named from `prefix`) through `service`, leaves orphans with
/// an upload through `second` cut short, and waits until they are swept,
/// the object still whole.
fn orphans_swept(
    cluster: &Cluster,
    service: &Server,
    second: &mut Server,
    prefix: &str,
) -> Result<()> {
    let container = unique_bucket(prefix);
    let base = format!("/v1/AUTH_admin/{container}");
    service
        .swift_as_root("PUT", &base, None, &[])?
        .expect_status(201)?;
    let kept = strata_tests::random_bytes(9 << 20);
    service
        .swift_as_root("PUT", &format!("{base}/kept"), Some(&kept), &[])?
        .expect_status(201)?;
    let committed = extents(&cluster.status()?);
    ensure!(
        committed == 6,
        "{committed} extent copies for a 9 MiB object"
    );
    orphan_extents(cluster, second, &container, committed)?;
    within_settle_timeout(|| {
        let now = extents(&cluster.status()?);
        Ok((now != committed).then(|| format!("{now} extent copies, {committed} committed")))
    })?;
    let read = service.swift_as_root("GET", &format!("{base}/kept"), None, &[])?;
    ensure!(read.status == 200 && read.body == kept, "{read}");
    Ok(())
}

/// A read that finds a replica's copy damaged or missing answers from the
/// other copy and puts a good one back. The replicator and the auditor are
/// held off for an hour here, so only reads can have repaired anything.
#[test]
fn reads_repair_damaged_and_missing_copies() -> Result<()> {
    let mut cluster = Cluster::start(2, 4, 2)?;
    for node in &mut cluster.nodes {
        // Started empty, the auditor finds nothing and sleeps its pause.
        node.set_option("--replication-interval", "3600");
        node.set_option("--audit-pause", "3600");
        node.restart()?;
    }
    let server = cluster.gateway()?;
    let container = format!("/v1/AUTH_admin/{}", unique_bucket("repair"));
    server
        .swift_as_root("PUT", &container, None, &[])?
        .expect_status(201)?;
    // Over the 16 KiB kept inside records: each is one extent on both nodes.
    let objects: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("{container}/object-{i}"), random_bytes(100_000 + i)))
        .collect();
    for (url, body) in &objects {
        server
            .swift_as_root("PUT", url, Some(body), &[])?
            .expect_status(201)?;
    }
    let files = extent_files(&cluster)?;
    ensure!(files.len() == 80, "{} extent files, not 80", files.len());
    // Whichever node a partition's reads go to first, a quarter of the
    // extents is damaged on each node and a quarter missing on each.
    let mut damaged = Vec::new();
    let mut missing = Vec::new();
    let names: BTreeSet<&String> = files.iter().map(|(_, name)| name).collect();
    for (i, name) in names.into_iter().enumerate() {
        let node = i % 2;
        let path = extent_path(cluster.nodes[node].data_dir(), name);
        let original = fs::read(&path)?;
        if i % 4 < 2 {
            let mut bytes = original.clone();
            bytes[original.len() / 2] ^= 0x5a;
            fs::write(&path, bytes)?;
            damaged.push((path, original));
        } else {
            fs::remove_file(&path)?;
            missing.push((path, original));
        }
    }
    for (url, body) in &objects {
        let got = server.swift_as_root("GET", url, None, &[])?;
        got.expect_status(200)?;
        ensure!(got.body == *body, "{url}: wrong bytes");
    }
    let restored = |copies: &[(std::path::PathBuf, Vec<u8>)]| {
        copies
            .iter()
            .filter(|(path, original)| fs::read(path).is_ok_and(|bytes| bytes == *original))
            .count()
    };
    within_settle_timeout(|| {
        let (damaged, missing) = (restored(&damaged), restored(&missing));
        Ok((damaged == 0 || missing == 0)
            .then(|| format!("reads restored {damaged} damaged copies and {missing} missing ones")))
    })?;
    // Every object still reads back, from either copy.
    for (url, body) in &objects {
        let got = server.swift_as_root("GET", url, None, &[])?;
        ensure!(got.status == 200 && got.body == *body, "{url}: wrong bytes");
    }
    Ok(())
}

/// A node back on a new, empty disk: the copies it lost are bytes to move
/// in `strata status` until the other primaries have pushed them back (a
/// handoff holds none of them). The new disk is too small at first, so
/// they stay to move while the test looks.
#[test]
fn a_replaced_disk_is_bytes_to_move_until_refilled() -> Result<()> {
    let (mut cluster, server, bucket) = three_nodes_and_a_bucket("new-disk")?;
    let count = 100;
    server.python_ok("cluster_load.py", &["write", &bucket, &count.to_string()])?;
    let settled = cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
    ensure!(settled["bytes_to_move"] == 0, "{settled:#}");

    // Node 2 keeps its identity and its ring, on a new 1 MiB disk.
    let tmpfs = move_to_tmpfs(&mut cluster, 2, "1m", NewDisk::Empty)?;
    // About 35 MiB of copies were node 2's (100 objects of 52 MiB in all,
    // 2 copies over 3 nodes, several of 4 MiB); 1 MiB fits.
    within_settle_timeout(|| {
        let status = cluster.status()?;
        let to_move = status["bytes_to_move"].as_u64().unwrap_or(0);
        Ok((to_move < 8 << 20)
            .then(|| format!("{to_move} bytes to move, not the copies node 2 lost:\n{status:#}")))
    })?;

    tmpfs.resize("1g")?;
    let settled = cluster.wait_settled(unix_now(), SETTLE_TIMEOUT)?;
    ensure!(settled["bytes_to_move"] == 0, "{settled:#}");
    // Node 2 holds its copies again: it serves with another node down.
    cluster.nodes[0].kill9()?;
    server.python_ok("cluster_load.py", &["verify", &bucket, &count.to_string()])?;
    stop_over_tmpfs(cluster, tmpfs)
}

/// Three nodes in three zones (64 partitions, 2 replicas), a gateway, and a
/// bucket on it.
fn three_nodes_and_a_bucket(prefix: &str) -> Result<(Cluster, Server, String)> {
    let cluster = Cluster::start(3, 6, 2)?;
    let server = cluster.gateway()?;
    let bucket = unique_bucket(prefix);
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    Ok((cluster, server, bucket))
}

/// Runs `cluster_load.py write` for `OBJECTS` objects, SIGKILLs node `victim`
/// after `kill_after` acknowledgements and returns how many were acknowledged.
fn upload_killing_node(
    server: &Server,
    cluster: &mut Cluster,
    bucket: &str,
    victim: usize,
    kill_after: usize,
) -> Result<usize> {
    upload_with_killing_node("write", server, cluster, bucket, (victim, kill_after))
}

/// [`upload_killing_node`] with `cluster_load.py`'s `mode` of writing.
fn upload_with_killing_node(
    mode: &str,
    server: &Server,
    cluster: &mut Cluster,
    bucket: &str,
    (victim, kill_after): (usize, usize),
) -> Result<usize> {
    let mut command =
        server.python_command("cluster_load.py", &[mode, bucket, &OBJECTS.to_string()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut writer = KillOnDrop(command.spawn().context("spawning cluster_load.py")?);
    let stdout = writer.0.stdout.take().context("writer stdout")?;
    let mut stderr = writer.0.stderr.take().context("writer stderr")?;
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut acked = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with("ACK ") {
            acked += 1;
        }
        if acked == kill_after && !killed {
            cluster.nodes[victim].kill9()?;
            killed = true;
        }
    }
    let status = writer.0.wait()?;
    let stderr = stderr_reader.join().unwrap_or_default();
    ensure!(
        killed,
        "the writer ended after {acked} ACKs, before the kill"
    );
    ensure!(
        status.success(),
        "the writer failed ({status}) after {acked} ACKs:\n{stderr}"
    );
    Ok(acked)
}

/// Leaves extents no record names: a slow upload to `container` through
/// `gateway`, killed with the gateway once the nodes hold more than the
/// `committed` extent copies and before it committed anything.
pub(crate) fn orphan_extents(
    cluster: &Cluster,
    gateway: &mut Server,
    container: &str,
    committed: u64,
) -> Result<()> {
    let (token, storage_url) = gateway.swift_token(&SwiftUser::root())?;
    let big = gateway.work_dir("orphans")?.join("big.bin");
    fs::write(&big, strata_tests::random_bytes(24 << 20))?;
    let _upload = KillOnDrop(
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "--limit-rate",
                "2M",
                "-T",
                utf8(&big)?,
            ])
            .args(["-H", &format!("X-Auth-Token: {token}")])
            .arg(format!("{storage_url}/{container}/big"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning curl")?,
    );
    within_settle_timeout(|| {
        let now = extents(&cluster.status()?);
        Ok((now < committed + 2).then(|| format!("the upload stored no extent ({now} copies)")))
    })?;
    gateway.kill9()
}

/// Calls `check` every half second until it finds nothing wrong (`None`);
/// fails with what it last found once [`SETTLE_TIMEOUT`] has passed.
pub(crate) fn within_settle_timeout(check: impl FnMut() -> Result<Option<String>>) -> Result<()> {
    within(SETTLE_TIMEOUT, Duration::from_millis(500), check)
}

/// Calls `check` every `pause` until it finds nothing wrong (`None`); fails
/// with what it last found once `bound` has passed.
pub(crate) fn within(
    bound: Duration,
    pause: Duration,
    mut check: impl FnMut() -> Result<Option<String>>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let Some(wrong) = check()? else {
            return Ok(());
        };
        ensure!(started.elapsed() < bound, "{wrong}");
        thread::sleep(pause);
    }
}

/// A replication counter of `strata status --json`, summed over the nodes.
fn replication_total(status: &serde_json::Value, counter: &str) -> u64 {
    status["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|report| report["status"]["replication"][counter].as_u64())
        .sum()
}

/// The extent copies the nodes hold.
pub(crate) fn extents(status: &serde_json::Value) -> u64 {
    node_total(status, "extents")
}

fn tombstones(status: &serde_json::Value) -> u64 {
    node_total(status, "tombstones")
}

/// A node field of `strata status --json`, summed over the nodes.
fn node_total(status: &serde_json::Value, field: &str) -> u64 {
    status["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|report| report["status"][field].as_u64())
        .sum()
}

/// Where a node keeps its extent files: `pool/extents/<first two
/// characters of the name>/<name>`.
const EXTENT_DIR: &str = "pool/extents";

/// Every extent file of the node with data directory `data`.
fn node_extent_files(data: &std::path::Path) -> Result<Vec<fs::DirEntry>> {
    let mut found = Vec::new();
    for fan_out in fs::read_dir(data.join(EXTENT_DIR))? {
        for entry in fs::read_dir(fan_out?.path())? {
            found.push(entry?);
        }
    }
    Ok(found)
}

/// (node, extent file name) of every extent on every node's disk.
fn extent_files(cluster: &Cluster) -> Result<std::collections::BTreeSet<(usize, String)>> {
    let mut found = std::collections::BTreeSet::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        for entry in node_extent_files(node.data_dir())? {
            found.insert((index, entry.file_name().to_string_lossy().into_owned()));
        }
    }
    Ok(found)
}

/// Where a node keeps the extent whose file is `name`.
fn extent_path(data: &std::path::Path, name: &str) -> std::path::PathBuf {
    data.join(EXTENT_DIR).join(&name[..2]).join(name)
}

/// `cp -a FROM TO`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let mut command = std::process::Command::new("cp");
    command
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to);
    fs::create_dir_all(to)?;
    strata_tests::run_tool(&mut command, Duration::from_secs(60))?.expect_success()?;
    Ok(())
}

/// Every S3 object and the Swift tree, byte for byte.
fn verify_all(
    server: &Server,
    bucket: &str,
    work: &std::path::Path,
    container: &str,
    tree: &std::path::Path,
    when: &str,
) -> Result<()> {
    server
        .python_ok("cluster_load.py", &["verify", bucket, &OBJECTS.to_string()])
        .with_context(|| format!("S3 objects, {when}"))?;
    let out = work.join(format!("swift-{}", unix_now()));
    server
        .swift_ok(
            &SwiftUser::root(),
            &["download", container, "--output-dir", utf8(&out)?],
        )
        .with_context(|| format!("swift download, {when}"))?;
    assert_same_tree(tree, &out.join("t")).with_context(|| format!("swift tree, {when}"))
}

/// A new container (named from `prefix`) holding a tree of three files
/// under `t/`, one of several extents, uploaded by swiftclient through
/// `gateway`: the container and the tree, written in `work`.
fn swift_tree(
    gateway: &Server,
    work: &std::path::Path,
    prefix: &str,
) -> Result<(String, std::path::PathBuf)> {
    let root = SwiftUser::root();
    let container = unique_bucket(prefix);
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("a/one.bin", 20_000),
            ("a/two.bin", 5 * 1024 * 1024 + 3),
            ("b/three.bin", 300_000),
        ],
    )?;
    gateway.swift_ok(&root, &["post", &container])?;
    gateway.swift_ok(
        &root,
        &["upload", &container, utf8(&tree)?, "--object-name", "t"],
    )?;
    Ok((container, tree))
}

/// Flips a byte in the middle of the node's largest extent file; returns the
/// file and its bytes before the damage.
fn corrupt_largest_extent(data: &std::path::Path) -> Result<(std::path::PathBuf, Vec<u8>)> {
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    for entry in node_extent_files(data)? {
        let len = entry.metadata()?.len();
        if largest.as_ref().is_none_or(|(best, _)| len > *best) {
            largest = Some((len, entry.path()));
        }
    }
    let (len, path) = largest.context("the node holds no extent")?;
    let original = fs::read(&path)?;
    let mut damaged = original.clone();
    damaged[(len / 2) as usize] ^= 0x5a;
    fs::write(&path, damaged)?;
    Ok((path, original))
}

/// `curl -s -o /dev/null -w %{http_code} ARGS`: the status code.
fn cluster_curl(args: &[&str]) -> Result<String> {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args);
    let output = strata_tests::run_tool(&mut command, Duration::from_secs(30))?;
    Ok(output.stdout_text())
}

/// `cluster_load.py read-loop` in the background.
struct Reader(KillOnDrop);

impl Reader {
    fn start(server: &Server, bucket: &str, count: usize, stop: &str) -> Result<Reader> {
        let mut command = server.python_command(
            "cluster_load.py",
            &["read-loop", bucket, &count.to_string(), stop],
        );
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        Ok(Reader(KillOnDrop(
            command.spawn().context("spawning the reader")?,
        )))
    }

    /// Waits for the reader (after the stop file was written); its output.
    fn finish(mut self) -> Result<String> {
        let child = &mut self.0.0;
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout)?;
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut stderr)?;
        }
        let status = child.wait()?;
        ensure!(
            status.success(),
            "the reader failed ({status}):\n{stdout}\n{stderr}"
        );
        Ok(stdout)
    }
}

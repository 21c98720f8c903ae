//! A gateway whose buckets keep their objects in index groups
//! (`index_groups` in its configuration; `store/src/routed.rs`): clients
//! see the one store they always did, through boto3, the Swift API and
//! the public edge, across restarts; the number of groups is the data
//! directory's for good.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use md5::{Digest as _, Md5};
use strata_tests::{
    Cluster, Server, Signing, SwiftUser, md5_hex, random_bytes, unique_bucket, utf8,
};

use crate::cluster::{extents, orphan_extents, within, within_settle_timeout};
use crate::metadata_group::{address_of, addresses_of};

const GROUPS: &str = "index_groups = 4\n";

#[test]
fn boto3_sees_one_store_over_index_groups() -> Result<()> {
    let server = Server::start_with_config(GROUPS)?;
    server.python_ok("boto3_paginate.py", &[&unique_bucket("groups-paginate")])?;
    let work = server.work_dir("groups-upload")?;
    server.python_ok(
        "boto3_upload_file.py",
        &[&unique_bucket("groups-upload"), utf8(&work)?],
    )?;
    server.python_ok("boto3_errors.py", &[&unique_bucket("groups-errors")])?;
    Ok(())
}

/// `count` public containers of the root account, named from `prefix`,
/// created through `server` with the objects `keys`, each holding its own
/// path (`container/key`).
fn public_containers(
    server: &Server,
    prefix: &str,
    count: usize,
    keys: &[&str],
) -> Result<Vec<String>> {
    let containers: Vec<String> = (0..count)
        .map(|n| unique_bucket(&format!("{prefix}{n}")))
        .collect();
    for container in &containers {
        let path = format!("/v1/AUTH_admin/{container}");
        let readable = [("X-Container-Read", ".r:*,.rlistings")];
        server
            .swift_as_root("PUT", &path, None, &readable)?
            .expect_status(201)?;
        for key in keys {
            let body = format!("{container}/{key}");
            server
                .swift_as_root("PUT", &format!("{path}/{key}"), Some(body.as_bytes()), &[])?
                .expect_status(201)?;
        }
    }
    Ok(containers)
}

/// Checks that each of `containers` (made by [`public_containers`] with
/// the keys `a/one.txt`, `a/two.txt` and `b.txt`) is counted in the
/// account's listing, lists its pseudo-directory and serves its objects.
fn containers_serve_as_made(server: &Server, containers: &[String]) -> Result<()> {
    let account = server.swift_as_root("GET", "/v1/AUTH_admin?format=json", None, &[])?;
    account.expect_status(200)?;
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&account.body)?;
    for container in containers {
        let entry = listed
            .iter()
            .find(|entry| entry["name"] == container.as_str());
        ensure!(
            entry.is_some_and(|entry| entry["count"] == 3),
            "{container} missing or miscounted in {listed:?}"
        );
        let path = format!("/v1/AUTH_admin/{container}");
        let listing = server.swift_as_root("GET", &format!("{path}?prefix=a/"), None, &[])?;
        ensure!(
            listing.body_text() == "a/one.txt\na/two.txt\n",
            "{container}: {listing}"
        );
        let object = server.http(
            "GET",
            &format!("{path}/b.txt"),
            Signing::Anonymous,
            None,
            &[],
        )?;
        ensure!(
            object.body_text() == format!("{container}/b.txt"),
            "{container}: {object}"
        );
    }
    Ok(())
}

#[test]
fn containers_spread_over_groups_list_purge_and_survive_a_restart() -> Result<()> {
    let mut server = Server::start_with_config(GROUPS)?;
    // Twelve containers: every one of four groups holds some (by the MD5
    // of their names; a group left empty would only make the test weaker).
    let containers =
        public_containers(&server, "spread", 12, &["a/one.txt", "a/two.txt", "b.txt"])?;
    // The last container is deleted below; the others are checked again
    // after each restart.
    let kept = &containers[..11];
    let check_all = |server: &Server| containers_serve_as_made(server, kept);
    check_all(&server)?;

    // The edge hears every group's changes: a cached object and listing
    // are purged by the delete that returns.
    let path = format!("/v1/AUTH_admin/{}", containers[0]);
    let object = format!("{path}/a/one.txt");
    for _ in 0..2 {
        server
            .http("GET", &object, Signing::Anonymous, None, &[])?
            .expect_status(200)?;
        server
            .http(
                "GET",
                &format!("{path}?prefix=a/"),
                Signing::Anonymous,
                None,
                &[],
            )?
            .expect_status(200)?;
    }
    server.until_hit(&object)?;
    server
        .swift_as_root("DELETE", &object, None, &[])?
        .expect_status(204)?;
    server
        .http("GET", &object, Signing::Anonymous, None, &[])?
        .expect_status(404)?;
    let listing = server.http(
        "GET",
        &format!("{path}?prefix=a/"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(listing.body_text() == "a/two.txt\n", "{listing}");
    server
        .swift_as_root(
            "PUT",
            &object,
            Some(format!("{}/a/one.txt", containers[0]).as_bytes()),
            &[],
        )?
        .expect_status(201)?;

    // A container with objects stays; emptied, it goes from both groups,
    // and one created again under its name starts empty.
    let last = format!("/v1/AUTH_admin/{}", containers[11]);
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(409)?;
    for key in ["a/one.txt", "a/two.txt", "b.txt"] {
        server
            .swift_as_root("DELETE", &format!("{last}/{key}"), None, &[])?
            .expect_status(204)?;
    }
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(204)?;
    server
        .swift_as_root("GET", &last, None, &[])?
        .expect_status(404)?;
    server
        .swift_as_root("PUT", &last, None, &[])?
        .expect_status(201)?;
    let empty = server.swift_as_root("GET", &last, None, &[])?;
    empty.expect_status(204)?;
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(204)?;

    server.restart()?;
    check_all(&server)?;

    // The data directory keeps its number of groups, none included.
    server.rewrite_config("index_groups = 2\n")?;
    ensure!(
        server.restart().is_err(),
        "started with another group count"
    );
    let log = server.log_tail(20);
    ensure!(log.contains("over 4 index groups, not 2"), "{log}");
    server.rewrite_config("\n")?;
    ensure!(server.restart().is_err(), "started without its groups");
    let log = server.log_tail(20);
    ensure!(log.contains("set index_groups = 4"), "{log}");
    server.rewrite_config(GROUPS)?;
    server.restart()?;
    check_all(&server)?;
    Ok(())
}

/// Which of the four groups holds bucket `name`, as the router places it:
/// the top 32 bits of the name's MD5, scaled.
fn group_of(name: &str) -> u64 {
    let digest = Md5::digest(name.as_bytes());
    let hash = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (u64::from(hash) * 4) >> 32
}

/// FTP's upload-then-rename with the rename into a folder of another
/// container, whose bucket is in another group: lftp's `mv` (RNFR/RNTO)
/// works, the bytes and ETag arrive whole, the old name is gone at once,
/// from the edge's cache too, and each container's listing shows it.
#[test]
fn ftp_renames_into_a_container_of_another_group() -> Result<()> {
    let server = Server::start_with_config(GROUPS)?;
    let containers = public_containers(&server, "ftpmove", 8, &["kept.txt"])?;
    let from = &containers[0];
    let to = containers[1..]
        .iter()
        .find(|name| group_of(name) != group_of(from))
        .context("eight containers in one group")?;
    let root = SwiftUser::root();
    let work = server.work_dir("ftpmove")?;
    // One full extent and part of a second; and one the edge caches (up to
    // 1 MiB in RAM).
    let files = [
        ("big.bin", random_bytes(6 * 1024 * 1024 + 123)),
        ("small.bin", random_bytes(1_000_123)),
    ];
    for (name, body) in &files {
        std::fs::write(work.join(format!("{name}.filepart")), body)?;
    }
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!(
            "cd {from}; lcd {}; put big.bin.filepart; put small.bin.filepart",
            work.display()
        ),
    )?;
    server.until_hit(&format!("/v1/AUTH_admin/{from}/small.bin.filepart"))?;

    for (name, body) in &files {
        server.lftp_ok(
            &root.login(),
            &root.key,
            &format!("mv /{from}/{name}.filepart /{to}/docs/{name}"),
        )?;
        let path = format!("/v1/AUTH_admin/{to}/docs/{name}");
        let moved = server.swift_as_root("GET", &path, None, &[])?;
        moved.expect_status(200)?;
        ensure!(moved.body == *body, "{name} moved reads other bytes");
        ensure!(
            moved.header("etag") == Some(md5_hex(body).as_str()),
            "{name}: ETag {:?}",
            moved.header("etag")
        );
        let old = format!("/v1/AUTH_admin/{from}/{name}.filepart");
        server
            .http("GET", &old, Signing::Anonymous, None, &[])?
            .expect_status(404)?;
    }
    let listing = |container: &str| -> Result<String> {
        let path = format!("/v1/AUTH_admin/{container}");
        Ok(server.swift_as_root("GET", &path, None, &[])?.body_text())
    };
    ensure!(listing(from)? == "kept.txt\n", "{from}: {}", listing(from)?);
    ensure!(
        listing(to)? == "docs/big.bin\ndocs/small.bin\nkept.txt\n",
        "{to}: {}",
        listing(to)?
    );
    Ok(())
}

/// A data directory from before its gateway used index groups: at the
/// first start with `index_groups`, its buckets' objects move into their
/// groups (`store/src/split.rs`). Every container lists, counts and serves
/// as before, a multipart upload begun before completes after, and the
/// directory no longer starts without the groups.
#[test]
fn a_store_with_buckets_moves_their_objects_into_index_groups_at_start() -> Result<()> {
    let mut server = Server::start_with_config("\n")?;
    let containers = public_containers(&server, "split", 8, &["a/one.txt", "a/two.txt", "b.txt"])?;
    let bucket = unique_bucket("split-upload");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let upload = crate::multipart::Upload::create(&server, &bucket, "begun-before", &[])?;
    let first = random_bytes(5 << 20);
    let first_etag = upload.upload_part(1, &first)?;
    let upload_id = upload.upload_id;

    server.rewrite_config(GROUPS)?;
    server.restart()?;
    let log = server.log_tail(200);
    ensure!(log.contains("moved into their index groups"), "{log}");
    let check_all = |server: &Server| containers_serve_as_made(server, &containers);
    check_all(&server)?;
    let upload = crate::multipart::Upload::resume(&server, &bucket, "begun-before", upload_id)?;
    let second = b"the last part".to_vec();
    let second_etag = upload.upload_part(2, &second)?;
    upload.complete(&[(1, &first_etag), (2, &second_etag)])?;
    let path = format!("/{bucket}/begun-before");
    let whole = server.http("GET", &path, Signing::Root, None, &[])?;
    whole.expect_status(200)?;
    ensure!(
        whole.body == [first, second].concat(),
        "the completed upload's bytes differ"
    );

    server.rewrite_config("\n")?;
    ensure!(
        server.restart().is_err(),
        "its objects are in the groups now"
    );
    let log = server.log_tail(20);
    ensure!(log.contains("set index_groups = 4"), "{log}");
    server.rewrite_config(GROUPS)?;
    server.restart()?;
    check_all(&server)?;
    Ok(())
}

#[test]
fn two_gateways_over_one_cluster_route_to_the_same_groups() -> Result<()> {
    let cluster = Cluster::start(3, 6, 2)?;
    let service = cluster.gateway_with_config(GROUPS)?;
    let second = cluster.gateway_over_with_config(&service, GROUPS)?;

    // Containers written through the second read back through the first.
    let containers = public_containers(&second, "shared", 8, &["k.txt"])?;
    for container in &containers {
        let path = format!("/v1/AUTH_admin/{container}");
        let object = service.http(
            "GET",
            &format!("{path}/k.txt"),
            Signing::Anonymous,
            None,
            &[],
        )?;
        ensure!(
            object.body_text() == format!("{container}/k.txt"),
            "{container}: {object}"
        );
        let listing = service.swift_as_root("GET", &path, None, &[])?;
        ensure!(listing.body_text() == "k.txt\n", "{container}: {listing}");
    }
    // The account's listing through the second: each group asked for its
    // containers' counts.
    let account = second.swift_as_root("GET", "/v1/AUTH_admin?format=json", None, &[])?;
    account.expect_status(200)?;
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&account.body)?;
    for container in &containers {
        ensure!(
            listed
                .iter()
                .any(|entry| entry["name"] == container.as_str() && entry["count"] == 1),
            "{container} missing or miscounted in {listed:?}"
        );
    }

    // A rename into a container of another group through the second, whose
    // groups are reached over the network: the copy's commit and the
    // source's versioned delete are calls to the first.
    let from = &containers[0];
    let to = containers[1..]
        .iter()
        .find(|name| group_of(name) != group_of(from))
        .context("eight containers in one group")?;
    let body = random_bytes(100_000);
    let source = format!("/v1/AUTH_admin/{from}/moving.bin");
    second
        .swift_as_root("PUT", &source, Some(&body), &[])?
        .expect_status(201)?;
    let root = SwiftUser::root();
    second.lftp_ok(
        &root.login(),
        &root.key,
        &format!("mv /{from}/moving.bin /{to}/moved.bin"),
    )?;
    let moved =
        service.swift_as_root("GET", &format!("/v1/AUTH_admin/{to}/moved.bin"), None, &[])?;
    moved.expect_status(200)?;
    ensure!(moved.body == body, "the moved object reads other bytes");
    service
        .swift_as_root("GET", &source, None, &[])?
        .expect_status(404)?;

    // The second's edge hears the groups' feeds: a delete made through the
    // first purges its copy within a bound.
    let object = format!("/v1/AUTH_admin/{}/k.txt", containers[0]);
    second.until_hit(&object)?;
    service
        .swift_as_root("DELETE", &object, None, &[])?
        .expect_status(204)?;
    let started = Instant::now();
    loop {
        let status = second
            .http("GET", &object, Signing::Anonymous, None, &[])?
            .status;
        if status == 404 {
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("the second gateway still answers {status} for a deleted object");
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // A gateway that counts the groups otherwise is refused, and says why.
    for (config, why) in [
        ("index_groups = 2\n", "over 4 index groups, not 2"),
        ("\n", "set index_groups = 4"),
        // Refused at once: the holder's 404 for a group it does not keep
        // is no outage to wait out.
        ("index_groups = 5\n", "keeps no index group 5"),
    ] {
        match cluster.gateway_over_with_config(&service, config) {
            Ok(_) => bail!("a gateway configured with {config:?} started over 4 groups"),
            // It exits: no waiting, as for a service that is away.
            Err(err) => {
                let err = format!("{err:#}");
                ensure!(err.contains(why) && err.contains("exit"), "{err}");
            }
        }
    }
    Ok(())
}

/// A PUT of `/bucket/key` through `gateway`, signed as root: its status.
fn put(gateway: &Server, bucket: &str, key: &str, body: &[u8]) -> Result<u16> {
    let path = format!("/{bucket}/{key}");
    Ok(gateway
        .http("PUT", &path, Signing::Root, Some(body), &[])?
        .status)
}

/// The value of a per-group series of `/metrics` on `member`, for each of
/// the four groups.
fn per_group(member: &Server, series: &str) -> Result<Vec<u64>> {
    let metrics = member.metrics()?;
    (1..=4)
        .map(|group| {
            let name = format!("{series}{{group=\"{group}\"}}");
            strata_tests::metric_in(&metrics, &name)
                .with_context(|| format!("no {name} in\n{metrics}"))
        })
        .collect()
}

/// Three members of a replicated metadata service over four index groups,
/// and their `HOST:PORT`s.
fn replicated_service(cluster: &Cluster) -> Result<(Vec<Server>, Vec<String>)> {
    replicated_service_with(cluster, "")
}

/// Like [`replicated_service`], with `cluster_toml` in the members'
/// `[cluster]` section.
fn replicated_service_with(
    cluster: &Cluster,
    cluster_toml: &str,
) -> Result<(Vec<Server>, Vec<String>)> {
    let config = format!("{GROUPS}[cluster]\n{cluster_toml}");
    let members = cluster.metadata_group_with_config(3, &config)?;
    let addresses = addresses_of(&members);
    Ok((members, addresses))
}

#[test]
fn a_replicated_service_runs_each_index_group_as_a_raft_group() -> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    // Groups that took no change for a second hibernate.
    let (mut members, addresses) =
        replicated_service_with(&cluster, "metadata_hibernate_after_secs = 1\n")?;
    let outsider = cluster.gateway_over_address_with_config(&addresses.join(","), GROUPS)?;

    // Buckets over the groups, written through one member, read through
    // another and the gateway that is not a member. The objects' changes
    // go through the index groups' logs: a marker per bucket, and at least
    // two entries for each bucket's ten objects from eight writers.
    let applied = |member: &Server| -> Result<u64> {
        Ok(per_group(member, "strata_metadata_group_last_applied")?
            .iter()
            .sum())
    };
    let before = applied(&members[2])?;
    let buckets: Vec<String> = (0..6)
        .map(|n| unique_bucket(&format!("replicated{n}")))
        .collect();
    for bucket in &buckets {
        members[0].aws_ok(&["s3api", "create-bucket", "--bucket", bucket])?;
        members[1].python_ok("cluster_load.py", &["write", bucket, "10"])?;
    }
    for bucket in &buckets {
        members[2].python_ok("cluster_load.py", &["verify", bucket, "10"])?;
        outsider.python_ok("cluster_load.py", &["verify", bucket, "10"])?;
    }
    let in_groups = applied(&members[2])? - before;
    ensure!(
        in_groups >= 18,
        "the index groups applied {in_groups} entries"
    );

    // Idle, every group of every member sleeps, the root group too: the
    // gateways' polls of the groups' feeds do not keep them awake.
    within_30s(|| {
        for member in &members {
            let asleep = per_group(member, "strata_metadata_group_hibernating")?;
            let root = strata_tests::metric_in(&member.metrics()?, "strata_metadata_hibernating")
                .context("no strata_metadata_hibernating")?;
            if asleep.contains(&0) || root == 0 {
                return Ok(Some(format!(
                    "asleep: root group {root}, index groups {asleep:?}"
                )));
            }
        }
        Ok(None)
    })?;

    // The member that leads the most groups dies while they sleep: every
    // group wakes and goes on with the other two, and nothing acknowledged
    // is lost.
    let leaders = per_group(&members[2], "strata_metadata_group_leader")?;
    let victim = (1..=3u64)
        .max_by_key(|id| leaders.iter().filter(|leader| *leader == id).count())
        .unwrap_or(1) as usize
        - 1;
    let writer = (victim + 1) % 3;
    members[victim].kill9()?;
    for bucket in &buckets {
        within_30s(|| {
            let refused = put(&members[writer], bucket, "after", b"two of three")? != 200;
            Ok(refused.then(|| {
                format!("{bucket}'s group took no change within 30 s of its leader's death")
            }))
        })?;
        outsider.python_ok("cluster_load.py", &["verify", bucket, "10"])?;
    }
    // Back, it catches up in every group's log.
    members[victim].restart()?;
    let caught_up = per_group(&members[writer], "strata_metadata_group_last_applied")?;
    within_30s(|| {
        let now = per_group(&members[victim], "strata_metadata_group_last_applied")?;
        let behind = now.iter().zip(&caught_up).any(|(now, target)| now < target);
        Ok(behind.then(|| format!("the member that came back applied {now:?} of {caught_up:?}")))
    })?;
    for bucket in &buckets {
        members[victim].python_ok("cluster_load.py", &["verify", bucket, "10"])?;
    }
    Ok(())
}

/// Each index group's leader deletes the extents an upload to one of its
/// buckets left when it was cut short, and no extent that any group's
/// records name (`orphan_sweep.rs`): each sweeps only the extents tagged
/// with its buckets' hashes, against its own replica.
#[test]
fn each_index_group_sweeps_the_orphans_of_its_buckets() -> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    let (members, addresses) = replicated_service_with(&cluster, "orphan_age_secs = 5\n")?;
    let buckets: Vec<String> = (0..6)
        .map(|n| unique_bucket(&format!("swept{n}")))
        .collect();
    let body = strata_tests::random_bytes(5 << 20);
    for bucket in &buckets {
        members[0].aws_ok(&["s3api", "create-bucket", "--bucket", bucket])?;
        ensure!(put(&members[1], bucket, "kept", &body)? == 200);
    }
    // Two extents of two copies each.
    let committed = extents(&cluster.status()?);
    ensure!(
        committed == 4 * 6,
        "{committed} extent copies for six objects"
    );

    let mut outsider = cluster.gateway_over_address_with_config(&addresses.join(","), GROUPS)?;
    orphan_extents(&cluster, &mut outsider, &buckets[0], committed)?;
    within_settle_timeout(|| {
        let now = extents(&cluster.status()?);
        Ok((now != committed).then(|| format!("{now} extent copies, {committed} committed")))
    })?;
    // By one group's leader alone, as `/metrics` says.
    let mut sweepers = Vec::new();
    for (member, server) in (1..).zip(&members) {
        let deleted = per_group(server, "strata_orphan_extents_deleted_total")?;
        let swept = (1..).zip(deleted).filter(|(_, deleted)| *deleted > 0);
        sweepers.extend(swept.map(|(group, _)| (member, group)));
    }
    ensure!(
        sweepers.len() == 1,
        "(member, group) that deleted: {sweepers:?}"
    );
    for bucket in &buckets {
        let read = members[2].http("GET", &format!("/{bucket}/kept"), Signing::Root, None, &[])?;
        ensure!(
            read.status == 200 && read.body == body,
            "{bucket}/kept: {}",
            read.status
        );
    }
    Ok(())
}

/// Waits until `member` sees each index group led by member 3 or 4.
fn every_group_led_by_members_3_and_4(member: &Server) -> Result<()> {
    within_30s(|| {
        let leaders = per_group(member, "strata_metadata_group_leader")?;
        let elsewhere = !leaders.iter().all(|leader| [3, 4].contains(leader));
        Ok(elsewhere
            .then(|| format!("index groups without a leader among members 3 and 4: {leaders:?}")))
    })
}

/// [`within`] 30 s, looking every 200 ms: an election's time, with room.
fn within_30s(check: impl FnMut() -> Result<Option<String>>) -> Result<()> {
    within(Duration::from_secs(30), Duration::from_millis(200), check)
}

/// Runs `change` until it succeeds, for 60 s at most: a membership change
/// is refused while a group elects a leader.
fn until_taken(mut change: impl FnMut() -> Result<serde_json::Value>) -> Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        match change() {
            Ok(answer) => return Ok(answer),
            Err(err) if started.elapsed() > Duration::from_secs(60) => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn a_member_of_a_service_with_index_groups_is_replaced_in_every_group() -> Result<()> {
    let cluster = Cluster::start(2, 4, 2)?;
    let (mut members, addresses) = replicated_service(&cluster)?;
    let buckets: Vec<String> = (0..4)
        .map(|n| unique_bucket(&format!("replaced{n}")))
        .collect();
    for bucket in &buckets {
        members[0].aws_ok(&["s3api", "create-bucket", "--bucket", bucket])?;
        members[1].python_ok("cluster_load.py", &["write", bucket, "10"])?;
    }

    // A fourth member is added: to the root group and to every index group.
    let joiner = cluster.metadata_joiner_with_config(&addresses, GROUPS)?;
    let joiner_address = address_of(&joiner);
    let listed = addresses.join(",");
    let metadata = |args: &[&str]| cluster.metadata_json(&listed, args);
    // Each group catches the new member up in turn; a run cut short is
    // finished by the next.
    let added = until_taken(|| metadata(&["add", "4", &joiner_address]))?;
    ensure!(added["index_groups"] == 4, "{added}");
    ensure!(added["members"]["4"] == joiner_address.as_str(), "{added}");

    // Member 1 goes for good and is removed from every group; then member
    // 2 dies too. Every group must now be members 3 and 4 of {2, 3, 4}: a
    // group that had not taken member 4 in, or still counted member 1,
    // would have no majority left.
    members[0].kill9()?;
    // Refused while the groups member 1 led elect another leader.
    let removed = until_taken(|| metadata(&["remove", "1"]))?;
    let voters: Vec<&String> = removed["members"]
        .as_object()
        .map(|voters| voters.keys().collect())
        .unwrap_or_default();
    ensure!(voters == ["2", "3", "4"], "{removed}");
    // `strata metadata` shows every group: its leader among its members,
    // which are the root's.
    let shown = metadata(&["show"])?;
    ensure!(shown["index_groups"] == 4, "{shown}");
    let groups = shown["groups"].as_array().context("no groups shown")?;
    ensure!(groups.len() == 4, "{shown}");
    for (group, entry) in (1..).zip(groups) {
        ensure!(entry["group"] == group, "{shown}");
        ensure!(entry["members"] == removed["members"], "{shown}");
        let leader = entry["leader"].as_u64().unwrap_or_default().to_string();
        ensure!(entry["members"].get(&leader).is_some(), "{shown}");
    }
    members[1].kill9()?;
    // Every group elects a leader among members 3 and 4.
    every_group_led_by_members_3_and_4(&joiner)?;
    for bucket in &buckets {
        within_30s(|| {
            let refused = put(&joiner, bucket, "after", b"members 3 and 4")? != 200;
            Ok(refused.then(|| format!("{bucket}'s group took no change from members 3 and 4")))
        })?;
        joiner.python_ok("cluster_load.py", &["verify", bucket, "10"])?;
    }
    Ok(())
}

/// A replicated service that ran without index groups, started again with
/// them: the first member's gateway asks for the split, which every member
/// applies from the root group's log, moving its replica's records into
/// its own group replicas (`store/src/split.rs`); each member then purges
/// its groups' logs, so a member added later is sent the groups as
/// snapshots. The extents it split are not tagged by bucket, so the
/// root's leader sweeps the orphans of every group, and only once its
/// replica of each group caught up: the sweep runs every 1.25 s through
/// the split and the changes of members, and every object reads back.
#[test]
fn a_replicated_service_moves_its_buckets_into_index_groups() -> Result<()> {
    const CLUSTER: &str = "[cluster]\norphan_age_secs = 5\n";
    let cluster = Cluster::start(2, 4, 2)?;
    let mut members = cluster.metadata_group_with_config(3, CLUSTER)?;
    let addresses = addresses_of(&members);
    let containers = public_containers(
        &members[0],
        "rsplit",
        8,
        &["a/one.txt", "a/two.txt", "b.txt"],
    )?;
    let bucket = unique_bucket("rsplit-s3");
    members[1].aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let body = random_bytes(300_000);
    ensure!(put(&members[1], &bucket, "big.bin", &body)? == 200);

    // Members 1 and 2 started again with groups, at once (a member's start
    // waits for the groups to elect leaders, which takes two members),
    // while member 3 runs on without them: it moves its replica's records
    // all the same, into group stores it opens for the while.
    for member in &members {
        member.rewrite_config(&format!("{GROUPS}{CLUSTER}"))?;
    }
    std::thread::scope(|scope| {
        let restarts: Vec<_> = members[..2]
            .iter_mut()
            .map(|member| scope.spawn(move || member.restart()))
            .collect();
        restarts
            .into_iter()
            .map(|restart| {
                restart
                    .join()
                    .map_err(|_| anyhow::anyhow!("restart panicked"))?
            })
            .collect::<Result<Vec<()>>>()
    })?;
    let moved = "buckets moved into their index groups";
    within_30s(|| {
        let logs: Vec<String> = members.iter().map(|member| member.log_tail(400)).collect();
        let pending: Vec<usize> = (1..=3).filter(|n| !logs[n - 1].contains(moved)).collect();
        Ok((!pending.is_empty()).then(|| format!("members {pending:?} did not split")))
    })?;
    // Member 3 restarted with groups: they start over what it moved.
    members[2].restart()?;
    let read_back = |gateway: &Server| -> Result<()> {
        containers_serve_as_made(gateway, &containers)?;
        let read = gateway.http(
            "GET",
            &format!("/{bucket}/big.bin"),
            Signing::Root,
            None,
            &[],
        )?;
        ensure!(
            read.status == 200 && read.body == body,
            "{bucket}/big.bin: {}",
            read.status
        );
        Ok(())
    };
    for member in &members {
        read_back(member)?;
    }
    // Changes go on in the groups.
    ensure!(put(&members[2], &bucket, "after.txt", b"after the split")? == 200);

    // Each member purged its groups' logs once its root split.
    within_30s(|| {
        for member in &members {
            let purged = per_group(member, "strata_metadata_group_purged_index")?;
            if purged.contains(&0) {
                return Ok(Some(format!("index group logs purged up to {purged:?}")));
            }
        }
        Ok(None)
    })?;

    // An upload cut short by its gateway's death leaves extents no group's
    // record names: swept.
    let committed = extents(&cluster.status()?);
    let mut outsider = cluster.gateway_over_address_with_config(&addresses.join(","), GROUPS)?;
    orphan_extents(&cluster, &mut outsider, &bucket, committed)?;
    within_settle_timeout(|| {
        let now = extents(&cluster.status()?);
        Ok((now != committed).then(|| format!("{now} extent copies, {committed} committed")))
    })?;
    for member in &members {
        read_back(member)?;
    }
    // Swept in one round by the root's leader, as `/metrics` counts; the
    // others did not lead.
    let mut deleted = Vec::new();
    let mut not_leading = 0;
    for member in &members {
        deleted.push(member.metric(r#"strata_orphan_extents_deleted_total{group="root"}"#)?);
        not_leading += member
            .metric(r#"strata_orphan_sweep_rounds_total{group="root",outcome="not_leading"}"#)?;
    }
    let sweepers = deleted.iter().filter(|deleted| **deleted > 0).count();
    ensure!(
        sweepers == 1,
        "orphaned extents deleted by each member: {deleted:?}"
    );
    ensure!(not_leading > 0, "no member found it did not lead");

    // A fourth member is added, the first removed and the second killed:
    // every group is left to members 3 and 4, and serves as before.
    let joiner = cluster.metadata_joiner_with_config(&addresses, GROUPS)?;
    let joiner_address = address_of(&joiner);
    let listed = addresses.join(",");
    let metadata = |args: &[&str]| cluster.metadata_json(&listed, args);
    until_taken(|| metadata(&["add", "4", &joiner_address]))?;
    within_30s(|| {
        let installed = joiner
            .log_tail(2000)
            .matches("metadata snapshot installed")
            .count();
        Ok((installed < 4).then(|| format!("the new member installed {installed} snapshots")))
    })?;
    members[0].kill9()?;
    until_taken(|| metadata(&["remove", "1"]))?;
    members[1].kill9()?;
    every_group_led_by_members_3_and_4(&joiner)?;
    read_back(&joiner)?;
    let after = joiner.http(
        "GET",
        &format!("/{bucket}/after.txt"),
        Signing::Root,
        None,
        &[],
    )?;
    ensure!(
        after.body == b"after the split",
        "{bucket}/after.txt: {}",
        after.status
    );
    Ok(())
}

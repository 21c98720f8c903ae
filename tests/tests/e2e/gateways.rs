//! Two gateways over one cluster: the first holds the metadata (`strata serve
//! --ring`), the second takes it from the first (`--metadata`). Whatever is
//! written through one reads back through the other, accounts included, and
//! the second gateway's edge cache stops serving what the first overwrote or
//! deleted within a bound.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_tests::{
    Cluster, HttpResponse, Proxy, Server, Signing, SwiftUser, assert_same_tree, unique_bucket,
    utf8, write_tree,
};

/// How long a change made through one gateway may take to show on the other's
/// edge (the feed is followed by a long poll; on loopback it takes
/// milliseconds, the bound leaves room for a loaded CI machine).
const PURGE_BOUND: Duration = Duration::from_secs(5);

fn anonymous(server: &Server, path: &str) -> Result<HttpResponse> {
    server.http("GET", path, Signing::Anonymous, None, &[])
}

/// Polls `check` on `what` until it holds, for at most [`PURGE_BOUND`];
/// returns how long it took.
fn within_bound(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if check()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PURGE_BOUND {
            bail!("{what}: not seen within {PURGE_BOUND:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_gateways_serve_one_cluster() -> Result<()> {
    let cluster = Cluster::start(3, 6, 2)?;
    let mut service = cluster.gateway()?;
    let mut second = cluster.gateway_over(&service)?;

    // S3 objects of mixed sizes through the first, read through the second.
    let bucket = unique_bucket("shared");
    service.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    service.python_ok("cluster_load.py", &["write", &bucket, "200"])?;
    second
        .python_ok("cluster_load.py", &["verify", &bucket, "200"])
        .context("reading the first gateway's objects through the second")?;

    // A Swift tree through the second, read through the first.
    let root = SwiftUser::root();
    let container = unique_bucket("shared-swift");
    let work = second.work_dir("gateways")?;
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("a/one.bin", 20_000),
            ("a/two.bin", 5 * 1024 * 1024 + 3),
            ("b/three.bin", 3),
        ],
    )?;
    second.swift_ok(&root, &["post", &container])?;
    second.swift_ok(
        &root,
        &["upload", &container, utf8(&tree)?, "--object-name", "t"],
    )?;
    let out = work.join("down");
    service.swift_ok(
        &root,
        &["download", &container, "--output-dir", utf8(&out)?],
    )?;
    assert_same_tree(&tree, &out.join("t"))?;

    // A multipart upload (three parts) through the second, read through the first.
    let big = work.join("big.bin");
    let bytes: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &bytes)?;
    second.aws_ok(&["s3", "cp", utf8(&big)?, &format!("s3://{bucket}/big.bin")])?;
    let back = work.join("big.back");
    service.aws_ok(&["s3", "cp", &format!("s3://{bucket}/big.bin"), utf8(&back)?])?;
    ensure!(
        std::fs::read(&back)? == bytes,
        "the multipart object read back differently"
    );

    // An account and user made through one gateway work through the other.
    let alice = second.create_user("shared-acct", "alice", "admin")?;
    service.swift_ok(&alice, &["post", "alice-things"])?;
    let listed = second.swift_ok(&alice, &["list"])?.stdout_text();
    ensure!(listed.contains("alice-things"), "{listed}");

    // Overwrites of one key racing through both gateways leave one object,
    // the same on both.
    let racers: Vec<_> = (0..8)
        .map(|n| {
            let body = work.join(format!("race-{n}"));
            std::fs::write(&body, format!("racer {n}"))?;
            Ok(body)
        })
        .collect::<Result<_>>()?;
    thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = racers
            .iter()
            .enumerate()
            .map(|(n, body)| {
                let gateway = if n % 2 == 0 { &service } else { &second };
                let key = format!("s3://{bucket}/race");
                scope.spawn(move || -> Result<()> {
                    gateway.aws_ok(&["s3", "cp", utf8(body)?, &key])?;
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("racer panicked"))??;
        }
        Ok(())
    })?;
    let head = |gateway: &Server| -> Result<String> {
        let json =
            gateway.aws_json(&["s3api", "head-object", "--bucket", &bucket, "--key", "race"])?;
        json["ETag"].as_str().map(str::to_owned).context("no ETag")
    };
    ensure!(head(&service)? == head(&second)?, "the gateways disagree");

    // Without the metadata service, the second gateway answers 503 (at
    // once, 3 s into the outage) and keeps serving.
    service.kill9()?;
    let started = Instant::now();
    let response = second.http(
        "GET",
        &format!("/{bucket}/load-00000"),
        Signing::Root,
        None,
        &[],
    )?;
    response.expect_status(503)?;
    ensure!(
        response.body_text().contains("ServiceUnavailable"),
        "{response}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "the refusal took {:?}",
        started.elapsed()
    );
    second.assert_healthy()?;
    Ok(())
}

#[test]
fn the_second_gateways_edge_follows_changes_made_through_the_first() -> Result<()> {
    let cluster = Cluster::start(3, 6, 2)?;
    let service = cluster.gateway()?;
    let second = cluster.gateway_over(&service)?;

    let container = unique_bucket("edge-shared");
    let base = format!("/v1/AUTH_admin/{container}");
    service
        .swift_as_root(
            "PUT",
            &base,
            None,
            &[("X-Container-Read", ".r:*,.rlistings")],
        )?
        .expect_status(201)?;
    for key in ["logo.gif", "a/b/c.txt"] {
        service
            .swift_as_root("PUT", &format!("{base}/{key}"), Some(b"one"), &[])?
            .expect_status(201)?;
    }
    let url = format!("{base}/logo.gif");
    let listing = format!("{base}?prefix=a/b/&delimiter=/");
    // The container's settings reach the second gateway through the feed.
    within_bound("the object on the second gateway", || {
        Ok(anonymous(&second, &url)?.status == 200)
    })?;
    for path in [&url, &listing] {
        anonymous(&second, path)?.expect_status(200)?;
        let cached = anonymous(&second, path)?;
        ensure!(cached.header("x-cache") == Some("HIT"), "{cached}");
    }

    // An overwrite through the first gateway: the second stops serving the
    // old bytes.
    service
        .swift_as_root("PUT", &url, Some(b"two"), &[])?
        .expect_status(201)?;
    let overwrite = within_bound("the overwrite on the second gateway", || {
        Ok(anonymous(&second, &url)?.body == b"two")
    })?;

    // A new key and a delete show in the second gateway's cached listing.
    service
        .swift_as_root("PUT", &format!("{base}/a/b/d.txt"), Some(b"d"), &[])?
        .expect_status(201)?;
    service
        .swift_as_root("DELETE", &format!("{base}/a/b/c.txt"), None, &[])?
        .expect_status(204)?;
    let relisted = within_bound("the listing on the second gateway", || {
        Ok(anonymous(&second, &listing)?.body_text() == "a/b/d.txt\n")
    })?;

    // A delete, then the container made private: 404, then 401.
    service
        .swift_as_root("DELETE", &url, None, &[])?
        .expect_status(204)?;
    within_bound("the delete on the second gateway", || {
        Ok(anonymous(&second, &url)?.status == 404)
    })?;
    service
        .swift_as_root("PUT", &url, Some(b"three"), &[])?
        .expect_status(201)?;
    within_bound("the new object on the second gateway", || {
        Ok(anonymous(&second, &url)?.body == b"three")
    })?;
    service
        .swift_as_root("POST", &base, None, &[("X-Remove-Container-Read", "x")])?
        .expect_status(204)?;
    within_bound("the private container on the second gateway", || {
        Ok(anonymous(&second, &url)?.status == 401)
    })?;

    // And the other way round: a write through the second gateway is seen
    // by the first's edge.
    service
        .swift_as_root("POST", &base, None, &[("X-Container-Read", ".r:*")])?
        .expect_status(204)?;
    within_bound("public again on the first gateway", || {
        Ok(anonymous(&service, &url)?.status == 200)
    })?;
    anonymous(&service, &url)?;
    second
        .swift_as_root("PUT", &url, Some(b"four"), &[])?
        .expect_status(201)?;
    let reverse = within_bound("the second gateway's write on the first", || {
        Ok(anonymous(&service, &url)?.body == b"four")
    })?;

    // A custom domain added through the first gateway serves on the second;
    // removed, the host falls through to the normal routes again.
    let host = format!("{container}.example.com");
    service.strata_ok(&["domain", "add", &host, &format!("admin/{container}")])?;
    let on_domain = |server: &Server| -> Result<HttpResponse> {
        server.http(
            "GET",
            "/logo.gif",
            Signing::Anonymous,
            None,
            &[("Host", &host)],
        )
    };
    within_bound("the new domain on the second gateway", || {
        let response = on_domain(&second)?;
        Ok(response.status == 200 && response.body == b"four")
    })?;
    service.strata_ok(&["domain", "rm", &host])?;
    within_bound("the removed domain on the second gateway", || {
        Ok(on_domain(&second)?.status != 200)
    })?;

    // The first gateway knows who follows its feed and how far: the second
    // gateway, by its host and port, with every change confirmed.
    let port = format!(":{}\",", second.port());
    within_bound("the second gateway's confirmation in /metrics", || {
        Ok(service.metrics()?.lines().any(|line| {
            line.starts_with("strata_feed_follower_behind_events{follower=\"")
                && line.contains(&port)
                && line.ends_with("} 0")
        }))
    })?;
    ensure!(service.metric("strata_feed_followers")? == 1);
    println!(
        "seen on the other gateway after: overwrite {overwrite:?}, listing {relisted:?}, reverse {reverse:?}"
    );
    Ok(())
}

/// The status and body of an anonymous `GET path` if the gateway answers
/// within 3 s.
fn answer_if_quick(server: &Server, path: &str) -> Result<Option<(u16, Vec<u8>)>> {
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "3", "-w", "\n%{http_code}"])
        .arg(format!("{}{path}", server.endpoint()))
        .output()
        .context("running curl")?;
    let mut answer = output.stdout;
    let Some(split) = answer.iter().rposition(|byte| *byte == b'\n') else {
        return Ok(None);
    };
    let status = String::from_utf8_lossy(&answer.split_off(split)[1..]).parse::<u16>();
    Ok(match (output.status.success(), status) {
        (true, Ok(status)) => Some((status, answer)),
        _ => None,
    })
}

#[test]
fn a_gateway_cut_off_from_the_metadata_service_stops_trusting_its_edge() -> Result<()> {
    let cluster = Cluster::start(3, 6, 2)?;
    let service = cluster.gateway()?;
    let link = Proxy::start("127.0.0.1:0", &format!("127.0.0.1:{}", service.port()))?;
    let mut second = cluster.gateway_over_address(&link.address)?;

    let container = unique_bucket("edge-away");
    let base = format!("/v1/AUTH_admin/{container}");
    service
        .swift_as_root("PUT", &base, None, &[("X-Container-Read", ".r:*")])?
        .expect_status(201)?;
    let url = format!("{base}/logo.gif");
    service
        .swift_as_root("PUT", &url, Some(b"one"), &[])?
        .expect_status(201)?;
    within_bound("the object on the second gateway", || {
        Ok(anonymous(&second, &url)?.status == 200)
    })?;
    second.until_hit(&url)?;

    // Cut off, the second gateway cannot hear of this overwrite. It may
    // serve its copy while its hold on the feed lasts (15 s), not after;
    // once its feed fails it answers 503 (at once, 3 s into the outage)
    // rather than hang.
    link.cut();
    service
        .swift_as_root("PUT", &url, Some(b"two"), &[])?
        .expect_status(201)?;
    let cut_at = Instant::now();
    loop {
        ensure!(
            cut_at.elapsed() < Duration::from_secs(30),
            "the cut-off gateway neither stopped serving its copy nor answered 503"
        );
        match answer_if_quick(&second, &url)? {
            Some((503, _)) => break,
            Some((200, body)) if body == b"one" => {
                ensure!(
                    cut_at.elapsed() < Duration::from_secs(20),
                    "the cut-off gateway still serves the replaced bytes after {:?}",
                    cut_at.elapsed()
                );
                thread::sleep(Duration::from_millis(500));
            }
            // Asking the service, in the moment before its feed is known to fail.
            None => {}
            Some((status, body)) => bail!(
                "unexpected answer while cut off: {status} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    let untrusted_after = cut_at.elapsed();
    // Nor does it check keys against accounts it can no longer follow (one
    // revoked meanwhile would still pass): a token request is a 503 too.
    let root = SwiftUser::root();
    let token_request = |gateway: &Server| {
        gateway.http(
            "GET",
            "/auth/v1.0",
            Signing::Anonymous,
            None,
            &[("X-Auth-User", &root.login()), ("X-Auth-Key", &root.key)],
        )
    };
    let refused = token_request(&second)?;
    ensure!(refused.status == 503, "a token while cut off: {refused}");

    // Back on the network: the new bytes, and the gateway is well.
    link.heal();
    let started = Instant::now();
    while anonymous(&second, &url)?.body != b"two" {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the reconnected gateway never served the new bytes"
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "cut-off gateway answered 503 after {untrusted_after:?}, \
         served the new bytes {:?} after reconnecting",
        started.elapsed()
    );
    // Keys are checked again once accounts have been read afresh (the
    // directory retries with a pause of up to 1 s).
    let started = Instant::now();
    loop {
        let token = token_request(&second)?;
        if token.status == 200 {
            break;
        }
        ensure!(
            token.status == 503 && started.elapsed() < Duration::from_secs(15),
            "a token after reconnecting: {token}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    second.assert_healthy()?;
    Ok(())
}

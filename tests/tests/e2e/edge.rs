//! The public edge with curl: anonymous reads by container ACL, custom
//! domains, the RAM cache (hits, 304s and ranges from the cache, coalesced
//! misses, cold objects streamed while they fill) and purges that make
//! writes visible at once on this gateway.

use anyhow::{Context, Result, ensure};
use strata_tests::{
    Cluster, HttpResponse, Server, Signing, random_bytes, raw_request, unique_bucket,
};

/// The extra header line of raw requests that read to the end.
const CLOSE: &str = "Connection: close\r\n";

fn anonymous(server: &Server, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    server.http("GET", path, Signing::Anonymous, None, headers)
}

/// `/metrics` answers the addresses `metrics_from` names (loopback and the
/// private networks by default, as the other tests use it) and refuses
/// every other with 403.
#[test]
fn metrics_are_served_to_the_configured_addresses_only() -> Result<()> {
    let mut elsewhere = Server::start_with_config("metrics_from = [\"10.0.0.0/8\", \"::1\"]\n")?;
    let refused = anonymous(&elsewhere, "/metrics", &[])?;
    refused.expect_status(403)?;
    ensure!(
        !refused.body_text().contains("strata_"),
        "a refused /metrics carried metrics: {refused}"
    );
    elsewhere.assert_healthy()?;

    let here = Server::start_with_config("metrics_from = [\"127.0.0.1\"]\n")?;
    let served = anonymous(&here, "/metrics", &[])?;
    served.expect_status(200)?;
    ensure!(served.body_text().contains("strata_"), "{served}");
    Ok(())
}

/// Sleeps until `deadline` (at once if it has passed).
fn sleep_until(deadline: std::time::Instant) {
    std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
}

/// The boundary of a `multipart/byteranges` answer.
fn multipart_boundary(response: &HttpResponse) -> Result<&str> {
    response
        .header("content-type")
        .and_then(|value| value.strip_prefix("multipart/byteranges; boundary="))
        .with_context(|| format!("not multipart: {response}"))
}

/// A public container of the root account with one object.
fn public_container(server: &Server, object: &str, body: &[u8]) -> Result<String> {
    let container = unique_bucket("public");
    let path = format!("/v1/AUTH_admin/{container}");
    server
        .swift_as_root(
            "PUT",
            &path,
            None,
            &[("X-Container-Read", ".r:*,.rlistings")],
        )?
        .expect_status(201)?;
    server
        .swift_as_root("PUT", &format!("{path}/{object}"), Some(body), &[])?
        .expect_status(201)?;
    Ok(container)
}

/// Whether `response` varies by `header`, among all its `Vary` headers.
fn varies_by(response: &HttpResponse, header: &str) -> bool {
    response
        .headers
        .iter()
        .filter(|(name, _)| name == "vary")
        .flat_map(|(_, value)| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case(header))
}

/// Hotlink protection (`.r:example.com`): every anonymous answer, allowed,
/// refused or cached, varies by Referer, so a CDN in front keeps one per
/// referrer; a container open to every referrer does not.
#[test]
fn hotlink_protected_answers_vary_by_referer() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "logo.gif", b"GIF89a")?;
    let url = format!("/v1/AUTH_admin/{container}/logo.gif");
    let open = anonymous(&server, &url, &[])?;
    ensure!(open.status == 200 && !varies_by(&open, "Referer"), "{open}");

    server
        .swift_as_root(
            "POST",
            &format!("/v1/AUTH_admin/{container}"),
            None,
            &[("X-Container-Read", ".r:example.com,.rlistings")],
        )?
        .expect_status(204)?;
    let from_site = [("Referer", "http://example.com/page.html")];
    for _ in 0..2 {
        let allowed = anonymous(&server, &url, &from_site)?;
        ensure!(
            allowed.status == 200 && varies_by(&allowed, "Referer"),
            "{allowed}"
        );
    }
    let hotlinked = anonymous(&server, &url, &[("Referer", "http://other.example/")])?;
    ensure!(
        hotlinked.status == 401 && varies_by(&hotlinked, "Referer"),
        "{hotlinked}"
    );
    let listing = anonymous(&server, &format!("/v1/AUTH_admin/{container}"), &from_site)?;
    ensure!(
        listing.status == 200 && varies_by(&listing, "Referer") && varies_by(&listing, "Accept"),
        "{listing}"
    );
    // The same rule read through the S3 door: the object (twice, both from
    // the copy the Swift reads cached) and the listing.
    for path in [
        format!("/{container}/logo.gif"),
        format!("/{container}/logo.gif"),
        format!("/{container}?list-type=2"),
    ] {
        let allowed = anonymous(&server, &path, &from_site)?;
        ensure!(
            allowed.status == 200 && varies_by(&allowed, "Referer"),
            "{path}: {allowed}"
        );
    }
    Ok(())
}

#[test]
fn cache_hits_revalidates_and_purges_on_writes() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "logo.gif", b"GIF89a-one")?;
    let url = format!("/v1/AUTH_admin/{container}/logo.gif");

    let first = anonymous(&server, &url, &[])?;
    first.expect_status(200)?;
    ensure!(first.header("x-cache") == Some("MISS"), "{first}");
    let second = anonymous(&server, &url, &[])?;
    ensure!(
        second.header("x-cache") == Some("HIT") && second.body == b"GIF89a-one",
        "{second}"
    );
    ensure!(second.header("age").is_some(), "{second}");
    let etag = second.header("etag").context("no ETag")?.to_owned();
    let not_modified = anonymous(&server, &url, &[("If-None-Match", &format!("\"{etag}\""))])?;
    not_modified.expect_status(304)?;
    ensure!(
        not_modified.header("x-cache") == Some("HIT"),
        "{not_modified}"
    );
    let ranged = anonymous(&server, &url, &[("Range", "bytes=0-4")])?;
    ranged.expect_status(206)?;
    ensure!(
        ranged.body == b"GIF89" && ranged.header("x-cache") == Some("HIT"),
        "{ranged}"
    );
    anonymous(&server, &url, &[("Range", "bytes=100-")])?.expect_status(416)?;
    anonymous(&server, &url, &[("Range", "bytes=garbage")])?.expect_status(200)?;
    // A resumed download of another version gets the whole object.
    let quoted_etag = format!("\"{etag}\"");
    for (validator, status) in [(quoted_etag.as_str(), 206), ("\"older\"", 200)] {
        let resumed = anonymous(
            &server,
            &url,
            &[("Range", "bytes=5-"), ("If-Range", validator)],
        )?;
        resumed.expect_status(status)?;
    }
    // Several ranges: one multipart/byteranges answer from the cached copy.
    let several = anonymous(&server, &url, &[("Range", "bytes=0-2,-3")])?;
    several.expect_status(206)?;
    let boundary = multipart_boundary(&several)?;
    let object_type = first.header("content-type").context("no type")?;
    let part = |range: &str, bytes: &str| {
        format!(
            "--{boundary}\r\nContent-Type: {object_type}\r\nContent-Range: bytes {range}/10\r\n\r\n{bytes}\r\n"
        )
    };
    let expected = format!("{}{}--{boundary}--", part("0-2", "GIF"), part("7-9", "one"));
    ensure!(
        several.body_text() == expected && several.header("x-cache") == Some("HIT"),
        "{several}"
    );
    anonymous(&server, &url, &[("Range", "bytes=0-5,1-6,2-7,3-8")])?.expect_status(416)?;

    // An overwrite is visible at once; so is a delete.
    server
        .swift_as_root("PUT", &url, Some(b"GIF89a-two"), &[])?
        .expect_status(201)?;
    let fresh = anonymous(&server, &url, &[])?;
    ensure!(
        fresh.body == b"GIF89a-two",
        "stale bytes after an overwrite: {fresh}"
    );
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("HIT"));
    server
        .swift_as_root("DELETE", &url, None, &[])?
        .expect_status(204)?;
    anonymous(&server, &url, &[])?.expect_status(404)?;

    // Making the container private takes effect at once, cache included.
    server
        .swift_as_root("PUT", &url, Some(b"GIF89a-three"), &[])?
        .expect_status(201)?;
    anonymous(&server, &url, &[])?.expect_status(200)?;
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("HIT"));
    server
        .swift_as_root(
            "POST",
            &format!("/v1/AUTH_admin/{container}"),
            None,
            &[("X-Remove-Container-Read", "x")],
        )?
        .expect_status(204)?;
    anonymous(&server, &url, &[])?.expect_status(401)?;

    // Objects that say no-store are never kept.
    let container = public_container(&server, "live.json", b"{}")?;
    let live = format!("/v1/AUTH_admin/{container}/live.json");
    server
        .swift_as_root("POST", &live, None, &[("Cache-Control", "no-store")])?
        .expect_status(202)?;
    for _ in 0..2 {
        let response = anonymous(&server, &live, &[])?;
        response.expect_status(200)?;
        ensure!(
            response.header("x-cache").is_none(),
            "no-store was cached: {response}"
        );
    }
    Ok(())
}

/// RAM hits from 64 KiB to 512 KiB leave from the RAM zone's memfd with
/// `sendfile`: whole, ranged and after an overwrite, byte for byte, each
/// body's bytes counted once by `strata_cache_sendfile_bytes_total`. With
/// `sendfile = false` the same hits are copied into the socket.
#[test]
fn large_ram_hits_are_sent_from_the_memfd_byte_for_byte() -> Result<()> {
    const SENT: &str = "strata_cache_sendfile_bytes_total";
    let server = Server::start()?;
    let body = random_bytes(200 * 1024 + 7);
    let container = public_container(&server, "photo.jpg", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/photo.jpg");
    let miss = anonymous(&server, &url, &[])?;
    ensure!(
        miss.header("x-cache") == Some("MISS") && miss.body == body,
        "{miss}"
    );
    ensure!(server.metric("strata_cache_ram_arena_bytes")? >= body.len() as u64);

    let before = server.metric(SENT)?;
    let hit = anonymous(&server, &url, &[])?;
    ensure!(
        hit.header("x-cache") == Some("HIT") && hit.body == body,
        "a hit from the memfd differs from the object"
    );
    let after_hit = server.metric(SENT)?;
    ensure!(
        after_hit - before == body.len() as u64,
        "sendfile sent {} bytes of a {}-byte hit",
        after_hit - before,
        body.len()
    );
    let ranged = anonymous(&server, &url, &[("Range", "bytes=70000-150006")])?;
    ranged.expect_status(206)?;
    ensure!(
        ranged.body == body[70000..150007],
        "a range from the memfd differs"
    );
    ensure!(server.metric(SENT)? - after_hit == 80007);

    // The overwrite's bytes at once, and from the memfd once kept.
    let second = random_bytes(body.len());
    server
        .swift_as_root("PUT", &url, Some(&second), &[])?
        .expect_status(201)?;
    for outcome in ["MISS", "HIT"] {
        let fresh = anonymous(&server, &url, &[])?;
        ensure!(
            fresh.header("x-cache") == Some(outcome) && fresh.body == second,
            "not the overwrite's bytes ({outcome})"
        );
    }

    let copied = Server::start_with_config("[cache]\nsendfile = false\n")?;
    let container = public_container(&copied, "photo.jpg", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/photo.jpg");
    for outcome in ["MISS", "HIT"] {
        let answer = anonymous(&copied, &url, &[])?;
        ensure!(
            answer.header("x-cache") == Some(outcome) && answer.body == body,
            "{answer}"
        );
    }
    ensure!(
        !copied.metrics()?.contains(SENT),
        "sendfile = false still sent from a memfd"
    );
    Ok(())
}

#[test]
fn concurrent_cold_requests_make_one_store_read() -> Result<()> {
    let server = Server::start()?;
    let body = vec![7u8; 1024 * 1024];
    let container = public_container(&server, "big.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/big.bin");
    let fills_before = server.metric("strata_cache_fills_total")?;
    let responses: Vec<Result<HttpResponse>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| anonymous(&server, &url, &[])))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    for response in responses {
        let response = response?;
        response.expect_status(200)?;
        ensure!(response.body == body, "wrong bytes");
    }
    let fills = server.metric("strata_cache_fills_total")? - fills_before;
    ensure!(
        fills == 1,
        "16 concurrent cold requests made {fills} store reads"
    );
    ensure!(
        server.metric("strata_cache_hits_total")? + server.metric("strata_cache_misses_total")?
            >= 8
    );
    Ok(())
}

/// Fills hold at most `fill_memory_bytes` between them (twice each
/// object): an object that would take more is answered from the store and
/// not cached, and a finished fill gives its share back.
#[test]
fn fills_stay_within_their_memory_budget() -> Result<()> {
    let server = Server::start_with_config("[cache]\nfill_memory_bytes = \"1M\"\n")?;
    let small = random_bytes(300 * 1024);
    let large = random_bytes(1024 * 1024);
    let container = public_container(&server, "a.bin", &small)?;
    server
        .swift_as_root(
            "PUT",
            &format!("/v1/AUTH_admin/{container}/b.bin"),
            Some(&small),
            &[],
        )?
        .expect_status(201)?;
    server
        .swift_as_root(
            "PUT",
            &format!("/v1/AUTH_admin/{container}/large.bin"),
            Some(&large),
            &[],
        )?
        .expect_status(201)?;
    // 600 KiB each: b.bin fills only if a.bin's fill gave its share back.
    for name in ["a.bin", "b.bin"] {
        let url = format!("/v1/AUTH_admin/{container}/{name}");
        let miss = anonymous(&server, &url, &[])?;
        ensure!(
            miss.header("x-cache") == Some("MISS") && miss.body == small,
            "{name}: {miss}"
        );
        ensure!(server.until_hit(&url)?.body == small);
    }
    ensure!(server.metric("strata_cache_fills_refused_total")? == 0);
    let url = format!("/v1/AUTH_admin/{container}/large.bin");
    for attempt in 1..=2 {
        let uncached = anonymous(&server, &url, &[])?;
        uncached.expect_status(200)?;
        ensure!(
            uncached.header("x-cache").is_none() && uncached.body == large,
            "large.bin, attempt {attempt}: {uncached}"
        );
        ensure!(server.metric("strata_cache_fills_refused_total")? == attempt);
    }
    Ok(())
}

/// Two GETs of the cold object at `url` (the cluster's one node behind a
/// proxy) whose heads, both MISS, and first MiB arrive while the store
/// holds back all but 4 MiB of the object; then each reads the rest, which
/// must be `body`.
fn two_misses_while_the_store_holds_back(
    cluster: &Cluster,
    server: &Server,
    url: &str,
    body: &[u8],
) -> Result<()> {
    use std::io::{BufReader, Read as _};

    let start_get = || -> Result<(BufReader<std::net::TcpStream>, Vec<u8>)> {
        let (head, mut reader) = raw_request(server.endpoint(), "GET", url, CLOSE)?;
        ensure!(
            head.first()
                .is_some_and(|status| status.starts_with("http/1.1 200")),
            "{head:?}"
        );
        ensure!(head.iter().any(|line| line == "x-cache: miss"), "{head:?}");
        let mut first = vec![0; 1 << 20];
        reader.read_exact(&mut first)?;
        Ok((reader, first))
    };
    cluster.nodes[0].throttle(4 << 20)?;
    let started = start_get().and_then(|first| Ok((first, start_get()?)));
    // Lifted whatever happened, so a failure does not leave the node held.
    cluster.nodes[0].reconnect()?;
    let (first, second) =
        started.context("the first MiB did not come while the store held back the rest")?;
    for (mut reader, mut received) in [first, second] {
        reader.read_to_end(&mut received)?;
        ensure!(
            received == body,
            "the streamed copy differs from the object ({} of {} bytes)",
            received.len(),
            body.len()
        );
    }
    Ok(())
}

/// A cold object larger than one store read reaches its clients while the
/// store is still sending it: the storage node behind a proxy lets 4 MiB of
/// its replies through and holds the rest, and two clients (the second
/// joining the first one's fill) must each get the first MiB of a 24 MiB
/// object before the hold is lifted. Then every byte arrives intact, the
/// store was read once, and the next request is a hit.
#[test]
fn a_cold_large_object_streams_while_the_cache_fills() -> Result<()> {
    let cluster = Cluster::start_behind_proxies(1, 4, 1)?;
    let server = cluster.gateway_with_config(
        "[cache]\nmax_object_bytes = 33554432\nram_max_object_bytes = 33554432\n",
    )?;
    let body = random_bytes(24 << 20);
    let container = public_container(&server, "film.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/film.bin");
    let fills_before = server.metric("strata_cache_fills_total")?;
    two_misses_while_the_store_holds_back(&cluster, &server, &url, &body)?;
    let fills = server.metric("strata_cache_fills_total")? - fills_before;
    ensure!(fills == 1, "two streamed misses made {fills} store reads");

    let again = server.until_hit(&url)?;
    ensure!(again.body == body, "the kept copy differs from the object");
    let fills = server.metric("strata_cache_fills_total")? - fills_before;
    ensure!(
        fills == 1,
        "the object was read from the store {fills} times"
    );
    Ok(())
}

/// The most memory the server has held (`VmHWM`) since it started or
/// since [`reset_peak_memory`], in bytes.
fn peak_memory(server: &Server) -> Result<u64> {
    let pid = server.pid().context("the server is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no VmHWM in /proc/PID/status")
}

/// Makes the server's peak memory its memory now (`clear_refs`, 5).
fn reset_peak_memory(server: &Server) -> Result<()> {
    let pid = server.pid().context("the server is not running")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting the peak memory")
}

/// An object larger than any fill may hold in memory (64 MiB) is cached on
/// an SSD zone all the same: its fill is written to the zone file as it
/// arrives, two requests that missed it stream from that file while the
/// store holds back the rest, and the next request is an SSD hit. The
/// gateway's memory never holds the object, and the fill counts only its
/// pieces in flight against a fill budget far smaller than the object.
#[test]
fn objects_beyond_memory_fill_straight_to_their_ssd_zone() -> Result<()> {
    let zone = tempfile::tempdir()?;
    let cluster = Cluster::start_behind_proxies(1, 4, 1)?;
    let server = cluster.gateway_with_config(&zone_config(
        "max_object_bytes = 134217728\nfill_memory_bytes = \"8M\"\n",
        zone.path(),
        "256M",
    ))?;
    let body = random_bytes(72 << 20);
    let container = public_container(&server, "disk.iso", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/disk.iso");
    // The upload's own peak must not hide the fill's.
    reset_peak_memory(&server)?;
    let peak_before = peak_memory(&server)?;
    two_misses_while_the_store_holds_back(&cluster, &server, &url, &body)?;
    ensure!(server.metric("strata_cache_fills_total")? == 1);
    ensure!(server.metric("strata_cache_fills_refused_total")? == 0);
    zone_file(zone.path())?;
    let hit = server.until_hit(&url)?;
    ensure!(hit.body == body, "the SSD copy differs from the object");
    ensure!(server.metric("strata_cache_ssd_hits_total")? >= 1);
    ensure!(server.metric("strata_cache_fills_total")? == 1);
    let grown = peak_memory(&server)?.saturating_sub(peak_before);
    ensure!(
        grown < 40 << 20,
        "the gateway's peak memory grew by {} MiB for a 72 MiB object",
        grown >> 20
    );
    Ok(())
}

/// The files of fills still being written may take half of their zone: an
/// object larger than that is answered from the store, uncached, and never
/// written to the zone.
#[test]
fn fills_written_to_a_zone_stay_within_half_of_it() -> Result<()> {
    let zone = tempfile::tempdir()?;
    let server = Server::start_with_config(&zone_config(
        "max_object_bytes = 134217728\n",
        zone.path(),
        "8M",
    ))?;
    let body = random_bytes((4 << 20) + 1);
    let container = public_container(&server, "big.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/big.bin");
    for _ in 0..2 {
        let answer = anonymous(&server, &url, &[])?;
        answer.expect_status(200)?;
        ensure!(answer.body == body, "wrong bytes from the store");
        ensure!(answer.header("x-cache") != Some("HIT"), "{answer}");
    }
    ensure!(server.metric("strata_cache_fills_refused_total")? == 2);
    ensure!(zone_files(zone.path()).is_empty());
    Ok(())
}

/// A zone whose disk is full (a tmpfs smaller than the zone's budget) fails
/// a fill before its first byte is answered, so the request is answered
/// from the store, whole, and nothing half-written stays in the zone.
#[test]
fn a_full_zone_disk_never_cuts_an_answer_short() -> Result<()> {
    let zone = tempfile::tempdir()?;
    let _tmpfs = strata_tests::Tmpfs::mount(zone.path(), "6m")?;
    let server = Server::start_with_config(&zone_config(
        "max_object_bytes = 134217728\n",
        zone.path(),
        "64M",
    ))?;
    let body = random_bytes(8 << 20);
    let container = public_container(&server, "big.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/big.bin");
    for _ in 0..2 {
        let answer = anonymous(&server, &url, &[])?;
        answer.expect_status(200)?;
        ensure!(answer.body == body, "an answer that is not the object");
    }
    ensure!(server.metric("strata_cache_fill_failures_total")? >= 2);
    ensure!(zone_files(zone.path()).is_empty());
    Ok(())
}

/// A client that hangs up before the first byte of a cold object leaves
/// the fill to the clients still waiting: the store is read once.
#[test]
fn a_fill_outlives_the_client_that_started_it() -> Result<()> {
    let cluster = Cluster::start_behind_proxies(1, 4, 1)?;
    let server = cluster.gateway_with_config("[cache]\nmax_object_bytes = 8388608\n")?;
    let body = random_bytes(3 << 20);
    let container = public_container(&server, "late.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/late.bin");
    let fills_before = server.metric("strata_cache_fills_total")?;
    let misses_before = server.metric("strata_cache_misses_total")?;
    // Until the gateway has counted `n` more misses of the object.
    let until_missed = |n: u64| -> Result<()> {
        for _ in 0..200 {
            if server.metric("strata_cache_misses_total")? - misses_before >= n {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        anyhow::bail!("the gateway did not count {n} misses")
    };

    cluster.nodes[0].throttle(0)?;
    let waiting = (|| -> Result<()> {
        // Sent, then dropped before any answer (the store holds it back).
        let leaving = std::net::TcpStream::connect(
            server
                .endpoint()
                .strip_prefix("http://")
                .context("endpoint is not http://")?,
        )?;
        std::io::Write::write_all(
            &mut &leaving,
            format!("GET {url} HTTP/1.1\r\nHost: edge\r\n\r\n").as_bytes(),
        )?;
        until_missed(1)?;
        drop(leaving);
        // Time for the gateway to notice the hang-up (nothing to observe).
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    })();
    let staying = std::thread::scope(|scope| {
        let staying = scope.spawn(|| anonymous(&server, &url, &[]));
        let joined = until_missed(2);
        let lifted = cluster.nodes[0].reconnect().and(joined);
        let staying = staying.join();
        lifted.map(|()| staying)
    })?;
    waiting?;
    let staying = staying.map_err(|_| anyhow::anyhow!("the waiting client panicked"))??;
    staying.expect_status(200)?;
    ensure!(staying.body == body, "the waiting client got other bytes");
    let fills = server.metric("strata_cache_fills_total")? - fills_before;
    ensure!(fills == 1, "the store was read {fills} times");
    Ok(())
}

#[test]
fn custom_domains_map_hosts_to_containers() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "logo.gif", b"GIF89a")?;
    let private = unique_bucket("private");
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{private}"), None, &[])?
        .expect_status(201)?;
    server
        .swift_as_root(
            "PUT",
            &format!("/v1/AUTH_admin/{private}/secret"),
            Some(b"s"),
            &[],
        )?
        .expect_status(201)?;

    server.strata_ok(&[
        "domain",
        "add",
        "st.example.com",
        &format!("admin/{container}"),
    ])?;
    server.strata_ok(&["domain", "add", "cdn.example.com", "admin"])?;
    let listed = server.strata_ok(&["domain", "list"])?.stdout_text();
    ensure!(
        listed.contains("st.example.com") && listed.contains("cdn.example.com"),
        "{listed}"
    );

    for host in ["st.example.com", "ST.Example.COM.", "st.example.com:8443"] {
        let response = anonymous(&server, "/logo.gif", &[("Host", host)])?;
        response.expect_status(200)?;
        ensure!(response.body == b"GIF89a", "{host}: {response}");
    }
    // Over HTTP/2 the host is the :authority (curl makes it of Host).
    let h2 = server.curl(&[
        "-sS",
        "--fail",
        "--http2-prior-knowledge",
        "-H",
        "Host: st.example.com",
        &format!("{}/logo.gif", server.endpoint()),
    ])?;
    ensure!(h2.success() && h2.stdout == b"GIF89a", "{h2}");
    let by_account = anonymous(
        &server,
        &format!("/{container}/logo.gif"),
        &[("Host", "cdn.example.com")],
    )?;
    ensure!(
        by_account.status == 200 && by_account.body == b"GIF89a",
        "{by_account}"
    );
    let listing = anonymous(&server, "/?format=json", &[("Host", "st.example.com")])?;
    listing.expect_status(200)?;
    ensure!(listing.body_text().contains("logo.gif"), "{listing}");
    // On a customer's domain, /health and /metrics are the customer's paths.
    for path in ["/health", "/metrics"] {
        anonymous(&server, path, &[("Host", "st.example.com")])?.expect_status(404)?;
    }
    anonymous(&server, "/metrics", &[])?.expect_status(200)?;
    // An absolute-form target names the host, whatever Host says (the
    // gateway's address here); two Host headers are refused.
    let (head, _) = raw_request(
        server.endpoint(),
        "GET",
        "http://st.example.com/logo.gif",
        "Connection: close\r\n",
    )?;
    ensure!(head[0].contains(" 200 "), "{head:?}");
    let (head, _) = raw_request(
        server.endpoint(),
        "GET",
        "/logo.gif",
        "Host: st.example.com\r\nConnection: close\r\n",
    )?;
    ensure!(head[0].contains(" 400 "), "two Host headers: {head:?}");

    // Private stays private through a public host; odd paths are refused.
    anonymous(
        &server,
        &format!("/{private}/secret"),
        &[("Host", "cdn.example.com")],
    )?
    .expect_status(401)?;
    anonymous(&server, "/", &[("Host", "cdn.example.com")])?.expect_status(401)?;
    for path in ["/../x", "/%2e%2e/x", "/a//b", "/a%00b"] {
        let response = anonymous(&server, path, &[("Host", "st.example.com")])?;
        ensure!(
            response.status == 400 || response.status == 412,
            "{path}: {response}"
        );
    }
    // An unknown host, or an IP, falls through to the normal routes.
    anonymous(&server, "/logo.gif", &[("Host", "other.example.com")])?.expect_status(403)?;
    anonymous(&server, "/logo.gif", &[("Host", "127.0.0.1")])?.expect_status(403)?;

    ensure!(
        !server
            .strata(&["domain", "add", "127.0.0.1", "admin"])?
            .success(),
        "an IP became a domain"
    );
    ensure!(
        !server
            .strata(&["domain", "add", "x.example.com", "nobody"])?
            .success(),
        "a domain of a missing account"
    );
    server.strata_ok(&["domain", "rm", "st.example.com"])?;
    anonymous(&server, "/logo.gif", &[("Host", "st.example.com")])?.expect_status(403)?;
    Ok(())
}

#[test]
fn stale_entries_revalidate_and_max_age_wins() -> Result<()> {
    let server = Server::start_with_config("[cache]\ndefault_ttl_secs = 1\n")?;
    let container = public_container(&server, "a.txt", b"first")?;
    let url = format!("/v1/AUTH_admin/{container}/a.txt");
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("MISS"));
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("HIT"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let stale = anonymous(&server, &url, &[])?;
    ensure!(
        stale.header("x-cache") == Some("REVALIDATED") && stale.body == b"first",
        "{stale}"
    );

    // The object's Cache-Control outlives the default TTL; for a shared
    // cache s-maxage wins over max-age, in whatever order they come.
    let control = "s-maxage=3600, max-age=1";
    server
        .swift_as_root("POST", &url, None, &[("Cache-Control", control)])?
        .expect_status(202)?;
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("MISS"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let cached = anonymous(&server, &url, &[])?;
    ensure!(cached.header("x-cache") == Some("HIT"), "{cached}");
    ensure!(cached.header("cache-control") == Some(control), "{cached}");
    // A 304 carries what the 200 would of the object's freshness, so a
    // cache in front refreshes its copy by it (RFC 9110 §15.4.5).
    let etag = cached.header("etag").context("no ETag")?.to_owned();
    let revalidated = anonymous(&server, &url, &[("If-None-Match", &etag)])?;
    ensure!(
        revalidated.status == 304 && revalidated.header("cache-control") == Some(control),
        "{revalidated}"
    );
    // If-Match compares strongly: a weak tag is not the object's bytes.
    let weak = anonymous(&server, &url, &[("If-Match", &format!("W/\"{etag}\""))])?;
    ensure!(weak.status == 412, "{weak}");
    Ok(())
}

/// A copy in an SSD zone ages like one in RAM: `Age` counts from its fetch,
/// and past the TTL (8 s here) its next hit revalidates it with the store.
#[test]
fn ssd_copies_age_and_revalidate_when_stale() -> Result<()> {
    let zone = tempfile::tempdir()?;
    // Above ram_max_object_bytes: the copy lives in the SSD zone only.
    let server = Server::start_with_config(&zone_config(
        "default_ttl_secs = 8\nram_max_object_bytes = 1024\n",
        zone.path(),
        "16M",
    ))?;
    let body = random_bytes(4096);
    let container = public_container(&server, "ssd.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/ssd.bin");
    // The copy is made between the MISS and its file's appearing: its age
    // is at least the time since the file was seen, at most since the MISS.
    let missed = std::time::Instant::now();
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("MISS"));
    zone_file(zone.path())?;
    let written = std::time::Instant::now();
    server.until_hit(&url)?;
    ensure!(server.metric("strata_cache_ssd_hits_total")? >= 1);

    sleep_until(written + std::time::Duration::from_millis(1100));
    let aged = anonymous(&server, &url, &[])?;
    let age: u64 = aged.header("age").unwrap_or("0").parse()?;
    ensure!(
        aged.header("x-cache") == Some("HIT") && age >= 1,
        "{aged} ({:?} after the miss)",
        missed.elapsed()
    );
    sleep_until(written + std::time::Duration::from_millis(8200));
    let stale = anonymous(&server, &url, &[])?;
    ensure!(
        stale.header("x-cache") == Some("REVALIDATED")
            && stale.header("age") == Some("0")
            && stale.body == body,
        "{stale}"
    );
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("HIT"));
    Ok(())
}

/// An object with `X-Delete-After` is served from the cache, and listed by
/// cached listings, only until it expires, not until the store's expiry sweep
/// (every 5 s) deletes it.
#[test]
fn expiring_objects_leave_the_cache_when_they_expire() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "kept.txt", b"kept")?;
    let base = format!("/v1/AUTH_admin/{container}");
    let url = format!("{base}/brief.txt");
    server
        .swift_as_root("PUT", &url, Some(b"brief"), &[("X-Delete-After", "8")])?
        .expect_status(201)?;
    let put_at = std::time::Instant::now();
    ensure!(server.until_hit(&url)?.body == b"brief");
    let listing = anonymous(&server, &base, &[])?;
    ensure!(listing.body_text() == "brief.txt\nkept.txt\n", "{listing}");
    let listing = anonymous(&server, &base, &[])?;
    ensure!(listing.header("x-cache") == Some("HIT"), "{listing}");

    // An expiry too far ahead to add to a clock is no expiry, not a crash.
    let forever = format!("{base}/forever.txt");
    server
        .swift_as_root(
            "PUT",
            &forever,
            Some(b"f"),
            &[("X-Delete-At", "18446744073709551615")],
        )?
        .expect_status(201)?;
    for _ in 0..2 {
        anonymous(&server, &base, &[])?.expect_status(200)?;
        anonymous(&server, &forever, &[])?.expect_status(200)?;
    }
    server
        .swift_as_root("DELETE", &forever, None, &[])?
        .expect_status(204)?;

    // Whole seconds: it expires 7 to 8 s after the PUT.
    sleep_until(put_at + std::time::Duration::from_millis(8200));
    anonymous(&server, &url, &[])?.expect_status(404)?;
    let listing = anonymous(&server, &base, &[])?;
    ensure!(listing.body_text() == "kept.txt\n", "{listing}");
    Ok(())
}

#[test]
fn public_listings_are_cached_and_purged_by_any_change() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "a/b/c.txt", b"c")?;
    let base = format!("/v1/AUTH_admin/{container}");
    let forms = [
        "",
        "?format=json",
        "?prefix=a/b/&delimiter=/",
        "?prefix=a/&delimiter=/&format=xml",
    ];
    for form in forms {
        let first = anonymous(&server, &format!("{base}{form}"), &[])?;
        first.expect_status(200)?;
        ensure!(first.header("x-cache") == Some("MISS"), "{first}");
        let second = anonymous(&server, &format!("{base}{form}"), &[])?;
        ensure!(
            second.header("x-cache") == Some("HIT") && second.body == first.body,
            "{second}"
        );
    }
    // A parameter whose value spells out another parameter is its own listing:
    // an anonymous caller cannot fill the entry of the form it spells.
    let spelt = anonymous(&server, &format!("{base}?prefix=a%26delimiter%3D/"), &[])?;
    ensure!(
        spelt.header("x-cache") == Some("MISS") && spelt.body_text().is_empty(),
        "{spelt}"
    );
    let real = anonymous(&server, &format!("{base}?prefix=a&delimiter=/"), &[])?;
    ensure!(
        real.header("x-cache") == Some("MISS") && real.body_text() == "a/\n",
        "{real}"
    );
    // A new object under a/b/ shows in every listing at once.
    server
        .swift_as_root("PUT", &format!("{base}/a/b/d.txt"), Some(b"d"), &[])?
        .expect_status(201)?;
    let deep = anonymous(&server, &format!("{base}?prefix=a/b/&delimiter=/"), &[])?;
    ensure!(deep.body_text() == "a/b/c.txt\na/b/d.txt\n", "{deep}");
    let json = anonymous(&server, &format!("{base}?format=json"), &[])?;
    ensure!(json.body_text().contains("a/b/d.txt"), "{json}");
    ensure!(
        json.header("x-container-object-count") == Some("2"),
        "{json}"
    );
    // A delete takes it out again.
    server
        .swift_as_root("DELETE", &format!("{base}/a/b/c.txt"), None, &[])?
        .expect_status(204)?;
    let plain = anonymous(&server, &base, &[])?;
    ensure!(plain.body_text() == "a/b/d.txt\n", "{plain}");
    // Without .rlistings, no listing, cached or not.
    server
        .swift_as_root("POST", &base, None, &[("X-Container-Read", ".r:*")])?
        .expect_status(204)?;
    anonymous(&server, &base, &[])?.expect_status(401)?;
    Ok(())
}

#[test]
fn s3_public_read_acls_and_policies() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3pub");
    let work = server.work_dir("s3pub")?;
    let file = work.join("f.txt");
    std::fs::write(&file, b"hello public")?;
    let file = file.display().to_string();
    server.aws_ok(&[
        "s3api",
        "create-bucket",
        "--bucket",
        &bucket,
        "--acl",
        "public-read",
    ])?;
    for key in ["index.html", "img/logo.gif"] {
        server.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            &bucket,
            "--key",
            key,
            "--body",
            &file,
            "--checksum-algorithm",
            "CRC32",
        ])?;
    }
    let object = format!("/{bucket}/index.html");
    let read = anonymous(&server, &object, &[])?;
    ensure!(read.status == 200 && read.body == b"hello public", "{read}");
    let again = anonymous(&server, &object, &[])?;
    ensure!(
        again.header("x-cache") == Some("HIT") && again.body == b"hello public",
        "{again}"
    );
    // The checksum, asked for, comes from the cache as from the store.
    let mode = [("x-amz-checksum-mode", "ENABLED")];
    let stored = server.http("GET", &object, Signing::Root, None, &mode)?;
    let cached = anonymous(&server, &object, &mode)?;
    ensure!(
        cached.header("x-cache") == Some("HIT")
            && stored.header("x-amz-checksum-crc32").is_some()
            && cached.header("x-amz-checksum-crc32") == stored.header("x-amz-checksum-crc32"),
        "{cached}\n{stored}"
    );
    ensure!(again.header("x-amz-checksum-crc32").is_none(), "{again}");
    let ranged = anonymous(&server, &object, &[("Range", "bytes=6-11")])?;
    ensure!(ranged.status == 206 && ranged.body == b"public", "{ranged}");
    let list = format!("/{bucket}?list-type=2");
    let listing = anonymous(&server, &list, &[])?;
    ensure!(
        listing.status == 200
            && listing.body_text().contains("img/logo.gif")
            && listing.header("x-cache") == Some("MISS"),
        "{listing}"
    );
    // Anonymous listings are cached like Swift's, and purged by any change.
    let cached = anonymous(&server, &list, &[])?;
    ensure!(
        cached.header("x-cache") == Some("HIT") && cached.body == listing.body,
        "{cached}"
    );
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "new.txt",
    ])?;
    let changed = anonymous(&server, &list, &[])?;
    ensure!(changed.body_text().contains("new.txt"), "{changed}");
    let acl = server.aws_json(&["s3api", "get-bucket-acl", "--bucket", &bucket])?;
    ensure!(acl.to_string().contains("AllUsers"), "{acl}");
    // The same bucket is public through the Swift path, through the cache.
    let swift_path = format!("/v1/AUTH_admin/{bucket}/index.html");
    anonymous(&server, &swift_path, &[])?.expect_status(200)?;
    ensure!(anonymous(&server, &swift_path, &[])?.header("x-cache") == Some("HIT"));

    // Private again: refused at once, cache included.
    server.set_bucket_acl(&bucket, "private")?;
    anonymous(&server, &object, &[])?.expect_s3_error(403, "AccessDenied")?;
    anonymous(&server, &swift_path, &[])?.expect_status(401)?;
    anonymous(&server, &format!("/{bucket}"), &[])?.expect_s3_error(403, "AccessDenied")?;
    anonymous(&server, "/no-such-bucket-here/x", &[])?.expect_s3_error(403, "AccessDenied")?;
    server.aws_error(
        &[
            "s3api",
            "put-bucket-acl",
            "--bucket",
            &bucket,
            "--acl",
            "public-read-write",
        ],
        "NotImplemented",
    )?;

    // A policy opening one prefix.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/img/*"}}]}}"#
    );
    server.aws_ok(&[
        "s3api",
        "put-bucket-policy",
        "--bucket",
        &bucket,
        "--policy",
        &policy,
    ])?;
    anonymous(&server, &format!("/{bucket}/img/logo.gif"), &[])?.expect_status(200)?;
    anonymous(&server, &object, &[])?.expect_s3_error(403, "AccessDenied")?;
    // A large object under the open prefix whose segments are outside it
    // is refused: each segment is checked on its own key, in both doors.
    let swift = |path: &str| format!("/v1/AUTH_admin/{bucket}/{path}");
    server
        .swift_as_root("PUT", &swift("private/seg-1"), Some(b"secret"), &[])?
        .expect_status(201)?;
    let manifest = format!("{bucket}/private/seg-");
    server
        .swift_as_root(
            "PUT",
            &swift("img/large"),
            Some(b""),
            &[("X-Object-Manifest", &manifest)],
        )?
        .expect_status(201)?;
    let large = anonymous(&server, &swift("img/large"), &[])?;
    ensure!(large.status == 401 && large.body != b"secret", "{large}");
    // The S3 door says a segment is not readable.
    anonymous(&server, &format!("/{bucket}/img/large"), &[])?
        .expect_s3_error(409, "InvalidObjectState")?;
    let stored = server.aws_json(&["s3api", "get-bucket-policy", "--bucket", &bucket])?;
    ensure!(
        stored["Policy"]
            .as_str()
            .is_some_and(|text| text.contains("img/*")),
        "{stored}"
    );
    let broad = policy.replace("s3:GetObject", "s3:*");
    // S3 takes policies of 20 KB at most: every public read consults it.
    let padded = policy.replacen('{', &format!("{{\"Id\": \"{}\", ", "p".repeat(21_000)), 1);
    for (refused, code) in [
        (&broad, "MalformedPolicy"),
        (&padded, "MaxMessageLengthExceeded"),
    ] {
        let args = [
            "s3api",
            "put-bucket-policy",
            "--bucket",
            &bucket,
            "--policy",
            refused,
        ];
        server.aws_error(&args, code)?;
    }
    anonymous(&server, &format!("/{bucket}/img/logo.gif"), &[])?.expect_status(200)?;
    server.aws_ok(&["s3api", "delete-bucket-policy", "--bucket", &bucket])?;
    anonymous(&server, &format!("/{bucket}/img/logo.gif"), &[])?
        .expect_s3_error(403, "AccessDenied")?;
    server.aws_error(
        &["s3api", "get-bucket-policy", "--bucket", &bucket],
        "NoSuchBucketPolicy",
    )?;
    // Anonymous writes are never allowed.
    server
        .http("PUT", &object, Signing::Anonymous, Some(b"x"), &[])?
        .expect_s3_error(403, "AccessDenied")?;
    Ok(())
}

#[test]
fn storage_domain_remaps_container_and_account_hosts() -> Result<()> {
    let server = Server::start_with_config("storage_domain = \"storage.example.com\"\n")?;
    let container = public_container(&server, "logo.gif", b"GIF89a")?;
    let by_container = anonymous(
        &server,
        "/logo.gif",
        &[("Host", &format!("{container}.admin.storage.example.com"))],
    )?;
    ensure!(
        by_container.status == 200 && by_container.body == b"GIF89a",
        "{by_container}"
    );
    let by_account = anonymous(
        &server,
        &format!("/{container}/logo.gif"),
        &[("Host", "AUTH-admin.Storage.Example.com:80")],
    )?;
    ensure!(
        by_account.status == 200 && by_account.body == b"GIF89a",
        "{by_account}"
    );
    // Accounts that do not exist fall through to the S3 routes.
    anonymous(
        &server,
        "/logo.gif",
        &[("Host", "c.nobody.storage.example.com")],
    )?
    .expect_s3_error(403, "AccessDenied")?;
    Ok(())
}

/// A config with `cache` lines and one SSD zone at `zone` of `max_bytes`.
fn zone_config(cache: &str, zone: &std::path::Path, max_bytes: &str) -> String {
    format!(
        "[cache]\n{cache}[[cache.zone]]\npath = \"{}\"\nmax_bytes = \"{max_bytes}\"\n",
        zone.display()
    )
}

/// Waits for the gateway's SSD zone to have indexed the files it found.
fn until_zone_indexed(server: &Server) -> Result<()> {
    for _ in 0..600 {
        if server.metric("strata_cache_zone_indexed{zone=\"ssd0\"}")? == 1 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("the SSD zone was not indexed within 30 s")
}

/// The `.obj` files under an SSD zone directory.
fn zone_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|ext| ext == "obj") {
                files.push(file.path());
            }
        }
    }
    files
}

/// Where the body of a `body_len`-byte object starts in its zone file:
/// the file ends with the body and a 4-byte CRC per MiB of it.
fn zone_body_start(file: &std::path::Path, body_len: usize) -> Result<usize> {
    let crcs = body_len.div_ceil(1 << 20) * 4;
    Ok(std::fs::metadata(file)?.len() as usize - body_len - crcs)
}

/// The one file of an SSD zone, once the background write made it.
fn zone_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    for _ in 0..200 {
        if let [file] = zone_files(dir).as_slice() {
            return Ok(file.clone());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("not one file in the SSD zone: {:?}", zone_files(dir))
}

/// A hit on an SSD copy small enough to be read whole into memory is
/// streamed block by block instead while the fill budget cannot hold it:
/// many such hits at once must not take more memory than fills may.
#[test]
fn an_ssd_hit_beyond_the_fill_budget_streams_its_copy() -> Result<()> {
    let zone = tempfile::tempdir()?;
    let config = |fill_memory: &str| {
        zone_config(
            &format!("max_object_bytes = \"8M\"\nfill_memory_bytes = \"{fill_memory}\"\n"),
            zone.path(),
            "64M",
        )
    };
    let mut server = Server::start_with_config(&config("512M"))?;
    let big = random_bytes(3 * 1024 * 1024 + 7);
    let container = public_container(&server, "big.bin", &big)?;
    let url = format!("/v1/AUTH_admin/{container}/big.bin");
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("MISS"));
    zone_file(zone.path())?;
    // With room in the budget, the copy (3 MiB: over the RAM zone's 1 MiB
    // objects) is read whole.
    let hit = server.until_hit(&url)?;
    ensure!(hit.body == big, "{hit}");
    ensure!(server.metric("strata_cache_ssd_hits_streamed_total")? == 0);

    // A budget of 1 MiB cannot hold it.
    server.rewrite_config(&config("1M"))?;
    server.restart()?;
    until_zone_indexed(&server)?;
    for _ in 0..2 {
        let hit = anonymous(&server, &url, &[])?;
        ensure!(
            hit.status == 200 && hit.body == big && hit.header("x-cache") != Some("MISS"),
            "{hit}"
        );
    }
    ensure!(server.metric("strata_cache_ssd_hits_streamed_total")? == 2);
    ensure!(server.metric("strata_cache_fills_total")? == 0);
    Ok(())
}

#[test]
fn ssd_zone_survives_restarts_and_drops_damaged_files() -> Result<()> {
    let zone = tempfile::tempdir()?;
    let config = format!(
        "[cache]\nram_max_object_bytes = 1024\n[[cache.zone]]\npath = \"{}\"\nmax_bytes = \"64M\"\n",
        zone.path().display()
    );
    let mut server = Server::start_with_config(&config)?;
    let big = vec![42u8; 200_000];
    let container = public_container(&server, "big.bin", &big)?;
    let big_url = format!("/v1/AUTH_admin/{container}/big.bin");
    ensure!(anonymous(&server, &big_url, &[])?.header("x-cache") == Some("MISS"));
    zone_file(zone.path())?;
    // Too large for RAM: the second read comes from the SSD zone.
    let second = server.until_hit(&big_url)?;
    ensure!(second.body == big, "{second}");
    ensure!(server.metric("strata_cache_ssd_hits_total")? >= 1);
    ensure!(server.metric("strata_cache_zone_reads_total{zone=\"ssd0\"}")? >= 1);
    ensure!(
        server.metric("strata_cache_zone_bytes_read_total{zone=\"ssd0\"}")? >= big.len() as u64
    );
    // Bytes served are counted to the zone they came from: the miss's to the
    // store, the hit's to the SSD zone, none to RAM (the copy is too large).
    let served = |zone: &str| {
        server.metric(&format!(
            "strata_cache_bytes_served_total{{zone=\"{zone}\"}}"
        ))
    };
    ensure!(served("store")? >= big.len() as u64, "store bytes");
    ensure!(served("ssd0")? >= big.len() as u64, "SSD zone bytes");
    ensure!(served("ram")? == 0, "RAM bytes");

    // After a restart the zone is indexed again (in the background, while
    // the gateway serves) and revalidated, not refetched.
    server.restart()?;
    until_zone_indexed(&server)?;
    let after = anonymous(&server, &big_url, &[])?;
    ensure!(
        after.header("x-cache") == Some("REVALIDATED") && after.body == big,
        "{after}"
    );
    ensure!(
        server.metric("strata_cache_fills_total")? == 0,
        "the store was read again"
    );

    // A damaged file is dropped and the object read from the store.
    server.restart()?;
    until_zone_indexed(&server)?;
    let files = zone_files(zone.path());
    ensure!(files.len() == 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0])?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], bytes)?;
    let repaired = anonymous(&server, &big_url, &[])?;
    ensure!(
        repaired.header("x-cache") == Some("MISS") && repaired.body == big,
        "{repaired}"
    );

    // An overwrite purges the zone's copy.
    let new = vec![7u8; 150_000];
    server
        .swift_as_root("PUT", &big_url, Some(&new), &[])?
        .expect_status(201)?;
    let fresh = anonymous(&server, &big_url, &[])?;
    ensure!(fresh.body == new, "old bytes after an overwrite");
    Ok(())
}

#[test]
fn cors_preflights_and_headers_for_allowed_origins_only() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "app.js", b"console.log(1)")?;
    let object = format!("/v1/AUTH_admin/{container}/app.js");
    server
        .swift_as_root(
            "POST",
            &format!("/v1/AUTH_admin/{container}"),
            None,
            &[
                (
                    "X-Container-Meta-Access-Control-Allow-Origin",
                    "https://app.example",
                ),
                ("X-Container-Meta-Access-Control-Max-Age", "600"),
                ("X-Container-Meta-Access-Control-Expose-Headers", "etag"),
            ],
        )?
        .expect_status(204)?;
    let preflight = |path: &str, origin: &str, method: &str| {
        server.http(
            "OPTIONS",
            path,
            Signing::Anonymous,
            None,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
            ],
        )
    };
    let allowed = preflight(&object, "https://app.example", "GET")?;
    allowed.expect_status(200)?;
    ensure!(
        allowed.header("access-control-allow-origin") == Some("https://app.example"),
        "{allowed}"
    );
    ensure!(
        allowed.header("access-control-max-age") == Some("600"),
        "{allowed}"
    );
    preflight(&object, "https://evil.example", "GET")?.expect_status(403)?;
    let actual = anonymous(&server, &object, &[("Origin", "https://app.example")])?;
    // Swift grants no credentials.
    ensure!(
        actual.header("access-control-allow-origin") == Some("https://app.example")
            && actual.header("access-control-allow-credentials").is_none(),
        "{actual}"
    );
    ensure!(
        actual.header("access-control-expose-headers") == Some("etag"),
        "{actual}"
    );
    let other = anonymous(&server, &object, &[("Origin", "https://evil.example")])?;
    ensure!(
        other.status == 200 && other.header("access-control-allow-origin").is_none(),
        "{other}"
    );
    // Under another account's path the container's rules do not apply (nor
    // say that it exists).
    let foreign = anonymous(
        &server,
        &format!("/v1/AUTH_someone/{container}/app.js"),
        &[("Origin", "https://app.example")],
    )?;
    ensure!(
        foreign.header("access-control-allow-origin").is_none() && foreign.header("vary").is_none(),
        "{foreign}"
    );
    // Without an Origin the answer still varies by it, for shared caches.
    let plain = anonymous(&server, &object, &[])?;
    ensure!(
        plain.header("vary") == Some("Origin")
            && plain.header("access-control-allow-origin").is_none(),
        "{plain}"
    );

    // S3's PutBucketCors.
    let bucket = unique_bucket("cors");
    server.aws_ok(&[
        "s3api",
        "create-bucket",
        "--bucket",
        &bucket,
        "--acl",
        "public-read",
    ])?;
    let work = server.work_dir("cors")?;
    let file = work.join("f");
    std::fs::write(&file, b"x")?;
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "f",
        "--body",
        &file.display().to_string(),
    ])?;
    let rules = r#"{"CORSRules":[{"AllowedOrigins":["https://*.example.com"],"AllowedMethods":["GET","HEAD"],"AllowedHeaders":["range","x-amz-*"],"MaxAgeSeconds":300}]}"#;
    let put_cors = |rules: &str| -> Result<()> {
        server.aws_ok(&[
            "s3api",
            "put-bucket-cors",
            "--bucket",
            &bucket,
            "--cors-configuration",
            rules,
        ])?;
        Ok(())
    };
    put_cors(rules)?;
    let stored = server.aws_json(&["s3api", "get-bucket-cors", "--bucket", &bucket])?;
    ensure!(
        stored["CORSRules"][0]["AllowedOrigins"][0] == "https://*.example.com",
        "{stored}"
    );
    let s3_object = format!("/{bucket}/f");
    let ok = server.http(
        "OPTIONS",
        &s3_object,
        Signing::Anonymous,
        None,
        &[
            ("Origin", "https://www.example.com"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "Range, X-Amz-Date"),
        ],
    )?;
    ok.expect_status(200)?;
    ensure!(ok.header("access-control-max-age") == Some("300"), "{ok}");
    preflight(&s3_object, "https://www.example.com", "PUT")?.expect_status(403)?;
    preflight(&s3_object, "https://example.org", "GET")?.expect_status(403)?;
    let actual = anonymous(
        &server,
        &s3_object,
        &[("Origin", "https://www.example.com")],
    )?;
    ensure!(
        actual.header("access-control-allow-origin") == Some("https://www.example.com")
            && actual.header("access-control-allow-credentials") == Some("true"),
        "{actual}"
    );
    ensure!(
        ok.header("access-control-allow-credentials") == Some("true"),
        "{ok}"
    );
    // A rule open to every origin: `*` to anonymous requests, and the
    // origin named, with credentials, to signed ones, as S3 answers.
    let open = r#"{"CORSRules":[{"AllowedOrigins":["*"],"AllowedMethods":["GET"]}]}"#;
    put_cors(open)?;
    let origin = [("Origin", "https://app.example.org")];
    let unsigned = anonymous(&server, &s3_object, &origin)?;
    ensure!(
        unsigned.header("access-control-allow-origin") == Some("*")
            && unsigned
                .header("access-control-allow-credentials")
                .is_none(),
        "{unsigned}"
    );
    let signed = server.http("GET", &s3_object, Signing::Root, None, &origin)?;
    ensure!(
        signed.header("access-control-allow-origin") == Some("https://app.example.org")
            && signed.header("access-control-allow-credentials") == Some("true"),
        "{signed}"
    );
    let bad = rules.replace("\"HEAD\"", "\"PATCH\"");
    server.aws_error(
        &[
            "s3api",
            "put-bucket-cors",
            "--bucket",
            &bucket,
            "--cors-configuration",
            &bad,
        ],
        "InvalidRequest",
    )?;
    server.aws_ok(&["s3api", "delete-bucket-cors", "--bucket", &bucket])?;
    preflight(&s3_object, "https://www.example.com", "GET")?.expect_status(403)?;
    server.aws_error(
        &["s3api", "get-bucket-cors", "--bucket", &bucket],
        "NoSuchCORSConfiguration",
    )?;
    Ok(())
}

#[test]
fn staticweb_serves_indexes_listings_and_error_pages() -> Result<()> {
    let server = Server::start()?;
    let container = public_container(&server, "index.html", b"<h1>home</h1>")?;
    let base = format!("/v1/AUTH_admin/{container}");
    for (name, body) in [
        ("docs/index.html", &b"<h1>docs</h1>"[..]),
        ("404error.html", b"<h1>missing</h1>"),
        ("files/a <b>.txt", b"a"),
    ] {
        let encoded = name
            .replace(' ', "%20")
            .replace('<', "%3C")
            .replace('>', "%3E");
        server
            .swift_as_root("PUT", &format!("{base}/{encoded}"), Some(body), &[])?
            .expect_status(201)?;
    }
    server
        .swift_as_root(
            "POST",
            &base,
            None,
            &[
                ("X-Container-Meta-Web-Index", "index.html"),
                ("X-Container-Meta-Web-Error", "error.html"),
                ("X-Container-Meta-Web-Listings", "true"),
            ],
        )?
        .expect_status(204)?;
    // As Swift's staticweb: the container and its directories without a
    // slash are sent to their slashed names (relative links need them).
    for (path, location) in [
        (base.clone(), format!("{base}/")),
        (format!("{base}/docs"), format!("{base}/docs/")),
        (format!("{base}/files"), format!("{base}/files/")),
    ] {
        let redirect = anonymous(&server, &path, &[])?;
        ensure!(
            redirect.status == 301 && redirect.header("location") == Some(location.as_str()),
            "{path}: {redirect}"
        );
    }
    let home = anonymous(&server, &format!("{base}/"), &[])?;
    ensure!(
        home.status == 200 && home.body == b"<h1>home</h1>",
        "{home}"
    );
    let docs = anonymous(&server, &format!("{base}/docs/"), &[])?;
    ensure!(
        docs.status == 200 && docs.body == b"<h1>docs</h1>",
        "{docs}"
    );
    // A directory with nothing in it is not found, not an empty listing.
    let empty = anonymous(&server, &format!("{base}/no-such-dir/"), &[])?;
    ensure!(
        empty.status == 404 && empty.body == b"<h1>missing</h1>",
        "{empty}"
    );
    let listing = anonymous(&server, &format!("{base}/files/"), &[])?;
    listing.expect_status(200)?;
    ensure!(
        listing
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{listing}"
    );
    ensure!(
        listing.body_text().contains("a &lt;b&gt;.txt"),
        "names are escaped: {listing}"
    );
    let length = listing.body.len().to_string();
    let head = server.http(
        "HEAD",
        &format!("{base}/files/"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(
        head.status == 200 && head.header("content-length") == Some(length.as_str()),
        "HEAD of a listing page is not the GET's length ({length}): {head}"
    );
    let missing = anonymous(&server, &format!("{base}/nope.html"), &[])?;
    ensure!(
        missing.status == 404 && missing.body == b"<h1>missing</h1>",
        "{missing}"
    );

    // The same site under a custom domain.
    server.strata_ok(&[
        "domain",
        "add",
        "site.example.com",
        &format!("admin/{container}"),
    ])?;
    let root = anonymous(&server, "/", &[("Host", "site.example.com")])?;
    ensure!(
        root.status == 200 && root.body == b"<h1>home</h1>",
        "{root}"
    );
    let sub = anonymous(&server, "/docs/", &[("Host", "site.example.com")])?;
    ensure!(sub.body == b"<h1>docs</h1>", "{sub}");

    // The owner still gets the API's answers, not the site.
    let api = server.swift_as_root("GET", &base, None, &[])?;
    ensure!(api.body_text().contains("404error.html\n"), "{api}");
    Ok(())
}

/// An SSD copy larger than what is read whole before answering streams a
/// checked 1 MiB block at a time: a range reads only the blocks it covers,
/// and a damaged block cuts the answer before any of it is sent, drops the
/// file, and the next request reads the store.
#[test]
fn large_ssd_copies_stream_checked_blocks() -> Result<()> {
    use std::io::Read as _;
    const MIB: usize = 1 << 20;

    let zone = tempfile::tempdir()?;
    let config = format!(
        "[cache]\nmax_object_bytes = 33554432\nram_max_object_bytes = 1024\n\
         [[cache.zone]]\npath = \"{}\"\nmax_bytes = \"64M\"\n",
        zone.path().display()
    );
    let server = Server::start_with_config(&config)?;
    let body = random_bytes(9 * MIB + 123);
    let container = public_container(&server, "video.bin", &body)?;
    let url = format!("/v1/AUTH_admin/{container}/video.bin");
    ensure!(anonymous(&server, &url, &[])?.header("x-cache") == Some("MISS"));
    let file = zone_file(zone.path())?;

    let read = || server.metric("strata_cache_zone_bytes_read_total{zone=\"ssd0\"}");
    ensure!(server.until_hit(&url)?.body == body);
    let before = read()?;
    let hit = anonymous(&server, &url, &[])?;
    ensure!(
        hit.header("x-cache") == Some("HIT") && hit.body == body,
        "{hit}"
    );
    ensure!(
        read()? - before == body.len() as u64,
        "a whole hit reads every block once"
    );
    for (first, last, blocks) in [(5_000_000, 5_000_099, 1), (MIB - 6, MIB + 3, 2)] {
        let before = read()?;
        let range = anonymous(
            &server,
            &url,
            &[("Range", &format!("bytes={first}-{last}"))],
        )?;
        range.expect_status(206)?;
        ensure!(range.header("x-cache") == Some("HIT"), "{range}");
        ensure!(
            range.body == body[first..=last],
            "wrong bytes for {first}-{last}"
        );
        let blocks_read = (read()? - before) / MIB as u64;
        ensure!(
            blocks_read == blocks,
            "bytes {first}-{last} read {blocks_read} blocks, not {blocks}"
        );
    }
    // Several ranges stream from their own blocks, the later ones after
    // the status is out.
    let before = read()?;
    let several = anonymous(&server, &url, &[("Range", "bytes=10-19,8388608-8388615")])?;
    several.expect_status(206)?;
    let boundary = multipart_boundary(&several)?;
    let mut expected = Vec::new();
    for (first, last) in [(10, 19), (8 * MIB, 8 * MIB + 7)] {
        expected.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Range: bytes {first}-{last}/{}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        expected.extend_from_slice(&body[first..=last]);
        expected.extend_from_slice(b"\r\n");
    }
    expected.extend_from_slice(format!("--{boundary}--").as_bytes());
    ensure!(several.body == expected, "wrong multipart body");
    ensure!(
        (read()? - before) / MIB as u64 == 2,
        "two ranges in two blocks read other blocks"
    );

    // Damage block 5 of the body, its last.
    let damaged_at = zone_body_start(&file, body.len())? + 5 * MIB + 100;
    let mut bytes = std::fs::read(&file)?;
    bytes[damaged_at] ^= 0xff;
    std::fs::write(&file, bytes)?;
    let (head, mut reader) = raw_request(server.endpoint(), "GET", &url, CLOSE)?;
    ensure!(head.iter().any(|line| line == "x-cache: hit"), "{head:?}");
    let mut received = Vec::new();
    // The server hangs up mid-body; a reset is as good as an EOF here.
    let _ = reader.read_to_end(&mut received);
    ensure!(
        received.len() <= 5 * MIB && received == body[..received.len()],
        "{} bytes arrived, not a prefix of the blocks before the damage",
        received.len()
    );
    let refetched = anonymous(&server, &url, &[])?;
    ensure!(
        refetched.header("x-cache") == Some("MISS") && refetched.body == body,
        "after the damage: {refetched}"
    );

    // Damage in the first block a request needs is found before the answer
    // starts: that request reads the store and succeeds.
    ensure!(server.until_hit(&url)?.body == body);
    let file = zone_file(zone.path())?;
    let body_start = zone_body_start(&file, body.len())?;
    let mut bytes = std::fs::read(&file)?;
    bytes[body_start + 10] ^= 0xff;
    std::fs::write(&file, bytes)?;
    let ssd_hits = server.metric("strata_cache_ssd_hits_total")?;
    let from_store = anonymous(&server, &url, &[])?;
    from_store.expect_status(200)?;
    ensure!(
        server.metric("strata_cache_ssd_hits_total")? == ssd_hits,
        "an answer from the store counted as an SSD hit"
    );
    ensure!(
        from_store.header("x-cache") != Some("HIT") && from_store.body == body,
        "a damaged first block: {from_store}"
    );
    let refilled = anonymous(&server, &url, &[])?;
    ensure!(
        refilled.header("x-cache") == Some("MISS") && refilled.body == body,
        "after a damaged first block: {refilled}"
    );
    Ok(())
}

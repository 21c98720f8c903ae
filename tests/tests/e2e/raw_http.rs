//! Requests no well-behaved SDK sends, made with curl (and its own SigV4
//! signer) or a raw socket: missing and wrong credentials, malformed bodies,
//! path traversal, absurd parameters, clients that hang up. Every one must
//! get an S3 XML error, and the server must keep answering `/health`.

use anyhow::{Context, Result, ensure};
use strata_tests::{
    Server, Signing, content_md5, md5_hex, metric_in, random_bytes, raw_request, sha256_hex,
    unique_bucket,
};

#[test]
fn curl_authentication() -> Result<()> {
    let mut server = Server::start()?;
    let health = server.http("GET", "/health", Signing::Anonymous, None, &[])?;
    health.expect_status(200)?;

    let bucket = unique_bucket("curl-auth");
    server
        .http("PUT", &format!("/{bucket}"), Signing::Root, Some(b""), &[])?
        .expect_status(200)?;
    let content = random_bytes(2000);
    let object = format!("/{bucket}/private.bin");
    let put = server.http("PUT", &object, Signing::Root, Some(&content), &[])?;
    put.expect_status(200)?;
    ensure!(
        put.header("etag") == Some(format!("\"{}\"", md5_hex(&content)).as_str()),
        "PUT ETag\n{put}"
    );
    ensure!(
        put.header("x-amz-request-id")
            .is_some_and(|id| !id.is_empty()),
        "successful response without x-amz-request-id\n{put}"
    );
    let got = server.http("GET", &object, Signing::Root, None, &[])?;
    got.expect_status(200)?;
    ensure!(got.body == content, "signed GET returned different bytes");

    server
        .http("GET", &object, Signing::Anonymous, None, &[])?
        .expect_s3_error(403, "AccessDenied")?;
    server.assert_healthy()?;
    server
        .http(
            "GET",
            &format!("/{bucket}?list-type=2"),
            Signing::Anonymous,
            None,
            &[],
        )?
        .expect_s3_error(403, "AccessDenied")?;
    server
        .http(
            "PUT",
            &format!("/{bucket}/anonymous"),
            Signing::Anonymous,
            Some(b"x"),
            &[],
        )?
        .expect_s3_error(403, "AccessDenied")?;
    server.assert_healthy()?;

    let wrong_secret = Signing::Keys {
        access_key: strata_tests::ROOT_ACCESS_KEY.to_string(),
        secret_key: "not-the-secret".to_string(),
    };
    server
        .http("GET", &object, wrong_secret, None, &[])?
        .expect_s3_error(403, "SignatureDoesNotMatch")?;
    server.assert_healthy()?;

    let stranger = Signing::Keys {
        access_key: "AKIAIOSFODNN7EXAMPLE".to_string(),
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
    };
    server
        .http("GET", &object, stranger, None, &[])?
        .expect_s3_error(403, "InvalidAccessKeyId")?;
    server.assert_healthy()?;

    // A signed request whose body does not match x-amz-content-sha256.
    let lying = server.http(
        "PUT",
        &format!("/{bucket}/lying"),
        Signing::Root,
        Some(b"actual body"),
        &[("x-amz-content-sha256", &sha256_hex(b"another body"))],
    )?;
    ensure!(
        lying.status == 400 || lying.status == 403,
        "a body that contradicts its signed hash was not refused\n{lying}"
    );
    lying.expect_s3_error_shape()?;
    server
        .http("GET", &format!("/{bucket}/lying"), Signing::Root, None, &[])?
        .expect_s3_error(404, "NoSuchKey")?;
    server.assert_healthy()?;

    for garbage in [
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=00",
        "Bearer something",
        "AWS4-HMAC-SHA256 Credential=STRATAE2EROOTACCESS0/20990101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
    ] {
        let response = server.http(
            "GET",
            &object,
            Signing::Anonymous,
            None,
            &[("Authorization", garbage)],
        )?;
        ensure!(
            response.status == 400 || response.status == 403,
            "malformed Authorization {garbage:?} not refused with 400/403\n{response}"
        );
        response.expect_s3_error_shape()?;
        server.assert_healthy()?;
    }
    Ok(())
}

#[test]
fn curl_malformed_requests() -> Result<()> {
    let mut server = Server::start()?;
    let bucket = unique_bucket("curl-malformed");
    server
        .http("PUT", &format!("/{bucket}"), Signing::Root, Some(b""), &[])?
        .expect_status(200)?;
    let content = random_bytes(500);
    let object = format!("/{bucket}/k");
    server
        .http("PUT", &object, Signing::Root, Some(&content), &[])?
        .expect_status(200)?;

    // DeleteObjects with broken XML: nothing deleted.
    for body in [
        &b"<Delete><Object><Key>k</Key></Object>"[..],
        b"this is not xml",
        b"<Delete><Object><Key>k</Key></Object></Wrong>",
        b"",
    ] {
        let md5 = content_md5(body);
        server
            .http(
                "POST",
                &format!("/{bucket}?delete="),
                Signing::Root,
                Some(body),
                &[("Content-MD5", &md5), ("Content-Type", "application/xml")],
            )?
            .expect_s3_error(400, "MalformedXML")?;
        server.assert_healthy()?;
    }
    let still_there = server.http("GET", &object, Signing::Root, None, &[])?;
    still_there.expect_status(200)?;
    ensure!(
        still_there.body == content,
        "malformed DeleteObjects changed {object}"
    );

    // Path traversal: `..` segments are refused, never resolved.
    for path in [
        format!("/{bucket}/a/../k"),
        format!("/{bucket}/../{bucket}/k"),
        format!("/{bucket}/.."),
        format!("/{bucket}/x/../../etc/passwd"),
    ] {
        let response = server.http("GET", &path, Signing::Root, None, &[])?;
        response.expect_status(400)?;
        response.expect_s3_error_shape()?;
        server.assert_healthy()?;
    }
    let escape = server.http(
        "PUT",
        &format!("/{bucket}/x/../escape"),
        Signing::Root,
        Some(b"escaped"),
        &[],
    )?;
    escape.expect_status(400)?;
    escape.expect_s3_error_shape()?;
    server
        .http(
            "GET",
            &format!("/{bucket}/escape"),
            Signing::Root,
            None,
            &[],
        )?
        .expect_s3_error(404, "NoSuchKey")?;
    // Percent-encoded dots decode to the same key and must not get through
    // either (whether refused as a bad key or a bad signature).
    let encoded = server.http(
        "PUT",
        &format!("/{bucket}/x/%2E%2E/encoded-escape"),
        Signing::Root,
        Some(b"escaped"),
        &[],
    )?;
    ensure!(
        encoded.status == 400 || encoded.status == 403,
        "a key with an encoded `..` segment was not refused\n{encoded}"
    );
    encoded.expect_s3_error_shape()?;
    let listing = server.http(
        "GET",
        &format!("/{bucket}?list-type=2"),
        Signing::Root,
        None,
        &[],
    )?;
    listing.expect_status(200)?;
    ensure!(
        listing.body_text().matches("<Key>").count() == 1
            && listing.body_text().contains("<Key>k</Key>"),
        "traversal attempts created objects\n{listing}"
    );
    server.assert_healthy()?;

    // Absurd and non-numeric max-keys. Query parameters are sorted for
    // curl 7.88's signer.
    for max_keys in ["99999999999", "abc", "-1"] {
        server
            .http(
                "GET",
                &format!("/{bucket}?list-type=2&max-keys={max_keys}"),
                Signing::Root,
                None,
                &[],
            )?
            .expect_s3_error(400, "InvalidArgument")?;
        server.assert_healthy()?;
    }
    let capped = server.http(
        "GET",
        &format!("/{bucket}?list-type=2&max-keys=5000"),
        Signing::Root,
        None,
        &[],
    )?;
    capped.expect_status(200)?;
    ensure!(
        capped.xml_element("MaxKeys").as_deref() == Some("1000")
            || capped.xml_element("MaxKeys").as_deref() == Some("5000"),
        "max-keys 5000 must be accepted (and may be capped at 1000)\n{capped}"
    );

    for (method, path) in [("PATCH", object.as_str()), ("TRACE", "/")] {
        let response = server.http(method, path, Signing::Root, None, &[])?;
        ensure!(
            matches!(response.status, 400 | 403 | 405 | 501),
            "{method} {path} answered {}\n{response}",
            response.status
        );
        server.assert_healthy()?;
    }

    let bad_range = server.http(
        "GET",
        &object,
        Signing::Root,
        None,
        &[("Range", "bytes=9999-")],
    )?;
    bad_range.expect_s3_error(416, "InvalidRange")?;
    server.assert_healthy()?;

    let last = server.http("GET", &object, Signing::Root, None, &[])?;
    last.expect_status(200)?;
    ensure!(last.body == content, "the object changed during the abuse");
    Ok(())
}

#[test]
fn client_disconnect_mid_upload() -> Result<()> {
    let mut server = Server::start()?;
    server.python_ok("disconnect_upload.py", &[&unique_bucket("disconnect")])?;
    server.assert_healthy()?;
    Ok(())
}

/// An upload refused on its headers (here: anonymous, to a missing bucket)
/// is answered before its body arrives. The server cannot reuse that
/// connection, so the answer must say `Connection: close`: a client that
/// pooled it would lose its next request (botocore did, after a PUT to a
/// missing bucket whose one-byte body came in a second packet).
#[test]
fn refused_upload_closes_its_connection_and_says_so() -> Result<()> {
    use std::io::Read as _;

    let mut server = Server::start()?;
    let bucket = unique_bucket("refused-upload");
    // The headers promise five bytes that are never sent.
    let (head, mut reader) = raw_request(
        server.endpoint(),
        "PUT",
        &format!("/{bucket}/key"),
        "Content-Length: 5\r\n",
    )?;
    let status = head.first().cloned().unwrap_or_default();
    ensure!(
        status.starts_with("http/1.1 4"),
        "expected a 4xx refusal, got {head:?}"
    );
    ensure!(
        head.iter().any(|line| line == "connection: close"),
        "a refusal sent before the body was read must say Connection: close: {head:?}"
    );
    // The rest is the error document, then the server hangs up.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    server.assert_healthy()?;
    Ok(())
}

/// A gateway holds at most `limits.max_connections` connections open. One
/// more is left in the kernel's backlog, unanswered, until one of them
/// closes (as nginx at `worker_connections`), rather than running the
/// process out of file descriptors; `/metrics` counts both, and the
/// connections each connection thread holds.
#[test]
fn a_connection_past_the_cap_waits_until_one_closes() -> Result<()> {
    use std::io::{Read as _, Write as _};

    let mut server =
        Server::start_with_config("[limits]\nmax_connections = 3\nconnection_threads = 2\n")?;
    let endpoint = server.endpoint().to_owned();
    let hold = || -> Result<_> {
        let (head, reader) = raw_request(&endpoint, "GET", "/health", "")?;
        ensure!(
            head.first()
                .is_some_and(|line| line.starts_with("http/1.1 200")),
            "{head:?}"
        );
        Ok(reader)
    };
    let mut held = vec![hold()?, hold()?];
    // Two held, and the one asking, spread over the two threads.
    let metrics = server.metrics()?;
    let on_threads = [0, 1].map(|thread| {
        metric_in(
            &metrics,
            &format!("strata_connection_thread_connections{{thread=\"{thread}\"}}"),
        )
    });
    ensure!(
        metric_in(&metrics, "strata_connections_open") == Some(3),
        "{metrics}"
    );
    ensure!(
        on_threads == [Some(2), Some(1)] || on_threads == [Some(1), Some(2)],
        "{metrics}"
    );
    ensure!(server.metric("strata_connections_max")? == 3);
    // Answered only once the metrics connection has gone: from here the
    // three held connections are all there are.
    held.push(hold()?);

    let authority = endpoint.trim_start_matches("http://");
    let mut waiting = std::net::TcpStream::connect(authority)?;
    write!(
        waiting,
        "GET /health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    waiting.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    let mut answer = Vec::new();
    let early = waiting.read_to_end(&mut answer);
    ensure!(
        early.is_err() && answer.is_empty(),
        "a connection past the cap was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    held.pop();
    waiting.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    waiting.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    ensure!(server.metric("strata_connections_saturated_total")? >= 1);
    server.assert_healthy()?;
    Ok(())
}

/// S3 keys act with their user's role, as the same users' Swift tokens
/// do: readers read, writers also write and delete objects, account admins
/// manage buckets and their ACLs. Refusals change nothing.
#[test]
fn s3_keys_act_with_their_users_role() -> Result<()> {
    let mut server = Server::start()?;
    let keys = |user: &strata_tests::SwiftUser| Signing::Keys {
        access_key: user.access_key.clone(),
        secret_key: user.secret_key.clone(),
    };
    let admin = server.create_user("shop", "owner", "admin")?;
    let writer = server.create_user("shop", "editor", "writer")?;
    let reader = server.create_user("shop", "viewer", "reader")?;
    let bucket = format!("/{}", unique_bucket("roles"));
    let object = format!("{bucket}/page.html");
    server
        .http("PUT", &bucket, keys(&admin), Some(b""), &[])?
        .expect_status(200)?;
    server
        .http("PUT", &object, keys(&admin), Some(b"v1"), &[])?
        .expect_status(200)?;

    let other_bucket = format!("/{}", unique_bucket("roles-new"));
    let public = [("x-amz-acl", "public-read")];
    for (who, user) in [("reader", &reader), ("writer", &writer)] {
        let refused = |method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]| {
            let response = server.http(method, path, keys(user), body, headers)?;
            response
                .expect_s3_error(403, "AccessDenied")
                .map(drop)
                .with_context(|| format!("{who} {method} {path}"))
        };
        server
            .http("GET", &bucket, keys(user), None, &[])?
            .expect_status(200)?;
        let read = server.http("GET", &object, keys(user), None, &[])?;
        read.expect_status(200)?;
        refused("PUT", &other_bucket, Some(b""), &[])?;
        refused("DELETE", &bucket, None, &[])?;
        refused("PUT", &format!("{bucket}?acl="), Some(b""), &public)?;
        refused("GET", &format!("{bucket}?policy="), None, &[])?;
        if who == "reader" {
            refused("PUT", &object, Some(b"reader"), &[])?;
            refused("DELETE", &object, None, &[])?;
        }
    }
    let read = server.http("GET", &object, keys(&admin), None, &[])?;
    ensure!(
        read.body == b"v1",
        "a refused request changed the object: {read}"
    );
    server
        .http("GET", &object, Signing::Anonymous, None, &[])?
        .expect_s3_error(403, "AccessDenied")?;

    server
        .http("PUT", &object, keys(&writer), Some(b"v2"), &[])?
        .expect_status(200)?;
    server
        .http("DELETE", &object, keys(&writer), None, &[])?
        .expect_status(204)?;
    server
        .http(
            "PUT",
            &format!("{bucket}?acl="),
            keys(&admin),
            Some(b""),
            &public,
        )?
        .expect_status(200)?;
    server.assert_healthy()?;
    Ok(())
}

/// A signature covers the host the request is routed by: with an
/// absolute-form target (whose host wins over the Host header, RFC 9112
/// §3.2.2), a request signed for one host and aimed at another is refused,
/// as a presigned URL for one virtual-hosted bucket sent to another must be.
#[test]
fn a_signature_is_checked_against_the_host_the_request_goes_to() -> Result<()> {
    let mut server = Server::start()?;
    let bucket = unique_bucket("target-host");
    server
        .http("PUT", &format!("/{bucket}"), Signing::Root, Some(b""), &[])?
        .expect_status(200)?;
    let authority = server.endpoint().trim_start_matches("http://").to_owned();
    let signed_get = |target_host: &str| -> Result<String> {
        let user = format!(
            "{}:{}",
            strata_tests::ROOT_ACCESS_KEY,
            strata_tests::ROOT_SECRET_KEY
        );
        let empty_sha256 = format!("x-amz-content-sha256: {}", sha256_hex(b""));
        let target = format!("http://{target_host}/{bucket}");
        let url = format!("{}/{bucket}", server.endpoint());
        Ok(server
            .curl(&[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &user,
                "-H",
                &empty_sha256,
                "--request-target",
                &target,
                &url,
            ])?
            .expect_success()?
            .stdout_text())
    };
    // curl signs the Host header of its URL, the gateway's address.
    let same = signed_get(&authority)?;
    ensure!(same == "200", "a signed request to its own host: {same}");
    let other = signed_get("other-bucket.example")?;
    ensure!(
        other == "403",
        "a request signed for one host was taken by another: {other}"
    );
    server.assert_healthy()?;
    Ok(())
}

/// `[limits] idle_timeout_secs`: a connection is cut once it goes that
/// long (checked once a period, so within two) without starting a request,
/// having one in progress or writing a byte of an answer: an idle
/// keep-alive connection, a client trickling a request's head, one that
/// promises a body and does not send it, one that stops reading an
/// answer. An upload sent slowly, or a download read slowly, over several
/// periods is not cut.
#[test]
fn connections_without_progress_are_cut_after_the_idle_timeout() -> Result<()> {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};

    let mut server = Server::start_with_config("[limits]\nidle_timeout_secs = 1\n")?;
    let endpoint = server.endpoint().to_owned();
    let authority = endpoint.trim_start_matches("http://").to_owned();
    let (token, storage_url) = server.swift_token(&strata_tests::SwiftUser::root())?;
    let account_path = storage_url
        .strip_prefix(&endpoint)
        .with_context(|| format!("storage URL {storage_url} is not under {endpoint}"))?
        .to_owned();
    let container = format!("{account_path}/{}", unique_bucket("idle"));
    let auth = format!("X-Auth-Token: {token}\r\n");
    let connect = || -> Result<std::net::TcpStream> {
        let stream = std::net::TcpStream::connect(&authority)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(stream)
    };
    // A slow writer: the request head, then the body a piece at a time.
    let send_slowly = |stream: &mut std::net::TcpStream, head: &str, pieces: &[&[u8]]| {
        stream.write_all(head.as_bytes())?;
        for piece in pieces {
            std::thread::sleep(Duration::from_millis(500));
            stream.write_all(piece)?;
        }
        anyhow::Ok(())
    };
    let status_of = |reader: &mut std::io::BufReader<std::net::TcpStream>| -> Result<String> {
        let head = strata_tests::read_response_head(reader)?;
        Ok(head.first().cloned().unwrap_or_default())
    };

    // An idle keep-alive connection is closed after its answer.
    let (head, mut idle) = raw_request(&endpoint, "GET", "/health", "")?;
    ensure!(head[0].starts_with("http/1.1 200"), "{head:?}");
    let began = Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)?;
    ensure!(rest == b"ok\n", "{:?}", String::from_utf8_lossy(&rest));
    ensure!(
        began.elapsed() < Duration::from_secs(5),
        "an idle connection was held {:?}",
        began.elapsed()
    );

    // A head trickled a byte at a time is cut, unanswered.
    let mut trickled = connect()?;
    let mut writer = trickled.try_clone()?;
    let trickle_head = format!("GET /health HTTP/1.1\r\nHost: {authority}\r\nX-Slow: ");
    let trickler = std::thread::spawn(move || {
        let began = Instant::now();
        writer.write_all(trickle_head.as_bytes())?;
        while began.elapsed() < Duration::from_secs(8) {
            writer.write_all(b"a")?;
            std::thread::sleep(Duration::from_millis(250));
        }
        anyhow::Ok(())
    });
    let began = Instant::now();
    let mut answer = Vec::new();
    let _ = trickled.read_to_end(&mut answer);
    ensure!(
        answer.is_empty() && began.elapsed() < Duration::from_secs(5),
        "a trickled head got {:?} after {:?}",
        String::from_utf8_lossy(&answer),
        began.elapsed()
    );
    drop(trickled);
    let _ = trickler.join();

    // A body promised and never sent is cut, even with a handler waiting
    // for it (here an anonymous token request).
    let mut promised = connect()?;
    write!(
        promised,
        "POST /v3/auth/tokens HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    )?;
    let began = Instant::now();
    let mut answer = Vec::new();
    let _ = promised.read_to_end(&mut answer);
    ensure!(
        began.elapsed() < Duration::from_secs(5),
        "a promised body that never came held its connection {:?}: {:?}",
        began.elapsed(),
        String::from_utf8_lossy(&answer)
    );

    // An upload whose body takes several periods, a piece every half
    // period, is stored.
    let mut creating = connect()?;
    send_slowly(
        &mut creating,
        &format!(
            "PUT {container} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: 0\r\n\r\n"
        ),
        &[],
    )?;
    let status = status_of(&mut std::io::BufReader::new(creating))?;
    ensure!(status.starts_with("http/1.1 20"), "container PUT: {status}");
    let mut uploading = connect()?;
    send_slowly(
        &mut uploading,
        &format!(
            "PUT {container}/slow HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: 8\r\n\r\n"
        ),
        &[b"a".as_slice(); 8],
    )?;
    let status = status_of(&mut std::io::BufReader::new(uploading))?;
    ensure!(status.starts_with("http/1.1 201"), "slow upload: {status}");

    // A large object, read slowly over several periods, arrives whole;
    // a client that stops reading it is cut.
    let content = random_bytes(24 << 20);
    let mut storing = connect()?;
    write!(
        storing,
        "PUT {container}/big HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: {}\r\n\r\n",
        content.len()
    )?;
    storing.write_all(&content)?;
    let status = status_of(&mut std::io::BufReader::new(storing))?;
    ensure!(status.starts_with("http/1.1 201"), "large upload: {status}");
    let download = |pause: Duration, wait_first: Duration| -> Result<Vec<u8>> {
        let (head, mut reader) = raw_request(&endpoint, "GET", &format!("{container}/big"), &auth)?;
        ensure!(head[0].starts_with("http/1.1 200"), "{head:?}");
        std::thread::sleep(wait_first);
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        while body.len() < content.len() {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
            std::thread::sleep(pause);
        }
        Ok(body)
    };
    let slow = download(Duration::from_millis(150), Duration::ZERO)?;
    ensure!(
        slow.len() == content.len() && slow == content,
        "a download read slowly got {} of {} bytes",
        slow.len(),
        content.len()
    );
    let stalled = download(Duration::ZERO, Duration::from_secs(4))?;
    ensure!(
        stalled.len() < content.len(),
        "a client that stopped reading for 4 s still got the whole answer"
    );
    server.assert_healthy()?;
    Ok(())
}

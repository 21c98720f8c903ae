//! The Swift API driven by python-swiftclient (the `swift` CLI, v1.0 and
//! Keystone v3 auth), rclone's swift backend, and curl for what the clients
//! do not expose; S3 and Swift reading each other's objects.

use std::fs;

use anyhow::{Context, Result, ensure};
use strata_tests::{
    Server, Signing, SwiftUser, md5_hex, random_bytes, sha256_file, unique_bucket,
    write_random_file, write_tree,
};

/// `swift list` output as lines.
fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// A Swift request with `who`'s token; `path` is under the storage URL.
fn swift_http(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<strata_tests::HttpResponse> {
    let mut all = vec![("X-Auth-Token", token)];
    all.extend_from_slice(headers);
    server.http(method, path, Signing::Anonymous, body, &all)
}

#[test]
fn swiftclient_round_trip_with_v1_auth() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("swift");
    let work = server.work_dir("round-trip")?;
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("a/one.txt", 10),
            ("a/two.bin", 70_000),
            ("b/three", 0),
            ("top.gif", 33),
        ],
    )?;

    server.swift_ok(&root, &["post", &container])?;
    server.swift_ok(
        &root,
        &[
            "upload",
            &container,
            &tree.display().to_string(),
            "--object-name",
            "t",
        ],
    )?;
    let listed = server.swift_ok(&root, &["list", &container])?.stdout_text();
    ensure!(
        lines(&listed) == ["t/a/one.txt", "t/a/two.bin", "t/b/three", "t/top.gif"],
        "listing {listed:?}"
    );
    let rolled = server
        .swift_ok(
            &root,
            &["list", &container, "--prefix", "t/", "--delimiter", "/"],
        )?
        .stdout_text();
    ensure!(
        lines(&rolled) == ["t/a/", "t/b/", "t/top.gif"],
        "delimited {rolled:?}"
    );

    // Stat shows usage; content types are guessed from names.
    let stat = server.swift_ok(&root, &["stat", &container])?.stdout_text();
    ensure!(stat.contains("Objects: 4"), "container stat {stat}");
    ensure!(
        stat.contains(&format!("Bytes: {}", 10 + 70_000 + 33)),
        "container stat {stat}"
    );
    let object_stat = server
        .swift_ok(&root, &["stat", &container, "t/top.gif"])?
        .stdout_text();
    ensure!(
        object_stat.contains("image/gif"),
        "object stat {object_stat}"
    );
    let account_stat = server.swift_ok(&root, &["stat"])?.stdout_text();
    ensure!(
        account_stat.contains("Account: AUTH_admin"),
        "account stat {account_stat}"
    );

    // Download is byte-identical.
    let out = work.join("two.bin");
    server.swift_ok(
        &root,
        &[
            "download",
            &container,
            "t/a/two.bin",
            "-o",
            &out.display().to_string(),
        ],
    )?;
    ensure!(
        sha256_file(&out)? == sha256_file(&tree.join("a/two.bin"))?,
        "downloaded bytes differ"
    );

    // Metadata: post replaces it, stat shows it.
    server.swift_ok(
        &root,
        &["post", &container, "t/a/one.txt", "-m", "Color:blue"],
    )?;
    let object_stat = server
        .swift_ok(&root, &["stat", &container, "t/a/one.txt"])?
        .stdout_text();
    ensure!(
        object_stat.contains("Meta Color: blue"),
        "object stat {object_stat}"
    );

    // Copy keeps bytes and metadata.
    server.swift_ok(
        &root,
        &[
            "copy",
            &container,
            "t/a/one.txt",
            "--destination",
            &format!("/{container}/copied.txt"),
        ],
    )?;
    let copied = server
        .swift_ok(&root, &["stat", &container, "copied.txt"])?
        .stdout_text();
    ensure!(
        copied.contains("Meta Color: blue") && copied.contains("Content Length: 10"),
        "copy stat {copied}"
    );

    // Delete one object, then everything; the container goes too.
    server.swift_ok(&root, &["delete", &container, "t/b/three"])?;
    ensure!(
        !server
            .swift_ok(&root, &["list", &container])?
            .stdout_text()
            .contains("t/b/three")
    );
    server.swift_ok(&root, &["delete", &container])?;
    let containers = server.swift_ok(&root, &["list"])?.stdout_text();
    ensure!(
        !containers.contains(&container),
        "container still listed: {containers}"
    );
    Ok(())
}

#[test]
fn swiftclient_library_with_v1_and_v3_auth() -> Result<()> {
    let server = Server::start()?;
    let user = server.create_user("lib", "libby", "admin")?;
    server
        .system_python(
            "swift_library.py",
            &[server.endpoint(), &user.account, &user.user, &user.key],
        )?
        .expect_success()?;
    Ok(())
}

#[test]
fn segmented_uploads_download_byte_identical() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("segments");
    let work = server.work_dir("segments")?;
    let source = work.join("big.bin");
    let bytes = write_random_file(&source, 3 * 1024 * 1024 + 12_345)?;
    let path = source.display().to_string();

    // swiftclient makes a DLO by default, an SLO with --use-slo.
    for (name, extra) in [("dlo.bin", None), ("slo.bin", Some("--use-slo"))] {
        let mut args = vec![
            "upload",
            &container,
            &path,
            "--object-name",
            name,
            "-S",
            "1048576",
        ];
        args.extend(extra);
        server.swift_ok(&root, &args)?;
        let stat = server
            .swift_ok(&root, &["stat", &container, name])?
            .stdout_text();
        ensure!(
            stat.contains(&format!("Content Length: {}", bytes.len())),
            "{name}: {stat}"
        );
        let marker = if extra.is_some() {
            "X-Static-Large-Object"
        } else {
            "Manifest:"
        };
        ensure!(
            stat.to_lowercase().contains(&marker.to_lowercase()),
            "{name} is no large object: {stat}"
        );
        let out = work.join(format!("out-{name}"));
        server.swift_ok(
            &root,
            &[
                "download",
                &container,
                name,
                "-o",
                &out.display().to_string(),
            ],
        )?;
        ensure!(fs::read(&out)? == bytes, "{name}: downloaded bytes differ");
    }
    let segments = server
        .swift_ok(&root, &["list", &format!("{container}_segments")])?
        .stdout_text();
    ensure!(
        lines(&segments).len() == 8,
        "expected 4 + 4 segments: {segments}"
    );

    // A range across a segment boundary.
    let (token, url) = server.swift_token(&root)?;
    let path_base = url.trim_start_matches(server.endpoint());
    let ranged = swift_http(
        &server,
        &token,
        "GET",
        &format!("{path_base}/{container}/slo.bin"),
        None,
        &[("Range", "bytes=1048570-1048581")],
    )?;
    ranged.expect_status(206)?;
    ensure!(
        ranged.body == bytes[1_048_570..1_048_582],
        "ranged bytes differ"
    );

    // Deleting the manifests takes their segments along.
    server.swift_ok(&root, &["delete", &container, "slo.bin", "dlo.bin"])?;
    let left = server
        .swift(&root, &["list", &format!("{container}_segments")])?
        .stdout_text();
    ensure!(left.trim().is_empty(), "segments left behind: {left}");
    Ok(())
}

#[test]
fn keystone_v3_auth_and_the_same_data() -> Result<()> {
    let server = Server::start()?;
    let alice = server.create_user("acme", "alice", "admin")?;
    let container = unique_bucket("v3");
    let work = server.work_dir("v3")?;
    let source = work.join("doc.txt");
    write_random_file(&source, 5000)?;
    let path = source.display().to_string();
    server
        .swift_v3(
            &alice,
            &["upload", &container, &path, "--object-name", "doc.txt"],
        )?
        .expect_success()?;
    // The same object through v1.0 auth.
    let listed = server
        .swift_ok(&alice, &["list", &container])?
        .stdout_text();
    ensure!(lines(&listed) == ["doc.txt"], "listing {listed}");
    let stat = server
        .swift_v3(&alice, &["stat"])?
        .expect_success()?
        .stdout_text();
    ensure!(stat.contains("Account: AUTH_acme"), "v3 stat {stat}");

    // Wrong password and malformed JSON are refused.
    let mut wrong = alice.clone();
    wrong.key = "not-the-key".into();
    ensure!(
        !server.swift_v3(&wrong, &["stat"])?.success(),
        "wrong v3 password accepted"
    );
    let malformed = server.http(
        "POST",
        "/v3/auth/tokens",
        Signing::Anonymous,
        Some(b"{not json"),
        &[("Content-Type", "application/json")],
    )?;
    malformed.expect_status(400)?;
    Ok(())
}

#[test]
fn s3_and_swift_see_the_same_objects() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("both");
    let work = server.work_dir("both")?;
    let from_s3 = work.join("from-s3.bin");
    let s3_bytes = write_random_file(&from_s3, 200_000)?;
    server.aws_ok(&["s3", "mb", &format!("s3://{container}")])?;
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &container,
        "--key",
        "s3/object.bin",
        "--body",
        &from_s3.display().to_string(),
        "--metadata",
        "color=green",
    ])?;
    let stat = server
        .swift_ok(&root, &["stat", &container, "s3/object.bin"])?
        .stdout_text();
    ensure!(
        stat.contains("Meta Color: green"),
        "swift stat of an S3 object: {stat}"
    );
    ensure!(stat.contains(&md5_hex(&s3_bytes)), "ETag differs: {stat}");
    let out = work.join("via-swift.bin");
    server.swift_ok(
        &root,
        &[
            "download",
            &container,
            "s3/object.bin",
            "-o",
            &out.display().to_string(),
        ],
    )?;
    ensure!(fs::read(&out)? == s3_bytes, "swift read different bytes");

    let from_swift = work.join("from-swift.bin");
    let swift_bytes = write_random_file(&from_swift, 70_000)?;
    server.swift_ok(
        &root,
        &[
            "upload",
            &container,
            &from_swift.display().to_string(),
            "--object-name",
            "swift/object.bin",
            "-H",
            "X-Object-Meta-Shape: round",
        ],
    )?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &container,
        "--key",
        "swift/object.bin",
    ])?;
    ensure!(head["Metadata"]["shape"] == "round", "S3 metadata {head}");
    ensure!(
        head["ETag"] == format!("\"{}\"", md5_hex(&swift_bytes)),
        "S3 ETag {head}"
    );
    let out = work.join("via-s3.bin");
    server.aws_ok(&[
        "s3",
        "cp",
        &format!("s3://{container}/swift/object.bin"),
        &out.display().to_string(),
    ])?;
    ensure!(fs::read(&out)? == swift_bytes, "S3 read different bytes");
    Ok(())
}

#[test]
fn rclone_swift_backend_copy_sync_check() -> Result<()> {
    let server = Server::start()?;
    let alice = server.create_user("rcl", "alice", "admin")?;
    let work = server.work_dir("rclone-swift")?;
    let local = work.join("local");
    write_tree(
        &local,
        &[("x/1.bin", 1000), ("x/2.bin", 300_000), ("y.txt", 12)],
    )?;
    let local_path = local.display().to_string();
    for (v3, container) in [
        (false, unique_bucket("rclv1")),
        (true, unique_bucket("rclv3")),
    ] {
        let remote = format!("sw:{container}");
        server.rclone_swift_ok(&alice, v3, &["mkdir", &remote])?;
        server.rclone_swift_ok(&alice, v3, &["copy", &local_path, &remote])?;
        server.rclone_swift_ok(&alice, v3, &["check", &local_path, &remote])?;
        fs::remove_file(local.join("y.txt"))?;
        write_random_file(&local.join("z.bin"), 5000)?;
        server.rclone_swift_ok(&alice, v3, &["sync", &local_path, &remote])?;
        server.rclone_swift_ok(&alice, v3, &["check", &local_path, &remote])?;
        let listed = server
            .swift_ok(&alice, &["list", &container])?
            .stdout_text();
        ensure!(
            lines(&listed) == ["x/1.bin", "x/2.bin", "z.bin"],
            "v3={v3}: {listed}"
        );
        // Put the tree back for the next round.
        fs::remove_file(local.join("z.bin"))?;
        write_random_file(&local.join("y.txt"), 12)?;
    }
    Ok(())
}

#[test]
fn listings_in_every_format() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let (token, url) = server.swift_token(&root)?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    let container = unique_bucket("list");
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{base}/{container}"),
        None,
        &[],
    )?
    .expect_status(201)?;
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{base}/{container}"),
        None,
        &[],
    )?
    .expect_status(202)?;
    for name in ["a", "b/1", "b/2", "c", "d/x/y"] {
        swift_http(
            &server,
            &token,
            "PUT",
            &format!("{base}/{container}/{name}"),
            Some(name.as_bytes()),
            &[],
        )?
        .expect_status(201)?;
    }
    let get = |query: &str| {
        swift_http(
            &server,
            &token,
            "GET",
            &format!("{base}/{container}?{query}"),
            None,
            &[],
        )
    };
    let plain = get("")?;
    plain.expect_status(200)?;
    ensure!(
        plain.body_text() == "a\nb/1\nb/2\nc\nd/x/y\n",
        "plain {plain}"
    );
    ensure!(
        plain.header("x-container-object-count") == Some("5"),
        "count {plain}"
    );
    ensure!(get("delimiter=/")?.body_text() == "a\nb/\nc\nd/\n");
    ensure!(get("marker=b/1&end_marker=d")?.body_text() == "b/2\nc\n");
    ensure!(get("reverse=true&limit=2")?.body_text() == "d/x/y\nc\n");
    ensure!(get("reverse=true&delimiter=/")?.body_text() == "d/\nc\nb/\na\n");
    ensure!(get("prefix=b/&limit=1")?.body_text() == "b/1\n");
    ensure!(
        get("prefix=zzz")?.status == 204,
        "an empty plain listing is 204"
    );
    get("limit=10001")?.expect_status(412)?;
    // As Swift: a limit that is not digits is no limit; an unknown format
    // is plain.
    for query in ["limit=abc", "limit=-1", "format=yaml"] {
        let listing = get(query)?;
        ensure!(
            listing.body_text() == "a\nb/1\nb/2\nc\nd/x/y\n",
            "{query}: {listing}"
        );
    }

    let json = get("format=json&delimiter=/")?;
    ensure!(json.header("vary") == Some("Accept"), "{json}");
    let entries: serde_json::Value = serde_json::from_slice(&json.body)?;
    ensure!(
        entries[0]["name"] == "a" && entries[0]["bytes"] == 1,
        "json {entries}"
    );
    ensure!(entries[0]["hash"] == md5_hex(b"a"), "json {entries}");
    ensure!(entries[1]["subdir"] == "b/", "json {entries}");
    let xml = get("format=xml")?;
    let text = xml.body_text();
    ensure!(
        text.contains(&format!("<container name=\"{container}\">")),
        "xml {text}"
    );
    ensure!(text.contains("<object><name>a</name><hash>"), "xml {text}");

    let account = swift_http(
        &server,
        &token,
        "GET",
        &format!("{base}?format=json"),
        None,
        &[],
    )?;
    account.expect_status(200)?;
    let containers: serde_json::Value = serde_json::from_slice(&account.body)?;
    let ours = containers
        .as_array()
        .context("account listing is no array")?
        .iter()
        .find(|entry| entry["name"] == container.as_str())
        .context("container not in the account listing")?;
    ensure!(
        ours["count"] == 5 && ours["bytes"] == 13,
        "account entry {ours}"
    );
    ensure!(
        account.header("x-account-container-count").is_some(),
        "{account}"
    );
    ensure!(
        account
            .header("x-trans-id")
            .is_some_and(|id| id.starts_with("tx")),
        "{account}"
    );

    // Not empty: 409; emptied: 204.
    swift_http(
        &server,
        &token,
        "DELETE",
        &format!("{base}/{container}"),
        None,
        &[],
    )?
    .expect_status(409)?;
    let body = ["a", "b/1", "b/2", "c", "d/x/y"]
        .iter()
        .map(|name| format!("/{container}/{name}\n"))
        .collect::<String>();
    let bulk = swift_http(
        &server,
        &token,
        "POST",
        &format!("{base}?bulk-delete"),
        Some(body.as_bytes()),
        &[
            ("Content-Type", "text/plain"),
            ("Accept", "application/json"),
        ],
    )?;
    bulk.expect_status(200)?;
    let report: serde_json::Value = serde_json::from_slice(&bulk.body)?;
    ensure!(report["Number Deleted"] == 5, "bulk delete {report}");
    swift_http(
        &server,
        &token,
        "DELETE",
        &format!("{base}/{container}"),
        None,
        &[],
    )?
    .expect_status(204)?;

    let info = server.http("GET", "/info", Signing::Anonymous, None, &[])?;
    info.expect_status(200)?;
    let length = info.body.len().to_string();
    let head = server.http("HEAD", "/info", Signing::Anonymous, None, &[])?;
    ensure!(
        head.status == 200 && head.header("content-length") == Some(length.as_str()),
        "HEAD /info is not the GET's length ({length}): {head}"
    );
    let info: serde_json::Value = serde_json::from_slice(&info.body)?;
    for capability in ["swift", "slo", "dlo", "tempurl", "bulk_delete"] {
        ensure!(
            info.get(capability).is_some(),
            "/info lacks {capability}: {info}"
        );
    }
    Ok(())
}

/// A large object is copied as one plain object of its assembled size:
/// past the largest object the server takes, the copy is refused (413), as
/// Swift refuses it.
#[test]
fn a_copy_larger_than_an_object_may_be_is_refused() -> Result<()> {
    let server = Server::start_with_config("[limits]\nmax_object_size = 1500\n")?;
    let (token, url) = server.swift_token(&SwiftUser::root())?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    let name = unique_bucket("copy-limit");
    let container = format!("{base}/{name}");
    swift_http(&server, &token, "PUT", &container, None, &[])?.expect_status(201)?;
    let mut segments = Vec::new();
    for segment in ["a", "b"] {
        let path = format!("{container}/{segment}");
        let bytes = random_bytes(1000);
        swift_http(&server, &token, "PUT", &path, Some(&bytes), &[])?.expect_status(201)?;
        segments.push(format!(
            r#"{{"path": "/{name}/{segment}", "etag": null, "size_bytes": null}}"#
        ));
    }
    let manifest = format!("[{}]", segments.join(","));
    let slo = format!("{container}/slo");
    let put = format!("{slo}?multipart-manifest=put");
    swift_http(&server, &token, "PUT", &put, Some(manifest.as_bytes()), &[])?.expect_status(201)?;
    let destination = format!("{name}/copy");
    swift_http(
        &server,
        &token,
        "COPY",
        &slo,
        None,
        &[("Destination", &destination)],
    )?
    .expect_status(413)?;
    swift_http(
        &server,
        &token,
        "HEAD",
        &format!("{container}/copy"),
        None,
        &[],
    )?
    .expect_status(404)?;
    Ok(())
}

#[test]
fn objects_conditions_ranges_and_bad_input() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let (token, url) = server.swift_token(&root)?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    let container = unique_bucket("obj");
    let object = format!("{base}/{container}/thing");
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{base}/{container}"),
        None,
        &[],
    )?
    .expect_status(201)?;
    let bytes = random_bytes(1000);
    let etag = md5_hex(&bytes);

    // A wrong ETag is 422 and stores nothing.
    swift_http(
        &server,
        &token,
        "PUT",
        &object,
        Some(&bytes),
        &[("ETag", &md5_hex(b"other"))],
    )?
    .expect_status(422)?;
    swift_http(&server, &token, "HEAD", &object, None, &[])?.expect_status(404)?;
    let put = swift_http(
        &server,
        &token,
        "PUT",
        &object,
        Some(&bytes),
        &[
            ("ETag", &etag),
            ("X-Object-Meta-Color", "red"),
            ("Content-Disposition", "attachment"),
        ],
    )?;
    put.expect_status(201)?;
    ensure!(put.header("etag") == Some(etag.as_str()), "{put}");

    let get = |headers: &[(&str, &str)]| swift_http(&server, &token, "GET", &object, None, headers);
    let whole = get(&[])?;
    whole.expect_status(200)?;
    ensure!(whole.body == bytes, "bytes differ");
    ensure!(
        whole.header("x-object-meta-color") == Some("red"),
        "{whole}"
    );
    ensure!(
        whole.header("content-disposition") == Some("attachment"),
        "{whole}"
    );
    let quoted = format!("\"{etag}\"");
    get(&[("If-None-Match", &quoted)])?.expect_status(304)?;
    get(&[("If-Match", "\"nope\"")])?.expect_status(412)?;
    let partial = get(&[("Range", "bytes=10-19")])?;
    partial.expect_status(206)?;
    ensure!(partial.body == bytes[10..20], "range bytes differ");
    // HEAD ignores Range: the whole object's length, not a part's.
    let head = swift_http(
        &server,
        &token,
        "HEAD",
        &object,
        None,
        &[("Range", "bytes=0-1,5-6")],
    )?;
    head.expect_status(200)?;
    ensure!(head.header("content-length") == Some("1000"), "{head}");
    let unsatisfiable = get(&[("Range", "bytes=5000-")])?;
    unsatisfiable.expect_status(416)?;
    ensure!(
        unsatisfiable.header("content-range") == Some("bytes */1000"),
        "{unsatisfiable}"
    );

    // POST replaces metadata; over-long metadata changes nothing.
    swift_http(
        &server,
        &token,
        "POST",
        &object,
        None,
        &[("X-Object-Meta-Shape", "square")],
    )?
    .expect_status(202)?;
    let head = swift_http(&server, &token, "HEAD", &object, None, &[])?;
    ensure!(
        head.header("x-object-meta-shape") == Some("square")
            && head.header("x-object-meta-color").is_none(),
        "{head}"
    );
    // As in Swift, what a POST does not send is gone: the expiry and the
    // representation headers; the content type stays.
    let far = (strata_tests::unix_now() + 86_400).to_string();
    let with_expiry = [
        ("X-Delete-At", far.as_str()),
        ("Content-Disposition", "inline"),
    ];
    swift_http(&server, &token, "POST", &object, None, &with_expiry)?.expect_status(202)?;
    let head = swift_http(&server, &token, "HEAD", &object, None, &[])?;
    ensure!(
        head.header("x-delete-at") == Some(far.as_str())
            && head.header("content-disposition") == Some("inline"),
        "{head}"
    );
    let content_type = head.header("content-type").map(str::to_owned);
    swift_http(
        &server,
        &token,
        "POST",
        &object,
        None,
        &[("X-Object-Meta-Shape", "round")],
    )?
    .expect_status(202)?;
    let head = swift_http(&server, &token, "HEAD", &object, None, &[])?;
    ensure!(
        head.header("x-delete-at").is_none()
            && head.header("content-disposition").is_none()
            && head.header("content-type").map(str::to_owned) == content_type,
        "a POST kept what it did not send: {head}"
    );
    let long_name = format!("X-Object-Meta-{}", "n".repeat(129));
    let long_value = "v".repeat(257);
    for (name, value) in [
        (long_name.as_str(), "v"),
        ("X-Object-Meta-Big", long_value.as_str()),
    ] {
        swift_http(&server, &token, "POST", &object, None, &[(name, value)])?.expect_status(400)?;
    }
    let head = swift_http(&server, &token, "HEAD", &object, None, &[])?;
    ensure!(
        head.header("x-object-meta-shape") == Some("round"),
        "metadata changed by a refused POST: {head}"
    );

    // X-Copy-From and COPY; a copy with a body of its own is refused.
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-copy"),
        Some(b"bytes"),
        &[("X-Copy-From", &format!("{container}/thing"))],
    )?
    .expect_status(400)?;
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-copy"),
        Some(b""),
        &[("X-Copy-From", &format!("{container}/thing"))],
    )?
    .expect_status(201)?;
    swift_http(
        &server,
        &token,
        "COPY",
        &object,
        None,
        &[("Destination", &format!("{container}/thing-copy2"))],
    )?
    .expect_status(201)?;
    for name in ["thing-copy", "thing-copy2"] {
        let copy = swift_http(
            &server,
            &token,
            "GET",
            &format!("{base}/{container}/{name}"),
            None,
            &[],
        )?;
        ensure!(
            copy.body == bytes && copy.header("x-object-meta-shape") == Some("round"),
            "{copy}"
        );
    }

    // A copy keeps its source's expiry, as Swift's does; a fresh one not.
    swift_http(
        &server,
        &token,
        "POST",
        &object,
        None,
        &[("X-Delete-At", &far)],
    )?
    .expect_status(202)?;
    for (name, fresh, expected) in [
        ("thing-expiring", "false", Some(far.as_str())),
        ("thing-fresh", "true", None),
    ] {
        swift_http(
            &server,
            &token,
            "COPY",
            &object,
            None,
            &[
                ("Destination", &format!("{container}/{name}")),
                ("X-Fresh-Metadata", fresh),
            ],
        )?
        .expect_status(201)?;
        let head = swift_http(
            &server,
            &token,
            "HEAD",
            &format!("{base}/{container}/{name}"),
            None,
            &[],
        )?;
        ensure!(head.header("x-delete-at") == expected, "{name}: {head}");
    }

    // Manifests naming missing or foreign segments are refused.
    let manifest =
        format!(r#"[{{"path": "/{container}/missing", "etag": null, "size_bytes": null}}]"#);
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-slo?multipart-manifest=put"),
        Some(manifest.as_bytes()),
        &[],
    )?
    .expect_status(400)?;
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-slo?multipart-manifest=put"),
        Some(b"[not json"),
        &[],
    )?
    .expect_status(400)?;
    let good = format!(
        r#"[{{"path": "/{container}/thing", "etag": "{etag}", "size_bytes": 1000}}, {{"path": "/{container}/thing-copy", "etag": null, "size_bytes": null}}]"#
    );
    let slo = swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-slo?multipart-manifest=put"),
        Some(good.as_bytes()),
        &[],
    )?;
    slo.expect_status(201)?;
    // As any PUT: If-None-Match: * finds it there, and an ETag must be the
    // manifest's.
    let slo_etag = slo.header("etag").context("no SLO ETag")?.to_owned();
    for (headers, status) in [
        (vec![("If-None-Match", "*")], 412),
        (vec![("ETag", "\"0123456789abcdef0123456789abcdef\"")], 422),
        (vec![("ETag", slo_etag.as_str())], 201),
    ] {
        swift_http(
            &server,
            &token,
            "PUT",
            &format!("{object}-slo?multipart-manifest=put"),
            Some(good.as_bytes()),
            &headers,
        )?
        .expect_status(status)?;
    }
    let assembled = swift_http(&server, &token, "GET", &format!("{object}-slo"), None, &[])?;
    ensure!(
        assembled.body == [bytes.clone(), bytes.clone()].concat(),
        "SLO bytes differ"
    );
    // A POST keeps what the SLO is: its size in listings, its bytes.
    let slo_path = format!("{object}-slo");
    swift_http(
        &server,
        &token,
        "POST",
        &slo_path,
        None,
        &[("X-Object-Meta-K", "v")],
    )?
    .expect_status(202)?;
    let listing = swift_http(
        &server,
        &token,
        "GET",
        &format!("{base}/{container}?format=json&prefix=thing-slo"),
        None,
        &[],
    )?;
    let entries: serde_json::Value = serde_json::from_slice(&listing.body)?;
    ensure!(
        entries[0]["bytes"] == 2000,
        "after a POST the SLO lists as {entries}"
    );
    let read = swift_http(&server, &token, "GET", &slo_path, None, &[])?;
    ensure!(
        read.body.len() == 2000,
        "after a POST the SLO reads {} bytes",
        read.body.len()
    );
    // A HEAD answers from what the manifest's PUT recorded, as Swift's: a
    // segment gone since shows only when the object is read.
    let whole = swift_http(&server, &token, "HEAD", &slo_path, None, &[])?;
    whole.expect_status(200)?;
    let copy_segment = format!("{base}/{container}/thing-copy");
    swift_http(&server, &token, "DELETE", &copy_segment, None, &[])?.expect_status(204)?;
    let head = swift_http(&server, &token, "HEAD", &slo_path, None, &[])?;
    head.expect_status(200)?;
    ensure!(
        head.header("content-length") == Some("2000")
            && head.header("etag") == whole.header("etag")
            && head.header("x-static-large-object").is_some(),
        "HEAD of an SLO missing a segment: {head}\nbefore: {whole}"
    );
    swift_http(&server, &token, "GET", &slo_path, None, &[])?.expect_status(409)?;

    // Expiry: gone from reads and listings once X-Delete-At passes.
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-brief"),
        Some(b"soon gone"),
        &[("X-Delete-After", "1")],
    )?
    .expect_status(201)?;
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-past"),
        Some(b"x"),
        &[("X-Delete-At", "1000")],
    )?
    .expect_status(400)?;
    // Swift's int(): no fractions; a negative X-Delete-After is in the
    // past; with both headers, X-Delete-After wins.
    let fraction = format!("{far}.5");
    for (headers, refusal) in [
        (
            vec![("X-Delete-At", fraction.as_str())],
            "Non-integer X-Delete-At",
        ),
        (vec![("X-Delete-After", "-5")], "X-Delete-After in past"),
        (
            vec![("If-None-Match", "\"d41d8cd98f00b204e9800998ecf8427e\"")],
            "If-None-Match only supports *",
        ),
    ] {
        let refused = swift_http(
            &server,
            &token,
            "PUT",
            &format!("{object}-bad"),
            Some(b"x"),
            &headers,
        )?;
        refused.expect_status(400)?;
        ensure!(refused.body_text().contains(refusal), "{refused}");
    }
    swift_http(&server, &token, "HEAD", &format!("{object}-bad"), None, &[])?.expect_status(404)?;
    let both = [("X-Delete-At", far.as_str()), ("X-Delete-After", "3600")];
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{object}-both"),
        Some(b"x"),
        &both,
    )?
    .expect_status(201)?;
    let head = swift_http(
        &server,
        &token,
        "HEAD",
        &format!("{object}-both"),
        None,
        &[],
    )?;
    let at: u64 = head
        .header("x-delete-at")
        .context("no X-Delete-At")?
        .parse()?;
    ensure!(
        at <= strata_tests::unix_now() + 3600,
        "X-Delete-At won over X-Delete-After: {head}"
    );
    // X-Detect-Content-Type: the name's type over the one sent.
    let page = format!("{base}/{container}/page.html");
    swift_http(
        &server,
        &token,
        "PUT",
        &page,
        Some(b"<p>hi</p>"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Detect-Content-Type", "true"),
        ],
    )?
    .expect_status(201)?;
    let head = swift_http(&server, &token, "HEAD", &page, None, &[])?;
    ensure!(
        head.header("content-type")
            .is_some_and(|value| value.starts_with("text/html")),
        "{head}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    swift_http(
        &server,
        &token,
        "GET",
        &format!("{object}-brief"),
        None,
        &[],
    )?
    .expect_status(404)?;
    let listing = swift_http(
        &server,
        &token,
        "GET",
        &format!("{base}/{container}"),
        None,
        &[],
    )?;
    ensure!(
        !listing.body_text().contains("thing-brief"),
        "expired object listed: {listing}"
    );

    // Bad tokens are 401 with a text body and a transaction id.
    let garbage = swift_http(&server, "AUTH_garbage", "GET", &object, None, &[])?;
    garbage.expect_status(401)?;
    ensure!(garbage.header("x-trans-id").is_some(), "{garbage}");
    Ok(())
}

#[test]
fn auth_matrix_refuses_every_forbidden_request() -> Result<()> {
    // Short-lived tokens, so that expiry can be seen; every request below
    // logs in afresh unless it tests an old token.
    let server = Server::start_with_config("token_lifetime_secs = 3\n")?;
    let alice = server.create_user("acme", "alice", "admin")?;
    let rita = server.create_user("acme", "rita", "reader")?;
    let walt = server.create_user("acme", "walt", "writer")?;
    let bob = server.create_user("other", "bob", "admin")?;
    let call = |who: &SwiftUser,
                method: &str,
                path: &str,
                body: Option<&[u8]>,
                headers: &[(&str, &str)]| {
        let (token, _) = server.swift_token(who)?;
        swift_http(&server, &token, method, path, body, headers)
    };
    let anonymous = |method: &str, path: &str, body: Option<&[u8]>| {
        server.http(method, path, Signing::Anonymous, body, &[])
    };
    let (_, url) = server.swift_token(&alice)?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    ensure!(base == "/v1/AUTH_acme", "storage url {url}");
    let container = unique_bucket("matrix");
    let container_path = format!("{base}/{container}");
    let object = format!("{container_path}/secret.txt");
    call(&alice, "PUT", &container_path, None, &[])?.expect_status(201)?;
    call(&alice, "PUT", &object, Some(b"classified"), &[])?.expect_status(201)?;

    // Nobody, a wrong key, another account, a reader writing, a writer
    // changing ACLs.
    anonymous("GET", &object, None)?.expect_status(401)?;
    anonymous("GET", &container_path, None)?.expect_status(401)?;
    anonymous("PUT", &object, Some(b"x"))?.expect_status(401)?;
    let mut wrong_key = alice.clone();
    wrong_key.key = "wrong".into();
    ensure!(
        server.swift_token(&wrong_key).is_err(),
        "wrong key got a token"
    );
    call(&alice, "GET", "/v1/AUTH_other", None, &[])?.expect_status(403)?;
    call(&bob, "GET", &object, None, &[])?.expect_status(403)?;
    call(&bob, "PUT", &object, Some(b"x"), &[])?.expect_status(403)?;
    call(&bob, "DELETE", &container_path, None, &[])?.expect_status(403)?;
    call(&rita, "GET", &object, None, &[])?.expect_status(200)?;
    call(&rita, "PUT", &object, Some(b"x"), &[])?.expect_status(403)?;
    call(&rita, "DELETE", &object, None, &[])?.expect_status(403)?;
    call(&walt, "PUT", &format!("{object}.w"), Some(b"w"), &[])?.expect_status(201)?;
    call(
        &walt,
        "POST",
        &container_path,
        None,
        &[("X-Container-Read", ".r:*")],
    )?
    .expect_status(403)?;

    // ACLs: bad ones are refused and change nothing; good ones grant.
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[("X-Container-Read", ".r:")],
    )?
    .expect_status(400)?;
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[("X-Container-Write", ".r:*")],
    )?
    .expect_status(400)?;
    call(&bob, "GET", &object, None, &[])?.expect_status(403)?;
    anonymous("GET", &object, None)?.expect_status(401)?;
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[
            ("X-Container-Read", "other:bob"),
            ("X-Container-Write", "other"),
        ],
    )?
    .expect_status(204)?;
    call(&bob, "GET", &object, None, &[])?.expect_status(200)?;
    call(&bob, "PUT", &format!("{object}.bob"), Some(b"b"), &[])?.expect_status(201)?;
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[("X-Container-Read", ".r:*")],
    )?
    .expect_status(204)?;
    anonymous("GET", &object, None)?.expect_status(200)?;
    anonymous("GET", &container_path, None)?.expect_status(401)?;
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[("X-Container-Read", ".r:*,.rlistings")],
    )?
    .expect_status(204)?;
    anonymous("GET", &container_path, None)?.expect_status(200)?;
    anonymous("PUT", &object, Some(b"x"))?.expect_status(401)?;
    call(
        &alice,
        "POST",
        &container_path,
        None,
        &[("X-Remove-Container-Read", "x")],
    )?
    .expect_status(204)?;
    anonymous("GET", &object, None)?.expect_status(401)?;

    // TempURLs: valid, for another method, tampered, expired.
    call(
        &alice,
        "POST",
        &base,
        None,
        &[("X-Account-Meta-Temp-URL-Key", "sekrit")],
    )?
    .expect_status(204)?;
    let temp_url_for = |method: &str, seconds: &str, absolute: bool| -> Result<String> {
        let mut args = vec!["tempurl"];
        if absolute {
            args.push("--absolute");
        }
        args.extend([method, seconds, object.as_str(), "sekrit"]);
        Ok(server
            .swift_ok(&alice, &args)?
            .stdout_text()
            .trim()
            .to_owned())
    };
    let temp_url = |seconds: &str, absolute: bool| temp_url_for("GET", seconds, absolute);
    let valid = temp_url("600", false)?;
    let fetched = anonymous("GET", &valid, None)?;
    fetched.expect_status(200)?;
    ensure!(fetched.body == b"classified", "{fetched}");
    anonymous("PUT", &valid, Some(b"overwritten"))?.expect_status(401)?;
    let tampered = {
        let (head, sig) = valid.split_once("temp_url_sig=").context("no signature")?;
        let flipped = if sig.starts_with('0') { '1' } else { '0' };
        format!("{head}temp_url_sig={flipped}{}", &sig[1..])
    };
    anonymous("GET", &tampered, None)?.expect_status(401)?;
    let expired = temp_url("1000000000", true)?;
    anonymous("GET", &expired, None)?.expect_status(401)?;
    // A PUT TempURL writes its object and nothing else: no copy of another
    // object, no manifest naming others (read back through a GET TempURL).
    let put_url = temp_url_for("PUT", "600", false)?;
    for (query, headers) in [
        ("", vec![("X-Object-Manifest", format!("{container}/"))]),
        (
            "",
            vec![("X-Copy-From", format!("{container}/secret.txt.w"))],
        ),
        ("&multipart-manifest=put", vec![]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        server
            .http(
                "PUT",
                &format!("{put_url}{query}"),
                Signing::Anonymous,
                Some(b"[]"),
                &headers,
            )?
            .expect_status(400)?;
    }
    let current = call(&alice, "GET", &object, None, &[])?;
    ensure!(
        current.body == b"classified",
        "a refused TempURL PUT wrote: {current}"
    );

    // A revoked user's token; a rotated key.
    let (rita_token, _) = server.swift_token(&rita)?;
    server.strata_ok(&["user", "revoke", "acme", "rita"])?;
    swift_http(&server, &rita_token, "GET", &object, None, &[])?.expect_status(401)?;
    let rotated = server.strata_ok(&["key", "rotate", "acme", "walt"])?;
    let walt_new = SwiftUser::from_cli_output("acme", "walt", &rotated.stdout_text())?;
    ensure!(
        server.swift_token(&walt).is_err(),
        "the old key still works"
    );
    call(&walt_new, "GET", &object, None, &[])?.expect_status(200)?;

    // A user deleted and created again under the name, with the same role:
    // the tokens of the one before do not come back.
    let vic = server.create_user("acme", "vic", "writer")?;
    let (vic_token, _) = server.swift_token(&vic)?;
    swift_http(&server, &vic_token, "GET", &object, None, &[])?.expect_status(200)?;
    server.strata_ok(&["user", "delete", "acme", "vic"])?;
    swift_http(&server, &vic_token, "GET", &object, None, &[])?.expect_status(401)?;
    server.create_user("acme", "vic", "writer")?;
    swift_http(&server, &vic_token, "GET", &object, None, &[])?.expect_status(401)?;

    // An expired token.
    let (alice_token, _) = server.swift_token(&alice)?;
    std::thread::sleep(std::time::Duration::from_millis(3500));
    swift_http(&server, &alice_token, "GET", &object, None, &[])?.expect_status(401)?;

    // Nothing forbidden happened: the object is as alice wrote it.
    let current = call(&alice, "GET", &object, None, &[])?;
    ensure!(current.body == b"classified", "{current}");
    Ok(())
}

/// TempURL keys sign URLs for any method: like Swift (`swift_owner_headers`),
/// only the account's admins see them, on the account and on its
/// containers. Readers, other accounts granted a container, and anonymous
/// readers of a public container see the rest of the metadata.
#[test]
fn temp_url_keys_are_shown_to_account_admins_only() -> Result<()> {
    let server = Server::start()?;
    let alice = server.create_user("keys", "alice", "admin")?;
    let rita = server.create_user("keys", "rita", "reader")?;
    let bob = server.create_user("elsewhere", "bob", "admin")?;
    let call = |who: &SwiftUser, method: &str, path: &str, headers: &[(&str, &str)]| {
        let (token, _) = server.swift_token(who)?;
        swift_http(&server, &token, method, path, None, headers)
    };
    let base = "/v1/AUTH_keys";
    let container = format!("{base}/{}", unique_bucket("keys"));
    call(
        &alice,
        "PUT",
        &container,
        &[
            ("X-Container-Meta-Temp-URL-Key", "container-secret"),
            ("X-Container-Meta-Temp-URL-Key-2", "container-secret-2"),
            ("X-Container-Meta-Color", "red"),
            ("X-Container-Read", ".r:*,.rlistings,elsewhere:bob"),
        ],
    )?
    .expect_status(201)?;
    call(
        &alice,
        "POST",
        base,
        &[
            ("X-Account-Meta-Temp-URL-Key", "account-secret"),
            ("X-Account-Meta-Color", "blue"),
        ],
    )?
    .expect_status(204)?;

    let shows_keys = |response: &strata_tests::HttpResponse, kind: &str| -> Result<bool> {
        let color = format!("x-{kind}-meta-color");
        ensure!(
            response.header(&color).is_some(),
            "{color} missing\n{response}"
        );
        Ok(response
            .header(&format!("x-{kind}-meta-temp-url-key"))
            .is_some()
            || response
                .header(&format!("x-{kind}-meta-temp-url-key-2"))
                .is_some())
    };
    for method in ["HEAD", "GET"] {
        let own = call(&alice, method, &container, &[])?;
        ensure!(
            shows_keys(&own, "container")?,
            "the admin lost the keys\n{own}"
        );
        let own = call(&alice, method, base, &[])?;
        ensure!(
            shows_keys(&own, "account")?,
            "the admin lost the key\n{own}"
        );
        for (who, response) in [
            ("a reader", call(&rita, method, &container, &[])?),
            ("another account", call(&bob, method, &container, &[])?),
            (
                "anyone",
                server.http(method, &container, Signing::Anonymous, None, &[])?,
            ),
        ] {
            ensure!(
                !shows_keys(&response, "container")?,
                "{who} was shown the container's TempURL keys\n{response}"
            );
        }
        let read = call(&rita, method, base, &[])?;
        ensure!(
            !shows_keys(&read, "account")?,
            "a reader was shown the account's TempURL key\n{read}"
        );
    }
    Ok(())
}

#[test]
fn admin_cli_manages_accounts_users_and_keys() -> Result<()> {
    let server = Server::start()?;
    let carol = server.create_user("shop", "carol", "writer")?;
    let (token, url) = server.swift_token(&carol)?;
    ensure!(url.ends_with("/v1/AUTH_shop"), "{url}");
    // A writer writes objects in containers an admin made.
    let admin = server.create_user("shop", "boss", "admin")?;
    server.swift_ok(&admin, &["post", "shop-files"])?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    swift_http(
        &server,
        &token,
        "PUT",
        &format!("{base}/shop-files/price-list"),
        Some(b"12 EUR"),
        &[],
    )?
    .expect_status(201)?;
    // The S3 key pair works for the same account.
    let s3 = server.http(
        "GET",
        "/shop-files/price-list",
        Signing::Keys {
            access_key: carol.access_key.clone(),
            secret_key: carol.secret_key.clone(),
        },
        None,
        &[],
    )?;
    s3.expect_status(200)?;
    ensure!(s3.body == b"12 EUR", "{s3}");

    let list = server.strata_ok(&["account", "list"])?.stdout_text();
    ensure!(
        list.lines()
            .any(|line| line.starts_with("shop ") && line.contains(" 2 ")),
        "account list {list}"
    );
    let users = server.strata_ok(&["user", "list", "shop"])?.stdout_text();
    ensure!(
        users.contains("carol") && users.contains("writer") && users.contains(&carol.access_key),
        "users {users}"
    );
    ensure!(
        !server
            .strata(&["user", "create", "shop", "carol"])?
            .success(),
        "duplicate user created"
    );
    ensure!(
        !server
            .strata(&["user", "create", "nowhere", "x"])?
            .success(),
        "user in a missing account"
    );
    ensure!(
        !server.strata(&["account", "create", "bad name"])?.success(),
        "bad account name accepted"
    );

    let refused = server.strata(&["account", "delete", "shop"])?;
    ensure!(
        !refused.success() && refused.stderr_text().contains("409"),
        "{refused}"
    );
    server.swift_ok(&carol, &["stat"])?;
    server.strata_ok(&["account", "delete", "shop", "--purge"])?;
    ensure!(
        server.swift_token(&carol).is_err(),
        "a user of a deleted account logged in"
    );
    ensure!(
        !server
            .strata_ok(&["account", "list"])?
            .stdout_text()
            .contains("shop "),
        "account still listed"
    );

    // Signing key rotation: old tokens verify through the overlap, and not
    // once the key that signed them is retired.
    let root = SwiftUser::root();
    let (old_token, root_url) = server.swift_token(&root)?;
    let root_base = root_url.trim_start_matches(server.endpoint()).to_owned();
    server.strata_ok(&["key", "rotate-signing", "--overlap", "3600"])?;
    swift_http(&server, &old_token, "HEAD", &root_base, None, &[])?.expect_status(204)?;
    let (new_token, _) = server.swift_token(&root)?;
    ensure!(new_token != old_token, "the new key signed the same token");
    server.strata_ok(&["key", "rotate-signing", "--overlap", "0"])?;
    swift_http(&server, &old_token, "HEAD", &root_base, None, &[])?.expect_status(401)?;
    swift_http(&server, &new_token, "HEAD", &root_base, None, &[])?.expect_status(401)?;

    // Non-admins cannot use the admin API.
    let other = server.create_user("plain", "pat", "admin")?;
    let output = server.strata(&[
        "account",
        "list",
        "--admin-user",
        "plain:pat",
        "--admin-key",
        &other.key,
    ])?;
    ensure!(
        !output.success() && output.stderr_text().contains("403"),
        "{output}"
    );
    Ok(())
}

#[test]
fn auth_only_gateway_serves_tokens_and_nothing_else() -> Result<()> {
    let server = Server::start_with_config("only = [\"auth\"]\n")?;
    let root = SwiftUser::root();
    let (token, url) = server.swift_token(&root)?;
    let base = url.trim_start_matches(server.endpoint()).to_owned();
    swift_http(&server, &token, "GET", &base, None, &[])?.expect_status(404)?;
    server
        .http("GET", "/", Signing::Root, None, &[])?
        .expect_status(404)?;
    Ok(())
}

/// An upload decided against a container that is deleted and created
/// again before its body has arrived is refused (404), not written into
/// the new container: the write is pinned to the container it was allowed
/// into, its incarnation as well as its owner. The `100 Continue` says the
/// server has checked the container and now reads the body.
#[test]
fn an_upload_into_a_container_replaced_meanwhile_is_refused() -> Result<()> {
    use std::io::Write as _;
    let server = Server::start()?;
    let (token, _) = server.swift_token(&SwiftUser::root())?;
    let container = unique_bucket("pinned");
    let path = format!("/v1/AUTH_admin/{container}");
    swift_http(&server, &token, "PUT", &path, None, &[])?.expect_status(201)?;

    let authority = server
        .endpoint()
        .strip_prefix("http://")
        .context("not http")?;
    let stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    write!(
        writer,
        "PUT {path}/late.txt HTTP/1.1\r\nHost: {authority}\r\nX-Auth-Token: {token}\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )?;
    let mut reader = std::io::BufReader::new(stream);
    let interim = strata_tests::read_response_head(&mut reader)?;
    ensure!(
        interim.first().is_some_and(|line| line.contains(" 100 ")),
        "no 100 Continue: {interim:?}"
    );

    swift_http(&server, &token, "DELETE", &path, None, &[])?.expect_status(204)?;
    swift_http(&server, &token, "PUT", &path, None, &[])?.expect_status(201)?;
    writer.write_all(b"5\r\nhello\r\n0\r\n\r\n")?;
    let head = strata_tests::read_response_head(&mut reader)?;
    ensure!(
        head.first().is_some_and(|line| line.contains(" 404 ")),
        "the upload was not refused: {head:?}"
    );

    let listing = swift_http(&server, &token, "GET", &path, None, &[])?;
    listing.expect_status(204)?;
    swift_http(
        &server,
        &token,
        "GET",
        &format!("{path}/late.txt"),
        None,
        &[],
    )?
    .expect_status(404)?;
    Ok(())
}

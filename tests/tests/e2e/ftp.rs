//! The FTP door with lftp and curl: what a content manager
//! does with an FTP client, seen through S3, Swift and the public edge.

use std::fs;

use anyhow::{Result, ensure};
use strata_tests::{
    ROOT_SECRET_KEY, Server, Signing, SwiftUser, random_bytes, unique_bucket, url_encode,
};

/// `ftp://HOST:PORT/path` with the root user's unique name `admin` and the
/// password percent-encoded, for curl.
fn curl_url(server: &Server, path: &str) -> String {
    let password = url_encode(ROOT_SECRET_KEY, b"");
    let host = server.ftp_endpoint().trim_start_matches("ftp://");
    format!("ftp://admin:{password}@{host}{path}")
}

#[test]
fn lftp_uploads_lists_resumes_renames_and_deletes() -> Result<()> {
    let server = Server::start()?;
    ensure!(
        server.ftp_endpoint().starts_with("ftp://"),
        "no FTP door announced"
    );
    let root = SwiftUser::root();
    let container = unique_bucket("ftp");
    let work = server.work_dir("lftp")?;
    let local = work.display();
    let big = random_bytes(6 * 1024 * 1024 + 123);
    fs::write(work.join("big.bin"), &big)?;
    fs::write(work.join("note.txt.filepart"), b"hello from ftp\n")?;

    let listing = server
        .lftp_ok(
            &root.login(),
            &root.key,
            &format!(
                "mkdir {container}; cd {container}; mkdir docs; lcd {local}; \
                 put big.bin -o docs/big.bin; put note.txt.filepart; \
                 mv note.txt.filepart note.txt; cls -l docs; cls -1"
            ),
            // WinSCP's upload-then-rename, done with lftp's mv (RNFR/RNTO).
        )?
        .stdout_text();
    ensure!(
        listing.contains("big.bin") && listing.contains(&big.len().to_string()),
        "{listing}"
    );
    ensure!(
        listing.contains("note.txt") && !listing.contains("filepart"),
        "{listing}"
    );
    ensure!(listing.contains("docs/"), "MKD made a directory: {listing}");

    // The same bytes through Swift and S3; the rename left one name only.
    let swift = server.swift_as_root(
        "GET",
        &format!("/v1/AUTH_admin/{container}/docs/big.bin"),
        None,
        &[],
    )?;
    swift.expect_status(200)?;
    ensure!(swift.body == big, "Swift read different bytes");
    let s3 = server.http(
        "GET",
        &format!("/{container}/note.txt"),
        Signing::Root,
        None,
        &[],
    )?;
    s3.expect_status(200)?;
    ensure!(s3.body == b"hello from ftp\n", "{s3}");
    server
        .swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{container}/note.txt.filepart"),
            None,
            &[],
        )?
        .expect_status(404)?;
    server
        .swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{container}/docs/"),
            None,
            &[],
        )?
        .expect_status(200)?;

    // A download cut short resumes where it stopped (REST + RETR).
    fs::write(work.join("resumed.bin"), &big[..2_500_000])?;
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("lcd {local}; get -c /{container}/docs/big.bin -o resumed.bin"),
    )?;
    ensure!(
        fs::read(work.join("resumed.bin"))? == big,
        "resumed download differs"
    );

    // A directory with files is not removed; files and empty directories are.
    let refused = server.lftp(
        &root.login(),
        &root.key,
        &format!("rmdir /{container}/docs"),
    )?;
    ensure!(
        !refused.success(),
        "rmdir of a non-empty directory succeeded\n{refused}"
    );
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("cd /{container}; rm docs/big.bin note.txt; rmdir docs; cd /; rmdir {container}"),
    )?;
    server
        .swift_as_root("HEAD", &format!("/v1/AUTH_admin/{container}"), None, &[])?
        .expect_status(404)?;
    Ok(())
}

#[test]
fn curl_uploads_appends_renames_and_reads_sizes_and_times() -> Result<()> {
    let server = Server::start()?;
    let container = unique_bucket("curlftp");
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{container}"), None, &[])?
        .expect_status(201)?;
    let work = server.work_dir("curlftp")?;
    let body = random_bytes(1_500_000);
    fs::write(work.join("upload.bin"), &body)?;
    let upload = work.join("upload.bin").display().to_string();

    // A user name that only one account has logs in without its account.
    server
        .curl(&[
            "-sS",
            "--ftp-create-dirs",
            "-T",
            &upload,
            &curl_url(&server, &format!("/{container}/in/a.bin")),
        ])?
        .expect_success()?;
    let head = server
        .curl(&[
            "-sS",
            "-I",
            &curl_url(&server, &format!("/{container}/in/a.bin")),
        ])?
        .expect_success()?
        .stdout_text();
    ensure!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "SIZE: {head}"
    );
    ensure!(head.contains("Last-Modified:"), "MDTM: {head}");

    // APPE adds to the end of the file.
    fs::write(work.join("tail.bin"), b"-tail")?;
    server
        .curl(&[
            "-sS",
            "--append",
            "-T",
            &work.join("tail.bin").display().to_string(),
            &curl_url(&server, &format!("/{container}/in/a.bin")),
        ])?
        .expect_success()?;
    let mut appended = body.clone();
    appended.extend_from_slice(b"-tail");
    let read = server
        .curl(&["-sS", &curl_url(&server, &format!("/{container}/in/a.bin"))])?
        .expect_success()?;
    ensure!(
        read.stdout == appended,
        "APPE result differs ({} bytes)",
        read.stdout.len()
    );

    // A ranged download (REST) and a listing.
    let ranged = server
        .curl(&[
            "-sS",
            "-r",
            "1000000-",
            &curl_url(&server, &format!("/{container}/in/a.bin")),
        ])?
        .expect_success()?;
    ensure!(ranged.stdout == appended[1_000_000..], "REST read differs");
    let listing = server
        .curl(&["-sS", &curl_url(&server, &format!("/{container}/in/"))])?
        .expect_success()?
        .stdout_text();
    ensure!(
        listing.contains("a.bin") && listing.contains(&appended.len().to_string()),
        "{listing}"
    );

    // Rename and delete with quoted commands.
    server
        .curl(&[
            "-sS",
            "-Q",
            &format!("RNFR /{container}/in/a.bin"),
            "-Q",
            &format!("RNTO /{container}/b.bin"),
            &curl_url(&server, "/"),
        ])?
        .expect_success()?;
    server
        .swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{container}/in/a.bin"),
            None,
            &[],
        )?
        .expect_status(404)?;
    let moved = server.swift_as_root(
        "GET",
        &format!("/v1/AUTH_admin/{container}/b.bin"),
        None,
        &[],
    )?;
    ensure!(moved.status == 200 && moved.body == appended, "{moved}");
    server
        .curl(&[
            "-sS",
            "-Q",
            &format!("DELE /{container}/b.bin"),
            &curl_url(&server, "/"),
        ])?
        .expect_success()?;
    server
        .swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{container}/b.bin"),
            None,
            &[],
        )?
        .expect_status(404)?;
    let missing = server.curl(&["-sS", &curl_url(&server, &format!("/{container}/b.bin"))])?;
    ensure!(
        !missing.success(),
        "RETR of a deleted file succeeded\n{missing}"
    );
    Ok(())
}

#[test]
fn ftp_writes_purge_the_public_edge() -> Result<()> {
    let server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("ftpedge");
    server
        .swift_as_root(
            "PUT",
            &format!("/v1/AUTH_admin/{container}"),
            None,
            &[("X-Container-Read", ".r:*,.rlistings")],
        )?
        .expect_status(201)?;
    let work = server.work_dir("ftpedge")?;
    let local = work.display();
    fs::write(work.join("logo.gif"), b"GIF89a-first")?;
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("lcd {local}; put logo.gif -o /{container}/logo.gif"),
    )?;

    let url = format!("/v1/AUTH_admin/{container}/logo.gif");
    let anonymous = |server: &Server| server.http("GET", &url, Signing::Anonymous, None, &[]);
    anonymous(&server)?.expect_status(200)?;
    let hit = anonymous(&server)?;
    ensure!(
        hit.header("x-cache") == Some("HIT") && hit.body == b"GIF89a-first",
        "{hit}"
    );
    let listing = server.http(
        "GET",
        &format!("/v1/AUTH_admin/{container}?format=json"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(listing.body_text().contains("logo.gif"), "{listing}");

    fs::write(work.join("logo.gif"), b"GIF89a-second")?;
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("lcd {local}; put logo.gif -o /{container}/logo.gif"),
    )?;
    let fresh = anonymous(&server)?;
    ensure!(
        fresh.body == b"GIF89a-second",
        "old bytes after an FTP overwrite: {fresh}"
    );

    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("rm /{container}/logo.gif"),
    )?;
    anonymous(&server)?.expect_status(404)?;
    let listing = server.http(
        "GET",
        &format!("/v1/AUTH_admin/{container}?format=json"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(
        !listing.body_text().contains("logo.gif"),
        "listing still shows a deleted file: {listing}"
    );
    Ok(())
}

#[test]
fn ftp_refuses_wrong_passwords_foreign_containers_and_missing_roles() -> Result<()> {
    let server = Server::start()?;
    let private = unique_bucket("rootonly");
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{private}"), None, &[])?
        .expect_status(201)?;
    let writer = server.create_user("media", "editor", "writer")?;
    let reader = server.create_user("media", "viewer", "reader")?;
    let shared = unique_bucket("media");
    let boss = server.create_user("media", "boss", "admin")?;
    server
        .swift_as(&boss, "PUT", &format!("/v1/AUTH_media/{shared}"), None, &[])?
        .expect_status(201)?;

    let wrong = server.lftp(&writer.login(), "not-the-key", "ls")?;
    ensure!(
        !wrong.success() && wrong.stderr_text().contains("530"),
        "{wrong}"
    );
    let unknown = server.lftp("nobody", "x", "ls")?;
    ensure!(!unknown.success(), "{unknown}");

    // The root of a session is its own account: other accounts' containers
    // are neither listed nor reachable, whatever the path says.
    let listed = server
        .lftp_ok(&writer.login(), &writer.key, "cls -1 /; cd /../..; cls -1")?
        .stdout_text();
    ensure!(
        listed.contains(&shared) && !listed.contains(&private),
        "{listed}"
    );
    let foreign = server.lftp(&writer.login(), &writer.key, &format!("cls /{private}/"))?;
    ensure!(
        !foreign.success(),
        "another account's container was listed\n{foreign}"
    );

    let work = server.work_dir("roles")?;
    let local = work.display();
    fs::write(work.join("f.txt"), b"x")?;
    server.lftp_ok(
        &writer.login(),
        &writer.key,
        &format!("lcd {local}; put f.txt -o /{shared}/f.txt"),
    )?;
    let no_container = server.lftp(&writer.login(), &writer.key, "mkdir newcontainer")?;
    ensure!(
        !no_container.success(),
        "a writer created a container\n{no_container}"
    );
    let read_only = server.lftp(
        &reader.login(),
        &reader.key,
        &format!("lcd {local}; put f.txt -o /{shared}/g.txt"),
    )?;
    ensure!(!read_only.success(), "a reader uploaded\n{read_only}");
    let fetched = server.lftp_ok(
        &reader.login(),
        &reader.key,
        &format!("cat /{shared}/f.txt"),
    )?;
    ensure!(fetched.stdout == b"x", "{fetched}");
    Ok(())
}

#[test]
fn interrupted_ftp_uploads_leave_nothing_and_the_last_complete_one_wins() -> Result<()> {
    let mut server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("ftpcut");
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{container}"), None, &[])?
        .expect_status(201)?;
    let output = server.python_ok(
        "ftp_interrupted_upload.py",
        &[server.ftp_endpoint(), &root.login(), &root.key, &container],
    )?;
    ensure!(output.stdout_text().contains("ok"), "{output}");
    server
        .swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{container}/new.bin"),
            None,
            &[],
        )?
        .expect_status(404)?;
    server.assert_healthy()?;
    Ok(())
}

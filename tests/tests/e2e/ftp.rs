//! The FTP door with lftp and curl: what a content manager
//! does with an FTP client, seen through S3, Swift and the public edge; and
//! explicit FTPS with a certificate of a test CA (`Certificates`).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use strata_tests::{
    Certificates, KillOnDrop, ROOT_SECRET_KEY, Server, Signing, SwiftUser, openssl, random_bytes,
    unique_bucket, url_encode, utf8,
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

    // APPE adds to the end of the file; on a Swift large object, to what
    // RETR shows (the assembled segments, not the manifest).
    fs::write(work.join("tail.bin"), b"-tail")?;
    let tail = work.join("tail.bin").display().to_string();
    // swiftclient makes an SLO with --use-slo, a DLO without.
    for (name, kind) in [("slo.bin", Some("--use-slo")), ("dlo.bin", None)] {
        let mut args = vec![
            "upload",
            container.as_str(),
            upload.as_str(),
            "--object-name",
            name,
            "--segment-size",
            "500000",
        ];
        args.extend(kind);
        server.swift_ok(&SwiftUser::root(), &args)?;
    }
    let mut appended = body.clone();
    appended.extend_from_slice(b"-tail");
    for file in ["in/a.bin", "slo.bin", "dlo.bin"] {
        let url = curl_url(&server, &format!("/{container}/{file}"));
        server
            .curl(&["-sS", "--append", "-T", &tail, &url])?
            .expect_success()?;
        let read = server.curl(&["-sS", &url])?.expect_success()?;
        ensure!(
            read.stdout == appended,
            "APPE onto {file} differs ({} bytes)",
            read.stdout.len()
        );
    }

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

    // A container's write ACL lets the reader in, as through Swift; the
    // container is still not theirs to delete.
    let drop_box = unique_bucket("dropbox");
    server
        .swift_as(
            &boss,
            "PUT",
            &format!("/v1/AUTH_media/{drop_box}"),
            None,
            &[("X-Container-Write", "media:viewer")],
        )?
        .expect_status(201)?;
    server.lftp_ok(
        &reader.login(),
        &reader.key,
        &format!("lcd {local}; put f.txt -o /{drop_box}/from-viewer.txt"),
    )?;
    server
        .swift_as(
            &boss,
            "HEAD",
            &format!("/v1/AUTH_media/{drop_box}/from-viewer.txt"),
            None,
            &[],
        )?
        .expect_status(200)?;
    let removed = server.lftp(
        &reader.login(),
        &reader.key,
        &format!("rm /{drop_box}/from-viewer.txt; rmdir /{drop_box}"),
    )?;
    ensure!(
        !removed.success(),
        "a reader removed the container\n{removed}"
    );
    server
        .swift_as(
            &boss,
            "HEAD",
            &format!("/v1/AUTH_media/{drop_box}"),
            None,
            &[],
        )?
        .expect_status(204)?;
    // A container public by URL (.r:*) is not browsable by every FTP user.
    server
        .swift_as(
            &boss,
            "POST",
            &format!("/v1/AUTH_media/{shared}"),
            None,
            &[("X-Container-Read", ".r:*")],
        )?
        .expect_status(204)?;
    let outsider = server.create_user("outsiders", "olga", "admin")?;
    let browsed = server.lftp(&outsider.login(), &outsider.key, &format!("cls /{shared}/"))?;
    ensure!(
        !browsed.success(),
        "a public-read container was listed over FTP\n{browsed}"
    );
    // APPE by a user who may write but not read: the size it appends at
    // is unknown, so it is refused, never taken as 0 (which replaced the
    // file with the appended bytes).
    server
        .swift_as(
            &boss,
            "POST",
            &format!("/v1/AUTH_media/{drop_box}"),
            None,
            &[("X-Container-Write", "media:viewer,outsiders:olga")],
        )?
        .expect_status(204)?;
    let kept = format!("/v1/AUTH_media/{drop_box}/kept.txt");
    server
        .swift_as(&boss, "PUT", &kept, Some(b"kept"), &[])?
        .expect_status(201)?;
    fs::write(work.join("tail.txt"), b"-tail")?;
    let host = server.ftp_endpoint().trim_start_matches("ftp://");
    let olga_url = format!(
        "ftp://{}:{}@{host}/{drop_box}/kept.txt",
        url_encode(&outsider.login(), b""),
        url_encode(&outsider.key, b"")
    );
    // Olga does reach the drop box: a plain upload goes in.
    server
        .curl(&[
            "-sS",
            // No CWD: the drop box is not Olga's to browse.
            "--ftp-method",
            "nocwd",
            "-T",
            utf8(&work.join("tail.txt"))?,
            &olga_url.replace("kept.txt", "from-olga.txt"),
        ])?
        .expect_success()?;
    let appended = server.curl(&[
        "-sS",
        "--ftp-method",
        "nocwd",
        "--append",
        "-T",
        utf8(&work.join("tail.txt"))?,
        &olga_url,
    ])?;
    ensure!(!appended.success(), "APPE without read access\n{appended}");
    let read = server.swift_as(&boss, "GET", &kept, None, &[])?;
    ensure!(read.body == b"kept", "APPE replaced the file: {read}");
    Ok(())
}

/// Runs `tests/py/<script> FTP_URL LOGIN PASSWORD CONTAINER` as the root
/// user against a fresh server and a new container; passes once the script
/// said `ok`, the keys `absent` are not in the container (as Swift sees
/// it), and the server still serves.
fn ftp_script_passes(script: &str, prefix: &str, absent: &[&str]) -> Result<()> {
    let mut server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket(prefix);
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{container}"), None, &[])?
        .expect_status(201)?;
    let output = server.python_ok(
        script,
        &[server.ftp_endpoint(), &root.login(), &root.key, &container],
    )?;
    ensure!(output.stdout_text().contains("ok"), "{output}");
    for key in absent {
        server
            .swift_as_root(
                "HEAD",
                &format!("/v1/AUTH_admin/{container}/{key}"),
                None,
                &[],
            )?
            .expect_status(404)?;
    }
    server.assert_healthy()
}

/// A file never takes a folder's name by STOR or RNTO, nor a folder a
/// file's; of two APPEs to one file at once, the second to end is refused
/// (450) instead of dropping the first's bytes.
#[test]
fn ftp_refuses_name_clashes_and_a_lost_append() -> Result<()> {
    ftp_script_passes("ftp_clashes.py", "ftpclash", &["docs"])
}

/// An FTP session lasts as long as its client keeps it busy: revoking the
/// user's tokens ends it too, at its next command, as it ends the user's
/// Swift tokens.
#[test]
fn an_ftp_session_ends_when_its_users_tokens_are_revoked() -> Result<()> {
    let mut server = Server::start()?;
    let editor = server.create_user("ftprevoke", "editor", "admin")?;
    let container = unique_bucket("ftprevoke");
    let work = server.work_dir("revoke")?;
    let go_file = work.join("go");
    let mut command = server.python_command(
        "ftp_revoked.py",
        &[
            server.ftp_endpoint(),
            &editor.login(),
            &editor.key,
            &container,
            utf8(&go_file)?,
        ],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut session = KillOnDrop(command.spawn().context("spawning the FTP session")?);
    let stdout = session.0.stdout.take().context("the session's output")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    ensure!(first == "ready", "the session did not start: {first:?}");

    server.strata_ok(&["user", "revoke", "ftprevoke", "editor"])?;
    fs::write(&go_file, b"")?;
    let rest: Vec<String> = lines.collect::<Result<_, _>>()?;
    let mut stderr = String::new();
    if let Some(mut err) = session.0.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    let status = session.0.wait()?;
    ensure!(
        status.success() && rest.iter().any(|line| line == "ok"),
        "the revoked session ({status}):\n{rest:?}\n{stderr}"
    );
    // The refused upload stored nothing (the user's key still works:
    // revocation ends tokens and sessions, not the key).
    server
        .swift_as(
            &editor,
            "HEAD",
            &format!("/v1/AUTH_ftprevoke/{container}/after.txt"),
            None,
            &[],
        )?
        .expect_status(404)?;
    server.assert_healthy()
}

#[test]
fn interrupted_ftp_uploads_leave_nothing_and_the_last_complete_one_wins() -> Result<()> {
    ftp_script_passes("ftp_interrupted_upload.py", "ftpcut", &["new.bin"])
}

/// REST applies to the next transfer only: after a failed resumed RETR or
/// STOR, later transfers of the session start at 0 (libunftp kept the
/// offset until a transfer succeeded; strata's vendored copy clears it).
#[test]
fn a_rest_offset_does_not_outlive_a_failed_transfer() -> Result<()> {
    ftp_script_passes("ftp_rest_offsets.py", "ftprest", &[])
}

/// SIZE of a folder or container is 550, not the 213 0 of an empty file.
#[test]
fn size_is_of_files_only() -> Result<()> {
    ftp_script_passes("ftp_size.py", "ftpsize", &[])
}

/// ABOR cancels an upload while its data connection is open: the file it
/// would have replaced keeps its bytes, and a new name is not created
/// (libunftp held the session's lock for the whole transfer, so ABOR was
/// answered only after the upload had been stored).
#[test]
fn an_aborted_upload_stores_nothing() -> Result<()> {
    ftp_script_passes("ftp_abort.py", "ftpabort", &["never.txt"])
}

/// RNFR/RNTO of a folder (FileZilla's "rename" on a directory) moves every
/// key below it, its marker and subfolders included; renaming onto a folder
/// that has keys, or into itself, is refused and moves nothing.
#[test]
fn ftp_renames_folders_key_by_key() -> Result<()> {
    let mut server = Server::start()?;
    let root = SwiftUser::root();
    let container = unique_bucket("ftp-folders");
    let put = |key: &str, body: &[u8]| -> Result<()> {
        let path = format!("/v1/AUTH_admin/{container}/{key}");
        let response = server.swift_as_root("PUT", &path, Some(body), &[])?;
        ensure!(response.status == 201, "PUT {key}: {}", response.status);
        Ok(())
    };
    let created = server.swift_as_root("PUT", &format!("/v1/AUTH_admin/{container}"), None, &[])?;
    ensure!(created.status == 201, "container: {}", created.status);
    put("site/", b"")?;
    put("site/index.html", b"<h1>home</h1>")?;
    put("site/img/logo.gif", b"GIF89a")?;
    put("other/keep.txt", b"kept")?;

    let refused = server.lftp(
        &root.login(),
        &root.key,
        &format!("cd {container}; mv site other"),
    )?;
    ensure!(
        !refused.status.success(),
        "renaming onto a folder with keys was accepted:\n{}",
        refused.stdout_text()
    );
    let refused = server.lftp(
        &root.login(),
        &root.key,
        &format!("cd {container}; mv site site/inner"),
    )?;
    ensure!(
        !refused.status.success(),
        "renaming a folder into itself was accepted"
    );

    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("cd {container}; mv site www"),
    )?;
    let listing = server.swift_as_root(
        "GET",
        &format!("/v1/AUTH_admin/{container}?format=json"),
        None,
        &[],
    )?;
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&listing.body)?
        .iter()
        .filter_map(|entry| entry["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        names
            == [
                "other/keep.txt",
                "www/",
                "www/img/logo.gif",
                "www/index.html"
            ],
        "after mv site www: {names:?}"
    );
    let logo = server.swift_as_root(
        "GET",
        &format!("/v1/AUTH_admin/{container}/www/img/logo.gif"),
        None,
        &[],
    )?;
    ensure!(logo.body == b"GIF89a", "the moved object's bytes differ");
    server.assert_healthy()
}

/// lftp settings for explicit FTPS: AUTH TLS before the login, PROT P for
/// data connections, the certificate verified against `ca_file`, and a
/// debug log of the exchange on stderr.
fn lftp_tls_settings(ca_file: &Path) -> String {
    format!(
        "set ftp:ssl-allow true; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:verify-certificate true; set ssl:ca-file {}; debug 5",
        ca_file.display()
    )
}

#[test]
fn ftps_with_lftp_and_curl_verifies_the_certificate_and_keeps_bytes() -> Result<()> {
    let certs = tempfile::Builder::new().prefix("strata-ftps-").tempdir()?;
    let Certificates { ca, cert, key, .. } = Certificates::make(certs.path())?;
    let server =
        Server::start_with_args(&["--ftp-tls-cert", utf8(&cert)?, "--ftp-tls-key", utf8(&key)?])?;
    let root = SwiftUser::root();
    let container = unique_bucket("ftps");
    let work = server.work_dir("ftps")?;
    let local = work.display();
    let body = random_bytes(3 * 1024 * 1024 + 17);
    fs::write(work.join("report.bin"), &body)?;
    let tls = lftp_tls_settings(&ca);

    // lftp: MKD, STOR, LIST and RETR over PASV, every data connection in TLS.
    let session = server.lftp_with(
        &tls,
        &root.login(),
        &root.key,
        &format!(
            "mkdir {container}; cd {container}; lcd {local}; put report.bin; cls -l; \
             get report.bin -o back-pasv.bin"
        ),
    )?;
    let session = session.expect_success()?;
    let log = session.stderr_text();
    ensure!(
        log.contains("---> AUTH TLS") && log.contains("<--- 234"),
        "{session}"
    );
    ensure!(
        log.contains("---> PROT P") && log.contains("<--- 200 PROT OK"),
        "{session}"
    );
    ensure!(
        log.contains("<--- 227 Entering Passive Mode"),
        "no PASV\n{session}"
    );
    ensure!(
        session.stdout_text().contains("report.bin")
            && session.stdout_text().contains(&body.len().to_string()),
        "listing over TLS\n{session}"
    );
    ensure!(
        fs::read(work.join("back-pasv.bin"))? == body,
        "lftp downloaded different bytes over PASV"
    );
    // The same download over EPSV.
    let epsv = server
        .lftp_with(
            &format!("{tls}; set ftp:prefer-epsv true"),
            &root.login(),
            &root.key,
            &format!("lcd {local}; get /{container}/report.bin -o back-epsv.bin"),
        )?
        .expect_success()?;
    ensure!(
        epsv.stderr_text()
            .contains("<--- 229 Entering Extended Passive Mode"),
        "no EPSV\n{epsv}"
    );
    ensure!(
        fs::read(work.join("back-epsv.bin"))? == body,
        "lftp downloaded different bytes over EPSV"
    );

    // curl: upload and download with --ssl-reqd (AUTH TLS, PROT P, EPSV).
    let ftp_host = server.ftp_endpoint().trim_start_matches("ftp://");
    let password = url_encode(ROOT_SECRET_KEY, b"");
    let curl_url = format!("ftp://admin:{password}@{ftp_host}/{container}/curl.bin");
    let cacert = utf8(&ca)?;
    let upload = utf8(&work.join("report.bin"))?.to_owned();
    let stored = server
        .curl(&[
            "-sS",
            "-v",
            "--ssl-reqd",
            "--cacert",
            cacert,
            "-T",
            &upload,
            &curl_url,
        ])?
        .expect_success()?;
    let log = stored.stderr_text();
    ensure!(log.contains("SSL certificate verify ok"), "{stored}");
    ensure!(
        log.contains("> PROT P") && log.contains("< 229 "),
        "{stored}"
    );
    // One handshake for the control connection, one for the data connection.
    ensure!(
        log.matches("SSL connection using").count() >= 2,
        "the data connection was not in TLS\n{stored}"
    );
    let fetched = server
        .curl(&["-sS", "--ssl-reqd", "--cacert", cacert, &curl_url])?
        .expect_success()?;
    ensure!(
        fetched.stdout == body,
        "curl downloaded different bytes ({} bytes)",
        fetched.stdout.len()
    );
    // Without the generated CA the same certificate is not trusted: the
    // clients above really verified it.
    let untrusted = server.curl(&["-sS", "--ssl-reqd", &curl_url])?;
    ensure!(untrusted.status.code() == Some(60), "{untrusted}");

    for name in ["report.bin", "curl.bin"] {
        let swift = server.swift_as_root(
            "GET",
            &format!("/v1/AUTH_admin/{container}/{name}"),
            None,
            &[],
        )?;
        swift.expect_status(200)?;
        ensure!(swift.body == body, "Swift read different bytes for {name}");
    }

    // TLS is offered, not imposed: plain FTP still works on this server.
    let plain = server
        .lftp_ok(&root.login(), &root.key, &format!("cls -1 /{container}/"))?
        .stdout_text();
    ensure!(plain.contains("curl.bin"), "{plain}");
    Ok(())
}

#[test]
fn ftp_require_tls_refuses_plain_text_and_serves_tls() -> Result<()> {
    let certs = tempfile::Builder::new().prefix("strata-ftps-").tempdir()?;
    let Certificates { ca, cert, key, .. } = Certificates::make(certs.path())?;
    let mut server = Server::start_with_args(&[
        "--ftp-tls-cert",
        utf8(&cert)?,
        "--ftp-tls-key",
        utf8(&key)?,
        "--ftp-require-tls",
    ])?;
    let root = SwiftUser::root();
    let container = unique_bucket("ftpsonly");
    server
        .swift_as_root("PUT", &format!("/v1/AUTH_admin/{container}"), None, &[])?
        .expect_status(201)?;
    let work = server.work_dir("ftpsonly")?;
    let local = work.display();
    let body = random_bytes(700_000);
    fs::write(work.join("secret.bin"), &body)?;
    let upload = utf8(&work.join("secret.bin"))?.to_owned();
    let ftp_host = server
        .ftp_endpoint()
        .trim_start_matches("ftp://")
        .to_owned();
    let password = url_encode(ROOT_SECRET_KEY, b"");
    let url = |name: &str| format!("ftp://admin:{password}@{ftp_host}/{container}/{name}");

    // A plain-text login is refused before the password is sent: 534 to USER.
    let curl_plain = server.curl(&["-sS", "-v", "-T", &upload, &url("curl-plain.bin")])?;
    ensure!(
        curl_plain.status.code() == Some(67)
            && curl_plain
                .stderr_text()
                .contains("< 534 A TLS connection is required on the control channel")
            && !curl_plain.stderr_text().contains("> PASS"),
        "{curl_plain}"
    );
    let lftp_plain = server.lftp(
        &root.login(),
        &root.key,
        &format!("lcd {local}; put secret.bin -o /{container}/lftp-plain.bin"),
    )?;
    ensure!(
        !lftp_plain.success() && lftp_plain.stderr_text().contains("534"),
        "{lftp_plain}"
    );
    // A TLS login that asks for clear data connections (PROT C) gets no
    // passive data port.
    let clear_data = server.lftp_with(
        &format!("{}; set ftp:ssl-protect-data false", lftp_tls_settings(&ca)),
        &root.login(),
        &root.key,
        &format!("lcd {local}; put secret.bin -o /{container}/clear-data.bin"),
    )?;
    ensure!(
        !clear_data.success()
            && clear_data
                .stderr_text()
                .contains("534 A TLS connection is required on the data channel"),
        "{clear_data}"
    );
    // Nor an extended passive one (EPSV).
    let clear_epsv = server.lftp_with(
        &format!(
            "{}; set ftp:ssl-protect-data false; set ftp:prefer-epsv true",
            lftp_tls_settings(&ca)
        ),
        &root.login(),
        &root.key,
        &format!("lcd {local}; put secret.bin -o /{container}/clear-epsv.bin"),
    )?;
    ensure!(
        !clear_epsv.success()
            && clear_epsv.stderr_text().contains("---> EPSV")
            && clear_epsv
                .stderr_text()
                .contains("534 A TLS connection is required on the data channel"),
        "{clear_epsv}"
    );
    for name in [
        "curl-plain.bin",
        "lftp-plain.bin",
        "clear-data.bin",
        "clear-epsv.bin",
    ] {
        server
            .swift_as_root(
                "HEAD",
                &format!("/v1/AUTH_admin/{container}/{name}"),
                None,
                &[],
            )?
            .expect_status(404)?;
    }

    // TLS sessions on the same server work, in PASV (lftp) and EPSV (curl).
    server
        .lftp_with(
            &lftp_tls_settings(&ca),
            &root.login(),
            &root.key,
            &format!("lcd {local}; put secret.bin -o /{container}/tls.bin"),
        )?
        .expect_success()?;
    let cacert = utf8(&ca)?;
    let fetched = server
        .curl(&["-sS", "--ssl-reqd", "--cacert", cacert, &url("tls.bin")])?
        .expect_success()?;
    ensure!(fetched.stdout == body, "curl read different bytes over TLS");
    let swift = server.swift_as_root(
        "GET",
        &format!("/v1/AUTH_admin/{container}/tls.bin"),
        None,
        &[],
    )?;
    swift.expect_status(200)?;
    ensure!(swift.body == body, "Swift read different bytes");
    server.assert_healthy()?;
    Ok(())
}

#[test]
fn ftp_tls_misconfiguration_stops_strata_at_start() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("strata-ftps-").tempdir()?;
    let Certificates { cert, key, .. } = Certificates::make(&dir.path().join("good"))?;
    let other_key = Certificates::make(&dir.path().join("other"))?.key;
    let (cert, key, other_key) = (utf8(&cert)?, utf8(&key)?, utf8(&other_key)?);
    // DER files where PEM is expected: the likeliest mix-up.
    let cert_der = dir.path().join("cert.der");
    let key_der = dir.path().join("key.der");
    let (cert_der, key_der) = (utf8(&cert_der)?, utf8(&key_der)?);
    openssl(&["x509", "-in", cert, "-outform", "DER", "-out", cert_der])?;
    openssl(&["pkey", "-in", key, "-outform", "DER", "-out", key_der])?;
    let missing = dir.path().join("missing.pem");
    let missing = utf8(&missing)?;

    let check = |args: &[&str], expected: &[&str]| -> Result<()> {
        let output = Server::serve_until_exit(args)
            .with_context(|| format!("strata serve {args:?}"))?
            .expect_failure()?;
        let stderr = output.stderr_text();
        ensure!(
            expected.iter().all(|part| stderr.contains(part)),
            "expected {expected:?} in the error\n{output}"
        );
        ensure!(
            !output.stdout_text().contains("listening on"),
            "strata served before refusing\n{output}"
        );
        Ok(())
    };
    check(&["--ftp-tls-cert", cert], &["--ftp-tls-key", "is not"])?;
    check(&["--ftp-tls-key", key], &["--ftp-tls-cert", "is not"])?;
    check(&["--ftp-require-tls"], &["--ftp-require-tls", "needs"])?;
    check(
        &["--ftp-tls-cert", cert_der, "--ftp-tls-key", key],
        &[cert_der, "not a PEM certificate"],
    )?;
    check(
        &["--ftp-tls-cert", cert, "--ftp-tls-key", key_der],
        &[key_der, "not a PEM private key"],
    )?;
    check(
        &["--ftp-tls-cert", key, "--ftp-tls-key", cert],
        &[key, "not a PEM certificate"],
    )?;
    check(
        &["--ftp-tls-cert", missing, "--ftp-tls-key", key],
        &[missing, "No such file"],
    )?;
    check(
        &["--ftp-tls-cert", cert, "--ftp-tls-key", other_key],
        &[cert, other_key, "KeyMismatch"],
    )?;
    Ok(())
}

/// Behind NAT, PASV replies name the address clients reach the gateway at
/// (`--ftp-passive-host`), not the control connection's.
#[test]
fn passive_replies_name_the_configured_host() -> Result<()> {
    let server = Server::start_with_args(&["--ftp-passive-host", "203.0.113.7"])?;
    // curl is told to use the control connection's address for the data
    // connection anyway: 203.0.113.7 is not reachable from here.
    let listing = server.curl(&[
        "-sS",
        "-v",
        "--disable-epsv",
        "--ftp-skip-pasv-ip",
        &curl_url(&server, "/"),
    ])?;
    ensure!(listing.success(), "{listing}");
    ensure!(
        listing
            .stderr_text()
            .contains("227 Entering Passive Mode (203,0,113,7,"),
        "{listing}"
    );
    Ok(())
}

/// A folder holding more entries than one listing may (`[ftp]
/// max_list_entries`) is refused whole (550), never listed in part; a
/// smaller one, and files in the large one, still work.
#[test]
fn a_listing_over_the_configured_size_is_refused_whole() -> Result<()> {
    let server = Server::start_with_config("[ftp]\nmax_list_entries = 3\n")?;
    let container = unique_bucket("ftp-big-folder");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &container])?;
    for key in ["small/a", "big/1", "big/2", "big/3", "big/4"] {
        let put = server.http(
            "PUT",
            &format!("/{container}/{key}"),
            Signing::Root,
            Some(b"x"),
            &[],
        )?;
        ensure!(put.status == 200, "{put}");
    }
    let small = server.curl(&["-sS", &curl_url(&server, &format!("/{container}/small/"))])?;
    ensure!(
        small.success() && small.stdout_text().contains(" a"),
        "{small}"
    );
    let big = server.curl(&[
        "-sS",
        "-v",
        &curl_url(&server, &format!("/{container}/big/")),
    ])?;
    ensure!(
        !big.success() && big.stderr_text().contains("< 550"),
        "a folder of 4 entries was listed with a limit of 3: {big}"
    );
    let file = server.curl(&["-sS", &curl_url(&server, &format!("/{container}/big/4"))])?;
    ensure!(file.success() && file.stdout_text() == "x", "{file}");
    Ok(())
}

/// A key holding CR or LF (possible through S3 and Swift) is left out of
/// FTP listings: shown, its line break would turn the rest of its name
/// into a listing entry of its own.
#[test]
fn names_with_line_breaks_do_not_forge_listing_entries() -> Result<()> {
    let server = Server::start()?;
    let container = unique_bucket("ftpnames");
    let base = format!("/v1/AUTH_admin/{container}");
    server
        .swift_as_root("PUT", &base, None, &[])?
        .expect_status(201)?;
    server
        .swift_as_root("PUT", &format!("{base}/plain.txt"), Some(b"plain"), &[])?
        .expect_status(201)?;
    let forged = "a%0D%0A-rw-r--r--%201%20ftp%20ftp%209%20Jan%2001%2000:00%20invoice.pdf";
    server
        .swift_as_root("PUT", &format!("{base}/{forged}"), Some(b"x"), &[])?
        .expect_status(201)?;
    for (what, extra) in [("LIST", None), ("NLST", Some("--list-only"))] {
        let mut args = vec!["-sS"];
        args.extend(extra);
        let url = curl_url(&server, &format!("/{container}/"));
        args.push(&url);
        let listed = server.curl(&args)?.expect_success()?.stdout_text();
        ensure!(listed.contains("plain.txt"), "{what}: {listed}");
        ensure!(
            !listed.contains("invoice.pdf"),
            "{what} shows a forged entry:\n{listed}"
        );
    }
    Ok(())
}

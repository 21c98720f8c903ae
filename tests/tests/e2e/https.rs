//! HTTPS on the gateway's own port (`--tls-cert`): the aws CLI,
//! python-swiftclient and curl (HTTP/2 through ALPN) over TLS, trusting a
//! test CA, beside clients that stay on plain HTTP.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use strata_tests::{
    Certificates, ROOT_SECRET_KEY, Server, SwiftUser, random_bytes, run_tool, unique_bucket, utf8,
};

#[test]
fn https_and_http_share_the_port_and_swift_logins_over_tls_get_https_urls() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("strata-https-").tempdir()?;
    let certs = Certificates::make(dir.path())?;
    let mut server = Server::start_with_args(&[
        "--tls-cert",
        utf8(&certs.cert)?,
        "--tls-key",
        utf8(&certs.key)?,
    ])?;
    let https = format!("https://127.0.0.1:{}", server.port());
    let ca = utf8(&certs.ca)?;

    // The aws CLI over TLS writes what a plain-HTTP client reads back.
    let bucket = unique_bucket("https");
    let work = server.work_dir("https")?;
    let body = random_bytes(300 * 1024 + 5);
    let file = work.join("up.bin");
    fs::write(&file, &body)?;
    let aws_over_tls = |args: &[&str]| {
        let mut command = server.aws_command_at(&https, &["--ca-bundle", ca]);
        command.args(args);
        run_tool(&mut command, Duration::from_secs(60))?.expect_success()
    };
    aws_over_tls(&["s3api", "create-bucket", "--bucket", &bucket])?;
    aws_over_tls(&["s3", "cp", utf8(&file)?, &format!("s3://{bucket}/up.bin")])?;
    let back = work.join("back.bin");
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "up.bin",
        utf8(&back)?,
    ])?;
    ensure!(
        fs::read(&back)? == body,
        "bytes written over TLS read back differently"
    );

    // A multipart upload completed over TLS is located over TLS.
    let upload = aws_over_tls(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        &bucket,
        "--key",
        "parts.bin",
    ])?
    .json()?;
    let upload_id = upload["UploadId"].as_str().unwrap_or_default().to_owned();
    let part = aws_over_tls(&[
        "s3api",
        "upload-part",
        "--bucket",
        &bucket,
        "--key",
        "parts.bin",
        "--part-number",
        "1",
        "--upload-id",
        &upload_id,
        "--body",
        utf8(&file)?,
    ])?
    .json()?;
    let parts = serde_json::json!({"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]});
    let completed = aws_over_tls(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        &bucket,
        "--key",
        "parts.bin",
        "--upload-id",
        &upload_id,
        "--multipart-upload",
        &parts.to_string(),
    ])?
    .json()?;
    let location = completed["Location"].as_str().unwrap_or_default();
    ensure!(
        location == format!("{https}/{bucket}/parts.bin"),
        "{completed:#}"
    );

    // A Swift login over TLS hands out an https storage URL, one in plain
    // text an http one; python-swiftclient follows it over TLS.
    let root = SwiftUser::root();
    let storage_url = |base: &str| -> Result<String> {
        let login = server
            .curl(&[
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "--cacert",
                ca,
                "-H",
                &format!("X-Auth-User: {}", root.login()),
                "-H",
                &format!("X-Auth-Key: {}", root.key),
                &format!("{base}/auth/v1.0"),
            ])?
            .expect_success()?;
        let headers = login.stdout_text().to_ascii_lowercase();
        Ok(headers
            .lines()
            .find_map(|line| line.strip_prefix("x-storage-url: "))
            .unwrap_or_default()
            .trim()
            .to_owned())
    };
    let port = server.port();
    let over_tls = storage_url(&https)?;
    ensure!(
        over_tls == format!("https://127.0.0.1:{port}/v1/auth_admin"),
        "{over_tls}"
    );
    let in_plain_text = storage_url(server.endpoint())?;
    ensure!(
        in_plain_text == format!("http://127.0.0.1:{port}/v1/auth_admin"),
        "{in_plain_text}"
    );
    let mut swift = server.client_command("swift");
    swift
        .args([
            "-A",
            &format!("{https}/auth/v1.0"),
            "-U",
            &root.login(),
            "-K",
            &root.key,
        ])
        .args(["--os-cacert", ca, "list", &bucket]);
    let listed = run_tool(&mut swift, Duration::from_secs(60))?.expect_success()?;
    ensure!(listed.stdout_text() == "parts.bin\nup.bin\n", "{listed}");

    // The admin commands log in over TLS too, trusting --cacert.
    let admin = |extra: &[&str]| {
        let mut command = server.client_command(utf8(server.binary())?);
        command
            .args(["account", "create", "over-tls", "--url", &https])
            .args(["--admin-key", ROOT_SECRET_KEY])
            .args(extra);
        run_tool(&mut command, Duration::from_secs(60))
    };
    let untrusting = admin(&[])?.expect_failure()?;
    ensure!(
        untrusting.stderr_text().contains("UnknownIssuer"),
        "{untrusting}"
    );
    admin(&["--cacert", ca])?.expect_success()?;

    // HTTP/2 is offered to TLS clients; an untrusted certificate is refused
    // by curl, so the clients above did verify it.
    let version = server
        .curl(&[
            "-sS",
            "--http2",
            "--cacert",
            ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &format!("{https}/health"),
        ])?
        .expect_success()?;
    ensure!(version.stdout_text() == "2", "{version}");
    let untrusted = server.curl(&["-sS", &format!("{https}/health")])?;
    ensure!(untrusted.status.code() == Some(60), "{untrusted}");
    server.assert_healthy()
}

/// Certificates per host from `--tls-cert-dir`, chosen by the name a client
/// asks for (SNI): a custom domain and a wildcard get their own, other names
/// the default one (which does not name them, so curl refuses it); a file
/// added while the gateway serves is presented within seconds; a file
/// without its key is left out and the others still served.
#[test]
fn host_certificates_are_chosen_by_name_and_picked_up_while_serving() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("strata-sni-").tempdir()?;
    let certs = Certificates::make(&dir.path().join("ca"))?;
    let hosts = dir.path().join("hosts");
    certs.issue(&hosts, "st.example.com.pem", "DNS:st.example.com")?;
    certs.issue(&hosts, "_.cdn.example.net.pem", "DNS:*.cdn.example.net")?;
    fs::write(
        hosts.join("keyless.example.org.pem"),
        fs::read(&certs.cert)?,
    )?;
    let mut server = Server::start_with_args(&[
        "--tls-cert",
        utf8(&certs.cert)?,
        "--tls-key",
        utf8(&certs.key)?,
        "--tls-cert-dir",
        utf8(&hosts)?,
    ])?;
    let (port, ca) = (server.port(), utf8(&certs.ca)?);
    let reach = |host: &str| {
        server.curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca,
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("https://{host}:{port}/"),
        ])
    };
    for host in ["st.example.com", "a.cdn.example.net", "localhost"] {
        let reached = reach(host)?;
        ensure!(
            reached.success() && reached.stdout_text() != "000",
            "{host}: {reached}"
        );
    }
    for host in [
        "other.example.org",
        "keyless.example.org",
        "cdn.example.net",
        "a.b.cdn.example.net",
    ] {
        let refused = reach(host)?;
        ensure!(
            matches!(refused.status.code(), Some(51 | 60)),
            "{host} was not refused the default certificate: {refused}"
        );
    }

    certs.issue(&hosts, "late.example.com.pem", "DNS:late.example.com")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reach("late.example.com")?.success() {
        ensure!(
            Instant::now() < deadline,
            "a certificate added while serving was not presented"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A file caught halfway through a rewrite keeps its host served.
    fs::write(hosts.join("st.example.com.pem"), "-----BEGIN CERT")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .log_tail(200)
        .contains("keeping the certificate loaded before")
    {
        ensure!(Instant::now() < deadline, "the rewrite was not read");
        std::thread::sleep(Duration::from_millis(250));
    }
    let still = reach("st.example.com")?;
    ensure!(
        still.success(),
        "a broken rewrite took the certificate away: {still}"
    );
    server.assert_healthy()
}

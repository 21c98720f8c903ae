//! HTTPS on the gateway's own port (`--tls-cert`): the aws CLI,
//! python-swiftclient and curl (HTTP/2 through ALPN) over TLS, trusting a
//! test CA, beside clients that stay on plain HTTP.

use std::fs;

use anyhow::{Result, ensure};
use strata_tests::{Certificates, Server, SwiftUser, random_bytes, run_tool, unique_bucket, utf8};

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
        let mut command = server.client_command("aws");
        command.args([
            "--endpoint-url",
            &https,
            "--ca-bundle",
            ca,
            "--output",
            "json",
        ]);
        command.args(args);
        run_tool(&mut command, std::time::Duration::from_secs(60))?.expect_success()
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
    let listed = run_tool(&mut swift, std::time::Duration::from_secs(60))?.expect_success()?;
    ensure!(listed.stdout_text().trim() == "up.bin", "{listed}");

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

//! S3 static websites: Put/Get/DeleteBucketWebsite with the aws CLI (`s3api`
//! and `aws s3 website`), and what anonymous visitors get with curl — index
//! documents, redirects from `dir` to `dir/`, error documents — on path-style
//! and virtual-hosted URLs and custom domains, through the edge cache.

use anyhow::{Result, ensure};
use strata_tests::{HttpResponse, Server, Signing, unique_bucket};

fn anonymous(server: &Server, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    server.http("GET", path, Signing::Anonymous, None, headers)
}

/// Uploads `objects` (key, body) as `text/html` with the aws CLI.
fn put_pages(server: &Server, bucket: &str, objects: &[(&str, &str)]) -> Result<()> {
    let work = server.work_dir("pages")?;
    for (n, (key, body)) in objects.iter().enumerate() {
        let file = work.join(format!("page-{n}"));
        std::fs::write(&file, body)?;
        server.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--content-type",
            "text/html",
            "--body",
            &file.display().to_string(),
        ])?;
    }
    Ok(())
}

/// A bucket created with `acl` holding a home page, a `docs/` index, a
/// directory without one and an error page.
fn site_bucket(server: &Server, acl: &str) -> Result<String> {
    let bucket = unique_bucket("site");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket, "--acl", acl])?;
    put_pages(
        server,
        &bucket,
        &[
            ("index.html", "<h1>home</h1>"),
            ("docs/index.html", "<h1>docs</h1>"),
            ("files/a.txt", "a"),
            ("error.html", "<h1>oops</h1>"),
        ],
    )?;
    Ok(bucket)
}

fn set_website(server: &Server, bucket: &str, index: &str, error: &str) -> Result<()> {
    server.aws_ok(&[
        "s3",
        "website",
        &format!("s3://{bucket}"),
        "--index-document",
        index,
        "--error-document",
        error,
    ])?;
    Ok(())
}

fn expect_page(response: &HttpResponse, status: u16, body: &str) -> Result<()> {
    ensure!(
        response.status == status && response.body == body.as_bytes(),
        "expected {status} with {body}\n{response}"
    );
    ensure!(
        response.header("content-type") == Some("text/html"),
        "{response}"
    );
    Ok(())
}

fn expect_redirect(response: &HttpResponse, location: &str) -> Result<()> {
    ensure!(
        response.status == 302 && response.header("location") == Some(location),
        "expected a redirect to {location}\n{response}"
    );
    Ok(())
}

#[test]
fn website_configuration_round_trips_and_bad_input_changes_nothing() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("webcfg");
    server.aws_ok(&["s3", "mb", &format!("s3://{bucket}")])?;
    let get = ["s3api", "get-bucket-website", "--bucket", &bucket];
    server.aws_error(&get, "NoSuchWebsiteConfiguration")?;

    let put = |configuration: &str| {
        server.aws(&[
            "s3api",
            "put-bucket-website",
            "--bucket",
            &bucket,
            "--website-configuration",
            configuration,
        ])
    };
    put(r#"{"IndexDocument":{"Suffix":"index.html"},"ErrorDocument":{"Key":"errors/404.html"}}"#)?
        .expect_success()?;
    let stored = server.aws_json(&get)?;
    ensure!(
        stored["IndexDocument"]["Suffix"] == "index.html"
            && stored["ErrorDocument"]["Key"] == "errors/404.html",
        "{stored}"
    );
    // `aws s3 website` replaces the whole configuration.
    server.aws_ok(&[
        "s3",
        "website",
        &format!("s3://{bucket}"),
        "--index-document",
        "home.html",
    ])?;
    let expected = serde_json::json!({"Suffix": "home.html"});
    let stored = server.aws_json(&get)?;
    ensure!(
        stored["IndexDocument"] == expected && stored.get("ErrorDocument").is_none(),
        "{stored}"
    );

    // Refusals, each leaving the stored configuration as it was.
    for (configuration, code) in [
        (r#"{"IndexDocument":{"Suffix":""}}"#, "InvalidArgument"),
        (
            r#"{"IndexDocument":{"Suffix":"pages/index.html"}}"#,
            "InvalidArgument",
        ),
        (r#"{"ErrorDocument":{"Key":"e.html"}}"#, "InvalidArgument"),
        (
            r#"{"RedirectAllRequestsTo":{"HostName":"example.com"}}"#,
            "NotImplemented",
        ),
        (
            r#"{"IndexDocument":{"Suffix":"index.html"},"RoutingRules":[{"Redirect":{"ReplaceKeyPrefixWith":"docs/"}}]}"#,
            "NotImplemented",
        ),
    ] {
        let output = put(configuration)?.expect_failure()?;
        ensure!(
            output.stderr_text().contains(&format!("({code})")),
            "{configuration}: expected {code}\n{output}"
        );
        ensure!(server.aws_json(&get)?["IndexDocument"] == expected);
    }
    let website = format!("/{bucket}?website=");
    for body in [
        &b"<WebsiteConfiguration><IndexDocument><Suffix>x"[..],
        b"",
        b"<CORSConfiguration/>",
    ] {
        server
            .http("PUT", &website, Signing::Root, Some(body), &[])?
            .expect_s3_error(400, "MalformedXML")?;
    }
    ensure!(server.aws_json(&get)?["IndexDocument"] == expected);

    // Owner only; anonymous callers and other accounts are refused.
    let stranger = server.create_user("webstranger", "eve", "admin")?;
    let as_stranger = || Signing::Keys {
        access_key: stranger.access_key.clone(),
        secret_key: stranger.secret_key.clone(),
    };
    server
        .http("GET", &website, as_stranger(), None, &[])?
        .expect_s3_error(403, "AccessDenied")?;
    server
        .http(
            "PUT",
            &website,
            as_stranger(),
            Some(b"<WebsiteConfiguration><IndexDocument><Suffix>evil.html</Suffix></IndexDocument></WebsiteConfiguration>"),
            &[],
        )?
        .expect_s3_error(403, "AccessDenied")?;
    server
        .http("DELETE", &website, as_stranger(), None, &[])?
        .expect_s3_error(403, "AccessDenied")?;
    anonymous(&server, &website, &[])?.expect_s3_error(403, "AccessDenied")?;
    ensure!(server.aws_json(&get)?["IndexDocument"] == expected);

    // The raw answers: XML with the S3 namespace, 204 on delete.
    let raw = server.http("GET", &website, Signing::Root, None, &[])?;
    raw.expect_status(200)?;
    ensure!(
        raw.body_text()
            .contains("<IndexDocument><Suffix>home.html</Suffix></IndexDocument>"),
        "{raw}"
    );
    server
        .http("DELETE", &website, Signing::Root, None, &[])?
        .expect_status(204)?;
    server.aws_error(&get, "NoSuchWebsiteConfiguration")?;
    server.aws_ok(&["s3api", "delete-bucket-website", "--bucket", &bucket])?;
    // Objects have no website sub-resource.
    server
        .http(
            "GET",
            &format!("/{bucket}/k?website="),
            Signing::Root,
            None,
            &[],
        )?
        .expect_s3_error(501, "NotImplemented")?;
    Ok(())
}

#[test]
fn visitors_get_index_documents_redirects_and_the_error_document() -> Result<()> {
    let server = Server::start()?;
    let bucket = site_bucket(&server, "public-read")?;
    set_website(&server, &bucket, "index.html", "error.html")?;

    expect_page(
        &anonymous(&server, &format!("/{bucket}/"), &[])?,
        200,
        "<h1>home</h1>",
    )?;
    expect_redirect(
        &anonymous(&server, &format!("/{bucket}"), &[])?,
        &format!("/{bucket}/"),
    )?;
    expect_page(
        &anonymous(&server, &format!("/{bucket}/docs/"), &[])?,
        200,
        "<h1>docs</h1>",
    )?;
    expect_redirect(
        &anonymous(&server, &format!("/{bucket}/docs"), &[])?,
        &format!("/{bucket}/docs/"),
    )?;
    // Query strings of pages do not matter; curl follows the redirect.
    let followed = server.curl(&[
        "-sS",
        "-L",
        &format!("{}/{bucket}/docs?v=2", server.endpoint()),
    ])?;
    ensure!(followed.stdout_text() == "<h1>docs</h1>", "{followed}");
    for missing in ["nope.html", "files/", "docs/nope/"] {
        expect_page(
            &anonymous(&server, &format!("/{bucket}/{missing}"), &[])?,
            404,
            "<h1>oops</h1>",
        )?;
    }
    // Conditions and ranges of the missing page do not apply to the error document.
    expect_page(
        &anonymous(
            &server,
            &format!("/{bucket}/nope.html"),
            &[("Range", "bytes=0-1"), ("If-None-Match", "*")],
        )?,
        404,
        "<h1>oops</h1>",
    )?;
    let head = server.http(
        "HEAD",
        &format!("/{bucket}/"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(
        head.status == 200 && head.header("content-length") == Some("13"),
        "{head}"
    );
    server
        .http(
            "HEAD",
            &format!("/{bucket}/nope.html"),
            Signing::Anonymous,
            None,
            &[],
        )?
        .expect_status(404)?;
    // Plain objects, and listings asked for with parameters, are as before.
    let object = anonymous(&server, &format!("/{bucket}/files/a.txt"), &[])?;
    ensure!(object.status == 200 && object.body == b"a", "{object}");
    let listing = anonymous(&server, &format!("/{bucket}?list-type=2"), &[])?;
    ensure!(
        listing.status == 200 && listing.body_text().contains("<Key>files/a.txt</Key>"),
        "{listing}"
    );

    // Signed requests get the REST API's answers.
    let signed = server.http("GET", &format!("/{bucket}/"), Signing::Root, None, &[])?;
    ensure!(
        signed.status == 200 && signed.body_text().contains("<ListBucketResult"),
        "{signed}"
    );
    server
        .http("GET", &format!("/{bucket}/docs"), Signing::Root, None, &[])?
        .expect_s3_error(404, "NoSuchKey")?;
    server
        .http(
            "GET",
            &format!("/{bucket}/nope.html"),
            Signing::Root,
            None,
            &[],
        )?
        .expect_s3_error(404, "NoSuchKey")?;

    // A changed configuration applies at once, cached index or not.
    let home = format!("/{bucket}/");
    anonymous(&server, &home, &[])?;
    let cached = anonymous(&server, &home, &[])?;
    ensure!(cached.header("x-cache") == Some("HIT"), "{cached}");
    put_pages(
        &server,
        &bucket,
        &[
            ("start.htm", "<h1>start</h1>"),
            ("gone.html", "<h1>gone</h1>"),
        ],
    )?;
    set_website(&server, &bucket, "start.htm", "gone.html")?;
    expect_page(&anonymous(&server, &home, &[])?, 200, "<h1>start</h1>")?;
    expect_page(
        &anonymous(&server, &format!("/{bucket}/nope.html"), &[])?,
        404,
        "<h1>gone</h1>",
    )?;
    // docs/ has no start.htm: not a directory of this site any more.
    expect_page(
        &anonymous(&server, &format!("/{bucket}/docs"), &[])?,
        404,
        "<h1>gone</h1>",
    )?;

    // An error document that does not exist leaves the plain error.
    server.aws_ok(&[
        "s3api",
        "put-bucket-website",
        "--bucket",
        &bucket,
        "--website-configuration",
        r#"{"IndexDocument":{"Suffix":"index.html"},"ErrorDocument":{"Key":"missing.html"}}"#,
    ])?;
    expect_page(&anonymous(&server, &home, &[])?, 200, "<h1>home</h1>")?;
    anonymous(&server, &format!("/{bucket}/nope.html"), &[])?.expect_s3_error(404, "NoSuchKey")?;

    // Without a configuration: the REST answers, for visitors too.
    ensure!(anonymous(&server, &home, &[])?.header("x-cache") == Some("HIT"));
    server.aws_ok(&["s3api", "delete-bucket-website", "--bucket", &bucket])?;
    let listing = anonymous(&server, &home, &[])?;
    ensure!(
        listing.status == 200 && listing.body_text().contains("<ListBucketResult"),
        "{listing}"
    );
    anonymous(&server, &format!("/{bucket}/docs/"), &[])?.expect_s3_error(404, "NoSuchKey")?;
    anonymous(&server, &format!("/{bucket}/docs"), &[])?.expect_s3_error(404, "NoSuchKey")?;
    anonymous(&server, &format!("/{bucket}/nope.html"), &[])?.expect_s3_error(404, "NoSuchKey")?;
    Ok(())
}

#[test]
fn private_buckets_with_a_website_stay_private() -> Result<()> {
    let server = Server::start()?;
    let bucket = site_bucket(&server, "private")?;
    set_website(&server, &bucket, "index.html", "error.html")?;
    for path in ["", "/", "/index.html", "/docs", "/docs/", "/nope.html"] {
        anonymous(&server, &format!("/{bucket}{path}"), &[])?
            .expect_s3_error(403, "AccessDenied")?;
    }
    server
        .http(
            "HEAD",
            &format!("/{bucket}/"),
            Signing::Anonymous,
            None,
            &[],
        )?
        .expect_status(403)?;
    server
        .http("HEAD", &format!("/{bucket}"), Signing::Anonymous, None, &[])?
        .expect_status(403)?;
    // Through the Swift path too.
    anonymous(&server, &format!("/v1/AUTH_admin/{bucket}/"), &[])?.expect_status(401)?;
    anonymous(&server, &format!("/v1/AUTH_admin/{bucket}/docs"), &[])?.expect_status(401)?;

    // A policy that opens `docs/*` opens that directory and nothing else:
    // `docs` itself is not covered, yet redirects to what is.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/docs/*"}}]}}"#
    );
    server.aws_ok(&[
        "s3api",
        "put-bucket-policy",
        "--bucket",
        &bucket,
        "--policy",
        &policy,
    ])?;
    expect_page(
        &anonymous(&server, &format!("/{bucket}/docs/"), &[])?,
        200,
        "<h1>docs</h1>",
    )?;
    expect_redirect(
        &anonymous(&server, &format!("/{bucket}/docs"), &[])?,
        &format!("/{bucket}/docs/"),
    )?;
    anonymous(&server, &format!("/{bucket}/"), &[])?.expect_s3_error(403, "AccessDenied")?;
    anonymous(&server, &format!("/{bucket}"), &[])?.expect_s3_error(403, "AccessDenied")?;
    anonymous(&server, &format!("/{bucket}/files"), &[])?.expect_s3_error(403, "AccessDenied")?;

    // A public error document stands in for private pages, as S3 does, with
    // their 403; missing pages keep their 404.
    set_website(&server, &bucket, "index.html", "docs/index.html")?;
    for path in ["/files/a.txt", "/", "/error.html"] {
        expect_page(
            &anonymous(&server, &format!("/{bucket}{path}"), &[])?,
            403,
            "<h1>docs</h1>",
        )?;
    }
    expect_page(
        &anonymous(&server, &format!("/{bucket}/docs/nope.html"), &[])?,
        404,
        "<h1>docs</h1>",
    )?;
    Ok(())
}

#[test]
fn websites_on_virtual_hosts_and_custom_domains() -> Result<()> {
    let server = Server::start_with_config("s3_domain = \"s3.example.com\"\n")?;
    let bucket = site_bucket(&server, "public-read")?;
    set_website(&server, &bucket, "index.html", "error.html")?;
    server.strata_ok(&[
        "domain",
        "add",
        "www.example.com",
        &format!("admin/{bucket}"),
    ])?;

    let virtual_host = format!("{bucket}.s3.example.com");
    // Case, a trailing dot and a port do not change the host.
    let spelt_otherwise = format!("{}.S3.Example.COM.:8080", bucket.to_uppercase());
    for host in [
        virtual_host.as_str(),
        spelt_otherwise.as_str(),
        "www.example.com",
    ] {
        let on = |path: &str| anonymous(&server, path, &[("Host", host)]);
        expect_page(&on("/")?, 200, "<h1>home</h1>")?;
        expect_page(&on("/docs/")?, 200, "<h1>docs</h1>")?;
        expect_redirect(&on("/docs")?, "/docs/")?;
        expect_page(&on("/nope.html")?, 404, "<h1>oops</h1>")?;
        expect_page(&on("/files/")?, 404, "<h1>oops</h1>")?;
        let followed = server.curl(&[
            "-sS",
            "-L",
            "-H",
            &format!("Host: {host}"),
            &format!("{}/docs", server.endpoint()),
        ])?;
        ensure!(
            followed.stdout_text() == "<h1>docs</h1>",
            "{host}: {followed}"
        );
    }
    // The Swift path of the bucket is a way in like any other.
    let swift = format!("/v1/AUTH_admin/{bucket}");
    expect_page(
        &anonymous(&server, &format!("{swift}/"), &[])?,
        200,
        "<h1>home</h1>",
    )?;
    expect_redirect(
        &anonymous(&server, &format!("{swift}/docs"), &[])?,
        &format!("{swift}/docs/"),
    )?;

    // Cached through one URL form, changed for all of them at once.
    let on_domain = |path: &str| anonymous(&server, path, &[("Host", "www.example.com")]);
    on_domain("/")?;
    ensure!(on_domain("/")?.header("x-cache") == Some("HIT"));
    put_pages(&server, &bucket, &[("main.html", "<h1>main</h1>")])?;
    set_website(&server, &bucket, "main.html", "error.html")?;
    expect_page(&on_domain("/")?, 200, "<h1>main</h1>")?;
    server.aws_ok(&["s3api", "delete-bucket-website", "--bucket", &bucket])?;
    let plain = on_domain("/nope.html")?;
    ensure!(
        plain.status == 404 && plain.body != b"<h1>oops</h1>",
        "{plain}"
    );
    on_domain("/docs")?.expect_status(404)?;
    anonymous(&server, "/nope.html", &[("Host", &virtual_host)])?
        .expect_s3_error(404, "NoSuchKey")?;

    // On a bucket's host, the gateway's own paths are the bucket's keys: a
    // page called `info` is not Swift's /info, `v1.0` not a token request.
    put_pages(
        &server,
        &bucket,
        &[("info", "<h1>about</h1>"), ("v1.0", "v1")],
    )?;
    expect_page(
        &anonymous(&server, "/info", &[("Host", &virtual_host)])?,
        200,
        "<h1>about</h1>",
    )?;
    expect_page(
        &anonymous(&server, "/v1.0", &[("Host", &virtual_host)])?,
        200,
        "v1",
    )?;
    Ok(())
}

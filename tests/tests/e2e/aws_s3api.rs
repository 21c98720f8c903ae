//! The aws CLI's `s3api` commands, one S3 operation each: buckets, objects
//! with metadata, listings and their paging, deletes, copies, ranges,
//! conditionals and awkward key names.

use std::fs;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use strata_tests::{
    REGION, Server, Signing, content_md5, json_str, json_u64, listed_keys, listed_prefixes,
    md5_hex, unique_bucket, url_encode, utf8, write_random_file, write_tree,
};

/// Eight keys over two levels of "directories", uploaded in one `aws s3 cp`.
const LISTING_TREE: [&str; 8] = [
    "docs/a.txt",
    "docs/b.txt",
    "photos/2024/feb.jpg",
    "photos/2024/jan.jpg",
    "photos/2025/mar.jpg",
    "photos/readme.txt",
    "top-1.txt",
    "top-2.txt",
];

#[test]
fn bucket_lifecycle() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-bucket");
    let work = server.work_dir("bucket")?;

    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;

    let buckets = server.aws_json(&["s3api", "list-buckets"])?;
    ensure!(
        !json_str(&buckets, "/Owner/ID")?.is_empty(),
        "empty Owner.ID: {buckets:#}"
    );
    ensure!(
        !json_str(&buckets, "/Owner/DisplayName")?.is_empty(),
        "empty Owner.DisplayName: {buckets:#}"
    );
    let entry = buckets["Buckets"]
        .as_array()
        .and_then(|all| all.iter().find(|entry| entry["Name"] == bucket.as_str()))
        .with_context(|| format!("{bucket} not in list-buckets: {buckets:#}"))?;
    json_str(entry, "/CreationDate")?;

    server.aws_ok(&["s3api", "head-bucket", "--bucket", &bucket])?;
    let missing = format!("{bucket}-missing");
    let head_missing = server
        .aws(&["s3api", "head-bucket", "--bucket", &missing])?
        .expect_failure()?;
    ensure!(
        head_missing.stderr_text().contains("404"),
        "head-bucket of a missing bucket should report 404\n{head_missing}"
    );

    // us-east-1 buckets report an empty (null) LocationConstraint in S3.
    let location = server.aws_json(&["s3api", "get-bucket-location", "--bucket", &bucket])?;
    match &location["LocationConstraint"] {
        Value::Null => {}
        Value::String(region) if region.is_empty() || region == REGION => {}
        other => bail!("LocationConstraint {other} for a {REGION} bucket"),
    }

    // Versioning was never enabled: no Status at all.
    let versioning = server.aws_json(&["s3api", "get-bucket-versioning", "--bucket", &bucket])?;
    ensure!(
        versioning.get("Status").is_none(),
        "never-versioned bucket reports {versioning:#}"
    );

    server.aws_error(
        &["s3api", "create-bucket", "--bucket", "Invalid_Bucket_Name"],
        "InvalidBucketName",
    )?;

    let body = work.join("body.bin");
    write_random_file(&body, 1000)?;
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "k",
        "--body",
        utf8(&body)?,
    ])?;
    server.aws_error(
        &["s3api", "delete-bucket", "--bucket", &bucket],
        "BucketNotEmpty",
    )?;
    server.aws_ok(&["s3api", "head-bucket", "--bucket", &bucket])?;

    server.aws_ok(&["s3api", "delete-object", "--bucket", &bucket, "--key", "k"])?;
    server.aws_ok(&["s3api", "delete-bucket", "--bucket", &bucket])?;
    server
        .aws(&["s3api", "head-bucket", "--bucket", &bucket])?
        .expect_failure()?;
    let buckets = server.aws_json(&["s3api", "list-buckets"])?;
    ensure!(
        !buckets.to_string().contains(&bucket),
        "deleted bucket still listed: {buckets:#}"
    );
    let out = work.join("out.bin");
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            utf8(&out)?,
        ],
        "NoSuchBucket",
    )?;
    Ok(())
}

#[test]
fn object_roundtrip_with_metadata() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-object");
    let work = server.work_dir("object")?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;

    let source = work.join("source.bin");
    let content = write_random_file(&source, 100 * 1024 + 7)?;
    let put = server.aws_json(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "docs/report.bin",
        "--body",
        utf8(&source)?,
        "--content-type",
        "application/x-strata-test",
        "--cache-control",
        "max-age=60",
        "--metadata",
        "color=blue,shape=round",
    ])?;
    let expected_etag = format!("\"{}\"", md5_hex(&content));
    ensure!(
        json_str(&put, "/ETag")? == expected_etag,
        "PutObject ETag {put:#}, expected {expected_etag}"
    );

    let target = work.join("target.bin");
    let got = server.aws_json(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "docs/report.bin",
        utf8(&target)?,
    ])?;
    ensure!(fs::read(&target)? == content, "GetObject body differs");
    let expected_metadata = json!({"color": "blue", "shape": "round"});
    for (operation, answer) in [
        ("get-object", got),
        (
            "head-object",
            server.aws_json(&[
                "s3api",
                "head-object",
                "--bucket",
                &bucket,
                "--key",
                "docs/report.bin",
            ])?,
        ),
    ] {
        ensure!(
            json_str(&answer, "/ContentType")? == "application/x-strata-test",
            "{operation}: {answer:#}"
        );
        ensure!(
            json_str(&answer, "/CacheControl")? == "max-age=60",
            "{operation}: {answer:#}"
        );
        ensure!(
            answer["Metadata"] == expected_metadata,
            "{operation}: metadata {answer:#}"
        );
        ensure!(
            json_u64(&answer, "/ContentLength")? == content.len() as u64,
            "{operation}: {answer:#}"
        );
        ensure!(
            json_str(&answer, "/ETag")? == expected_etag,
            "{operation}: {answer:#}"
        );
        json_str(&answer, "/LastModified")?;
    }

    // An overwrite replaces content and metadata alike.
    let smaller = work.join("smaller.bin");
    let new_content = write_random_file(&smaller, 50)?;
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "docs/report.bin",
        "--body",
        utf8(&smaller)?,
    ])?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "docs/report.bin",
    ])?;
    ensure!(
        json_u64(&head, "/ContentLength")? == 50,
        "after overwrite: {head:#}"
    );
    ensure!(
        head.get("Metadata")
            .is_none_or(|metadata| metadata == &json!({})),
        "metadata survived an overwrite without metadata: {head:#}"
    );
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "docs/report.bin",
        utf8(&target)?,
    ])?;
    ensure!(
        fs::read(&target)? == new_content,
        "overwritten body differs"
    );

    // Zero bytes.
    server.aws_ok(&["s3api", "put-object", "--bucket", &bucket, "--key", "empty"])?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "empty",
    ])?;
    ensure!(json_u64(&head, "/ContentLength")? == 0, "{head:#}");
    ensure!(
        json_str(&head, "/ETag")? == format!("\"{}\"", md5_hex(b"")),
        "{head:#}"
    );
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "empty",
        utf8(&target)?,
    ])?;
    ensure!(
        fs::read(&target)?.is_empty(),
        "empty object read back non-empty"
    );
    Ok(())
}

#[test]
fn list_objects_v2_prefix_delimiter_paging() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-list2");
    upload_listing_tree(&server, &bucket)?;
    let all: Vec<String> = LISTING_TREE.iter().map(|key| key.to_string()).collect();

    // The CLI follows continuation tokens itself here.
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    ensure!(listed_keys(&listing) == all, "full listing {listing:#}");
    let sizes: Vec<u64> = listing["Contents"]
        .as_array()
        .context("no Contents")?
        .iter()
        .filter_map(|entry| entry["Size"].as_u64())
        .collect();
    ensure!(sizes == vec![100; 8], "listed sizes {sizes:?}");

    let listing = server.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        &bucket,
        "--prefix",
        "photos/",
        "--delimiter",
        "/",
    ])?;
    ensure!(
        listed_keys(&listing) == ["photos/readme.txt"],
        "prefix+delimiter keys {listing:#}"
    );
    ensure!(
        listed_prefixes(&listing) == ["photos/2024/", "photos/2025/"],
        "prefix+delimiter common prefixes {listing:#}"
    );

    // Manual paging with max-keys and continuation tokens.
    let pages = page_v2(&server, &bucket, &["--max-keys", "3"])?;
    let page_sizes: Vec<usize> = pages.iter().map(|page| listed_keys(page).len()).collect();
    ensure!(page_sizes == [3, 3, 2], "page sizes {page_sizes:?}");
    for (page_idx, page) in pages.iter().enumerate() {
        ensure!(
            json_u64(page, "/KeyCount")? == page_sizes[page_idx] as u64,
            "KeyCount of page {page_idx}: {page:#}"
        );
    }
    let paged: Vec<String> = pages.iter().flat_map(listed_keys).collect();
    ensure!(paged == all, "keys over pages {paged:?}");

    // Common prefixes count against max-keys and page like keys.
    let pages = page_v2(&server, &bucket, &["--max-keys", "1", "--delimiter", "/"])?;
    let entries: Vec<String> = pages
        .iter()
        .flat_map(|page| {
            let mut page_entries = listed_prefixes(page);
            page_entries.extend(listed_keys(page));
            page_entries
        })
        .collect();
    ensure!(
        entries == ["docs/", "photos/", "top-1.txt", "top-2.txt"],
        "delimiter paging entries {entries:?}"
    );
    ensure!(pages.len() == 4, "{} pages for 4 entries of 1", pages.len());

    let listing = server.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        &bucket,
        "--start-after",
        "photos/2025/mar.jpg",
    ])?;
    ensure!(
        listed_keys(&listing) == ["photos/readme.txt", "top-1.txt", "top-2.txt"],
        "start-after {listing:#}"
    );

    let listing = server.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--no-paginate",
        "--bucket",
        &bucket,
        "--prefix",
        "nothing/",
    ])?;
    ensure!(listed_keys(&listing).is_empty(), "{listing:#}");
    ensure!(json_u64(&listing, "/KeyCount")? == 0, "{listing:#}");
    Ok(())
}

#[test]
fn list_objects_v1_marker_and_versions() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-list1");
    upload_listing_tree(&server, &bucket)?;
    let all: Vec<String> = LISTING_TREE.iter().map(|key| key.to_string()).collect();

    // Pages of 3 with --marker. Without a delimiter S3 sends no NextMarker;
    // clients continue from the last key.
    let mut marker = String::new();
    let mut paged = Vec::new();
    let mut n_pages = 0;
    loop {
        let mut args = vec![
            "s3api",
            "list-objects",
            "--no-paginate",
            "--bucket",
            &bucket,
            "--max-keys",
            "3",
        ];
        if !marker.is_empty() {
            args.extend(["--marker", marker.as_str()]);
        }
        let page = server.aws_json(&args)?;
        n_pages += 1;
        ensure!(n_pages <= 10, "v1 paging does not end: {page:#}");
        let keys = listed_keys(&page);
        ensure!(keys.len() <= 3, "max-keys 3 returned {keys:?}");
        paged.extend(keys.iter().cloned());
        if page["IsTruncated"] != json!(true) {
            break;
        }
        ensure!(
            page.get("NextMarker").is_none(),
            "NextMarker without a delimiter: {page:#}"
        );
        marker = keys
            .last()
            .cloned()
            .context("truncated page without keys")?;
    }
    ensure!(paged == all, "v1 keys over pages {paged:?}");
    ensure!(n_pages == 3, "{n_pages} pages of 3 for 8 keys");

    // With a delimiter a truncated v1 page must carry NextMarker.
    let page = server.aws_json(&[
        "s3api",
        "list-objects",
        "--no-paginate",
        "--bucket",
        &bucket,
        "--delimiter",
        "/",
        "--max-keys",
        "2",
    ])?;
    ensure!(
        listed_prefixes(&page) == ["docs/", "photos/"],
        "v1 delimiter page {page:#}"
    );
    ensure!(page["IsTruncated"] == json!(true), "{page:#}");
    let next_marker = json_str(&page, "/NextMarker")?;
    let page = server.aws_json(&[
        "s3api",
        "list-objects",
        "--no-paginate",
        "--bucket",
        &bucket,
        "--delimiter",
        "/",
        "--marker",
        next_marker,
    ])?;
    ensure!(
        listed_keys(&page) == ["top-1.txt", "top-2.txt"] && listed_prefixes(&page).is_empty(),
        "v1 page after NextMarker {next_marker}: {page:#}"
    );

    let versions = server.aws_json(&["s3api", "list-object-versions", "--bucket", &bucket])?;
    let entries = versions["Versions"]
        .as_array()
        .with_context(|| format!("no Versions: {versions:#}"))?;
    let keys: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["Key"].as_str())
        .collect();
    ensure!(keys == LISTING_TREE, "version keys {keys:?}");
    for entry in entries {
        ensure!(
            entry["VersionId"] == json!("null") && entry["IsLatest"] == json!(true),
            "unversioned object listed as {entry:#}"
        );
    }
    ensure!(
        versions
            .get("DeleteMarkers")
            .is_none_or(|markers| markers == &json!([])),
        "{versions:#}"
    );
    Ok(())
}

#[test]
fn delete_objects_quiet_and_verbose() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-delete");
    upload_listing_tree(&server, &bucket)?;

    // Buckets keep one version, `null`: another version id deletes nothing.
    let key = "docs/b.txt";
    let versioned = |op: &str, version: &str| {
        let args = [
            "s3api",
            op,
            "--bucket",
            &bucket,
            "--key",
            key,
            "--version-id",
            version,
        ];
        server.aws(&args)
    };
    let refused =
        versioned("delete-object", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")?.expect_failure()?;
    ensure!(refused.stderr_text().contains("NoSuchVersion"), "{refused}");
    versioned("head-object", "null")?.expect_success()?;
    let mixed = server.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        &bucket,
        "--delete",
        &json!({"Objects": [{"Key": key, "VersionId": "not-a-version"}]}).to_string(),
    ])?;
    ensure!(
        mixed["Errors"][0]["Code"] == "NoSuchVersion" && mixed.get("Deleted").is_none(),
        "{mixed:#}"
    );
    versioned("head-object", "null")?.expect_success()?;
    // A body whose root is not <Delete> deletes nothing either.
    let body = format!("<Remove><Object><Key>{key}</Key></Object></Remove>");
    let wrong_root = server.http(
        "POST",
        &format!("/{bucket}?delete="),
        Signing::Root,
        Some(body.as_bytes()),
        &[("Content-MD5", &content_md5(body.as_bytes()))],
    )?;
    wrong_root.expect_s3_error(400, "MalformedXML")?;
    versioned("head-object", "null")?.expect_success()?;

    // Quiet: nothing reported on success, a missing key is no error.
    let quiet = server.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        &bucket,
        "--delete",
        r#"{"Objects":[{"Key":"docs/a.txt"},{"Key":"photos/2024/jan.jpg"},{"Key":"never-existed"}],"Quiet":true}"#,
    ])?;
    ensure!(
        quiet
            .get("Errors")
            .is_none_or(|errors| errors == &json!([])),
        "quiet delete reported errors: {quiet:#}"
    );
    ensure!(
        quiet
            .get("Deleted")
            .is_none_or(|deleted| deleted == &json!([])),
        "quiet delete listed deleted keys: {quiet:#}"
    );
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    let expected: Vec<&str> = LISTING_TREE
        .iter()
        .copied()
        .filter(|key| !["docs/a.txt", "photos/2024/jan.jpg"].contains(key))
        .collect();
    ensure!(
        listed_keys(&listing) == expected,
        "after quiet delete {listing:#}"
    );

    // Verbose: every key reported.
    let objects: Vec<Value> = expected.iter().map(|key| json!({"Key": key})).collect();
    let verbose = server.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        &bucket,
        "--delete",
        &json!({"Objects": objects}).to_string(),
    ])?;
    let mut deleted: Vec<&str> = verbose["Deleted"]
        .as_array()
        .with_context(|| format!("verbose delete without Deleted: {verbose:#}"))?
        .iter()
        .filter_map(|entry| entry["Key"].as_str())
        .collect();
    deleted.sort_unstable();
    ensure!(deleted == expected, "verbose delete reported {deleted:?}");
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    ensure!(
        listed_keys(&listing).is_empty(),
        "after deleting all {listing:#}"
    );
    server.aws_ok(&["s3api", "delete-bucket", "--bucket", &bucket])?;
    Ok(())
}

#[test]
fn copy_object_directives() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-copy");
    let other_bucket = unique_bucket("s3api-copy-dst");
    let work = server.work_dir("copy")?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &other_bucket])?;

    let source = work.join("source.bin");
    let content = write_random_file(&source, 70_000)?;
    let source_key = "source dir/ü+source.bin";
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        source_key,
        "--body",
        utf8(&source)?,
        "--content-type",
        "image/x-original",
        "--metadata",
        "origin=first",
    ])?;
    let copy_source = format!("{bucket}/{source_key}");
    let etag = format!("\"{}\"", md5_hex(&content));

    // COPY (the default): metadata and content type come along.
    let copied = server.aws_json(&[
        "s3api",
        "copy-object",
        "--bucket",
        &bucket,
        "--key",
        "copy-same",
        "--copy-source",
        &copy_source,
    ])?;
    ensure!(
        json_str(&copied, "/CopyObjectResult/ETag")? == etag,
        "copy ETag {copied:#}"
    );
    json_str(&copied, "/CopyObjectResult/LastModified")?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "copy-same",
    ])?;
    ensure!(
        json_str(&head, "/ContentType")? == "image/x-original",
        "{head:#}"
    );
    ensure!(head["Metadata"] == json!({"origin": "first"}), "{head:#}");
    check_body(&server, &bucket, "copy-same", &content, &work)?;

    // REPLACE: only the new metadata and content type.
    server.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        &bucket,
        "--key",
        "copy-replaced",
        "--copy-source",
        &copy_source,
        "--metadata-directive",
        "REPLACE",
        "--content-type",
        "application/x-replaced",
        "--metadata",
        "fresh=yes",
    ])?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "copy-replaced",
    ])?;
    ensure!(
        json_str(&head, "/ContentType")? == "application/x-replaced",
        "{head:#}"
    );
    ensure!(head["Metadata"] == json!({"fresh": "yes"}), "{head:#}");
    check_body(&server, &bucket, "copy-replaced", &content, &work)?;

    // Into another bucket.
    server.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        &other_bucket,
        "--key",
        "elsewhere",
        "--copy-source",
        &copy_source,
    ])?;
    check_body(&server, &other_bucket, "elsewhere", &content, &work)?;

    // Copying an object onto itself without REPLACE is refused by S3; with
    // a storage class it is how tools change an object's class, and S3
    // takes it (strata keeps one class and rewrites the object as it is).
    let onto_itself = |extra: &[&'static str]| {
        let mut args = vec![
            "s3api",
            "copy-object",
            "--bucket",
            &bucket,
            "--key",
            source_key,
            "--copy-source",
            &copy_source,
        ];
        args.extend_from_slice(extra);
        args
    };
    server.aws_error(&onto_itself(&[]), "InvalidRequest")?;
    server.aws_ok(&onto_itself(&["--storage-class", "STANDARD"]))?;
    check_body(&server, &bucket, source_key, &content, &work)?;

    server.aws_error(
        &[
            "s3api",
            "copy-object",
            "--bucket",
            &bucket,
            "--key",
            "x",
            "--copy-source",
            &format!("{bucket}/does-not-exist"),
        ],
        "NoSuchKey",
    )?;
    // The source is untouched by all of this.
    check_body(&server, &bucket, source_key, &content, &work)?;
    Ok(())
}

#[test]
fn get_object_range_and_conditionals() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-range");
    let work = server.work_dir("range")?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let source = work.join("source.bin");
    let content = write_random_file(&source, 1000)?;
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "k",
        "--body",
        utf8(&source)?,
    ])?;
    let etag = format!("\"{}\"", md5_hex(&content));

    // partNumber: 1..=10000, and never with a Range.
    let object = format!("/{bucket}/k");
    let signed = |query: &str, headers: &[(&str, &str)]| {
        server.http(
            "GET",
            &format!("{object}?{query}"),
            Signing::Root,
            None,
            headers,
        )
    };
    signed("partNumber=1", &[])?.expect_status(206)?;
    signed("partNumber=10001", &[])?.expect_s3_error(400, "InvalidArgument")?;
    signed("partNumber=1", &[("Range", "bytes=0-9")])?.expect_s3_error(400, "InvalidRequest")?;
    // If-Range: the range only for the version the client has.
    let resume = |validator: &str| {
        server.http(
            "GET",
            &object,
            Signing::Root,
            None,
            &[("Range", "bytes=990-"), ("If-Range", validator)],
        )
    };
    let resumed = resume(&etag)?;
    resumed.expect_status(206)?;
    ensure!(resumed.body == content[990..], "{resumed}");
    let whole = resume("\"another-version\"")?;
    whole.expect_status(200)?;
    ensure!(
        whole.body == content,
        "If-Range of another version: not the whole object"
    );
    // response-* overrides, UTF-8 included; refused to anonymous callers.
    let disposition = "attachment; filename=\"résumé.pdf\"";
    let query = format!(
        "response-content-disposition={}&response-content-type=application%2Fpdf",
        url_encode(disposition, b"")
    );
    let overridden = signed(&query, &[])?;
    overridden.expect_status(200)?;
    ensure!(
        overridden.header("content-type") == Some("application/pdf")
            && overridden.header("content-disposition") == Some(disposition),
        "{overridden}"
    );
    server.set_bucket_acl(&bucket, "public-read")?;
    server
        .http("GET", &object, Signing::Anonymous, None, &[])?
        .expect_status(200)?;
    server
        .http(
            "GET",
            &format!("{object}?{query}"),
            Signing::Anonymous,
            None,
            &[],
        )?
        .expect_s3_error(400, "InvalidRequest")?;
    server.set_bucket_acl(&bucket, "private")?;

    let target = work.join("part.bin");
    let target_arg = utf8(&target)?;

    for (range, start, end) in [
        ("bytes=100-199", 100, 199),
        ("bytes=0-0", 0, 0),
        ("bytes=-10", 990, 999),
        ("bytes=990-", 990, 999),
        ("bytes=900-5000", 900, 999),
    ] {
        let got = server.aws_json(&[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--range",
            range,
            target_arg,
        ])?;
        ensure!(
            json_str(&got, "/ContentRange")? == format!("bytes {start}-{end}/1000"),
            "{range}: {got:#}"
        );
        ensure!(
            json_u64(&got, "/ContentLength")? == end - start + 1,
            "{range}: {got:#}"
        );
        ensure!(
            fs::read(&target)? == content[start as usize..=end as usize],
            "{range}: wrong bytes"
        );
    }
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--range",
            "bytes=5000-6000",
            target_arg,
        ],
        "InvalidRange",
    )?;

    // If-None-Match with the current ETag: 304 Not Modified.
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--if-none-match",
            &etag,
            target_arg,
        ],
        "304",
    )?;
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "k",
        "--if-none-match",
        "\"0123456789abcdef0123456789abcdef\"",
        target_arg,
    ])?;
    ensure!(
        fs::read(&target)? == content,
        "If-None-Match miss: wrong body"
    );
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "k",
        "--if-match",
        &etag,
        target_arg,
    ])?;
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--if-match",
            "\"0123456789abcdef0123456789abcdef\"",
            target_arg,
        ],
        "PreconditionFailed",
    )?;
    // Not modified since its own Last-Modified (a date in the future would
    // be ignored under RFC 9110).
    let head = server.aws_json(&["s3api", "head-object", "--bucket", &bucket, "--key", "k"])?;
    let last_modified = json_str(&head, "/LastModified")?;
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--if-modified-since",
            last_modified,
            target_arg,
        ],
        "304",
    )?;
    server.aws_error(
        &[
            "s3api",
            "get-object",
            "--bucket",
            &bucket,
            "--key",
            "k",
            "--if-unmodified-since",
            "2000-01-01T00:00:00Z",
            target_arg,
        ],
        "PreconditionFailed",
    )?;
    Ok(())
}

#[test]
fn keys_with_special_characters() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3api-keys");
    let work = server.work_dir("keys")?;
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;

    let keys = [
        "dir with space/file name.txt",
        "plus+sign+key",
        "percent%20literal%",
        "unicode/ümlaut-日本語-🚀.txt",
        "symbols !$&'()*,;=@~",
        "question?and#hash",
        "trailing-space ",
    ];
    for (key_idx, key) in keys.iter().enumerate() {
        let body = work.join(format!("body-{key_idx}"));
        fs::write(&body, key.as_bytes())?;
        server.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            &bucket,
            "--key",
            key,
            "--body",
            utf8(&body)?,
        ])?;
    }

    let mut expected: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    expected.sort();
    // The CLI asks for encoding-type=url and decodes, so this also checks
    // that the server URL-encodes keys in listings.
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    ensure!(
        listed_keys(&listing) == expected,
        "listed keys {:?}",
        listed_keys(&listing)
    );
    let listing = server.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        &bucket,
        "--prefix",
        "unicode/ü",
    ])?;
    ensure!(
        listed_keys(&listing) == ["unicode/ümlaut-日本語-🚀.txt"],
        "unicode prefix {listing:#}"
    );

    for key in keys {
        check_body(&server, &bucket, key, key.as_bytes(), &work)?;
    }

    let objects: Vec<Value> = keys.iter().map(|key| json!({"Key": key})).collect();
    let deleted = server.aws_json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        &bucket,
        "--delete",
        &json!({"Objects": objects}).to_string(),
    ])?;
    ensure!(
        deleted
            .get("Errors")
            .is_none_or(|errors| errors == &json!([])),
        "{deleted:#}"
    );
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    ensure!(
        listed_keys(&listing).is_empty(),
        "keys left after delete-objects {listing:#}"
    );

    // Keys that cannot be a path (empty segments) are refused with a clear
    // error and nothing is stored: FTP, FUSE and URL normalisation in proxies
    // could not address them.
    let body = work.join("refused");
    fs::write(&body, b"refused")?;
    for key in ["a//double-slash", "/leading-slash"] {
        server.aws_error(
            &[
                "s3api",
                "put-object",
                "--bucket",
                &bucket,
                "--key",
                key,
                "--body",
                utf8(&body)?,
            ],
            "InvalidArgument",
        )?;
    }
    let listing = server.aws_json(&["s3api", "list-objects-v2", "--bucket", &bucket])?;
    ensure!(
        listed_keys(&listing).is_empty(),
        "a refused key was stored {listing:#}"
    );
    Ok(())
}

/// Creates `bucket` and uploads [`LISTING_TREE`] (100 bytes each) with one
/// `aws s3 cp --recursive`.
fn upload_listing_tree(server: &Server, bucket: &str) -> Result<()> {
    server.aws_ok(&["s3api", "create-bucket", "--bucket", bucket])?;
    let tree = server.work_dir("listing-tree")?;
    let files: Vec<(&str, usize)> = LISTING_TREE.iter().map(|key| (*key, 100)).collect();
    write_tree(&tree, &files)?;
    server.aws_ok(&[
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        utf8(&tree)?,
        &format!("s3://{bucket}/"),
    ])?;
    Ok(())
}

/// All pages of `list-objects-v2 --no-paginate <extra>`, following
/// NextContinuationToken by hand.
fn page_v2(server: &Server, bucket: &str, extra: &[&str]) -> Result<Vec<Value>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec![
            "s3api",
            "list-objects-v2",
            "--no-paginate",
            "--bucket",
            bucket,
        ];
        args.extend_from_slice(extra);
        if let Some(token) = &token {
            args.extend(["--continuation-token", token.as_str()]);
        }
        let page = server.aws_json(&args)?;
        let truncated = page["IsTruncated"] == json!(true);
        let next = page
            .get("NextContinuationToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        pages.push(page);
        ensure!(pages.len() <= 20, "paging does not end: {pages:#?}");
        if !truncated {
            return Ok(pages);
        }
        token = Some(next.context("truncated page without NextContinuationToken")?);
    }
}

/// Fails unless `get-object bucket key` returns exactly `expected`.
pub fn check_body(
    server: &Server,
    bucket: &str,
    key: &str,
    expected: &[u8],
    work: &std::path::Path,
) -> Result<()> {
    let target = work.join("check-body.out");
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        bucket,
        "--key",
        key,
        utf8(&target)?,
    ])?;
    let got = fs::read(&target)?;
    ensure!(
        got == expected,
        "{bucket}/{key}: {} bytes read back, {} expected, content {}",
        got.len(),
        expected.len(),
        if got.len() == expected.len() {
            "differs"
        } else {
            "truncated or padded"
        }
    );
    Ok(())
}

/// Objects have no ACLs of their own, their bucket decides: a write asking
/// for `public-read` is taken where the bucket already makes its objects
/// public, and refused (NotImplemented) where it would stay private;
/// HeadBucket answers whoever may list the bucket, as on S3.
#[test]
fn object_acls_follow_their_bucket() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("object-acl");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let work = server.work_dir("object-acl")?;
    let file = work.join("f.txt");
    fs::write(&file, "x")?;
    let file = utf8(&file)?;
    let target = format!("s3://{bucket}/f.txt");
    let refused = server.aws(&["s3", "cp", "--acl", "public-read", file, &target])?;
    ensure!(
        !refused.success() && refused.stderr_text().contains("NotImplemented"),
        "a public-read object in a private bucket:\n{refused}"
    );
    server
        .http(
            "HEAD",
            &format!("/{bucket}/f.txt"),
            Signing::Root,
            None,
            &[],
        )?
        .expect_status(404)?;
    server.aws_ok(&["s3", "cp", "--acl", "private", file, &target])?;
    let granted = server.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        "g.txt",
        "--grant-read",
        "uri=http://acs.amazonaws.com/groups/global/AllUsers",
    ])?;
    ensure!(
        !granted.success() && granted.stderr_text().contains("NotImplemented"),
        "an object grant:\n{granted}"
    );
    let head_bucket = |signing| server.http("HEAD", &format!("/{bucket}"), signing, None, &[]);
    head_bucket(Signing::Anonymous)?.expect_status(403)?;

    server.set_bucket_acl(&bucket, "public-read")?;
    server.aws_ok(&["s3", "cp", "--acl", "public-read", file, &target])?;
    head_bucket(Signing::Anonymous)?.expect_status(200)?;
    head_bucket(Signing::Root)?.expect_status(200)?;
    Ok(())
}

/// A copy passes neither S3's 5 GiB nor the largest object the gateway
/// takes: a Swift large object assembled past `max_object_size` is not
/// copied whole (InvalidRequest), though a range of it fits a part.
#[test]
fn copies_stop_at_the_largest_object() -> Result<()> {
    let server = Server::start_with_config("[limits]\nmax_object_size = 1048576\n")?;
    let bucket = unique_bucket("copy-limit");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let container = format!("/v1/AUTH_admin/{bucket}");
    let segment = vec![b's'; 700 * 1024];
    for n in 1..=2 {
        server
            .swift_as_root("PUT", &format!("{container}/seg/{n}"), Some(&segment), &[])?
            .expect_status(201)?;
    }
    let manifest = json!([
        {"path": format!("/{bucket}/seg/1")},
        {"path": format!("/{bucket}/seg/2")},
    ])
    .to_string();
    server
        .swift_as_root(
            "PUT",
            &format!("{container}/large?multipart-manifest=put"),
            Some(manifest.as_bytes()),
            &[],
        )?
        .expect_status(201)?;
    let copied = server.aws(&[
        "s3api",
        "copy-object",
        "--bucket",
        &bucket,
        "--key",
        "copy",
        "--copy-source",
        &format!("{bucket}/large"),
    ])?;
    ensure!(
        !copied.success() && copied.stderr_text().contains("InvalidRequest"),
        "a copy past the largest object:\n{copied}"
    );
    server
        .http("HEAD", &format!("/{bucket}/copy"), Signing::Root, None, &[])?
        .expect_status(404)?;
    Ok(())
}

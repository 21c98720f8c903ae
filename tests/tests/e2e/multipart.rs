//! Multipart uploads step by step through `aws s3api`: parts, listings,
//! completion and its errors, abort, and UploadPartCopy.

use std::fs;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use strata_tests::{
    Server, json_str, json_u64, md5_hex, multipart_etag, random_bytes, unique_bucket, utf8,
};

use crate::aws_s3api::check_body;

const MIB: usize = 1024 * 1024;

/// One multipart upload driven through the aws CLI.
pub(crate) struct Upload<'a> {
    server: &'a Server,
    bucket: String,
    key: String,
    pub(crate) upload_id: String,
    work: std::path::PathBuf,
}

impl<'a> Upload<'a> {
    pub(crate) fn create(
        server: &'a Server,
        bucket: &str,
        key: &str,
        extra: &[&str],
    ) -> Result<Upload<'a>> {
        let mut args = vec![
            "s3api",
            "create-multipart-upload",
            "--bucket",
            bucket,
            "--key",
            key,
        ];
        args.extend_from_slice(extra);
        let created = server.aws_json(&args)?;
        ensure!(
            json_str(&created, "/Key")? == key && json_str(&created, "/Bucket")? == bucket,
            "{created:#}"
        );
        Ok(Upload {
            server,
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: json_str(&created, "/UploadId")?.to_string(),
            work: server.work_dir("multipart")?,
        })
    }

    /// The upload `upload_id` of `bucket/key`, created earlier.
    pub(crate) fn resume(
        server: &'a Server,
        bucket: &str,
        key: &str,
        upload_id: String,
    ) -> Result<Upload<'a>> {
        Ok(Upload {
            server,
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id,
            work: server.work_dir("multipart")?,
        })
    }

    /// Uploads `content` as part `part_number`; the answer's ETag must be
    /// the part's MD5.
    pub(crate) fn upload_part(&self, part_number: u32, content: &[u8]) -> Result<String> {
        let body = self.work.join(format!("part-{part_number}"));
        fs::write(&body, content)?;
        let answer = self.server.aws_json(&[
            "s3api",
            "upload-part",
            "--bucket",
            &self.bucket,
            "--key",
            &self.key,
            "--upload-id",
            &self.upload_id,
            "--part-number",
            &part_number.to_string(),
            "--body",
            utf8(&body)?,
        ])?;
        let etag = json_str(&answer, "/ETag")?.to_string();
        ensure!(
            etag == format!("\"{}\"", md5_hex(content)),
            "part {part_number}: ETag {etag} is not the part's MD5"
        );
        Ok(etag)
    }

    fn complete_args(&self, parts: &[(u32, &str)]) -> Vec<String> {
        let parts: Vec<Value> = parts
            .iter()
            .map(|(part_number, etag)| json!({"PartNumber": part_number, "ETag": etag}))
            .collect();
        [
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            &self.bucket,
            "--key",
            &self.key,
            "--upload-id",
            &self.upload_id,
            "--multipart-upload",
            &json!({ "Parts": parts }).to_string(),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect()
    }

    pub(crate) fn complete(&self, parts: &[(u32, &str)]) -> Result<Value> {
        let args = self.complete_args(parts);
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server.aws_json(&arg_refs)
    }

    fn complete_error(&self, parts: &[(u32, &str)], code: &str) -> Result<()> {
        let args = self.complete_args(parts);
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server.aws_error(&arg_refs, code).map(drop)
    }

    fn listed_by_bucket(&self) -> Result<bool> {
        let uploads =
            self.server
                .aws_json(&["s3api", "list-multipart-uploads", "--bucket", &self.bucket])?;
        Ok(uploads
            .get("Uploads")
            .and_then(Value::as_array)
            .is_some_and(|all| {
                all.iter().any(|entry| {
                    entry["UploadId"] == self.upload_id.as_str()
                        && entry["Key"] == self.key.as_str()
                })
            }))
    }

    fn with_upload<'b>(&'b self, operation: &'b str) -> Vec<&'b str> {
        vec![
            "s3api",
            operation,
            "--bucket",
            &self.bucket,
            "--key",
            &self.key,
            "--upload-id",
            &self.upload_id,
        ]
    }
}

#[test]
fn complete_with_listings() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("mpu-complete");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let upload = Upload::create(
        &server,
        &bucket,
        "mp/object.bin",
        &[
            "--content-type",
            "application/x-multipart",
            "--metadata",
            "stage=multipart",
        ],
    )?;
    ensure!(
        upload.listed_by_bucket()?,
        "new upload not in list-multipart-uploads"
    );
    // With a delimiter, its key rolls up into its folder.
    let rolled = server.aws_json(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        &bucket,
        "--delimiter",
        "/",
    ])?;
    ensure!(
        rolled.pointer("/CommonPrefixes/0/Prefix") == Some(&json!("mp/"))
            && rolled.get("Uploads").is_none(),
        "{rolled:#}"
    );

    let part1 = random_bytes(5 * MIB);
    let part2 = random_bytes(100 * 1024 + 3);
    let etag1 = upload.upload_part(1, &part1)?;
    // A part uploaded twice: the second one counts.
    upload.upload_part(2, &random_bytes(64 * 1024))?;
    let etag2 = upload.upload_part(2, &part2)?;

    let parts = server.aws_json(&upload.with_upload("list-parts"))?;
    let listed: Vec<(u64, u64, String)> = parts["Parts"]
        .as_array()
        .with_context(|| format!("list-parts without Parts: {parts:#}"))?
        .iter()
        .map(|part| {
            Ok((
                json_u64(part, "/PartNumber")?,
                json_u64(part, "/Size")?,
                json_str(part, "/ETag")?.to_string(),
            ))
        })
        .collect::<Result<_>>()?;
    ensure!(
        listed
            == [
                (1, part1.len() as u64, etag1.clone()),
                (2, part2.len() as u64, etag2.clone())
            ],
        "list-parts {listed:?}"
    );

    let completed = upload.complete(&[(1, &etag1), (2, &etag2)])?;
    let etag = json_str(&completed, "/ETag")?;
    ensure!(
        etag.ends_with("-2\""),
        "multipart ETag {etag} does not end in -2"
    );
    ensure!(
        etag == multipart_etag(&[&part1, &part2]),
        "multipart ETag {etag}, S3 computes {}",
        multipart_etag(&[&part1, &part2])
    );
    ensure!(!upload.listed_by_bucket()?, "completed upload still listed");

    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "mp/object.bin",
    ])?;
    ensure!(
        json_u64(&head, "/ContentLength")? == (part1.len() + part2.len()) as u64,
        "{head:#}"
    );
    ensure!(json_str(&head, "/ETag")? == etag, "{head:#}");
    ensure!(
        json_str(&head, "/ContentType")? == "application/x-multipart",
        "{head:#}"
    );
    ensure!(
        head["Metadata"] == json!({"stage": "multipart"}),
        "{head:#}"
    );
    check_body(
        &server,
        &bucket,
        "mp/object.bin",
        &[part1.as_slice(), part2.as_slice()].concat(),
        &upload.work,
    )?;
    Ok(())
}

#[test]
fn abort() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("mpu-abort");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    // A second upload that must be unaffected by aborting the first.
    let kept = Upload::create(&server, &bucket, "kept", &[])?;
    let upload = Upload::create(&server, &bucket, "aborted", &[])?;
    upload.upload_part(1, &random_bytes(MIB))?;

    server.aws_ok(&upload.with_upload("abort-multipart-upload"))?;
    ensure!(!upload.listed_by_bucket()?, "aborted upload still listed");
    ensure!(
        kept.listed_by_bucket()?,
        "aborting one upload removed another"
    );
    server.aws_error(&upload.with_upload("list-parts"), "NoSuchUpload")?;
    let mut late_part = upload.with_upload("upload-part");
    let body = upload.work.join("late");
    fs::write(&body, b"late")?;
    late_part.extend(["--part-number", "2", "--body", utf8(&body)?]);
    server.aws_error(&late_part, "NoSuchUpload")?;
    upload.complete_error(
        &[(1, "\"00000000000000000000000000000000\"")],
        "NoSuchUpload",
    )?;
    server
        .aws(&[
            "s3api",
            "head-object",
            "--bucket",
            &bucket,
            "--key",
            "aborted",
        ])?
        .expect_failure()?;

    let etag = kept.upload_part(1, b"small but last")?;
    kept.complete(&[(1, &etag)])?;
    check_body(&server, &bucket, "kept", b"small but last", &kept.work)?;
    Ok(())
}

#[test]
fn completion_errors_leave_the_upload_usable() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("mpu-errors");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let upload = Upload::create(&server, &bucket, "checked", &[])?;

    // A non-last part under 5 MiB.
    let small_etag = upload.upload_part(1, &random_bytes(MIB))?;
    let last = random_bytes(1000);
    let last_etag = upload.upload_part(2, &last)?;
    upload.complete_error(&[(1, &small_etag), (2, &last_etag)], "EntityTooSmall")?;
    server
        .aws(&[
            "s3api",
            "head-object",
            "--bucket",
            &bucket,
            "--key",
            "checked",
        ])?
        .expect_failure()
        .context("a failed completion created the object")?;

    let first = random_bytes(5 * MIB);
    let first_etag = upload.upload_part(1, &first)?;
    upload.complete_error(
        &[
            (1, &first_etag),
            (2, "\"0123456789abcdef0123456789abcdef\""),
        ],
        "InvalidPart",
    )?;
    upload.complete_error(
        &[(1, &first_etag), (2, &last_etag), (3, &last_etag)],
        "InvalidPart",
    )?;
    upload.complete_error(&[(2, &last_etag), (1, &first_etag)], "InvalidPartOrder")?;
    // The superseded 1 MiB part 1 is gone, not completable.
    upload.complete_error(&[(1, &small_etag), (2, &last_etag)], "InvalidPart")?;

    let completed = upload.complete(&[(1, &first_etag), (2, &last_etag)])?;
    ensure!(
        json_str(&completed, "/ETag")? == multipart_etag(&[&first, &last]),
        "{completed:#}"
    );
    check_body(
        &server,
        &bucket,
        "checked",
        &[first.as_slice(), last.as_slice()].concat(),
        &upload.work,
    )?;
    Ok(())
}

#[test]
fn upload_part_copy() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("mpu-copy");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let work = server.work_dir("part-copy")?;
    let source = random_bytes(6 * MIB + 5);
    let source_path = work.join("source");
    fs::write(&source_path, &source)?;
    let source_key = "copy source/ü.bin";
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        &bucket,
        "--key",
        source_key,
        "--body",
        utf8(&source_path)?,
    ])?;
    let copy_source = format!("{bucket}/{source_key}");

    let upload = Upload::create(&server, &bucket, "assembled", &[])?;
    let mut first = upload.with_upload("upload-part-copy");
    first.extend([
        "--part-number",
        "1",
        "--copy-source",
        &copy_source,
        "--copy-source-range",
        "bytes=0-5242879",
    ]);
    let copied = server.aws_json(&first)?;
    let etag1 = json_str(&copied, "/CopyPartResult/ETag")?.to_string();
    ensure!(
        etag1 == format!("\"{}\"", md5_hex(&source[..5 * MIB])),
        "ranged part copy ETag {copied:#}"
    );
    let mut second = upload.with_upload("upload-part-copy");
    second.extend(["--part-number", "2", "--copy-source", &copy_source]);
    let copied = server.aws_json(&second)?;
    let etag2 = json_str(&copied, "/CopyPartResult/ETag")?.to_string();
    ensure!(
        etag2 == format!("\"{}\"", md5_hex(&source)),
        "whole-object part copy ETag {copied:#}"
    );
    let tail = random_bytes(1000);
    let etag3 = upload.upload_part(3, &tail)?;

    let completed = upload.complete(&[(1, &etag1), (2, &etag2), (3, &etag3)])?;
    ensure!(
        json_str(&completed, "/ETag")? == multipart_etag(&[&source[..5 * MIB], &source, &tail]),
        "{completed:#}"
    );
    check_body(
        &server,
        &bucket,
        "assembled",
        &[&source[..5 * MIB], source.as_slice(), tail.as_slice()].concat(),
        &work,
    )?;
    Ok(())
}

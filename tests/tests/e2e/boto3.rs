//! boto3, the most common S3 SDK, through the scripts in `tests/py/`: each
//! script asserts on its own and exits non-zero with a reason.

use anyhow::Result;
use strata_tests::{Server, unique_bucket, utf8};

#[test]
fn checksums_and_aws_chunked() -> Result<()> {
    let server = Server::start()?;
    let output = server.python_ok("boto3_checksums.py", &[&unique_bucket("boto3-checksums")])?;
    // Which wire formats were used, for whoever reads a failure elsewhere.
    eprintln!("{}", output.stdout_text());
    Ok(())
}

#[test]
fn upload_file_multipart() -> Result<()> {
    let server = Server::start()?;
    let work = server.work_dir("boto3-upload")?;
    server.python_ok(
        "boto3_upload_file.py",
        &[&unique_bucket("boto3-upload"), utf8(&work)?],
    )?;
    Ok(())
}

#[test]
fn presigned_urls() -> Result<()> {
    let server = Server::start()?;
    server.python_ok("boto3_presigned.py", &[&unique_bucket("boto3-presign")])?;
    Ok(())
}

#[test]
fn paginate_1100_keys() -> Result<()> {
    let server = Server::start()?;
    server.python_ok("boto3_paginate.py", &[&unique_bucket("boto3-paginate")])?;
    Ok(())
}

#[test]
fn error_codes() -> Result<()> {
    let server = Server::start()?;
    server.python_ok("boto3_errors.py", &[&unique_bucket("boto3-errors")])?;
    Ok(())
}

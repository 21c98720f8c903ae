//! The aws CLI's high-level `s3` commands: multipart cp, sync both ways with
//! deletions, ls and recursive rm. These combine many operations the way
//! users actually run them.

use std::fs::{self, File};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use strata_tests::{
    Server, assert_same_tree, json_str, json_u64, run_tool, sha256_file, sha256_hex, tree_digests,
    unique_bucket, utf8, write_random_file, write_tree,
};

const MIB: usize = 1024 * 1024;

#[test]
fn cp_multipart_roundtrip() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3-cp");
    let work = server.work_dir("cp")?;
    server.aws_ok(&["s3", "mb", &format!("s3://{bucket}")])?;

    // 20 MiB is above the CLI's 8 MiB multipart threshold: 8 + 8 + 4.
    let source = work.join("big.bin");
    write_random_file(&source, 20 * MIB)?;
    let object = format!("s3://{bucket}/big.bin");
    server.aws_ok(&["s3", "cp", "--only-show-errors", utf8(&source)?, &object])?;
    let head = server.aws_json(&[
        "s3api",
        "head-object",
        "--bucket",
        &bucket,
        "--key",
        "big.bin",
    ])?;
    ensure!(
        json_u64(&head, "/ContentLength")? == 20 * MIB as u64,
        "{head:#}"
    );
    ensure!(
        json_str(&head, "/ETag")?.ends_with("-3\""),
        "not a 3-part multipart ETag: {head:#}"
    );
    let uploads = server.aws_json(&["s3api", "list-multipart-uploads", "--bucket", &bucket])?;
    ensure!(
        uploads
            .get("Uploads")
            .is_none_or(|list| list == &serde_json::json!([])),
        "completed upload still listed: {uploads:#}"
    );

    let target = work.join("big.out");
    server.aws_ok(&["s3", "cp", "--only-show-errors", &object, utf8(&target)?])?;
    ensure!(
        sha256_file(&target)? == sha256_file(&source)?,
        "downloaded 20 MiB differ from the upload"
    );

    // Server-side copy; above 8 MiB the CLI uses UploadPartCopy.
    let copy = format!("s3://{bucket}/copy of big.bin");
    server.aws_ok(&["s3", "cp", "--only-show-errors", &object, &copy])?;
    let copy_target = work.join("copy.out");
    server.aws_ok(&["s3", "cp", "--only-show-errors", &copy, utf8(&copy_target)?])?;
    ensure!(
        sha256_file(&copy_target)? == sha256_file(&source)?,
        "server-side multipart copy differs from the original"
    );

    // Tags: aws CLI v2 reads the source's before a multipart copy (its
    // `--copy-props default`) and gives up if that fails. Objects carry
    // none here: the set reads empty, deleting it is a no-op, setting tags
    // is refused and changes nothing.
    let s3api = |operation: &str, key: &str, more: &[&str]| {
        let mut args = vec!["s3api", operation, "--bucket", &bucket, "--key", key];
        args.extend_from_slice(more);
        server.aws(&args)
    };
    let read = s3api("get-object-tagging", "big.bin", &[])?.expect_success()?;
    let tagging: serde_json::Value = serde_json::from_slice(&read.stdout)?;
    ensure!(
        tagging["TagSet"] == serde_json::json!([]),
        "tags of an untagged object: {tagging:#}"
    );
    s3api("delete-object-tagging", "big.bin", &[])?.expect_success()?;
    let tagged = work.join("tagged.txt");
    fs::write(&tagged, b"tagged")?;
    for refused in [
        s3api(
            "put-object-tagging",
            "big.bin",
            &["--tagging", "TagSet=[{Key=team,Value=web}]"],
        )?,
        s3api(
            "put-object",
            "tagged.txt",
            &["--body", utf8(&tagged)?, "--tagging", "team=web"],
        )?,
    ] {
        ensure!(
            !refused.status.success() && refused.stderr_text().contains("NotImplemented"),
            "tags were taken: {refused}"
        );
    }
    ensure!(
        !s3api("head-object", "tagged.txt", &[])?.status.success(),
        "an upload refused for its tags was stored"
    );

    // Streaming from stdin (length unknown to the CLI) and to stdout.
    let streamed = format!("s3://{bucket}/streamed.bin");
    let mut upload = server.aws_command(&["s3", "cp", "--only-show-errors", "-", &streamed]);
    upload.stdin(File::open(&source)?);
    run_tool(&mut upload, Duration::from_secs(300))?.expect_success()?;
    let streamed_out = server.aws_ok(&["s3", "cp", "--only-show-errors", &streamed, "-"])?;
    ensure!(
        sha256_hex(&streamed_out.stdout) == sha256_file(&source)?,
        "object streamed from stdin and back to stdout differs ({} bytes back)",
        streamed_out.stdout.len()
    );
    Ok(())
}

#[test]
fn sync_tree_up_and_down() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3-sync");
    let work = server.work_dir("sync")?;
    server.aws_ok(&["s3", "mb", &format!("s3://{bucket}")])?;

    let source = work.join("source");
    write_tree(
        &source,
        &[
            ("a.txt", 10),
            ("empty.txt", 0),
            ("nested/deeper/b.bin", 300_000),
            ("nested/c d e.txt", 1234),
            ("ünïcödé/日本.txt", 77),
            ("large/nine-mib.bin", 9 * MIB),
        ],
    )?;
    age_tree(&source)?;
    let remote = format!("s3://{bucket}/tree/");

    server.aws_ok(&["s3", "sync", "--only-show-errors", utf8(&source)?, &remote])?;
    let down = work.join("down");
    server.aws_ok(&["s3", "sync", "--only-show-errors", &remote, utf8(&down)?])?;
    assert_same_tree(&source, &down)?;

    // Nothing changed, so nothing may be uploaded: sizes and Last-Modified
    // in the listing must be right for the CLI to see that.
    let again = server.aws_ok(&["s3", "sync", "--no-progress", utf8(&source)?, &remote])?;
    ensure!(
        again.stdout_text().trim().is_empty(),
        "a second sync of an unchanged tree transferred files\n{again}"
    );

    // Delete, change and add locally; sync --delete mirrors that.
    fs::remove_file(source.join("a.txt"))?;
    write_random_file(&source.join("nested/c d e.txt"), 4321)?;
    write_random_file(&source.join("new/file.txt"), 99)?;
    server.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        "--delete",
        utf8(&source)?,
        &remote,
    ])?;
    let listed = ls_recursive(&server, &remote)?;
    let expected: Vec<(String, u64)> = tree_sizes(&source)?
        .into_iter()
        .map(|(path, size)| (format!("tree/{path}"), size))
        .collect();
    ensure!(
        listed == expected,
        "after sync --delete, ls shows {listed:?}, expected {expected:?}"
    );

    let fresh = work.join("fresh");
    server.aws_ok(&["s3", "sync", "--only-show-errors", &remote, utf8(&fresh)?])?;
    assert_same_tree(&source, &fresh)?;
    server.aws_ok(&[
        "s3",
        "sync",
        "--only-show-errors",
        "--delete",
        &remote,
        utf8(&down)?,
    ])?;
    assert_same_tree(&source, &down)?;
    Ok(())
}

#[test]
fn ls_and_rm_recursive() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3-ls");
    let work = server.work_dir("ls")?;
    let bucket_url = format!("s3://{bucket}");
    server.aws_ok(&["s3", "mb", &bucket_url])?;
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("dir/one.txt", 11),
            ("dir/sub/two.txt", 22),
            ("keep/three.txt", 33),
            ("root.txt", 44),
        ],
    )?;
    server.aws_ok(&[
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        utf8(&tree)?,
        &format!("{bucket_url}/"),
    ])?;

    let buckets = server.aws_ok(&["s3", "ls"])?;
    ensure!(
        buckets
            .stdout_text()
            .lines()
            .any(|line| line.ends_with(&bucket)),
        "aws s3 ls does not show {bucket}\n{buckets}"
    );

    let top = server.aws_ok(&["s3", "ls", &format!("{bucket_url}/")])?;
    let top_lines: Vec<String> = top
        .stdout_text()
        .lines()
        .map(|line| line.trim().to_string())
        .collect();
    ensure!(
        top_lines.iter().any(|line| line == "PRE dir/")
            && top_lines.iter().any(|line| line == "PRE keep/")
            && top_lines.iter().any(|line| line.ends_with(" 44 root.txt")),
        "aws s3 ls of the bucket root\n{top}"
    );
    ensure!(top_lines.len() == 3, "aws s3 ls of the bucket root\n{top}");

    let listed = ls_recursive(&server, &format!("{bucket_url}/"))?;
    ensure!(
        listed
            == [
                ("dir/one.txt".to_string(), 11),
                ("dir/sub/two.txt".to_string(), 22),
                ("keep/three.txt".to_string(), 33),
                ("root.txt".to_string(), 44)
            ],
        "ls --recursive {listed:?}"
    );

    server.aws_ok(&[
        "s3",
        "rm",
        "--recursive",
        "--only-show-errors",
        &format!("{bucket_url}/dir/"),
    ])?;
    let listed = ls_recursive(&server, &format!("{bucket_url}/"))?;
    ensure!(
        listed
            == [
                ("keep/three.txt".to_string(), 33),
                ("root.txt".to_string(), 44)
            ],
        "after rm --recursive dir/: {listed:?}"
    );

    server
        .aws(&["s3", "rb", &bucket_url])?
        .expect_failure()
        .context("rb of a non-empty bucket must fail")?;
    server.aws_ok(&["s3", "rb", "--force", &bucket_url])?;
    let buckets = server.aws_ok(&["s3", "ls"])?;
    ensure!(
        !buckets.stdout_text().contains(&bucket),
        "removed bucket still listed\n{buckets}"
    );
    Ok(())
}

/// (key, size) from `aws s3 ls --recursive <url>`, whose lines read
/// `2026-01-01 12:00:00       1234 some key with spaces`.
fn ls_recursive(server: &Server, url: &str) -> Result<Vec<(String, u64)>> {
    let output = server.aws_ok(&["s3", "ls", "--recursive", url])?;
    let mut entries = Vec::new();
    for line in output
        .stdout_text()
        .lines()
        .filter(|line| !line.trim().is_empty())
    {
        let mut rest = line.trim_start();
        let mut fields = Vec::new();
        for _ in 0..3 {
            let end = rest
                .find(char::is_whitespace)
                .with_context(|| format!("unexpected ls line {line:?}"))?;
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
        let size = fields[2]
            .parse()
            .with_context(|| format!("no size in ls line {line:?}"))?;
        entries.push((rest.to_string(), size));
    }
    entries.sort();
    Ok(entries)
}

/// Relative path → size of every file under `root`, sorted by path.
fn tree_sizes(root: &std::path::Path) -> Result<Vec<(String, u64)>> {
    let mut sizes = Vec::new();
    for path in tree_digests(root)?.into_keys() {
        let size = fs::metadata(root.join(&path))?.len();
        sizes.push((path, size));
    }
    Ok(sizes)
}

/// Sets every file's mtime an hour back, so that the remote Last-Modified
/// is clearly newer and `aws s3 sync`'s size-and-time comparison is not at
/// the mercy of sub-second truncation.
fn age_tree(root: &std::path::Path) -> Result<()> {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for path in tree_digests(root)?.into_keys() {
        File::options()
            .write(true)
            .open(root.join(&path))?
            .set_modified(an_hour_ago)?;
    }
    Ok(())
}

//! rclone (aws-sdk-go): copy, sync with deletions and `rclone check`, which
//! compares sizes and MD5s (from the ETag, or from rclone's own metadata for
//! multipart objects), then by downloading.

use std::fs;

use anyhow::{Result, ensure};
use strata_tests::{
    RCLONE_REMOTE, Server, assert_same_tree, tree_digests, unique_bucket, utf8, write_random_file,
    write_tree,
};

const MIB: usize = 1024 * 1024;

/// Multipart above 5 MiB (the default cutoff is 200 MiB).
const UPLOAD_FLAGS: [&str; 4] = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"];

#[test]
fn rclone_copy_sync_check() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("rclone");
    let work = server.work_dir("rclone")?;
    let bucket_remote = format!("{RCLONE_REMOTE}:{bucket}");
    let remote = format!("{bucket_remote}/data");

    server.rclone_ok(&["mkdir", &bucket_remote])?;
    let buckets = server.rclone_ok(&["lsd", &format!("{RCLONE_REMOTE}:")])?;
    ensure!(
        buckets
            .stdout_text()
            .lines()
            .any(|line| line.ends_with(&bucket)),
        "rclone lsd does not show {bucket}\n{buckets}"
    );

    let source = work.join("source");
    write_tree(
        &source,
        &[
            ("a.txt", 10),
            ("empty", 0),
            ("nested/b.bin", 400_000),
            ("nested/deeper/c d.txt", 5),
            ("ünïcödé/日本.txt", 64),
            ("large/twelve-mib.bin", 12 * MIB),
        ],
    )?;
    let source_arg = utf8(&source)?;

    let mut copy = vec!["copy", source_arg, remote.as_str()];
    copy.extend(UPLOAD_FLAGS);
    server.rclone_ok(&copy)?;
    server.rclone_ok(&["check", source_arg, &remote])?;
    server.rclone_ok(&["check", "--download", source_arg, &remote])?;

    // Change, delete and add; sync mirrors all three.
    write_random_file(&source.join("nested/b.bin"), 123_456)?;
    fs::remove_file(source.join("a.txt"))?;
    write_random_file(&source.join("new/d.txt"), 77)?;
    write_random_file(&source.join("large/six-mib.bin"), 6 * MIB)?;

    // `check` must notice the difference before the sync, or it proves
    // nothing after it.
    let stale = server.rclone(&["check", source_arg, &remote])?;
    ensure!(
        !stale.success(),
        "rclone check passed although the local tree changed\n{stale}"
    );

    let mut sync = vec!["sync", source_arg, remote.as_str()];
    sync.extend(UPLOAD_FLAGS);
    server.rclone_ok(&sync)?;
    server.rclone_ok(&["check", source_arg, &remote])?;
    server.rclone_ok(&["check", "--download", source_arg, &remote])?;

    let listing = server.rclone_ok(&["lsf", "-R", "--files-only", &remote])?;
    let mut listed: Vec<String> = listing.stdout_text().lines().map(str::to_string).collect();
    listed.sort();
    let expected: Vec<String> = tree_digests(&source)?.into_keys().collect();
    ensure!(
        listed == expected,
        "rclone lsf -R {listed:?}, expected {expected:?}"
    );

    let down = work.join("down");
    server.rclone_ok(&["copy", &remote, utf8(&down)?])?;
    assert_same_tree(&source, &down)?;

    server.rclone_ok(&["purge", &bucket_remote])?;
    let buckets = server.rclone_ok(&["lsd", &format!("{RCLONE_REMOTE}:")])?;
    ensure!(
        !buckets.stdout_text().contains(&bucket),
        "purged bucket still listed\n{buckets}"
    );
    Ok(())
}

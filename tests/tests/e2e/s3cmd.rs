//! s3cmd: its own SigV4 signer, its own multipart (15 MiB parts), and a sync
//! that compares MD5s with ETags and with the MD5 it keeps in metadata.

use std::fs;

use anyhow::{Result, ensure};
use strata_tests::{
    Server, assert_same_tree, sha256_file, unique_bucket, utf8, write_random_file, write_tree,
};

const MIB: usize = 1024 * 1024;

#[test]
fn s3cmd_workflow() -> Result<()> {
    let server = Server::start()?;
    let bucket = unique_bucket("s3cmd");
    let url = format!("s3://{bucket}");
    let work = server.work_dir("s3cmd")?;

    server.s3cmd_ok(&["mb", &url])?;
    // `s3cmd info` reads the bucket's ACL, each grantee's xsi:type included.
    let info = server.s3cmd_ok(&["info", &url])?.stdout_text();
    ensure!(info.contains("FULL_CONTROL"), "s3cmd info {url}:\n{info}");
    let buckets = server.s3cmd_ok(&["ls"])?;
    ensure!(
        buckets.stdout_text().contains(&url),
        "s3cmd ls does not show {url}\n{buckets}"
    );

    let small = work.join("small.txt");
    write_random_file(&small, 1234)?;
    let big = work.join("big.bin");
    // Above s3cmd's 15 MiB part size: two parts.
    write_random_file(&big, 17 * MIB)?;
    server.s3cmd_ok(&["put", utf8(&small)?, &format!("{url}/small.txt")])?;
    server.s3cmd_ok(&["put", utf8(&big)?, &format!("{url}/dir/big.bin")])?;

    let listed = listed_urls(&server, &["ls", "--recursive", &url])?;
    ensure!(
        listed == [format!("{url}/dir/big.bin"), format!("{url}/small.txt")],
        "s3cmd ls -r {listed:?}"
    );
    let top = server.s3cmd_ok(&["ls", &format!("{url}/")])?;
    ensure!(
        top.stdout_text()
            .lines()
            .any(|line| line.trim_start().starts_with("DIR")
                && line.ends_with(&format!("{url}/dir/"))),
        "s3cmd ls of the bucket root does not show dir/\n{top}"
    );

    let small_out = work.join("small.out");
    let big_out = work.join("big.out");
    server.s3cmd_ok(&[
        "get",
        "--force",
        &format!("{url}/small.txt"),
        utf8(&small_out)?,
    ])?;
    server.s3cmd_ok(&[
        "get",
        "--force",
        &format!("{url}/dir/big.bin"),
        utf8(&big_out)?,
    ])?;
    ensure!(
        fs::read(&small_out)? == fs::read(&small)?,
        "small.txt differs"
    );
    ensure!(
        sha256_file(&big_out)? == sha256_file(&big)?,
        "big.bin differs"
    );

    // sync up and down.
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("one.txt", 100),
            ("sub/two.bin", 200_000),
            ("sub/deeper/three with space.txt", 3),
            ("ünïcödé.txt", 42),
        ],
    )?;
    let remote = format!("{url}/tree/");
    let tree_arg = format!("{}/", utf8(&tree)?);
    server.s3cmd_ok(&["sync", &tree_arg, &remote])?;
    let down = work.join("down");
    fs::create_dir_all(&down)?;
    server.s3cmd_ok(&["sync", &remote, &format!("{}/", utf8(&down)?)])?;
    assert_same_tree(&tree, &down)?;

    // Unchanged: s3cmd compares MD5s and must find nothing to upload.
    let again = server.s3cmd_ok(&["sync", &tree_arg, &remote])?;
    ensure!(
        !again
            .stdout_text()
            .lines()
            .any(|line| line.starts_with("upload:")),
        "s3cmd re-uploaded unchanged files\n{again}"
    );

    fs::remove_file(tree.join("one.txt"))?;
    write_random_file(&tree.join("sub/two.bin"), 1000)?;
    server.s3cmd_ok(&["sync", "--delete-removed", &tree_arg, &remote])?;
    let listed = listed_urls(&server, &["ls", "--recursive", &remote])?;
    ensure!(
        listed
            == [
                format!("{remote}sub/deeper/three with space.txt"),
                format!("{remote}sub/two.bin"),
                format!("{remote}ünïcödé.txt"),
            ],
        "after sync --delete-removed: {listed:?}"
    );
    let fresh = work.join("fresh");
    fs::create_dir_all(&fresh)?;
    server.s3cmd_ok(&["sync", &remote, &format!("{}/", utf8(&fresh)?)])?;
    assert_same_tree(&tree, &fresh)?;

    server.s3cmd_ok(&["del", &format!("{url}/small.txt")])?;
    let listed = listed_urls(&server, &["ls", "--recursive", &url])?;
    ensure!(
        !listed.contains(&format!("{url}/small.txt")),
        "deleted object still listed: {listed:?}"
    );

    server.s3cmd_ok(&["del", "--recursive", "--force", &format!("{url}/")])?;
    let listed = listed_urls(&server, &["ls", "--recursive", &url])?;
    ensure!(
        listed.is_empty(),
        "objects left after del --recursive: {listed:?}"
    );
    server.s3cmd_ok(&["rb", &url])?;
    let buckets = server.s3cmd_ok(&["ls"])?;
    ensure!(
        !buckets.stdout_text().contains(&url),
        "removed bucket still listed\n{buckets}"
    );
    Ok(())
}

/// The `s3://…` URLs s3cmd prints, one per line of `ls` output, sorted.
fn listed_urls(server: &Server, args: &[&str]) -> Result<Vec<String>> {
    let output = server.s3cmd_ok(args)?;
    let mut urls: Vec<String> = output
        .stdout_text()
        .lines()
        .filter_map(|line| line.find("s3://").map(|start| line[start..].to_string()))
        .collect();
    urls.sort();
    Ok(urls)
}

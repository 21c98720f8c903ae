//! strata's own FUSE client, `strata mount` (the Swift API: directory markers,
//! uploads on close, segments and an SLO manifest above `--segment-mib`,
//! renames as server-side copies), and the FUSE adapters people already run
//! against S3, mounting a strata bucket: s3fs-fuse (`dir/` marker objects, HEAD probes of `dir`, `dir/` and
//! `dir_$folder$`, ListObjects with a delimiter, CopyObject with
//! `x-amz-metadata-directive: REPLACE` for renames, multipart above
//! `multipart_size`) and `rclone mount` (a VFS write cache uploading after
//! `close`, server-side copies for renames, multipart above the cutoff).
//!
//! `*_copy_rename_delete` mount a bucket, copy a tree in with `cp -r`, check
//! every key through the S3 API, mount again and copy the tree back out (so
//! the bytes come from strata, not from the client's cache) and compare it
//! with `diff -r`, then rename and delete files and directories through the
//! mount and check the bucket and a fresh mount once more. Every operation is
//! applied to the local tree too, which stays the model the bucket must match.
//! The other two change objects in place (chmod, touch, an append or a write
//! into the middle of a multipart object) and list a directory longer than
//! one listing page.
//!
//! FUSE is required: without a usable `/dev/fuse` the tests fail, saying so.
//! Mounts live in a [`MountGuard`], which unmounts (`fusermount3 -u`, then
//! `umount -l`) and ends the client however the test ends.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_tests::{
    Certificates, RCLONE_REMOTE, REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY, Server, Signing,
    SwiftUser, ToolOutput, assert_same_tree, json_str, json_u64, md5_hex, random_bytes, run_tool,
    unique_bucket, utf8, write_random_file,
};

const MIB: usize = 1024 * 1024;
/// Part size of both clients, in MiB: the 6 MiB file goes up in two parts.
const PART_MIB: usize = 5;
/// How long a client gets to mount, and to unmount and exit.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long rclone gets for the uploads it starts after `close`.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one command (`cp`, `diff`, `mv`, `rm`) on a mount.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of each client log shown when a mount is released.
const LOG_TAIL_LINES: usize = 40;
/// The directory the tests copy into the bucket's root, and the key prefix.
const TREE: &str = "tree";
const FUSE_DEVICE: &str = "/dev/fuse";

#[test]
fn strata_mount_copy_rename_delete() -> Result<()> {
    copy_rename_delete(Adapter::StrataMount)
}

#[test]
fn s3fs_copy_rename_delete() -> Result<()> {
    copy_rename_delete(Adapter::S3fs)
}

#[test]
fn rclone_mount_copy_rename_delete() -> Result<()> {
    copy_rename_delete(Adapter::RcloneMount)
}

/// chmod and touch (CopyObject onto itself with `REPLACE` metadata), an
/// append to a multipart object (s3fs re-uploads it in parts, copying the
/// unchanged ones with UploadPartCopy), a symlink, and a directory of more
/// keys than one listing page.
#[test]
fn s3fs_attributes_append_symlink_and_long_listing() -> Result<()> {
    require_fuse()?;
    let mut server = Server::start()?;
    let (bucket, big) = seed_bucket(&server)?;
    let mountpoint = server.work_dir("mnt")?;
    let big_in_mount = mountpoint.join(BIG);

    let mount = Adapter::S3fs.mount(&server, &bucket, &mountpoint)?;
    expect_long_directory(&mountpoint)?;
    fs::set_permissions(&big_in_mount, fs::Permissions::from_mode(0o640))?;
    // Both times: s3fs 1.90 sends nothing for `touch -m` (atime UTIME_OMIT).
    run_ok(
        Command::new("touch")
            .args(["-d", TOUCHED_AT])
            .arg(&big_in_mount),
    )?;
    let head = head_object(&server, &bucket, BIG)?;
    let mode = json_str(&head, "/Metadata/mode")?;
    ensure!(
        mode == (0o100_640).to_string(),
        "x-amz-meta-mode after chmod 640 is {mode}\n{head:#}"
    );
    ensure!(
        metadata_seconds(&head, "/Metadata/mtime")? == TOUCHED_AT_SECS,
        "x-amz-meta-mtime after touch is not {TOUCHED_AT_SECS}\n{head:#}"
    );
    ensure!(
        s3_get(&server, &bucket, BIG)? == big,
        "chmod or touch changed the bytes of {BIG}"
    );

    let tail = b"appended through s3fs";
    OpenOptions::new()
        .append(true)
        .open(&big_in_mount)?
        .write_all(tail)?;
    let mut appended = big.clone();
    appended.extend_from_slice(tail);
    ensure!(
        s3_get(&server, &bucket, BIG)? == appended,
        "GetObject of {BIG} after the append does not return the appended bytes"
    );
    std::os::unix::fs::symlink(BIG, mountpoint.join("link to big"))?;
    mount.unmount()?;

    let mount = Adapter::S3fs.mount(&server, &bucket, &mountpoint)?;
    let mode = fs::metadata(&big_in_mount)?.permissions().mode() & 0o777;
    ensure!(mode == 0o640, "mode {mode:o} after a remount, expected 640");
    let target = fs::read_link(mountpoint.join("link to big"))?;
    ensure!(
        target == Path::new(BIG),
        "the symlink points to {}",
        target.display()
    );
    ensure!(
        fs::read(mountpoint.join("link to big"))? == appended,
        "reading through the symlink does not return {BIG}"
    );
    mount.unmount()?;
    server.assert_healthy()
}

/// touch (rclone's SetModTime: CopyObject onto itself with `REPLACE`
/// metadata), a write into the middle of a multipart object (rclone
/// downloads it into its cache and uploads it again in parts), and a
/// directory of more keys than one listing page.
#[test]
fn rclone_mount_touch_overwrite_and_long_listing() -> Result<()> {
    require_fuse()?;
    let mut server = Server::start()?;
    let (bucket, big) = seed_bucket(&server)?;
    let mountpoint = server.work_dir("mnt")?;
    let big_in_mount = mountpoint.join(BIG);

    let mount = Adapter::RcloneMount.mount(&server, &bucket, &mountpoint)?;
    expect_long_directory(&mountpoint)?;
    run_ok(
        Command::new("touch")
            .args(["-d", TOUCHED_AT])
            .arg(&big_in_mount),
    )?;
    let head = head_object(&server, &bucket, BIG)?;
    ensure!(
        metadata_seconds(&head, "/Metadata/mtime")? == TOUCHED_AT_SECS,
        "x-amz-meta-mtime after touch is not {TOUCHED_AT_SECS}\n{head:#}"
    );
    ensure!(
        s3_get(&server, &bucket, BIG)? == big,
        "touch changed the bytes of {BIG}"
    );

    let patch = b"written into the middle through rclone mount";
    let offset = 6 * MIB;
    let mut file = OpenOptions::new().write(true).open(&big_in_mount)?;
    file.seek(SeekFrom::Start(offset as u64))?;
    file.write_all(patch)?;
    drop(file);
    let mut patched = big.clone();
    patched[offset..offset + patch.len()].copy_from_slice(patch);
    Adapter::RcloneMount.settled(|| {
        ensure!(
            s3_get(&server, &bucket, BIG)? == patched,
            "GetObject of {BIG} does not return the patched bytes"
        );
        Ok(())
    })?;
    mount.unmount()?;

    let mount = Adapter::RcloneMount.mount(&server, &bucket, &mountpoint)?;
    ensure!(
        fs::read(&big_in_mount)? == patched,
        "{BIG} read through a fresh mount is not the patched file"
    );
    mount.unmount()?;
    server.assert_healthy()
}

/// The check every mount test starts with must fail, naming FUSE, when the
/// device is missing: these tests never pass by skipping.
#[test]
fn missing_fuse_device_fails_with_a_clear_message() -> Result<()> {
    let Err(error) = require_fuse_at(Path::new("/dev/no-such-fuse-device")) else {
        bail!("a missing FUSE device was accepted");
    };
    let message = format!("{error:#}");
    ensure!(
        message.contains("FUSE is unavailable") && message.contains("/dev/no-such-fuse-device"),
        "unclear message: {message}"
    );
    Ok(())
}

#[test]
fn mountinfo_lists_fuse_mount_points() {
    fn check(table: &str, expected: &[&str]) {
        let actual: Vec<&str> = fuse_mount_points(table).collect();
        assert_eq!(actual, expected, "{table}");
    }
    check(
        "36 35 98:0 / /tmp/a\\040b rw,nosuid - fuse.s3fs s3fs rw,user_id=0\n\
         37 35 0:52 / /tmp/r rw - fuse.rclone strata:b rw\n\
         38 35 0:20 / /sys/fs/fuse/connections rw - fusectl fusectl rw\n\
         39 35 8:1 / / rw master:1 - ext4 /dev/sda1 rw\n\
         40 35 0:53 / /tmp/plain rw shared:7 - fuse /dev/fuse rw",
        &["/tmp/a\\040b", "/tmp/r", "/tmp/plain"],
    );
    check("", &[]);
    assert_eq!(mountinfo_escape("/tmp/a b\\c"), "/tmp/a\\040b\\134c");
}

fn copy_rename_delete(adapter: Adapter) -> Result<()> {
    require_fuse()?;
    let mut server = Server::start()?;
    let bucket = unique_bucket(adapter.name());
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let work = server.work_dir(adapter.name())?;
    let model = work.join("model");
    write_source_tree(&model, adapter.keeps_empty_directories())?;
    let mountpoint = work.join("mnt");
    fs::create_dir_all(&mountpoint)?;
    let in_mount = mountpoint.join(TREE);

    let mount = adapter.mount(&server, &bucket, &mountpoint)?;
    run_ok(Command::new("cp").arg("-r").arg(&model).arg(&in_mount))?;
    adapter.settled(|| bucket_matches(&server, &bucket, &model))?;
    adapter.expect_uploaded_in_parts(
        &server,
        &bucket,
        &format!("{TREE}/media/six MiB + 123.bin"),
    )?;
    mount.unmount()?;

    // A fresh mount has nothing cached: what comes out was read from strata.
    let mount = adapter.mount(&server, &bucket, &mountpoint)?;
    let copied_out = work.join("copied-out");
    run_ok(Command::new("cp").arg("-r").arg(&in_mount).arg(&copied_out))?;
    run_ok(Command::new("diff").arg("-r").arg(&model).arg(&copied_out))?;

    // A file within its directory, the multipart file into another
    // directory, and a directory with a subdirectory (a copy per key).
    let renamed_files = [
        (
            "project 0/src/file 3 é.txt",
            "project 0/src/renamed ü 3.txt",
        ),
        ("media/six MiB + 123.bin", "project 1/six MiB moved.bin"),
    ];
    let renamed_dir = ("project 2/docs", "project 2/docs renamed");
    for (from, to) in renamed_files.iter().chain([&renamed_dir]) {
        run_ok(
            Command::new("mv")
                .arg(in_mount.join(from))
                .arg(in_mount.join(to)),
        )?;
        fs::rename(model.join(from), model.join(to))?;
        ensure!(
            !in_mount.join(from).exists(),
            "{from} is still in the mount after mv"
        );
    }
    for (_, to) in renamed_files {
        ensure!(
            fs::read(in_mount.join(to))? == fs::read(model.join(to))?,
            "{to} in the mount does not hold the bytes renamed to it"
        );
    }
    assert_same_tree(&model.join(renamed_dir.1), &in_mount.join(renamed_dir.1))?;
    adapter.settled(|| bucket_matches(&server, &bucket, &model))?;
    for (from, to) in renamed_files {
        expect_no_key(&server, &bucket, &format!("{TREE}/{from}"))?;
        ensure!(
            s3_get(&server, &bucket, &format!("{TREE}/{to}"))? == fs::read(model.join(to))?,
            "GetObject of {to} does not return the bytes renamed to it"
        );
    }
    let old_dir = list_objects(&server, &bucket, &format!("{TREE}/{}/", renamed_dir.0))?;
    ensure!(
        old_dir.is_empty(),
        "keys left under the renamed directory: {:?}",
        old_dir.keys()
    );

    let deleted_file = "odd names/emoji 🦀.txt";
    let deleted_dir = "project 3";
    run_ok(Command::new("rm").arg(in_mount.join(deleted_file)))?;
    run_ok(Command::new("rm").arg("-r").arg(in_mount.join(deleted_dir)))?;
    fs::remove_file(model.join(deleted_file))?;
    fs::remove_dir_all(model.join(deleted_dir))?;
    for deleted in [deleted_file, deleted_dir] {
        ensure!(
            !in_mount.join(deleted).exists(),
            "{deleted} is still in the mount after rm"
        );
    }
    adapter.settled(|| bucket_matches(&server, &bucket, &model))?;
    expect_no_key(&server, &bucket, &format!("{TREE}/{deleted_file}"))?;
    let left = list_objects(&server, &bucket, &format!("{TREE}/{deleted_dir}/"))?;
    ensure!(
        left.is_empty(),
        "keys left under the deleted directory: {:?}",
        left.keys()
    );
    mount.unmount()?;

    let mount = adapter.mount(&server, &bucket, &mountpoint)?;
    run_ok(Command::new("diff").arg("-r").arg(&model).arg(&in_mount))?;
    mount.unmount()?;
    server.assert_healthy()
}

/// strata mount of a whole account: containers as folders at the root,
/// files above `--segment-mib` uploaded as segments plus a Static Large
/// Object manifest (read back whole through Swift and a fresh mount), a
/// rename of such a file (its manifest moved, its segments kept where they
/// are, and deleted when it is overwritten or removed after), and
/// what the root and a non-empty folder refuse.
#[test]
fn strata_mount_account_containers_and_large_files() -> Result<()> {
    require_fuse()?;
    let mut server = Server::start()?;
    let work = server.work_dir("account")?;
    let mountpoint = work.join("mnt");
    fs::create_dir_all(&mountpoint)?;
    let mount_account = || {
        let command = strata_mount_command(
            &server,
            server.endpoint(),
            &mountpoint,
            &["--segment-mib", "1"],
        )?;
        start_strata_mount(command, &work, &mountpoint)
    };
    let container = unique_bucket("account-mount");
    let swift_path = |key: &str| format!("/v1/AUTH_admin/{container}{key}");

    let mount = mount_account()?;
    fs::create_dir(mountpoint.join(&container))?;
    let head = server.swift_as_root("HEAD", &swift_path(""), None, &[])?;
    ensure!(
        head.status == 204,
        "mkdir at the root made no container: {}",
        head.status
    );
    let refused = File::create(mountpoint.join("file at the root"));
    ensure!(refused.is_err(), "a file was created at the account's root");

    let big = write_random_file(&mountpoint.join(&container).join("big.bin"), 3 * MIB + 5)?;
    let head = server.swift_as_root("HEAD", &swift_path("/big.bin"), None, &[])?;
    ensure!(
        head.header("x-static-large-object") == Some("True")
            && head.header("content-length") == Some(&big.len().to_string()),
        "big.bin is not a {}-byte Static Large Object: {:?}",
        big.len(),
        head.headers
    );
    let get = server.swift_as_root("GET", &swift_path("/big.bin"), None, &[])?;
    ensure!(get.body == big, "Swift GET of the large object differs");
    // The other doors read it assembled too: S3 lists, heads and gets it,
    // FTP downloads it.
    let listed = list_objects(&server, &container, "")?;
    ensure!(
        listed.get("big.bin").map(|object| object.size) == Some(big.len() as u64),
        "S3 lists the large object as {:?}",
        listed.get("big.bin")
    );
    let head = head_object(&server, &container, "big.bin")?;
    ensure!(
        json_u64(&head, "/ContentLength")? == big.len() as u64,
        "S3 HeadObject of the large object: {head:#}"
    );
    ensure!(
        s3_get(&server, &container, "big.bin")? == big,
        "S3 GetObject of the large object differs"
    );
    // An S3 copy is the assembled bytes as a plain object; its conditions
    // are about those bytes, as HeadObject shows them.
    let assembled_etag = json_str(&head, "/ETag")?;
    server.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        &container,
        "--key",
        "copy.bin",
        "--copy-source",
        &format!("{container}/big.bin"),
        "--copy-source-if-match",
        assembled_etag,
    ])?;
    let copy = server.swift_as_root("HEAD", &swift_path("/copy.bin"), None, &[])?;
    ensure!(
        copy.header("x-static-large-object").is_none()
            && copy.header("etag").map(|etag| etag.trim_matches('"')) == Some(&md5_hex(&big)),
        "the S3 copy of the large object is not a plain copy: {:?}",
        copy.headers
    );
    ensure!(
        s3_get(&server, &container, "copy.bin")? == big,
        "the S3 copy of the large object differs"
    );
    let deleted = server.swift_as_root("DELETE", &swift_path("/copy.bin"), None, &[])?;
    ensure!(
        deleted.status == 204,
        "deleting the copy: {}",
        deleted.status
    );
    let ftp_copy = work.join("ftp-big.bin");
    let root = SwiftUser::root();
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("get {container}/big.bin -o {}", utf8(&ftp_copy)?),
    )?;
    ensure!(
        fs::read(&ftp_copy)? == big,
        "FTP RETR of the large object differs"
    );
    // A Dynamic Large Object (what `swift upload --segment-size` makes)
    // reads assembled through S3 and FTP as well.
    let dlo_segments = format!("/v1/AUTH_admin/{container}_dlo");
    let created = server.swift_as_root("PUT", &dlo_segments, None, &[])?;
    ensure!(
        created.status == 201,
        "PUT {dlo_segments}: {}",
        created.status
    );
    for (index, part) in [&b"first part, "[..], b"second part"].iter().enumerate() {
        let path = format!("{dlo_segments}/dlo/{index}");
        let put = server.swift_as_root("PUT", &path, Some(part), &[])?;
        ensure!(put.status == 201, "PUT {path}: {}", put.status);
    }
    let manifest = format!("{container}_dlo/dlo/");
    let put = server.swift_as_root(
        "PUT",
        &swift_path("/dlo.txt"),
        Some(b""),
        &[("x-object-manifest", &manifest)],
    )?;
    ensure!(put.status == 201, "PUT of the DLO manifest: {}", put.status);
    ensure!(
        s3_get(&server, &container, "dlo.txt")? == b"first part, second part",
        "S3 GetObject of a DLO is not its segments"
    );
    let ftp_dlo = work.join("ftp-dlo.txt");
    server.lftp_ok(
        &root.login(),
        &root.key,
        &format!("get {container}/dlo.txt -o {}", utf8(&ftp_dlo)?),
    )?;
    ensure!(
        fs::read(&ftp_dlo)? == b"first part, second part",
        "FTP RETR of a DLO is not its segments"
    );
    // Listed with its assembled size too, which mirroring clients compare.
    let listing = server
        .lftp_ok(&root.login(), &root.key, &format!("cls -l {container}/"))?
        .stdout_text();
    let dlo_line = listing.lines().find(|line| line.contains("dlo.txt"));
    ensure!(
        // The size, before the date's three fields and the name: the
        // day of the month could be 23 too.
        dlo_line.is_some_and(|line| line.split_whitespace().rev().nth(4) == Some("23")),
        "the FTP listing of the DLO:\n{listing}"
    );
    let segments = format!("/v1/AUTH_admin/{container}_segments");
    let listed = server.swift_as_root("GET", &segments, None, &[])?;
    ensure!(
        String::from_utf8_lossy(&listed.body).lines().count() == 4,
        "expected 4 segments of 1 MiB:\n{}",
        String::from_utf8_lossy(&listed.body)
    );
    mount.unmount()?;

    let mount = mount_account()?;
    let in_mount = mountpoint.join(&container);
    ensure!(
        fs::metadata(in_mount.join("big.bin"))?.len() == big.len() as u64,
        "a fresh mount lists the large object with the wrong size"
    );
    // Swift lists a DLO's manifest as 0 bytes; the folder shows its size.
    let dlo_size = fs::read_dir(&in_mount)?
        .filter_map(|entry| entry.ok())
        .find(|entry| entry.file_name() == "dlo.txt")
        .context("the DLO is not in the folder")?
        .metadata()?
        .len();
    ensure!(dlo_size == 23, "the DLO is listed with {dlo_size} bytes");
    ensure!(
        fs::read(in_mount.join("dlo.txt"))? == b"first part, second part",
        "reading the DLO through the mount differs"
    );
    let deleted = server.swift_as_root("DELETE", &swift_path("/dlo.txt"), None, &[])?;
    ensure!(
        deleted.status == 204,
        "deleting the DLO: {}",
        deleted.status
    );
    ensure!(
        fs::read(in_mount.join("big.bin"))? == big,
        "reading the large object back differs"
    );
    // Overwritten, the large object leaves no segments behind: only the
    // new one's are there.
    let big = write_random_file(&in_mount.join("big.bin"), 2 * MIB + 3)?;
    let listed = server.swift_as_root("GET", &segments, None, &[])?;
    ensure!(
        listed.body_text().lines().count() == 3,
        "after the overwrite, expected the new object's 3 segments:\n{}",
        listed.body_text()
    );
    ensure!(
        fs::read(in_mount.join("big.bin"))? == big,
        "the overwritten large object reads back other bytes"
    );
    // Moved over another large file: the moved one is its manifest, whose
    // segments stay where they are (copied assembled, a file past the
    // server's largest object could not move); the replaced one's go, as
    // an overwrite's.
    let before = server
        .swift_as_root("GET", &segments, None, &[])?
        .body_text();
    write_random_file(&in_mount.join("moved.bin"), 2 * MIB + 1)?;
    fs::rename(in_mount.join("big.bin"), in_mount.join("moved.bin"))?;
    ensure!(
        fs::read(in_mount.join("moved.bin"))? == big,
        "the renamed file differs"
    );
    let listed = server.swift_as_root("GET", &segments, None, &[])?;
    ensure!(
        listed.body_text() == before,
        "after the rename, segments\n{}\ninstead of the moved file's\n{before}",
        listed.body_text()
    );
    // Overwritten after the move, it leaves none of the segments it kept
    // under its old name.
    let moved = write_random_file(&in_mount.join("moved.bin"), 2 * MIB + 5)?;
    let listed = server
        .swift_as_root("GET", &segments, None, &[])?
        .body_text();
    ensure!(
        listed.lines().count() == 3 && listed.lines().all(|name| name.starts_with("moved.bin/")),
        "after overwriting the moved file, expected its 3 new segments:\n{listed}"
    );
    ensure!(
        fs::read(in_mount.join("moved.bin"))? == moved,
        "the moved file, overwritten, reads back other bytes"
    );
    // A manifest copied by hand, as a move cut short between its copy and
    // its source's deletion leaves one, shares its segments: saving over
    // the copy leaves those the original still lists.
    server
        .swift_as_root(
            "PUT",
            &swift_path("/copy.bin?multipart-manifest=get"),
            Some(b""),
            &[("X-Copy-From", &format!("{container}/moved.bin"))],
        )?
        .expect_status(201)?;
    // Seen once the mount's listing of the folder is past its TTL.
    let copy = in_mount.join("copy.bin");
    let seen_by = Instant::now() + Duration::from_secs(20);
    while !copy.exists() && Instant::now() < seen_by {
        thread::sleep(Duration::from_millis(200));
    }
    ensure!(copy.exists(), "the mount never showed the copied manifest");
    fs::write(&copy, b"small now")?;
    ensure!(
        fs::read(in_mount.join("moved.bin"))? == moved,
        "saving over a copy of its manifest took the moved file's segments"
    );
    ensure!(fs::read(&copy)? == b"small now", "the copy saved over");
    fs::remove_file(&copy)?;
    let not_empty = fs::remove_dir(&in_mount);
    ensure!(
        not_empty.as_ref().err().and_then(|err| err.raw_os_error()) == Some(39),
        "rmdir of a container with a file: {not_empty:?}, expected ENOTEMPTY"
    );
    fs::remove_file(in_mount.join("moved.bin"))?;
    let listed = server.swift_as_root("GET", &segments, None, &[])?;
    ensure!(
        listed.body.is_empty(),
        "segments left after the moved file's removal:\n{}",
        listed.body_text()
    );
    fs::remove_dir(&in_mount)?;
    let head = server.swift_as_root("HEAD", &swift_path(""), None, &[])?;
    ensure!(
        head.status == 404,
        "rmdir left the container: {}",
        head.status
    );
    mount.unmount()?;
    server.assert_healthy()
}

/// With `--listing-ttl 0` nothing is trusted from one call to the next,
/// and names still resolve: a lookup reads the listing it just fetched, and
/// so does a directory being opened.
#[test]
fn strata_mount_trusting_no_listing() -> Result<()> {
    require_fuse()?;
    let server = Server::start()?;
    let bucket = unique_bucket("mount-ttl0");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    for (key, body) in [("a.txt", "first"), ("dir/b.txt", "second")] {
        let status = server
            .http(
                "PUT",
                &format!("/{bucket}/{key}"),
                Signing::Root,
                Some(body.as_bytes()),
                &[],
            )?
            .status;
        ensure!(status == 200, "PUT {key}: {status}");
    }
    let (mountpoint, _mount) = mount_listing_nothing(&server, &bucket, "ttl0")?;
    let mut names: Vec<String> = fs::read_dir(&mountpoint)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    ensure!(names == ["a.txt", "dir"], "the mount lists {names:?}");
    ensure!(fs::read_to_string(mountpoint.join("a.txt"))? == "first");
    ensure!(fs::read_to_string(mountpoint.join("dir/b.txt"))? == "second");
    Ok(())
}

/// Open files as programs use them: an append survives a listing refresh
/// (it must not go back to the stored end of the file), and a file removed
/// while open stays removed when it is closed.
#[test]
fn strata_mount_open_files_appended_and_removed() -> Result<()> {
    use std::io::Write as _;
    require_fuse()?;
    let server = Server::start()?;
    let bucket = unique_bucket("mount-open");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let put = server.http(
        "PUT",
        &format!("/{bucket}/log.txt"),
        Signing::Root,
        Some(b"first\n"),
        &[],
    )?;
    ensure!(put.status == 200, "{put}");
    // Every stat lists again: a refresh between two appends.
    let (mountpoint, _mount) = mount_listing_nothing(&server, &bucket, "open-files")?;
    let log = mountpoint.join("log.txt");
    let expect_stored = |expected: &[u8], after: &str| -> Result<()> {
        let stored = server.http(
            "GET",
            &format!("/{bucket}/log.txt"),
            Signing::Root,
            None,
            &[],
        )?;
        ensure!(
            stored.body == expected,
            "after {after} the object holds {:?}",
            stored.body_text()
        );
        Ok(())
    };
    {
        let mut appender = fs::OpenOptions::new().append(true).open(&log)?;
        appender.write_all(b"second\n")?;
        let listed = fs::read_dir(&mountpoint)?.count();
        ensure!(listed == 1, "{listed} entries");
        fs::metadata(&log)?;
        appender.write_all(b"third\n")?;
    }
    expect_stored(b"first\nsecond\nthird\n", "two appends")?;

    // Two writers at once (a daemon's log and an `echo >>`), each closing
    // in turn: neither overwrites what the other wrote, and a reader open
    // meanwhile reads both.
    {
        let mut daemon = fs::OpenOptions::new().append(true).open(&log)?;
        let mut echo = fs::OpenOptions::new().append(true).open(&log)?;
        daemon.write_all(b"a\n")?;
        echo.write_all(b"b\n")?;
        daemon.write_all(b"c\n")?;
        let read = fs::read(&log)?;
        ensure!(
            read == b"first\nsecond\nthird\na\nb\nc\n",
            "a reader got {:?}",
            String::from_utf8_lossy(&read)
        );
        drop(echo);
        daemon.write_all(b"d\n")?;
    }
    expect_stored(b"first\nsecond\nthird\na\nb\nc\nd\n", "two writers")?;

    let scratch = mountpoint.join("scratch.txt");
    {
        let mut file = fs::File::create(&scratch)?;
        file.write_all(b"scratch")?;
        file.sync_all()?;
        fs::remove_file(&scratch)?;
        file.write_all(b" written after the remove")?;
    }
    ensure!(
        !scratch.exists(),
        "a file removed while open came back on close"
    );
    expect_no_key(&server, &bucket, "scratch.txt")?;
    Ok(())
}

/// `rm` of a file while another process's close is still uploading it
/// (on another of the mount's request threads): the upload must not put the file back
/// once the remove has deleted it.
#[test]
fn strata_mount_file_removed_during_its_upload_stays_removed() -> Result<()> {
    require_fuse()?;
    let server = Server::start()?;
    let bucket = unique_bucket("mount-rm-upload");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let (mountpoint, _mount) = mount_listing_nothing(&server, &bucket, "rm-upload")?;
    let path = mountpoint.join("video.bin");
    let body = random_bytes(64 * MIB);
    for round in 0..3 {
        let (closing, closed) = std::sync::mpsc::channel();
        let writer = {
            let (path, body) = (path.clone(), body.clone());
            thread::spawn(move || -> std::io::Result<()> {
                let mut file = File::create(&path)?;
                file.write_all(&body)?;
                let _ = closing.send(());
                // close(): the mount uploads the 64 MiB now.
                drop(file);
                Ok(())
            })
        };
        closed
            .recv_timeout(UPLOAD_TIMEOUT)
            .context("the writer did not finish writing")?;
        thread::sleep(Duration::from_millis(100));
        fs::remove_file(&path).with_context(|| format!("round {round}: rm"))?;
        // The close may report the upload or nothing; either way the
        // file is gone.
        let _ = writer.join();
        ensure!(!path.exists(), "round {round}: the removed file is back");
        expect_no_key(&server, &bucket, "video.bin").with_context(|| format!("round {round}"))?;
    }
    Ok(())
}

/// A server that takes objects of 1 MiB at most: the mount learns it from
/// `/info` and uploads a larger file in segments of that size, without
/// being told (with `--segment-mib` above it too).
#[test]
fn strata_mount_segments_at_the_servers_largest_object() -> Result<()> {
    require_fuse()?;
    let server = Server::start_with_config("[limits]\nmax_object_size = 1048576\n")?;
    let bucket = unique_bucket("mount-limit");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let body = random_bytes(2 * 1024 * 1024 + 100);
    for (name, extra) in [
        ("default.bin", &[][..]),
        ("asked.bin", &["--segment-mib", "4"][..]),
    ] {
        let (mountpoint, _mount) = mount_listing_nothing_with(&server, &bucket, name, extra)?;
        fs::write(mountpoint.join(name), &body)?;
        let path = format!("/v1/AUTH_admin/{bucket}/{name}");
        let head = server.swift_as_root("HEAD", &path, None, &[])?;
        ensure!(
            head.status == 200 && head.header("x-static-large-object") == Some("True"),
            "{name}: {head}"
        );
        ensure!(
            fs::read(mountpoint.join(name))? == body,
            "{name} reads back other bytes"
        );
        let manifest = server
            .swift_as_root("GET", &format!("{path}?multipart-manifest=get"), None, &[])?
            .body_text();
        let manifest: serde_json::Value = serde_json::from_str(&manifest)?;
        let sizes: Vec<u64> = manifest
            .as_array()
            .context("a manifest is a list")?
            .iter()
            .filter_map(|segment| segment["bytes"].as_u64())
            .collect();
        ensure!(
            sizes == [1_048_576, 1_048_576, 100],
            "{name}: segments of {sizes:?}"
        );

        // `mv` moves the manifest: copied assembled, the file would pass
        // the server's largest object (EFBIG), and the source's deletion
        // would take the segments along.
        let moved = format!("moved-{name}");
        fs::rename(mountpoint.join(name), mountpoint.join(&moved))?;
        ensure!(
            fs::read(mountpoint.join(&moved))? == body,
            "{moved} reads back other bytes"
        );
        server
            .swift_as_root("HEAD", &path, None, &[])?
            .expect_status(404)?;
        let head = server.swift_as_root(
            "HEAD",
            &format!("/v1/AUTH_admin/{bucket}/{moved}"),
            None,
            &[],
        )?;
        ensure!(
            head.header("x-static-large-object") == Some("True"),
            "{moved}: {head}"
        );
    }
    Ok(())
}

/// A handle reads one version of a file: when another client replaces the
/// object between two of its reads, the next read fails (ESTALE, as NFS
/// says of a file replaced under an open handle) rather than return the
/// new version's bytes after the old one's.
#[test]
fn strata_mount_reader_of_a_replaced_file_is_told_so() -> Result<()> {
    use std::io::Read as _;
    require_fuse()?;
    let server = Server::start()?;
    let bucket = unique_bucket("mount-stale");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let path = format!("/{bucket}/data.bin");
    let first = random_bytes(1024 * 1024);
    server
        .http("PUT", &path, Signing::Root, Some(&first), &[])?
        .expect_status(200)?;
    let (mountpoint, _mount) = mount_listing_nothing(&server, &bucket, "stale")?;

    let mut reader = fs::File::open(mountpoint.join("data.bin"))?;
    let mut head = vec![0; 4096];
    reader.read_exact(&mut head)?;
    ensure!(head == first[..4096], "the first read differs");
    let second = random_bytes(1024 * 1024);
    server
        .http("PUT", &path, Signing::Root, Some(&second), &[])?
        .expect_status(200)?;
    reader.seek(SeekFrom::Start(900 * 1024))?;
    let mut tail = vec![0; 4096];
    match reader.read_exact(&mut tail) {
        Err(err) if err.raw_os_error() == Some(ESTALE) => {}
        other => bail!("a read after the replacement gave {other:?}"),
    }
    // Opened again, the file is the new version.
    ensure!(
        fs::read(mountpoint.join("data.bin"))? == second,
        "a new handle reads other bytes"
    );
    Ok(())
}

/// `rm` of a file another client deleted since the mount listed it says
/// ENOENT, and the folder stops showing it at once, not when its listing
/// expires.
#[test]
fn strata_mount_forgets_a_file_deleted_elsewhere_on_rm() -> Result<()> {
    require_fuse()?;
    let server = Server::start()?;
    let bucket = unique_bucket("mount-gone");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    for key in ["gone.txt", "kept.txt"] {
        server
            .http(
                "PUT",
                &format!("/{bucket}/{key}"),
                Signing::Root,
                Some(b"x"),
                &[],
            )?
            .expect_status(200)?;
    }
    let work = server.work_dir("gone")?;
    let mountpoint = work.join("mnt");
    fs::create_dir_all(&mountpoint)?;
    let url = format!("{}/{bucket}", server.endpoint());
    let command = strata_mount_command(&server, &url, &mountpoint, &["--listing-ttl", "600"])?;
    let _mount = start_strata_mount(command, &work, &mountpoint)?;
    let names = || -> Result<Vec<String>> {
        let mut names = fs::read_dir(&mountpoint)?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    };
    ensure!(names()? == ["gone.txt", "kept.txt"], "{:?}", names()?);

    server
        .http(
            "DELETE",
            &format!("/{bucket}/gone.txt"),
            Signing::Root,
            None,
            &[],
        )?
        .expect_status(204)?;
    match fs::remove_file(mountpoint.join("gone.txt")) {
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        other => bail!("rm of a file deleted elsewhere gave {other:?}"),
    }
    ensure!(names()? == ["kept.txt"], "after rm: {:?}", names()?);
    Ok(())
}

/// "Stale file handle", on Linux.
const ESTALE: i32 = 116;

/// `bucket` mounted by `strata mount --listing-ttl 0` (every lookup lists
/// again) in a work directory named `tag`: its mountpoint and guard.
fn mount_listing_nothing(
    server: &Server,
    bucket: &str,
    tag: &str,
) -> Result<(std::path::PathBuf, MountGuard)> {
    mount_listing_nothing_with(server, bucket, tag, &[])
}

/// [`mount_listing_nothing`] with `extra` flags.
fn mount_listing_nothing_with(
    server: &Server,
    bucket: &str,
    tag: &str,
    extra: &[&str],
) -> Result<(std::path::PathBuf, MountGuard)> {
    let work = server.work_dir(tag)?;
    let mountpoint = work.join("mnt");
    fs::create_dir_all(&mountpoint)?;
    let url = format!("{}/{bucket}", server.endpoint());
    let mut flags = vec!["--listing-ttl", "0"];
    flags.extend_from_slice(extra);
    let command = strata_mount_command(server, &url, &mountpoint, &flags)?;
    let guard = start_strata_mount(command, &work, &mountpoint)?;
    Ok((mountpoint, guard))
}

/// `strata mount https://…` through the gateway's TLS port: without the
/// gateway's CA it refuses to start, naming the certificate, and so it does
/// when a login over TLS is handed a plain-text storage URL; with
/// `--cacert` a file copied in reads back in plain HTTP.
#[test]
fn strata_mount_over_https_trusts_the_given_ca() -> Result<()> {
    require_fuse()?;
    let certs_dir = tempfile::Builder::new()
        .prefix("strata-mount-tls-")
        .tempdir()?;
    let certs = Certificates::make(certs_dir.path())?;
    let server = Server::start_with_args(&[
        "--tls-cert",
        utf8(&certs.cert)?,
        "--tls-key",
        utf8(&certs.key)?,
    ])?;
    let bucket = unique_bucket("mount-https");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let url = format!("https://127.0.0.1:{}/{bucket}", server.port());
    let work = server.work_dir("https")?;
    let mountpoint = work.join("mnt");
    fs::create_dir_all(&mountpoint)?;

    let mut untrusting = strata_mount_command(&server, &url, &mountpoint, &[])?;
    let refused = run_tool(&mut untrusting, MOUNT_TIMEOUT)?.expect_failure()?;
    ensure!(refused.stderr_text().contains("UnknownIssuer"), "{refused}");

    let ca = utf8(&certs.ca)?;
    // A gateway that hands out plain-text storage URLs would get the token
    // in clear: the mount refuses it.
    let downgrading = Server::start_with_config_and_args(
        "public_url = \"http://127.0.0.1:9\"\n",
        &[
            "--tls-cert",
            utf8(&certs.cert)?,
            "--tls-key",
            utf8(&certs.key)?,
        ],
    )?;
    let downgrading_url = format!("https://127.0.0.1:{}", downgrading.port());
    let mut downgraded = strata_mount_command(
        &downgrading,
        &downgrading_url,
        &mountpoint,
        &["--cacert", ca],
    )?;
    let refused = run_tool(&mut downgraded, MOUNT_TIMEOUT)?.expect_failure()?;
    ensure!(refused.stderr_text().contains("plain text"), "{refused}");

    let command = strata_mount_command(&server, &url, &mountpoint, &["--cacert", ca])?;
    let _mount = start_strata_mount(command, &work, &mountpoint)?;
    fs::write(mountpoint.join("hello.txt"), "over TLS")?;
    let read = server.http(
        "GET",
        &format!("/{bucket}/hello.txt"),
        Signing::Root,
        None,
        &[],
    )?;
    ensure!(
        read.status == 200 && read.body == b"over TLS",
        "{} {:?}",
        read.status,
        String::from_utf8_lossy(&read.body)
    );
    Ok(())
}

/// Runs a [`strata_mount_command`] until it has mounted, its output in
/// `work/mount.out`.
fn start_strata_mount(command: Command, work: &Path, mountpoint: &Path) -> Result<MountGuard> {
    let output = work.join("mount.out");
    MountGuard::start(
        "strata-mount",
        command,
        mountpoint,
        vec![output.clone()],
        output,
    )
}

/// `strata mount URL MOUNTPOINT` as the root user, with `extra` flags and a
/// spool directory of its own.
fn strata_mount_command(
    server: &Server,
    url: &str,
    mountpoint: &Path,
    extra: &[&str],
) -> Result<Command> {
    static N_SPOOLS: AtomicU32 = AtomicU32::new(0);
    let spool = server.work_dir(&format!(
        "strata-spool-{}",
        N_SPOOLS.fetch_add(1, Ordering::Relaxed)
    ))?;
    let mut command = server.client_command(utf8(server.binary())?);
    command
        .env("ST_USER", SwiftUser::root().login())
        .env("ST_KEY", ROOT_SECRET_KEY)
        .env("STRATA_LOG", "info,strata_mount=debug")
        .args(["mount", "--spool", utf8(&spool)?])
        .args(extra)
        .arg(url)
        .arg(mountpoint);
    Ok(command)
}

/// A multipart object the attribute tests change.
const BIG: &str = "big.bin";
/// Keys in `many/`: more than the 1000 one listing page holds.
const N_MANY: usize = 1010;
const TOUCHED_AT: &str = "2020-01-02 03:04:05 UTC";
const TOUCHED_AT_SECS: u64 = 1_577_934_245;

/// A bucket holding `many/` (`N_MANY` small keys, no directory marker),
/// uploaded with rclone, and `big.bin` (11 MiB of random bytes, which the
/// aws CLI uploads in two parts); returns the bucket and those bytes.
fn seed_bucket(server: &Server) -> Result<(String, Vec<u8>)> {
    let bucket = unique_bucket("mount-attrs");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    let seed = server.work_dir("seed")?;
    let many = seed.join("many");
    fs::create_dir_all(&many)?;
    for file_idx in 0..N_MANY {
        fs::write(many.join(format!("f{file_idx}")), file_idx.to_string())?;
    }
    let remote = format!("{RCLONE_REMOTE}:{bucket}/many");
    server.rclone_ok(&["copy", utf8(&many)?, &remote, "--transfers", "16"])?;
    let big_path = seed.join(BIG);
    let big = write_random_file(&big_path, 11 * MIB)?;
    server.aws_ok(&[
        "s3",
        "cp",
        utf8(&big_path)?,
        &format!("s3://{bucket}/{BIG}"),
    ])?;
    let head = head_object(server, &bucket, BIG)?;
    ensure!(
        json_str(&head, "/ETag")?.contains('-'),
        "{BIG} was not uploaded in parts\n{head:#}"
    );
    Ok((bucket, big))
}

/// Fails unless `many/` in the mount lists every seeded name: the client
/// must follow the listing past its first page.
fn expect_long_directory(mountpoint: &Path) -> Result<()> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(mountpoint.join("many"))? {
        names.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    let expected: BTreeSet<String> = (0..N_MANY).map(|file_idx| format!("f{file_idx}")).collect();
    ensure!(
        names == expected,
        "many/ lists {} names, expected {N_MANY}; missing {:?}, unexpected {:?}",
        names.len(),
        expected.difference(&names).take(10).collect::<Vec<_>>(),
        names.difference(&expected).take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// HeadObject of `key`, as the aws CLI prints it.
fn head_object(server: &Server, bucket: &str, key: &str) -> Result<serde_json::Value> {
    server.aws_json(&["s3api", "head-object", "--bucket", bucket, "--key", key])
}

/// Whole seconds of a metadata value that both clients write as Unix time
/// (`1577934245`, or rclone's `1577934245.000000000`).
fn metadata_seconds(head: &serde_json::Value, pointer: &str) -> Result<u64> {
    let text = json_str(head, pointer)?;
    let seconds = text.split('.').next().unwrap_or(text);
    seconds
        .parse()
        .with_context(|| format!("{pointer} is {text:?}, not Unix time"))
}

#[derive(Debug, Clone, Copy)]
enum Adapter {
    StrataMount,
    S3fs,
    RcloneMount,
}

impl Adapter {
    fn name(self) -> &'static str {
        match self {
            Adapter::StrataMount => "strata-mount",
            Adapter::S3fs => "s3fs",
            Adapter::RcloneMount => "rclone-mount",
        }
    }

    /// strata mount and s3fs store a directory as a `dir/` marker object, so
    /// an empty one survives a remount; rclone (1.60) keeps empty
    /// directories in its VFS only and writes no markers.
    fn keeps_empty_directories(self) -> bool {
        !matches!(self, Adapter::RcloneMount)
    }

    /// Runs `check` once for strata mount and s3fs, which upload before
    /// `close` returns; retries it for a bounded time for rclone, whose
    /// write cache uploads after `close`.
    fn settled(self, check: impl Fn() -> Result<()>) -> Result<()> {
        if !matches!(self, Adapter::RcloneMount) {
            return check();
        }
        let deadline = Instant::now() + UPLOAD_TIMEOUT;
        loop {
            match check() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!(
                        "rclone mount had not uploaded everything {UPLOAD_TIMEOUT:?} after the last change"
                    )));
                }
                Err(_) => thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Fails unless `key` went up in parts, as a multipart upload (an ETag
    /// with `-`). strata mount sends files up to the largest object as one
    /// streamed PUT, so that every door reads them as plain objects; its
    /// segmented uploads have a test of their own.
    fn expect_uploaded_in_parts(self, server: &Server, bucket: &str, key: &str) -> Result<()> {
        if let Adapter::StrataMount = self {
            return Ok(());
        }
        let head = head_object(server, bucket, key)?;
        ensure!(
            json_str(&head, "/ETag")?.contains('-'),
            "{key} did not go up as a multipart upload: {head:#}"
        );
        Ok(())
    }

    /// Mounts `bucket` on `mountpoint` and waits until the mount is live.
    fn mount(self, server: &Server, bucket: &str, mountpoint: &Path) -> Result<MountGuard> {
        static N_MOUNTS: AtomicU32 = AtomicU32::new(0);
        let mount_idx = N_MOUNTS.fetch_add(1, Ordering::Relaxed);
        let logs = server.work_dir("mount-logs")?;
        let name = self.name();
        let log = logs.join(format!("{name}-{mount_idx}.log"));
        let output = logs.join(format!("{name}-{mount_idx}.out"));
        let command = match self {
            Adapter::StrataMount => {
                let url = format!("{}/{bucket}", server.endpoint());
                strata_mount_command(server, &url, mountpoint, &[])?
            }
            Adapter::S3fs => {
                let passwd = logs.join("s3fs-passwd");
                fs::write(&passwd, format!("{ROOT_ACCESS_KEY}:{ROOT_SECRET_KEY}\n"))?;
                // s3fs refuses a password file others may read.
                fs::set_permissions(&passwd, fs::Permissions::from_mode(0o600))?;
                let options = [
                    format!("url={}", server.endpoint()),
                    "use_path_request_style".into(),
                    format!("passwd_file={}", utf8(&passwd)?),
                    // The region SigV4 signs for.
                    format!("endpoint={REGION}"),
                    // One attempt, as every client in this suite: a retry
                    // would hide the server bugs these tests look for.
                    "retries=1".into(),
                    format!("multipart_size={PART_MIB}"),
                    format!("logfile={}", utf8(&log)?),
                    "dbglevel=info".into(),
                ]
                .join(",");
                let mut command = server.client_command("s3fs");
                command
                    .arg(bucket)
                    .arg(mountpoint)
                    .args(["-f", "-o", &options]);
                command
            }
            Adapter::RcloneMount => {
                let remote = format!("{RCLONE_REMOTE}:{bucket}");
                let cache = logs.join(format!("rclone-cache-{mount_idx}"));
                let part_size = format!("{PART_MIB}M");
                #[rustfmt::skip]
                let args = [
                    "mount", &remote, utf8(mountpoint)?,
                    "--vfs-cache-mode", "writes",
                    "--vfs-write-back", "0s",
                    // A fresh cache per mount: a remount reads from strata.
                    "--cache-dir", utf8(&cache)?,
                    "--s3-upload-cutoff", &part_size,
                    "--s3-chunk-size", &part_size,
                    "--log-file", utf8(&log)?,
                    "-v",
                ];
                server.rclone_s3_command(&args)
            }
        };
        // strata mount logs to stderr, which is in `output`.
        let logs = match self {
            Adapter::StrataMount => vec![output.clone()],
            _ => vec![log, output.clone()],
        };
        MountGuard::start(name, command, mountpoint, logs, output)
    }
}

/// A FUSE client process and its mount. [`MountGuard::unmount`] unmounts and
/// checks the client ended well; dropping the guard does the same, best
/// effort, so a failing test never leaves a mount behind.
struct MountGuard {
    name: &'static str,
    /// Canonical, as `/proc/self/mountinfo` shows it.
    mountpoint: PathBuf,
    child: Option<Child>,
    /// The client's own log, if it keeps one, and its stdout and stderr.
    logs: Vec<PathBuf>,
}

impl MountGuard {
    /// Spawns `command`, a client that stays in the foreground, with its
    /// stdout and stderr in `output`, and waits until `mountpoint` is a FUSE
    /// mount; `logs` are shown when something fails.
    fn start(
        name: &'static str,
        mut command: Command,
        mountpoint: &Path,
        logs: Vec<PathBuf>,
        output: PathBuf,
    ) -> Result<MountGuard> {
        let mountpoint = fs::canonicalize(mountpoint)
            .with_context(|| format!("resolving {}", mountpoint.display()))?;
        let output_file =
            File::create(&output).with_context(|| format!("creating {}", output.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(output_file.try_clone()?)
            .stderr(output_file);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => bail!(
                "`{program}` is not installed or not on PATH; `scripts/install-deps --test` \
                 installs s3fs, rclone and fuse3 (fusermount3)"
            ),
            Err(error) => return Err(error).with_context(|| format!("spawning {command:?}")),
        };
        let mut guard = MountGuard {
            name,
            mountpoint,
            child: Some(child),
            logs,
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_mounted(&guard.mountpoint)? {
                return Ok(guard);
            }
            if let Some(child) = guard.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{name} exited with {status} before {} was mounted\n{}",
                    guard.mountpoint.display(),
                    guard.log_tails()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not mount {} within {MOUNT_TIMEOUT:?}\n{}",
                    guard.mountpoint.display(),
                    guard.log_tails()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unmounts, waits for the client to exit and fails unless both went
    /// well.
    fn unmount(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if is_mounted(&self.mountpoint)? {
            let mut fusermount = Command::new("fusermount3");
            fusermount.arg("-u").arg(&self.mountpoint);
            if let Err(error) = run_ok_within(&mut fusermount, MOUNT_TIMEOUT) {
                problems.push(format!("{error:#}"));
            }
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + MOUNT_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        problems.push(format!("{} exited with {status}", self.name));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    problems.push(format!(
                        "{} still ran {MOUNT_TIMEOUT:?} after the unmount; killed",
                        self.name
                    ));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        // A client that hung or died leaves the mount behind: detach it.
        if is_mounted(&self.mountpoint)? {
            let mut umount = Command::new("umount");
            umount.arg("-l").arg(&self.mountpoint);
            match run_ok_within(&mut umount, MOUNT_TIMEOUT) {
                Ok(_) => problems.push("the mount outlived its client; umount -l".into()),
                Err(error) => problems.push(format!("{error:#}")),
            }
        }
        if !problems.is_empty() {
            bail!(
                "unmounting {} ({}): {}\n{}",
                self.mountpoint.display(),
                self.name,
                problems.join("\n"),
                self.log_tails()
            );
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        let mut text = String::new();
        for path in &self.logs {
            let log = fs::read(path)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            let _ = writeln!(text, "---- {} ----\n{tail}", path.display());
        }
        text
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(error) = self.release() {
            eprintln!("{error:#}");
        }
        // Test runners show this only for failing tests.
        eprintln!("{}", self.log_tails());
    }
}

/// Fails, saying FUSE is unavailable, unless the FUSE device can be opened.
fn require_fuse() -> Result<()> {
    require_fuse_at(Path::new(FUSE_DEVICE))
}

fn require_fuse_at(device: &Path) -> Result<()> {
    let advice = "the s3fs and rclone mount tests need FUSE: load the fuse kernel module, \
                  or run the container with --device /dev/fuse --cap-add SYS_ADMIN";
    if !device.exists() {
        bail!(
            "FUSE is unavailable: {} does not exist; {advice}",
            device.display()
        );
    }
    // Opening the device is how every FUSE session starts; it mounts nothing.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .with_context(|| {
            format!(
                "FUSE is unavailable: {} cannot be opened; {advice}",
                device.display()
            )
        })?;
    Ok(())
}

fn is_mounted(canonical_mountpoint: &Path) -> Result<bool> {
    let table = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let wanted = mountinfo_escape(utf8(canonical_mountpoint)?);
    Ok(fuse_mount_points(&table).any(|mount_point| mount_point == wanted))
}

/// The mount points of FUSE file systems (`fuse`, `fuse.<name>`) in a
/// `/proc/self/mountinfo` table, escaped as that file escapes them.
fn fuse_mount_points(table: &str) -> impl Iterator<Item = &str> {
    table.lines().filter_map(|line| {
        let (fields, file_system) = line.split_once(" - ")?;
        let fs_type = file_system.split(' ').next()?;
        let is_fuse = fs_type == "fuse" || fs_type.starts_with("fuse.");
        fields.split(' ').nth(4).filter(|_| is_fuse)
    })
}

/// A path as `/proc/self/mountinfo` writes it: space, tab, newline and
/// backslash as octal escapes.
fn mountinfo_escape(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => escaped.push_str("\\040"),
            '\t' => escaped.push_str("\\011"),
            '\n' => escaped.push_str("\\012"),
            '\\' => escaped.push_str("\\134"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// The tree copied through the mounts: 300 small files (one in 25 empty)
/// in nested directories, a 1 MiB file and a 6 MiB one that goes up in
/// parts, names with spaces, Unicode and characters SigV4 must escape, and,
/// when the client keeps them, an empty directory.
fn write_source_tree(root: &Path, with_empty_dir: bool) -> Result<()> {
    for project_idx in 0..4 {
        for dir in ["src", "docs", "docs/ünïcödé 日本"] {
            for file_idx in 0..25 {
                let len = (file_idx * 157 + project_idx * 31) % 4096;
                let path = root.join(format!("project {project_idx}/{dir}/file {file_idx} é.txt"));
                write_random_file(&path, len)?;
            }
        }
    }
    write_random_file(&root.join("media/one MiB.bin"), MIB)?;
    write_random_file(&root.join("media/six MiB + 123.bin"), 6 * MIB + 123)?;
    for name in [
        "a+b&c=d %41 #1.txt",
        "(paren) [bracket] {brace} ~tilde 'quote' @at $dollar,comma;semi.txt",
        "emoji 🦀.txt",
    ] {
        write_random_file(&root.join("odd names").join(name), 100)?;
    }
    if with_empty_dir {
        fs::create_dir_all(root.join("empty dir"))?;
    }
    Ok(())
}

/// Fails, listing every difference, unless the keys under `tree/` are
/// exactly the files of `model` with their sizes and bytes (the ETag is the
/// MD5 of a single-part object; a multipart object is downloaded), plus
/// optional `dir/` markers of directories `model` has.
fn bucket_matches(server: &Server, bucket: &str, model: &Path) -> Result<()> {
    let prefix = format!("{TREE}/");
    let objects = list_objects(server, bucket, &prefix)?;
    let (files, dirs) = walk(model)?;
    let mut report = String::new();
    for (relative, path) in &files {
        let key = format!("{prefix}{relative}");
        let Some(object) = objects.get(&key) else {
            writeln!(report, "missing: {key}")?;
            continue;
        };
        let bytes = fs::read(path)?;
        if object.size != bytes.len() as u64 {
            writeln!(
                report,
                "{key}: {} bytes, expected {}",
                object.size,
                bytes.len()
            )?;
            continue;
        }
        // A single-part object's ETag is its MD5; a multipart object's or
        // a Swift Large Object's is not, so those are downloaded.
        let etag = object.etag.trim_matches('"');
        if etag != md5_hex(&bytes) && s3_get(server, bucket, &key)? != bytes {
            writeln!(report, "content differs: {key} (ETag {etag})")?;
        }
    }
    for key in objects.keys() {
        let relative = key.strip_prefix(&prefix).unwrap_or(key);
        let expected =
            files.contains_key(relative) || relative.is_empty() || dirs.contains(relative);
        if !expected {
            writeln!(report, "unexpected: {key}")?;
        }
    }
    if !report.is_empty() {
        bail!(
            "bucket {bucket} does not match {}:\n{report}",
            model.display()
        );
    }
    Ok(())
}

/// Files (relative path → path) and directories (relative path with a
/// trailing `/`) under `root`.
fn walk(root: &Path) -> Result<(BTreeMap<String, PathBuf>, BTreeSet<String>)> {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let relative = utf8(path.strip_prefix(root)?)?.to_string();
            if path.is_dir() {
                dirs.insert(format!("{relative}/"));
                pending.push(path);
            } else {
                files.insert(relative, path);
            }
        }
    }
    Ok((files, dirs))
}

#[derive(Debug)]
struct S3Object {
    size: u64,
    etag: String,
}

/// Every key under `prefix`, through ListObjectsV2 (the aws CLI follows
/// continuation tokens).
fn list_objects(server: &Server, bucket: &str, prefix: &str) -> Result<BTreeMap<String, S3Object>> {
    let listing = server.aws_json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        bucket,
        "--prefix",
        prefix,
    ])?;
    let mut objects = BTreeMap::new();
    let entries = listing
        .get("Contents")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries {
        objects.insert(
            json_str(entry, "/Key")?.to_string(),
            S3Object {
                size: json_u64(entry, "/Size")?,
                etag: json_str(entry, "/ETag")?.to_string(),
            },
        );
    }
    Ok(objects)
}

/// The bytes of `key`, through GetObject.
fn s3_get(server: &Server, bucket: &str, key: &str) -> Result<Vec<u8>> {
    static N_DOWNLOADS: AtomicU32 = AtomicU32::new(0);
    let download_idx = N_DOWNLOADS.fetch_add(1, Ordering::Relaxed);
    let path = server
        .work_dir("downloads")?
        .join(format!("object-{download_idx}"));
    server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        bucket,
        "--key",
        key,
        utf8(&path)?,
    ])?;
    fs::read(&path).with_context(|| format!("reading the download of {key}"))
}

/// Fails unless HeadObject of `key` answers 404.
fn expect_no_key(server: &Server, bucket: &str, key: &str) -> Result<()> {
    server
        .aws_error(
            &["s3api", "head-object", "--bucket", bucket, "--key", key],
            "404",
        )
        .with_context(|| format!("HeadObject of {key}, which should be gone"))?;
    Ok(())
}

fn run_ok(command: &mut Command) -> Result<ToolOutput> {
    run_ok_within(command, COMMAND_TIMEOUT)
}

fn run_ok_within(command: &mut Command, timeout: Duration) -> Result<ToolOutput> {
    run_tool(command, timeout)?.expect_success()
}

//! A gateway whose buckets keep their objects in index groups
//! (`index_groups` in its configuration; `store/src/routed.rs`): clients
//! see the one store they always did, through boto3, the Swift API and
//! the public edge, across restarts; the number of groups is the data
//! directory's for good.

use anyhow::{Result, ensure};
use strata_tests::{Server, Signing, unique_bucket, utf8};

const GROUPS: &str = "index_groups = 4\n";

#[test]
fn boto3_sees_one_store_over_index_groups() -> Result<()> {
    let server = Server::start_with_config(GROUPS)?;
    server.python_ok("boto3_paginate.py", &[&unique_bucket("groups-paginate")])?;
    let work = server.work_dir("groups-upload")?;
    server.python_ok(
        "boto3_upload_file.py",
        &[&unique_bucket("groups-upload"), utf8(&work)?],
    )?;
    server.python_ok("boto3_errors.py", &[&unique_bucket("groups-errors")])?;
    Ok(())
}

/// GETs `path` anonymously until the edge answers from its cache: it keeps
/// a fill's copy a moment after the fill's client has its last byte.
fn until_hit(server: &Server, path: &str) -> Result<()> {
    for _ in 0..50 {
        let response = server.http("GET", path, Signing::Anonymous, None, &[])?;
        response.expect_status(200)?;
        if response.header("x-cache") == Some("HIT") {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("{path} never became a cache HIT")
}

#[test]
fn containers_spread_over_groups_list_purge_and_survive_a_restart() -> Result<()> {
    let mut server = Server::start_with_config(GROUPS)?;
    // Twelve containers: every one of four groups holds some (by the MD5
    // of their names; a group left empty would only make the test weaker).
    let containers: Vec<String> = (0..12)
        .map(|n| unique_bucket(&format!("spread{n}")))
        .collect();
    for container in &containers {
        let path = format!("/v1/AUTH_admin/{container}");
        server
            .swift_as_root(
                "PUT",
                &path,
                None,
                &[("X-Container-Read", ".r:*,.rlistings")],
            )?
            .expect_status(201)?;
        for key in ["a/one.txt", "a/two.txt", "b.txt"] {
            let body = format!("{container}/{key}");
            server
                .swift_as_root("PUT", &format!("{path}/{key}"), Some(body.as_bytes()), &[])?
                .expect_status(201)?;
        }
    }
    // The last container is deleted below; the others are checked again
    // after each restart.
    let kept = &containers[..11];
    let check_all = |server: &Server| -> Result<()> {
        let account = server.swift_as_root("GET", "/v1/AUTH_admin?format=json", None, &[])?;
        account.expect_status(200)?;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&account.body)?;
        for container in kept {
            let entry = listed
                .iter()
                .find(|entry| entry["name"] == container.as_str());
            ensure!(
                entry.is_some_and(|entry| entry["count"] == 3),
                "{container} missing or miscounted in {listed:?}"
            );
            let path = format!("/v1/AUTH_admin/{container}");
            let listing = server.swift_as_root("GET", &format!("{path}?prefix=a/"), None, &[])?;
            ensure!(
                listing.body_text() == "a/one.txt\na/two.txt\n",
                "{container}: {listing}"
            );
            let object = server.http(
                "GET",
                &format!("{path}/b.txt"),
                Signing::Anonymous,
                None,
                &[],
            )?;
            ensure!(
                object.body_text() == format!("{container}/b.txt"),
                "{container}: {object}"
            );
        }
        Ok(())
    };
    check_all(&server)?;

    // The edge hears every group's changes: a cached object and listing
    // are purged by the delete that returns.
    let path = format!("/v1/AUTH_admin/{}", containers[0]);
    let object = format!("{path}/a/one.txt");
    for _ in 0..2 {
        server
            .http("GET", &object, Signing::Anonymous, None, &[])?
            .expect_status(200)?;
        server
            .http(
                "GET",
                &format!("{path}?prefix=a/"),
                Signing::Anonymous,
                None,
                &[],
            )?
            .expect_status(200)?;
    }
    until_hit(&server, &object)?;
    server
        .swift_as_root("DELETE", &object, None, &[])?
        .expect_status(204)?;
    server
        .http("GET", &object, Signing::Anonymous, None, &[])?
        .expect_status(404)?;
    let listing = server.http(
        "GET",
        &format!("{path}?prefix=a/"),
        Signing::Anonymous,
        None,
        &[],
    )?;
    ensure!(listing.body_text() == "a/two.txt\n", "{listing}");
    server
        .swift_as_root(
            "PUT",
            &object,
            Some(format!("{}/a/one.txt", containers[0]).as_bytes()),
            &[],
        )?
        .expect_status(201)?;

    // A container with objects stays; emptied, it goes from both groups,
    // and one created again under its name starts empty.
    let last = format!("/v1/AUTH_admin/{}", containers[11]);
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(409)?;
    for key in ["a/one.txt", "a/two.txt", "b.txt"] {
        server
            .swift_as_root("DELETE", &format!("{last}/{key}"), None, &[])?
            .expect_status(204)?;
    }
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(204)?;
    server
        .swift_as_root("GET", &last, None, &[])?
        .expect_status(404)?;
    server
        .swift_as_root("PUT", &last, None, &[])?
        .expect_status(201)?;
    let empty = server.swift_as_root("GET", &last, None, &[])?;
    empty.expect_status(204)?;
    server
        .swift_as_root("DELETE", &last, None, &[])?
        .expect_status(204)?;

    server.restart()?;
    check_all(&server)?;

    // The data directory keeps its number of groups, none included.
    server.rewrite_config("index_groups = 2\n")?;
    ensure!(
        server.restart().is_err(),
        "started with another group count"
    );
    let log = server.log_tail(20);
    ensure!(log.contains("over 4 index groups, not 2"), "{log}");
    server.rewrite_config("\n")?;
    ensure!(server.restart().is_err(), "started without its groups");
    let log = server.log_tail(20);
    ensure!(log.contains("set index_groups = 4"), "{log}");
    server.rewrite_config(GROUPS)?;
    server.restart()?;
    check_all(&server)?;
    Ok(())
}

#[test]
fn a_store_with_buckets_does_not_start_using_groups() -> Result<()> {
    let mut server = Server::start_with_config("\n")?;
    let bucket = unique_bucket("before-groups");
    server.aws_ok(&["s3api", "create-bucket", "--bucket", &bucket])?;
    server.rewrite_config(GROUPS)?;
    ensure!(server.restart().is_err(), "its bucket would be lost");
    let log = server.log_tail(20);
    ensure!(log.contains("would have to move"), "{log}");
    server.rewrite_config("\n")?;
    server.restart()?;
    server.aws_ok(&["s3api", "head-bucket", "--bucket", &bucket])?;
    Ok(())
}

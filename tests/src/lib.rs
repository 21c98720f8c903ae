//! End-to-end tests for strata. This crate owns the harness that runs the real
//! `strata` binary as a child process, and the integration-test binary
//! (`tests/e2e/`) that drives it with the clients people actually point at an
//! S3 or Swift endpoint: the aws CLI, boto3, s3cmd, rclone, python-swiftclient
//! and curl.
//!
//! Principal types: [`Server`] is one `strata serve` child listening on a
//! `127.0.0.1:0` port with its own temporary data directory; it can be
//! restarted on the same data and killed with SIGKILL for crash tests, and it
//! hands out pre-configured client commands ([`Server::aws`],
//! [`Server::python`], [`Server::s3cmd`], [`Server::rclone`],
//! [`Server::http`]). [`ToolOutput`] is the captured result of one external
//! command; its assertions print the whole exchange when they fail, because a
//! failing end-to-end test is only as useful as the evidence it leaves.
//!
//! Key design decision: everything goes over the wire. This crate must not
//! depend on any other strata crate (`strata-gateway`, `strata-store`, …): it
//! finds the binary (`STRATA_BIN`, or `target/<profile>/strata` next to the
//! test executable, built on demand) and talks to it over HTTP only, so the
//! tests see exactly what a user's client sees and no refactoring inside the
//! server can make them pass by accident.
//!
//! Running: `cargo test -p strata-tests --test e2e` (or `cargo nextest run
//! -p strata-tests`). Without `STRATA_BIN` the harness runs `cargo build -p
//! strata-gateway --bin strata` once per test process, because `cargo test`
//! does not build another package's binary and a stale one would be tested
//! silently; CI builds it first and sets `STRATA_BIN=target/debug/strata`.
//!
//! Every external tool runs with a scrubbed environment: the machine's `AWS_*`
//! variables, aws config files, `~/.s3cfg` and rclone config never leak in. A
//! missing tool makes a test fail with a message naming it, never skip: CI
//! installs all of them, and a silently skipped client is a client nobody
//! tests.

mod certs;
mod cluster;
mod fixtures;
mod proxy;
mod server;
mod tmpfs;
mod tools;

pub use certs::{Certificates, openssl};
pub use cluster::{Cluster, StorageNode, unix_now};
pub use fixtures::{
    assert_same_tree, content_md5, md5_hex, multipart_etag, random_bytes, sha256_file, sha256_hex,
    tree_digests, unique_bucket, url_encode, utf8, write_random_file, write_tree,
};
pub use proxy::{Partition, Proxy};
pub use server::{
    RCLONE_REMOTE, REGION, ROOT_ACCESS_KEY, ROOT_SECRET_KEY, Server, SwiftUser, http_get_status,
    metric_in, raw_request, read_response_head,
};
pub use tmpfs::Tmpfs;
pub use tools::{
    HttpResponse, KillOnDrop, Signing, ToolOutput, json_str, json_u64, listed_keys,
    listed_prefixes, run_tool,
};

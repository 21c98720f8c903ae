//! The end-to-end suite: every test starts its own `strata serve` (see
//! `strata_tests::Server`) and drives it with a real client. Tests are
//! independent processes under nextest and threads under `cargo test`; each
//! one uses its own server, data directory and bucket names.
//!
//! Modules follow the client: `aws_s3api` and `aws_s3` (aws CLI), `multipart`
//! (aws CLI s3api, multipart uploads), `boto3` (scripts in `tests/py/`),
//! `s3cmd`, `rclone`, `swift` (python-swiftclient, rclone's swift backend and
//! curl against the Swift API, the admin CLI), `swift_auth` (the v1.0 token
//! endpoint), `raw_http` (curl and raw sockets: authentication and malformed
//! requests), `crash` (SIGKILL during concurrent writes), `edge` (public reads,
//! custom domains and the cache, with curl), `ftp` (the FTP door with lftp, curl
//! and ftplib), `fuse_mounts` (containers mounted with `strata mount`, and buckets
//! with s3fs-fuse and `rclone mount`, driven with cp, mv, rm and diff),
//! `s3_website` (S3 website configuration with the aws CLI, its index and
//! error documents with curl), `cluster` (storage nodes on loopback behind a
//! gateway: node loss during uploads, repair, corruption, rebalancing),
//! `gateways` (two gateways over one cluster, the second taking its metadata
//! from the first), `https` (the gateway's port speaking TLS too),
//! `index_groups` (a gateway whose buckets' objects are in index groups).

mod aws_s3;
mod aws_s3api;
mod boto3;
mod cluster;
mod crash;
mod edge;
mod ftp;
mod fuse_mounts;
mod gateways;
mod https;
mod index_groups;
mod metadata_group;
mod multipart;
mod raw_http;
mod rclone;
mod s3_website;
mod s3cmd;
mod swift;
mod swift_auth;

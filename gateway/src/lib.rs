//! The gateway: every door of strata — the S3 API, the Swift API with its
//! auth endpoints and admin API, the public web edge and FTP — the
//! configuration, and the `strata` binary's composition root.
//!
//! Principal types: [`config::Config`] (one typed config from file, environment
//! and flags), [`s3::S3Door`] and [`swift::SwiftDoor`] (authenticate, route and
//! answer their protocol's requests), [`edge::EdgeCache`] (the public read
//! cache), [`ftp::StoreFileSystem`] (FTP's file system over the store),
//! [`server::run`] (opens pool and store, accepts connections).
//!
//! Key decision: the gateway owns HTTP and nothing below it. Only this crate
//! knows routing, S3 XML and S3 error codes; it speaks to storage solely through
//! `strata-store` and to credentials through `strata-auth`, and maps their
//! protocol-neutral errors in one place per protocol (`s3/error.rs`,
//! `swift/error.rs`, the FTP replies in `ftp/backend.rs`).
//!
//! May depend on every strata library crate; nothing depends on it.

pub mod address_range;
mod admin_client;
pub mod admin_door;
pub mod cli;
pub mod cluster_cli;
pub mod config;
pub mod connection_threads;
pub mod cors;
mod credentials;
pub mod directory;
pub mod edge;
pub mod ftp;
pub mod large_object;
pub mod listener_tls;
pub mod login_guard;
mod metadata;
pub mod node_index;
mod orphan_sweep;
pub mod public;
pub mod ring_cli;
mod ring_share;
pub mod s3;
pub mod server;
pub mod swift;
pub mod token_door;
pub mod website;
pub mod wire;
mod xml_writer;

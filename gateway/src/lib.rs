//! The gateway: every door of strata (today the S3 API; Swift, the public web
//! edge and FTP arrive with their issues), the configuration, and the `strata`
//! binary's composition root.
//!
//! Principal types: [`config::Config`] (one typed config from file, environment
//! and flags), [`s3::S3Door`] (authenticates, routes and answers S3 requests),
//! [`server::run`] (opens pool and store, accepts connections).
//!
//! Key decision: the gateway owns HTTP and nothing below it. Only this crate
//! knows routing, S3 XML and S3 error codes; it speaks to storage solely through
//! `strata-store` and to credentials through `strata-auth`, and maps their
//! protocol-neutral errors in one place per protocol (`s3/error.rs`).
//!
//! May depend on every strata library crate; nothing depends on it.

mod admin_client;
pub mod admin_door;
pub mod cli;
pub mod config;
pub mod cors;
mod credentials;
pub mod directory;
pub mod edge;
pub mod public;
pub mod s3;
pub mod server;
pub mod swift;
pub mod token_door;
pub mod wire;
mod xml_writer;

//! `strata mount`: an account (or one container) of a strata gateway as a
//! local folder, through FUSE. Containers and `a/b/` pseudo-directories are
//! directories, objects are files; writes are spooled locally and uploaded
//! on close or fsync.
//!
//! A client of the Swift API over HTTP like any other: it must not depend on
//! the store, the pool or the gateway's internals.

mod client;
mod fs;
mod tree;

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fuser::{MountOption, SessionACL};

use client::SwiftClient;
pub use client::{DIRECTORY_MARKER_TYPE, http_client, with_causes};
use fs::{FsOptions, StrataFs};
use tree::Place;

/// What `strata mount` was asked for.
#[derive(Debug, Clone)]
pub struct MountArgs {
    /// `http://host:port` (or `https://`) mounts the account;
    /// `http://host:port/container` one container.
    pub url: String,
    pub mountpoint: PathBuf,
    /// `account:user`.
    pub login: String,
    /// The user's Swift key.
    pub key: String,
    /// Where files being written are spooled until they are uploaded.
    pub spool_dir: PathBuf,
    /// Files larger than this are uploaded in segments of this size; by
    /// default, the largest object the server takes.
    pub segment_size: Option<u64>,
    /// How long listings and attributes are trusted before asking again.
    pub listing_ttl: Duration,
    /// Let other local users in (`allow_other`).
    pub allow_other: bool,
    /// CA certificates (PEM) trusted over HTTPS besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Segments of a server that does not say how large an object it takes:
/// Swift's and strata's default largest object.
const DEFAULT_SEGMENT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Mounts, then serves the file system until SIGINT/SIGTERM or an external
/// `umount`.
pub fn run(args: MountArgs) -> anyhow::Result<()> {
    let (base, container) = split_url(&args.url)?;
    let metadata = std::fs::metadata(&args.mountpoint)
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    if !metadata.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    std::fs::create_dir_all(&args.spool_dir)
        .with_context(|| format!("spool directory {}", args.spool_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("strata-mount")
        .build()?;
    let client = runtime.block_on(SwiftClient::connect(
        &base,
        &args.login,
        &args.key,
        args.ca_file.as_deref(),
    ))?;
    let root = match container {
        Some(container) => {
            let exists = runtime.block_on(client.container_exists(&container))?;
            if !exists {
                bail!("{} has no container {container}", args.login);
            }
            Place::Container(container)
        }
        None => Place::Account,
    };
    // A segment the server refuses would make every large file fail.
    let largest = runtime.block_on(client.largest_object());
    let segment_size = match (args.segment_size, largest) {
        (Some(asked), Some(largest)) if asked > largest => {
            tracing::warn!(
                asked,
                largest,
                "segments larger than the server takes: uploading in segments of its largest object"
            );
            largest
        }
        (Some(asked), _) => asked,
        (None, Some(largest)) => largest,
        (None, None) => DEFAULT_SEGMENT_SIZE,
    };
    tracing::debug!(
        segment_size,
        "files above this size are uploaded in segments"
    );
    let options = FsOptions {
        spool_dir: args.spool_dir.clone(),
        segment_size: segment_size.max(1),
        listing_ttl: args.listing_ttl,
        uid: metadata.uid(),
        gid: metadata.gid(),
    };
    let fs = StrataFs::new(Arc::new(client), runtime.handle().clone(), root, options);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("strata:{}", args.url)),
        MountOption::Subtype("strata".to_owned()),
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = SessionACL::All;
    }
    // Several threads, so that slow uploads do not stall every other
    // process using the folder: a close uploads on its thread, and a
    // remove or rename of a file being uploaded waits for it on another.
    config.n_threads = Some(16);
    let session = fuser::spawn_mount(fs, &args.mountpoint, &config)
        .with_context(|| format!("mounting at {}", args.mountpoint.display()))?;
    println!("mounted {} at {}", args.url, args.mountpoint.display());
    std::io::stdout().flush()?;

    let signalled = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = terminate.recv() => return anyhow::Ok(true),
                _ = interrupt.recv() => return anyhow::Ok(true),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if session.guard.is_finished() {
                        return anyhow::Ok(false);
                    }
                }
            }
        }
    })?;
    if signalled {
        session.umount_and_join()?;
    } else {
        // Unmounted from outside. Dropping the session would unmount the
        // mount point once more, and by then it may be a new mount's: the
        // session is left to the process's exit instead.
        std::mem::forget(session);
    }
    Ok(())
}

/// `http://host:port[/container]` → the gateway's base URL and the container.
fn split_url(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        _ => bail!("{url}: the gateway's URL starts with http:// or https://"),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let path = path.trim_matches('/');
    let container = match path {
        "" => None,
        path if path.contains('/') => bail!("{url}: name one container at most"),
        path => Some(
            percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .with_context(|| format!("{url}: container name"))?
                .into_owned(),
        ),
    };
    Ok((format!("{scheme}://{authority}"), container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_gateway_and_at_most_one_container() -> anyhow::Result<()> {
        assert_eq!(
            split_url("http://127.0.0.1:8080")?,
            ("http://127.0.0.1:8080".to_owned(), None)
        );
        assert_eq!(
            split_url("http://h:1/my%20photos/")?,
            ("http://h:1".to_owned(), Some("my photos".to_owned()))
        );
        assert!(split_url("http://h:1/a/b").is_err());
        assert_eq!(
            split_url("https://st.example.com/c")?,
            ("https://st.example.com".to_owned(), Some("c".to_owned()))
        );
        assert!(split_url("ftp://h").is_err());
        assert!(split_url("h:1").is_err());
        assert!(split_url("http:///c").is_err());
        Ok(())
    }
}

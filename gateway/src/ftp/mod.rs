//! The FTP door (libunftp): content managers log in with `account:user` and
//! their Swift key and see the account's containers as folders. Storage is
//! [`backend::StoreFileSystem`], a thin file system over `strata-store`, so
//! FTP uploads, renames and deletes are store writes on the change feed and
//! purge the edge cache like any other door's.

mod backend;
mod login;
mod path;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use libunftp::ServerBuilder;
use libunftp::options::{FailedLoginsBlock, FailedLoginsPolicy, FtpsRequired};
use serde::Deserialize;
use strata_store::Store;

pub use backend::StoreFileSystem;
pub use login::{FtpLogin, FtpUser};

use crate::directory::Directory;

/// The FTP listener (`[ftp]`); off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpConfig {
    /// Control connection address, `HOST:PORT` (port 0 picks a free one).
    pub listen: Option<String>,
    /// Ports for passive data connections, `FIRST-LAST`.
    pub passive_ports: String,
    /// The address PASV replies name: an IPv4 address or a DNS name (for a
    /// gateway behind NAT); by default the control connection's own.
    pub passive_host: Option<String>,
    /// PEM certificate chain for explicit FTPS (`AUTH TLS`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse logins and transfers that are not protected by TLS.
    pub require_tls: bool,
    /// Failed logins from one address before it is blocked for
    /// `login_block_secs`.
    pub max_failed_logins: u32,
    pub login_block_secs: u64,
    /// Sessions idle for this long are closed.
    pub idle_timeout_secs: u64,
    /// Entries one LIST, NLST or MLSD answers with at most (libunftp
    /// builds a listing whole before sending it). A folder holding more is
    /// refused (550) rather than listed in part: a mirroring client would
    /// take a cut listing for the whole folder, and delete the rest.
    pub max_list_entries: usize,
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            listen: None,
            passive_ports: "49152-65535".to_owned(),
            passive_host: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            max_failed_logins: 5,
            login_block_secs: 300,
            idle_timeout_secs: 600,
            max_list_entries: 100_000,
        }
    }
}

impl FtpConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let Some(listen) = &self.listen else {
            return Ok(());
        };
        listen
            .parse::<SocketAddr>()
            .with_context(|| format!("ftp listen address {listen:?} is not HOST:PORT"))?;
        self.passive_range()?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                check_pem(cert, "tls_cert", "certificate", &["CERTIFICATE"])?;
                check_pem(
                    key,
                    "tls_key",
                    "private key",
                    &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
                )?;
            }
            (Some(_), None) => {
                bail!("ftp tls_cert (--ftp-tls-cert) is set but tls_key (--ftp-tls-key) is not")
            }
            (None, Some(_)) => {
                bail!("ftp tls_key (--ftp-tls-key) is set but tls_cert (--ftp-tls-cert) is not")
            }
            (None, None) => {}
        }
        if self.require_tls && self.tls_cert.is_none() {
            bail!(
                "ftp require_tls (--ftp-require-tls) needs tls_cert and tls_key \
                 (--ftp-tls-cert, --ftp-tls-key)"
            );
        }
        if self.max_failed_logins == 0 {
            bail!("ftp max_failed_logins must be positive");
        }
        Ok(())
    }

    fn passive_range(&self) -> anyhow::Result<RangeInclusive<u16>> {
        let bad = || {
            format!(
                "ftp passive_ports {:?} is not FIRST-LAST",
                self.passive_ports
            )
        };
        let (first, last) = self.passive_ports.split_once('-').with_context(bad)?;
        let first: u16 = first.trim().parse().with_context(bad)?;
        let last: u16 = last.trim().parse().with_context(bad)?;
        if first == 0 || first > last {
            bail!(bad());
        }
        Ok(first..=last)
    }
}

/// Starts the FTP listener when configured and returns the address it
/// listens on.
pub async fn start(
    config: &FtpConfig,
    store: Store,
    directory: Directory,
    region: String,
    max_object_size: u64,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = &config.listen else {
        return Ok(None);
    };
    let addr = pick_port(listen.parse()?)?;
    let login = Arc::new(FtpLogin {
        directory: directory.clone(),
    });
    let file_system = StoreFileSystem {
        store,
        directory,
        region,
        max_object_size,
        max_list_entries: config.max_list_entries,
    };
    let mut builder = ServerBuilder::with_user_detail_provider(
        Box::new(move || file_system.clone()),
        login.clone(),
    )
    .authenticator(login)
    .greeting("strata FTP")
    .passive_ports(config.passive_range()?)
    .passive_host(match config.passive_host.as_deref().map(str::trim) {
        None | Some("") => libunftp::options::PassiveHost::FromConnection,
        Some(host) => match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => libunftp::options::PassiveHost::Ip(ip),
            Err(_) => libunftp::options::PassiveHost::Dns(host.to_owned()),
        },
    })
    .idle_session_timeout(config.idle_timeout_secs)
    .failed_logins_policy(FailedLoginsPolicy::new(
        config.max_failed_logins,
        Duration::from_secs(config.login_block_secs),
        FailedLoginsBlock::IP,
    ));
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        builder = builder.ftps(cert.clone(), key.clone());
        if config.require_tls {
            builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
        }
    }
    let server = builder.build().map_err(|err| {
        // libunftp's message stops at "error initialising Rustls"; what went
        // wrong (a key that does not belong to the certificate, …) is its
        // innermost source.
        let err = anyhow::Error::new(err);
        let cause = err.root_cause().to_string();
        let what = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => format!(
                "ftp TLS with certificate {} and key {}",
                cert.display(),
                key.display()
            ),
            _ => "ftp server".to_owned(),
        };
        if err.to_string().ends_with(&cause) {
            anyhow::anyhow!("{what}: {err}")
        } else {
            anyhow::anyhow!("{what}: {err}: {cause}")
        }
    })?;
    let listening = tokio::spawn(async move {
        let ended = server.listen(addr.to_string()).await;
        if let Err(err) = &ended {
            tracing::error!(error = %err, "ftp listener stopped");
        }
        ended
    });
    // libunftp binds inside `listen`: wait until it answers (or has failed)
    // so that the address reported is one that serves.
    for _ in 0..250 {
        if listening.is_finished() {
            return match listening.await {
                Ok(Err(err)) => Err(anyhow::anyhow!("ftp listener on {addr}: {err}")),
                _ => Err(anyhow::anyhow!("ftp listener on {addr} stopped")),
            };
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Some(addr));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("ftp listener on {addr} did not start")
}

/// Fails unless `path` is readable and holds a PEM block labelled one of
/// `labels`, so that a wrong file is refused with its name at start: libunftp
/// names no file, and reports a certificate file without certificates as
/// rustls's "peer sent no certificates".
fn check_pem(path: &Path, key: &str, what: &str, labels: &[&str]) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("ftp {key}: reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| labels.contains(&label))
    });
    if !has_block {
        bail!(
            "ftp {key}: {} is not a PEM {what} (no -----BEGIN {}----- block)",
            path.display(),
            labels.join("----- or -----BEGIN ")
        );
    }
    Ok(())
}

/// libunftp binds the listener itself, from an address: port 0 is resolved
/// here to a port that was free a moment ago.
fn pick_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(probe.local_addr()?)
}

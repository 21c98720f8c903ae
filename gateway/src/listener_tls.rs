//! The certificates the gateway's listener presents: a default one
//! (`tls_cert`, for clients that name no host or one without a certificate
//! of its own, and for cluster members, who call by address) and a
//! directory of certificates per host name (`tls_cert_dir`), chosen by the
//! name the client asks for (SNI) and reread while serving, so that a
//! customer's domain gets its certificate, and a renewed one replaces it,
//! without a restart.
//!
//! In the directory, `HOST.pem` holds the certificate chain and the private
//! key of HOST (`st.example.com.pem`); `_.example.com.pem` serves every
//! `*.example.com`. Other files are ignored.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the directory is looked at for new, renewed or removed files.
const REREAD_EVERY: Duration = Duration::from_secs(5);

/// The listener's certificates: the default and those per host.
pub struct ListenerCertificates {
    default: Option<Arc<CertifiedKey>>,
    dir: Option<PathBuf>,
    /// By host name (`*.example.com` for a wildcard), lower-case.
    hosts: parking_lot::RwLock<Arc<HashMap<String, Arc<CertifiedKey>>>>,
    /// The directory as last read: each file's name, length and mtime.
    read_as: parking_lot::Mutex<Vec<(String, u64, Option<SystemTime>)>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ListenerCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCertificates")
            .field("default", &self.default.is_some())
            .field("dir", &self.dir)
            .field("hosts", &self.hosts.read().len())
            .finish()
    }
}

impl ListenerCertificates {
    /// Loads the default certificate (chain, key) and the directory. A
    /// default that cannot be used stops the gateway; a file of the
    /// directory that cannot is left out with a warning (one customer's
    /// broken certificate must not take the others down).
    pub fn load(
        default: Option<(&Path, &Path)>,
        dir: Option<&Path>,
    ) -> anyhow::Result<Arc<ListenerCertificates>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let default = match default {
            Some((cert, key)) => Some(Arc::new(certified_key(cert, key, &provider)?)),
            None => None,
        };
        if let Some(dir) = dir {
            fs::read_dir(dir)
                .with_context(|| format!("reading the certificate directory {}", dir.display()))?;
        }
        let certificates = Arc::new(ListenerCertificates {
            default,
            dir: dir.map(Path::to_owned),
            hosts: parking_lot::RwLock::new(Arc::new(HashMap::new())),
            read_as: parking_lot::Mutex::new(Vec::new()),
            provider,
        });
        certificates.reread_if_changed();
        Ok(certificates)
    }

    /// What the listener accepts TLS connections with.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Rereads the directory every few seconds, for as long as the gateway
    /// runs (on a thread of the blocking pool: it reads files).
    pub fn spawn_rereading(self: &Arc<Self>) {
        if self.dir.is_none() {
            return;
        }
        let certificates = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REREAD_EVERY).await;
                let Some(certificates) = certificates.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || certificates.reread_if_changed()).await;
            }
        });
    }

    /// Loads the directory again if a file was added, removed or changed
    /// since it was last read.
    pub fn reread_if_changed(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let listing = match list_pem_files(dir) {
            Ok(listing) => listing,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "certificate directory unreadable");
                return;
            }
        };
        let mut read_as = self.read_as.lock();
        if *read_as == listing {
            return;
        }
        let mut hosts = HashMap::new();
        for (file, _, _) in &listing {
            let Some(host) = host_of_file(file) else {
                continue;
            };
            let path = dir.join(file);
            match certified_key(&path, &path, &self.provider)
                .and_then(|key| check_names(&key, &host).map(|()| key))
            {
                Ok(key) => {
                    hosts.insert(host, Arc::new(key));
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %format!("{err:#}"), "certificate left out");
                }
            }
        }
        tracing::info!(dir = %dir.display(), hosts = hosts.len(), "host certificates loaded");
        *self.hosts.write() = Arc::new(hosts);
        *read_as = listing;
    }
}

impl ResolvesServerCert for ListenerCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            let hosts = self.hosts.read().clone();
            let wildcard = || {
                let (_, parent) = name.split_once('.')?;
                hosts.get(&format!("*.{parent}"))
            };
            if let Some(key) = hosts.get(&name).or_else(wildcard) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// The `.pem` files of `dir`, sorted, with their lengths and mtimes.
fn list_pem_files(dir: &Path) -> std::io::Result<Vec<(String, u64, Option<SystemTime>)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".pem") {
            continue;
        }
        let metadata = entry.metadata()?;
        files.push((name, metadata.len(), metadata.modified().ok()));
    }
    files.sort();
    Ok(files)
}

/// The host a file serves: `st.example.com.pem` → `st.example.com`,
/// `_.example.com.pem` → `*.example.com`; `None` for a name that is not a
/// DNS name.
fn host_of_file(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".pem")?.to_ascii_lowercase();
    let (wildcard, name) = match stem.strip_prefix("_.") {
        Some(parent) => (true, parent.to_owned()),
        None => (false, stem),
    };
    DnsName::try_from(name.as_str()).ok()?;
    if name.parse::<std::net::IpAddr>().is_ok() || !name.contains('.') && wildcard {
        return None;
    }
    Some(match wildcard {
        true => format!("*.{name}"),
        false => name,
    })
}

/// The certificate chain in `cert` and the private key in `key` (the same
/// file for a host's), checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: holds no PEM certificate", cert.display());
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading a private key from {}", key.display()))?;
    CertifiedKey::from_der(chain, private_key, provider).with_context(|| {
        format!(
            "{} and {}: the key is not the certificate's",
            cert.display(),
            key.display()
        )
    })
}

/// Refuses a certificate that does not name `host` (a file under the wrong
/// name would be presented to clients that then refuse it).
fn check_names(key: &CertifiedKey, host: &str) -> anyhow::Result<()> {
    // A wildcard certificate is checked against one name it covers.
    let name = match host.strip_prefix("*.") {
        Some(parent) => format!("any-host.{parent}"),
        None => host.to_owned(),
    };
    let server_name =
        ServerName::try_from(name.as_str()).map_err(|err| anyhow::anyhow!("{host}: {err}"))?;
    let end_entity = key
        .end_entity_cert()
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let parsed = ParsedCertificate::try_from(end_entity).map_err(|err| anyhow::anyhow!("{err}"))?;
    rustls::client::verify_server_name(&parsed, &server_name)
        .map_err(|err| anyhow::anyhow!("the certificate is not for {host}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_their_hosts() {
        for (file, host) in [
            ("st.example.com.pem", Some("st.example.com")),
            ("ST.Example.COM.pem", Some("st.example.com")),
            ("_.cdn.example.net.pem", Some("*.cdn.example.net")),
            ("localhost.pem", Some("localhost")),
            ("_.com.pem", None),
            ("_.localhost.pem", None),
            ("127.0.0.1.pem", None),
            ("st.example.com.key", None),
            ("a b.pem", None),
            (".pem", None),
        ] {
            assert_eq!(host_of_file(file).as_deref(), host, "{file}");
        }
    }
}

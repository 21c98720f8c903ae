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

use std::collections::{BTreeMap, HashMap};
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
    /// The directory as last read.
    read_as: parking_lot::Mutex<DirectoryState>,
    provider: Arc<CryptoProvider>,
}

#[derive(Default)]
struct DirectoryState {
    files: BTreeMap<String, LoadedFile>,
    /// The directory could not be read last time (warned about once).
    unreadable: bool,
}

/// A file as it was when read: a rewrite changes one of these (a symlink
/// is followed, so a renewal that points it elsewhere does too).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

struct LoadedFile {
    stamp: Stamp,
    /// The host it serves and its certificate; `None` when it serves none
    /// (not a host's name, or never loaded).
    served: Option<(String, Arc<CertifiedKey>)>,
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
            Some((cert, key)) => {
                let read = |path: &Path| {
                    fs::read(path).with_context(|| format!("reading {}", path.display()))
                };
                let key = certified_key(&read(cert)?, &read(key)?, &provider)
                    .with_context(|| format!("{} with {}", cert.display(), key.display()))?;
                Some(Arc::new(key))
            }
            None => None,
        };
        if let Some(dir) = dir {
            fs::read_dir(dir)
                .with_context(|| format!("reading the certificate directory {}", dir.display()))?;
            if default.is_none() {
                tracing::warn!(
                    dir = %dir.display(),
                    "no default certificate (tls_cert): TLS clients that name no host of the \
                     directory (by IP address, say) are refused"
                );
            }
        }
        let certificates = Arc::new(ListenerCertificates {
            default,
            dir: dir.map(Path::to_owned),
            hosts: parking_lot::RwLock::new(Arc::new(HashMap::new())),
            read_as: parking_lot::Mutex::new(DirectoryState::default()),
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

    /// Loads what changed in the directory since it was last read: new and
    /// rewritten files are loaded, removed ones dropped, the others kept as
    /// loaded. A rewritten file that cannot be used (caught halfway through
    /// its writing, say) keeps serving the certificate it had.
    pub fn reread_if_changed(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let mut state = self.read_as.lock();
        let listing = match list_pem_files(dir) {
            Ok(listing) => listing,
            Err(err) => {
                if !std::mem::replace(&mut state.unreadable, true) {
                    tracing::warn!(dir = %dir.display(), error = %err, "certificate directory unreadable; serving what was loaded");
                }
                return;
            }
        };
        state.unreadable = false;
        let unchanged = listing.len() == state.files.len()
            && listing
                .iter()
                .all(|(file, stamp)| state.files.get(file).is_some_and(|f| f.stamp == *stamp));
        if unchanged {
            return;
        }
        let mut files = BTreeMap::new();
        for (file, stamp) in listing {
            let before = state.files.remove(&file);
            let served = match before {
                Some(before) if before.stamp == stamp => before.served,
                before => {
                    let loaded = self.load_file(&dir.join(&file), &file);
                    loaded.or_else(|| {
                        let kept = before.and_then(|before| before.served);
                        if kept.is_some() {
                            tracing::warn!(file, "keeping the certificate loaded before");
                        }
                        kept
                    })
                }
            };
            files.insert(file, LoadedFile { stamp, served });
        }
        let mut hosts = HashMap::new();
        for (file, loaded) in &files {
            if let Some((host, key)) = &loaded.served
                && hosts.insert(host.clone(), key.clone()).is_some()
            {
                tracing::warn!(
                    file,
                    host,
                    "another file serves this host too; this one is used"
                );
            }
        }
        tracing::info!(dir = %dir.display(), hosts = hosts.len(), "host certificates loaded");
        *self.hosts.write() = Arc::new(hosts);
        state.files = files;
    }

    /// The host `file` serves and its certificate, or `None` (warned).
    fn load_file(&self, path: &Path, file: &str) -> Option<(String, Arc<CertifiedKey>)> {
        let Some(host) = host_of_file(file) else {
            tracing::warn!(file = %path.display(), "not HOST.pem nor _.DOMAIN.pem (ASCII host names, punycode for others): left out");
            return None;
        };
        // Read once: chain and key from the same bytes, never from two
        // versions of a file being rewritten.
        let loaded = fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| certified_key(&pem, &pem, &self.provider))
            .and_then(|key| check_names(&key, &host).map(|()| key));
        match loaded {
            Ok(key) => Some((host, Arc::new(key))),
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %format!("{err:#}"), "certificate left out");
                None
            }
        }
    }
}

impl ResolvesServerCert for ListenerCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let hosts = self.hosts.read().clone();
            let wildcard = || {
                let (_, parent) = name.split_once('.')?;
                hosts.get(&format!("*.{parent}"))
            };
            // A name the default certificate covers gets it: members call
            // each other by names the cluster's certificates hold, which a
            // customer's wildcard must not take over. (Parsed only when a
            // host's file would be chosen, not at every handshake.)
            if let Some(key) = hosts.get(&name).or_else(wildcard)
                && self
                    .default
                    .as_ref()
                    .is_none_or(|default| check_names(default, &name).is_err())
            {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// The `.pem` files of `dir` with their stamps, symlinks followed.
fn list_pem_files(dir: &Path) -> std::io::Result<BTreeMap<String, Stamp>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(".pem") {
            continue;
        }
        // A dangling link is a file that cannot be loaded, like any other.
        let stamp = match fs::metadata(entry.path()) {
            Ok(metadata) => Stamp {
                len: metadata.len(),
                modified: metadata.modified().ok(),
                inode: metadata.ino(),
            },
            Err(_) => Stamp {
                len: 0,
                modified: None,
                inode: 0,
            },
        };
        files.insert(name, stamp);
    }
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

/// The certificate chain in the PEM `certs` and the private key in the PEM
/// `key` (the same bytes for a host's file), checked to belong together.
fn certified_key(
    certs: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(certs)
        .collect::<Result<Vec<_>, _>>()
        .context("reading PEM certificates")?;
    if chain.is_empty() {
        bail!("holds no PEM certificate");
    }
    let private_key = PrivateKeyDer::from_pem_slice(key).context("reading a PEM private key")?;
    CertifiedKey::from_der(chain, private_key, provider).context("the key is not the certificate's")
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

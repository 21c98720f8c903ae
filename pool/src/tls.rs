//! TLS between the members of a cluster (storage nodes, gateways, the
//! metadata service): every member trusts the certificates of the cluster's
//! own CA, and only those, and those that serve present one. The cluster
//! secret still signs every request: TLS keeps requests secret (users' S3
//! keys travel in metadata calls) and unreplayable by whoever sees the
//! network; the signature says the caller belongs to the cluster.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A PEM file that could not be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct TlsError {
    path: String,
    detail: String,
}

impl TlsError {
    fn new(path: &Path, detail: impl ToString) -> Self {
        TlsError {
            path: path.display().to_string(),
            detail: detail.to_string(),
        }
    }
}

/// How a member speaks TLS to the others, and, if it serves, to its
/// callers. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    client: Arc<ClientConfig>,
    server: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("serves", &self.server.is_some())
            .finish()
    }
}

impl ClusterTls {
    /// Trusts the certificates `ca` (a PEM file of one or more CA
    /// certificates) signed for the name a member is called by (its ring
    /// address: an IP address or a DNS name), and no others.
    pub fn trusting(ca: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .map_err(|err| TlsError::new(ca, format!("not a CA certificate: {err}")))?;
        }
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::new(ca, err))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClusterTls {
            client: Arc::new(client),
            server: None,
        })
    }

    /// Also serves TLS, as [`acceptor`] does.
    pub fn presenting(mut self, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        self.server = Some(acceptor(cert, key)?);
        Ok(self)
    }

    /// What a client of the cluster connects with.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// What a member that serves accepts connections with: `None` for one
    /// that only calls others (`strata status`, a gateway of a cluster).
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.server.clone()
    }
}

/// Serves TLS presenting `cert` (a PEM chain, the server's own certificate
/// first) with its private key `key`, to HTTP/1.1 and HTTP/2 clients.
fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| TlsError::new(key, format!("no private key: {err}")))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::new(cert, err))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|err| TlsError::new(cert, format!("does not go with its key: {err}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The first byte of every TLS connection (a handshake record); an HTTP
/// request starts with a method's letter.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| TlsError::new(path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::new(path, err))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

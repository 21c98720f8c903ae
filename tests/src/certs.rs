//! Certificates for the TLS tests, made with the openssl CLI: a CA of the
//! test's own and a server certificate it signed, so that clients verify
//! servers against that CA instead of switching verification off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::run_tool;

/// PEM files in one directory.
pub struct Certificates {
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// A certificate for 127.0.0.1 and localhost, signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA's private key, for [`Certificates::issue`].
    ca_key: PathBuf,
}

impl Certificates {
    /// A new CA and a server certificate of its for 127.0.0.1 and
    /// localhost in `dir` (created).
    pub fn make(dir: &Path) -> Result<Certificates> {
        fs::create_dir_all(dir)?;
        let file = |name: &str| dir.join(name).display().to_string();
        let (ca, ca_key) = (file("ca.pem"), file("ca-key.pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ])?;
        let certificates = Certificates {
            ca: ca.into(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca_key: ca_key.into(),
        };
        let (cert, key) = (&certificates.cert, &certificates.key);
        certificates.sign(dir, "IP:127.0.0.1,DNS:localhost", cert, key)?;
        Ok(certificates)
    }

    /// One file `dir/FILE` holding a certificate of this CA for `names`
    /// (`DNS:st.example.com,DNS:*.example.net`) and then its private key:
    /// what a host certificate directory holds.
    pub fn issue(&self, dir: &Path, file: &str, names: &str) -> Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let work = tempfile::tempdir()?;
        let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
        self.sign(work.path(), names, &cert, &key)?;
        let combined = dir.join(file);
        fs::write(&combined, [fs::read(&cert)?, fs::read(&key)?].concat())?;
        Ok(combined)
    }

    /// A new key in `key` and a certificate of this CA for `names` in
    /// `cert`, made in `work`.
    fn sign(&self, work: &Path, names: &str, cert: &Path, key: &Path) -> Result<()> {
        let file = |name: &str| work.join(name).display().to_string();
        let (request, extensions) = (file("cert.csr"), file("cert.ext"));
        fs::write(
            &extensions,
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n\
                 subjectAltName={names}\n"
            ),
        )?;
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let (ca, ca_key) = (
            self.ca.display().to_string(),
            self.ca_key.display().to_string(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=strata test",
            "-keyout",
            &key,
            "-out",
            &request,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions,
            "-out",
            &cert,
        ])
    }
}

/// `openssl ARGS`, which must succeed.
pub fn openssl(args: &[&str]) -> Result<()> {
    run_tool(Command::new("openssl").args(args), Duration::from_secs(120))?.expect_success()?;
    Ok(())
}

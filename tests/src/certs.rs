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
}

impl Certificates {
    /// A new CA and a server certificate of its in `dir` (created).
    pub fn make(dir: &Path) -> Result<Certificates> {
        fs::create_dir_all(dir)?;
        let file = |name: &str| dir.join(name).display().to_string();
        let (ca, ca_key) = (file("ca.pem"), file("ca-key.pem"));
        let (cert, key, request) = (file("cert.pem"), file("key.pem"), file("cert.csr"));
        let extensions = file("cert.ext");
        fs::write(
            &extensions,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
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
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
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
        ])?;
        Ok(Certificates {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        })
    }
}

/// `openssl ARGS`, which must succeed.
pub fn openssl(args: &[&str]) -> Result<()> {
    run_tool(Command::new("openssl").args(args), Duration::from_secs(120))?.expect_success()?;
    Ok(())
}

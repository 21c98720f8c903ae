//! The root account's S3 key pair: from the environment, or generated on first
//! start and kept in the data directory, readable by the owner only.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use strata_auth::Credential;

pub const ROOT_ACCOUNT: &str = "admin";
const FILE_NAME: &str = "root-credentials.toml";
pub const ENV_ACCESS_KEY: &str = "STRATA_ROOT_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "STRATA_ROOT_SECRET_KEY";
/// Characters below which a root secret from the environment is warned of.
pub const STRONG_SECRET_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    access_key: String,
    secret_key: String,
}

/// Where the root credential came from; a generated one is shown once.
pub enum RootKeys {
    FromEnvironment(Credential),
    Stored(Credential),
    Generated(Credential),
}

impl RootKeys {
    pub fn credential(&self) -> &Credential {
        match self {
            RootKeys::FromEnvironment(credential)
            | RootKeys::Stored(credential)
            | RootKeys::Generated(credential) => credential,
        }
    }
}

/// The root secret of an existing data directory, from the environment or
/// its credentials file, without creating anything: for the admin commands
/// run on the gateway's machine.
pub fn existing_root_secret(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::env::var(ENV_SECRET_KEY)
        && !secret.is_empty()
    {
        return Ok(secret);
    }
    let path = data_dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (or pass --admin-key / set STRATA_ADMIN_KEY)",
            path.display()
        )
    })?;
    let keys: StoredKeys =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(keys.secret_key)
}

/// Whether root keys are set in the environment (which a gateway over
/// another's metadata does not use).
pub fn in_environment() -> bool {
    std::env::var_os(ENV_ACCESS_KEY).is_some() || std::env::var_os(ENV_SECRET_KEY).is_some()
}

pub fn load_or_create(data_dir: &Path) -> anyhow::Result<RootKeys> {
    let from_env = (
        std::env::var(ENV_ACCESS_KEY).ok(),
        std::env::var(ENV_SECRET_KEY).ok(),
    );
    match from_env {
        (Some(access), Some(secret)) if !access.is_empty() && !secret.is_empty() => {
            return Ok(RootKeys::FromEnvironment(root(access, secret)));
        }
        (None, None) => {}
        _ => bail!("set both {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}, or neither"),
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let keys: StoredKeys =
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
            return Ok(RootKeys::Stored(root(keys.access_key, keys.secret_key)));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let keys = StoredKeys {
        access_key: new_access_key(),
        secret_key: new_secret_key(),
    };
    write_private(&path, toml::to_string(&keys)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(RootKeys::Generated(root(keys.access_key, keys.secret_key)))
}

fn root(access_key: String, secret_key: String) -> Credential {
    Credential {
        access_key,
        secret_key,
        account: ROOT_ACCOUNT.to_owned(),
        user: ROOT_ACCOUNT.to_owned(),
        role: strata_auth::Role::ResellerAdmin,
    }
}

/// A new S3 access key id: 20 upper-case letters and digits, as AWS's.
pub(crate) fn new_access_key() -> String {
    random_string(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
}

/// A new secret (S3 secret key or Swift key): 40 base64 characters.
pub(crate) fn new_secret_key() -> String {
    random_string(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    )
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Creates the file with mode 0600 from the start (never world-readable, even
/// briefly) and makes it durable.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

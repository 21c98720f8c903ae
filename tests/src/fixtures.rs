//! Test data: bucket names, random files, digests and directory trees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use rand::{Rng, RngCore};
use sha2::Sha256;

/// A bucket name no other test uses: `tag` plus process id, a counter and
/// random bits, within S3's 3–63 lowercase characters.
pub fn unique_bucket(tag: &str) -> String {
    static N_BUCKETS: AtomicU32 = AtomicU32::new(0);
    let bucket_idx = N_BUCKETS.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::rng().random();
    let tag: String = tag
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(30)
        .collect();
    format!(
        "{tag}-{:x}-{bucket_idx}-{:06x}",
        std::process::id(),
        random & 0xff_ffff
    )
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Writes `len` random bytes to `path` (creating parent directories) and
/// returns them.
pub fn write_random_file(path: &Path, len: usize) -> Result<Vec<u8>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let bytes = random_bytes(len);
    fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes)
}

/// Creates `files` (relative path, size) under `root` with random content.
pub fn write_tree(root: &Path, files: &[(&str, usize)]) -> Result<()> {
    for (relative, len) in files {
        write_random_file(&root.join(relative), *len)?;
    }
    Ok(())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's content, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut block = vec![0; 1 << 20];
    loop {
        let n_read = file.read(&mut block)?;
        if n_read == 0 {
            break;
        }
        hasher.update(&block[..n_read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Lower-case hex MD5: the ETag of a single-part object, without quotes.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Base64 MD5, the value of a `Content-MD5` header.
pub fn content_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// The S3 ETag of a multipart object made of `parts`, with quotes:
/// `"<md5 of the concatenated binary part MD5s>-<number of parts>"`.
pub fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut concatenated = Vec::new();
    for part in parts {
        concatenated.extend_from_slice(&Md5::digest(part));
    }
    format!("\"{}-{}\"", md5_hex(&concatenated), parts.len())
}

/// Relative path (`/`-separated) → SHA-256 of every regular file under
/// `root`. Directories themselves are not listed: S3 has none.
pub fn tree_digests(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut digests = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file() {
                let relative = path
                    .strip_prefix(root)?
                    .components()
                    .map(|component| component.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                digests.insert(relative, sha256_file(&path)?);
            }
        }
    }
    Ok(digests)
}

/// Fails, listing every difference, unless both trees hold the same files
/// with the same content.
pub fn assert_same_tree(expected_root: &Path, actual_root: &Path) -> Result<()> {
    let expected = tree_digests(expected_root)?;
    let actual = tree_digests(actual_root)?;
    let mut report = String::new();
    for (path, digest) in &expected {
        match actual.get(path) {
            None => writeln!(report, "missing: {path}")?,
            Some(actual_digest) if actual_digest != digest => {
                writeln!(report, "content differs: {path}")?
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|path| !expected.contains_key(*path)) {
        writeln!(report, "unexpected: {path}")?;
    }
    if !report.is_empty() {
        bail!(
            "{} differs from {}:\n{report}",
            actual_root.display(),
            expected_root.display()
        );
    }
    Ok(())
}

/// A path as `&str`, for command-line arguments.
/// `text` percent-encoded for a URL: unreserved bytes and those in `keep`
/// (`b"/"` for a path) stay as they are.
pub fn url_encode(text: &str, keep: &[u8]) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

pub fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_matches_s3() {
        // Parts "a" and "b"; expected value from
        // `hashlib.md5(hashlib.md5(b"a").digest() + hashlib.md5(b"b").digest())`.
        assert_eq!(
            multipart_etag(&[b"a", b"b"]),
            "\"96e024ba2074fe77e8e965ba43a704be-2\""
        );
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn bucket_names_are_valid_and_distinct() {
        let first = unique_bucket("Some_Test.Name");
        let second = unique_bucket("Some_Test.Name");
        assert_ne!(first, second);
        for name in [&first, &second] {
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }
}

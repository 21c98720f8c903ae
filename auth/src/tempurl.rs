//! Swift TempURL signatures: `temp_url_sig` over `METHOD \n expires \n path`
//! with an account or container key, as OpenStack Swift's tempurl middleware
//! defines them.
//!
//! Accepted forms: hex HMAC-SHA1 (40 digits), HMAC-SHA256 (64) or HMAC-SHA512
//! (128), or `sha1:` / `sha256:` / `sha512:` followed by base64 (standard or
//! URL-safe, padded or not). Expiry is unix seconds or `YYYY-MM-DDTHH:MM:SSZ`;
//! the signed body always holds the integer. With `temp_url_prefix` the path
//! in the body is `prefix:/v1/AUTH_acct/container/<prefix>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq as _;
use thiserror::Error;

use crate::amz_date::AmzDateTime;

/// The query parameters of a TempURL request.
#[derive(Debug, Clone, Copy)]
pub struct TempUrlParams<'a> {
    pub sig: &'a str,
    pub expires: &'a str,
    /// `temp_url_prefix`, for a signature that covers every object under it.
    pub prefix: Option<&'a str>,
}

/// Why a TempURL was refused; Swift answers every case with 401.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TempUrlError {
    #[error("temp_url_expires is not a valid time")]
    BadExpiry,
    #[error("temp_url_sig is not a supported signature")]
    BadSignatureFormat,
    #[error("the temporary URL has expired")]
    Expired,
    #[error("the temporary URL signature does not match")]
    SignatureMismatch,
    #[error("the object is not under temp_url_prefix")]
    OutsidePrefix,
}

/// The digest names `/info` announces.
pub const TEMPURL_DIGESTS: [&str; 3] = ["sha1", "sha256", "sha512"];

/// Checks a TempURL for `method` on `path` (`/v1/AUTH_acct/container/object`,
/// as sent, still percent-encoded the way the client signed it) against `keys`
/// at `now` (unix seconds). A HEAD is allowed by a signature for GET, HEAD or
/// PUT, as in Swift.
pub fn verify_temp_url(
    method: &str,
    path: &str,
    params: TempUrlParams<'_>,
    keys: &[&str],
    now: u64,
) -> Result<(), TempUrlError> {
    let expires = parse_expiry(params.expires)?;
    let (digest, provided) = parse_signature(params.sig)?;
    if now >= expires {
        return Err(TempUrlError::Expired);
    }
    let signed_path = match params.prefix {
        Some(prefix) => {
            let container_path = container_path(path).ok_or(TempUrlError::OutsidePrefix)?;
            let object = &path[container_path.len()..];
            if !object.starts_with(prefix) {
                return Err(TempUrlError::OutsidePrefix);
            }
            format!("prefix:{container_path}{prefix}")
        }
        None => path.to_owned(),
    };
    let methods: &[&str] = if method == "HEAD" {
        &["HEAD", "GET", "PUT"]
    } else {
        &[method]
    };
    for key in keys.iter().filter(|key| !key.is_empty()) {
        for signed_method in methods {
            let body = format!("{signed_method}\n{expires}\n{signed_path}");
            let expected = digest.mac(key.as_bytes(), body.as_bytes());
            if bool::from(expected.as_slice().ct_eq(&provided)) {
                return Ok(());
            }
        }
    }
    Err(TempUrlError::SignatureMismatch)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    fn mac(self, key: &[u8], body: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], body: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length.
            match <M as hmac::digest::KeyInit>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(body);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Digest::Sha1 => run::<Hmac<Sha1>>(key, body),
            Digest::Sha256 => run::<Hmac<Sha256>>(key, body),
            Digest::Sha512 => run::<Hmac<Sha512>>(key, body),
        }
    }

    fn len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }
}

fn parse_signature(sig: &str) -> Result<(Digest, Vec<u8>), TempUrlError> {
    if let Some((name, encoded)) = sig.split_once(':') {
        let digest = match name {
            "sha1" => Digest::Sha1,
            "sha256" => Digest::Sha256,
            "sha512" => Digest::Sha512,
            _ => return Err(TempUrlError::BadSignatureFormat),
        };
        let raw = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(encoded).ok())
            .ok_or(TempUrlError::BadSignatureFormat)?;
        if raw.len() != digest.len() {
            return Err(TempUrlError::BadSignatureFormat);
        }
        return Ok((digest, raw));
    }
    let digest = match sig.len() {
        40 => Digest::Sha1,
        64 => Digest::Sha256,
        128 => Digest::Sha512,
        _ => return Err(TempUrlError::BadSignatureFormat),
    };
    let raw = hex::decode(sig).map_err(|_| TempUrlError::BadSignatureFormat)?;
    Ok((digest, raw))
}

fn parse_expiry(text: &str) -> Result<u64, TempUrlError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| TempUrlError::BadExpiry);
    }
    AmzDateTime::parse_extended(text)
        .map(|time| time.unix_seconds())
        .ok_or(TempUrlError::BadExpiry)
}

/// `/v1/AUTH_acct/container/` of an object path.
fn container_path(path: &str) -> Option<&str> {
    let mut slashes = path.match_indices('/').map(|(idx, _)| idx);
    let end = slashes.nth(3)?;
    Some(&path[..=end])
}

/// The signature a client computes for `method` on `path` until
/// `expires` (unix seconds) with `key`: hex HMAC-SHA256, as
/// `swift tempurl --digest sha256` prints it.
pub fn sign_temp_url(method: &str, expires: u64, path: &str, key: &str) -> String {
    hex::encode(Digest::Sha256.mac(
        key.as_bytes(),
        format!("{method}\n{expires}\n{path}").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/v1/AUTH_acme/photos/a%20b.jpg";

    fn params<'a>(sig: &'a str, expires: &'a str) -> TempUrlParams<'a> {
        TempUrlParams {
            sig,
            expires,
            prefix: None,
        }
    }

    #[test]
    fn known_answer_from_a_published_swift_tempurl() {
        // `swift tempurl GET 600 <path> testkey` as printed in Catalyst
        // Cloud's object storage documentation.
        let path = "/v1/AUTH_b24e9ee3447e48eab1bc99cb894cac6f/my-container/file2.txt";
        let check = verify_temp_url(
            "GET",
            path,
            params("2dbc1c2335a53d5548dab178d59ece7801e973b4", "1483990005"),
            &["testkey"],
            1_483_989_405,
        );
        assert_eq!(check, Ok(()));
    }

    #[test]
    fn every_digest_and_form() {
        let body = format!("GET\n2000000000\n{PATH}");
        for digest in [Digest::Sha1, Digest::Sha256, Digest::Sha512] {
            let raw = digest.mac(b"k2", body.as_bytes());
            let name = format!("{digest:?}").to_lowercase();
            for sig in [
                hex::encode(&raw),
                format!("{name}:{}", STANDARD.encode(&raw)),
                format!("{name}:{}", URL_SAFE_NO_PAD.encode(&raw)),
            ] {
                for expires in ["2000000000", "2033-05-18T03:33:20Z"] {
                    assert_eq!(
                        verify_temp_url("GET", PATH, params(&sig, expires), &["k1", "k2"], 10),
                        Ok(()),
                        "{sig} {expires}"
                    );
                }
                assert_eq!(
                    verify_temp_url("HEAD", PATH, params(&sig, "2000000000"), &["k2"], 10),
                    Ok(())
                );
            }
        }
    }

    #[test]
    fn refusals() {
        let sig = sign_temp_url("GET", 2_000_000_000, PATH, "key");
        let check =
            |method: &str, path: &str, sig: &str, expires: &str, keys: &[&str], expected| {
                assert_eq!(
                    verify_temp_url(method, path, params(sig, expires), keys, 1_000),
                    Err(expected),
                    "{method} {path} {sig} {expires}"
                );
            };
        check(
            "GET",
            PATH,
            &sig,
            "2000000000",
            &["other"],
            TempUrlError::SignatureMismatch,
        );
        check(
            "GET",
            PATH,
            &sig,
            "2000000000",
            &[""],
            TempUrlError::SignatureMismatch,
        );
        check(
            "GET",
            PATH,
            &sig,
            "2000000000",
            &[],
            TempUrlError::SignatureMismatch,
        );
        check(
            "PUT",
            PATH,
            &sig,
            "2000000000",
            &["key"],
            TempUrlError::SignatureMismatch,
        );
        check(
            "GET",
            "/v1/AUTH_acme/photos/other",
            &sig,
            "2000000000",
            &["key"],
            TempUrlError::SignatureMismatch,
        );
        check(
            "GET",
            PATH,
            &sig,
            "2000000001",
            &["key"],
            TempUrlError::SignatureMismatch,
        );
        check("GET", PATH, &sig, "999", &["key"], TempUrlError::Expired);
        check("GET", PATH, &sig, "soon", &["key"], TempUrlError::BadExpiry);
        check("GET", PATH, &sig, "", &["key"], TempUrlError::BadExpiry);
        check(
            "GET",
            PATH,
            &sig,
            "99999999999999999999999",
            &["key"],
            TempUrlError::BadExpiry,
        );
        check(
            "GET",
            PATH,
            "abc",
            "2000000000",
            &["key"],
            TempUrlError::BadSignatureFormat,
        );
        check(
            "GET",
            PATH,
            &"z".repeat(64),
            "2000000000",
            &["key"],
            TempUrlError::BadSignatureFormat,
        );
        check(
            "GET",
            PATH,
            "md5:AAAA",
            "2000000000",
            &["key"],
            TempUrlError::BadSignatureFormat,
        );
        check(
            "GET",
            PATH,
            "sha256:AAAA",
            "2000000000",
            &["key"],
            TempUrlError::BadSignatureFormat,
        );
    }

    #[test]
    fn prefix_signatures_cover_their_prefix_only() {
        let raw = Digest::Sha256.mac(
            b"key",
            b"GET\n2000000000\nprefix:/v1/AUTH_acme/photos/2026/",
        );
        let sig = hex::encode(raw);
        let with_prefix = |path: &str| {
            verify_temp_url(
                "GET",
                path,
                TempUrlParams {
                    sig: &sig,
                    expires: "2000000000",
                    prefix: Some("2026/"),
                },
                &["key"],
                10,
            )
        };
        assert_eq!(with_prefix("/v1/AUTH_acme/photos/2026/a.jpg"), Ok(()));
        assert_eq!(
            with_prefix("/v1/AUTH_acme/photos/2025/a.jpg"),
            Err(TempUrlError::OutsidePrefix)
        );
        assert_eq!(
            with_prefix("/v1/AUTH_acme/other/2026/a.jpg"),
            Err(TempUrlError::SignatureMismatch)
        );
    }
}

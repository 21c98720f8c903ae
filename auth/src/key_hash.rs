//! Stored form of secrets that only ever need comparing (Swift keys): a salted
//! SHA-256, never the key itself.
//!
//! Keys strata generates carry 240 bits of randomness, so a deliberately slow
//! hash would add latency to every token request without making a stolen
//! database any easier to protect: no dictionary reaches such keys.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

const SCHEME: &str = "sha256";

/// `sha256$<salt hex>$<digest hex>` of `secret` with `salt`. The caller brings
/// the salt (this crate has no source of randomness).
pub fn hash_key(secret: &str, salt: &[u8; 16]) -> String {
    format!(
        "{SCHEME}${}${}",
        hex::encode(salt),
        hex::encode(digest(salt, secret))
    )
}

/// Whether `secret` is the key `stored` (from [`hash_key`]) was made from,
/// compared in constant time. A stored value of an unknown form matches nothing.
pub fn key_matches(stored: &str, secret: &str) -> bool {
    let mut fields = stored.split('$');
    let (Some(SCHEME), Some(salt), Some(expected), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (hex::decode(salt), hex::decode(expected)) else {
        return false;
    };
    bool::from(digest(&salt, secret).as_slice().ct_eq(&expected))
}

fn digest(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_key_it_was_made_from() {
        let stored = hash_key("s3cr3t", &[1; 16]);
        assert!(!stored.contains("s3cr3t"));
        assert!(key_matches(&stored, "s3cr3t"));
        assert!(!key_matches(&stored, "s3cr3T"));
        assert!(!key_matches(&stored, ""));
        assert_ne!(stored, hash_key("s3cr3t", &[2; 16]), "salt is used");
        for garbage in [
            "",
            "s3cr3t",
            "sha256$zz$00",
            "md5$01$02",
            &format!("{stored}$x"),
        ] {
            assert!(!key_matches(garbage, "s3cr3t"), "{garbage}");
        }
    }
}

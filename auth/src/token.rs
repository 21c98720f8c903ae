//! Self-contained, signed tokens: any gateway verifies them with the keyring
//! alone, without a session store.
//!
//! A token is `AUTH_st1` followed by base64url of a binary payload and its
//! HMAC-SHA256 under one key of the [`TokenKeyring`]:
//!
//! ```text
//! payload = version (1) · key id (u32) · expires (u64, unix s) · generation (u32)
//!           · role (1) · len (1) · account · len (1) · user
//! token   = "AUTH_st1" base64url(payload) "." base64url(hmac(key, payload))
//! ```
//!
//! Rotation: the keyring signs with its newest key and verifies with every key
//! that is not retired, so tokens issued before a rotation keep working for the
//! overlap window. Revocation: the payload carries the user's token
//! generation; the caller compares it with the user's current one, so bumping
//! it (or deleting the user) ends every token issued before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;
use thiserror::Error;

use crate::principal::{Principal, Role};

const PREFIX: &str = "AUTH_st1";
const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Account and user names are at most this long in a token.
pub const MAX_TOKEN_NAME_LEN: usize = 255;

/// What a token says: who, until when, and which generation of the user's
/// tokens it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub principal: Principal,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    /// The user's token generation when the token was issued.
    pub generation: u32,
}

/// Why a token was refused. Swift answers all of them with 401.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed with a key this cluster no longer accepts")]
    UnknownKey,
    #[error("the token signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("an account or user name is too long for a token")]
    NameTooLong,
}

/// One HMAC key of the keyring.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    pub id: u32,
    pub secret: [u8; 32],
    /// Unix seconds after which tokens signed with this key are refused;
    /// `None` while it is in service.
    pub retires_at: Option<u64>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("retires_at", &self.retires_at)
            .finish()
    }
}

/// The keys tokens are signed and verified with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenKeyring {
    keys: Vec<TokenKey>,
}

impl TokenKeyring {
    /// A keyring from stored keys; the key with the highest id signs.
    pub fn new(mut keys: Vec<TokenKey>) -> TokenKeyring {
        keys.sort_by_key(|key| key.id);
        TokenKeyring { keys }
    }

    pub fn keys(&self) -> &[TokenKey] {
        &self.keys
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> Option<&TokenKey> {
        self.keys.last()
    }

    /// Adds `secret` as the new signing key; the previous keys stay valid until
    /// `now + overlap_secs` (an earlier retirement is kept), and keys retired
    /// before `now` are dropped.
    pub fn rotate(&mut self, secret: [u8; 32], now: u64, overlap_secs: u64) -> u32 {
        let retire = now.saturating_add(overlap_secs);
        self.keys
            .retain(|key| key.retires_at.is_none_or(|retires_at| retires_at > now));
        for key in &mut self.keys {
            key.retires_at = Some(key.retires_at.map_or(retire, |at| at.min(retire)));
        }
        let id = self.keys.last().map_or(1, |key| key.id.wrapping_add(1));
        self.keys.push(TokenKey {
            id,
            secret,
            retires_at: None,
        });
        id
    }

    /// Signs `claims` with the current key.
    pub fn issue(&self, claims: &TokenClaims) -> Result<String, TokenError> {
        let key = self.current().ok_or(TokenError::UnknownKey)?;
        let account = claims.principal.account.as_bytes();
        let user = claims.principal.user.as_bytes();
        if account.len() > MAX_TOKEN_NAME_LEN || user.len() > MAX_TOKEN_NAME_LEN {
            return Err(TokenError::NameTooLong);
        }
        let mut payload = Vec::with_capacity(20 + account.len() + user.len());
        payload.push(VERSION);
        payload.extend_from_slice(&key.id.to_be_bytes());
        payload.extend_from_slice(&claims.expires_at.to_be_bytes());
        payload.extend_from_slice(&claims.generation.to_be_bytes());
        payload.push(claims.principal.role.code());
        payload.push(account.len() as u8);
        payload.extend_from_slice(account);
        payload.push(user.len() as u8);
        payload.extend_from_slice(user);
        let mac = mac(&key.secret, &payload);
        Ok(format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// Checks the signature and the expiry of `token` at `now` (unix seconds).
    /// Revocation (the generation) is the caller's to check.
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (payload, signature) = body.split_once('.').ok_or(TokenError::Malformed)?;
        // Bounded before decoding: a header full of garbage costs nothing.
        if payload.len() > 1024 || signature.len() > 64 {
            return Err(TokenError::Malformed);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut reader = Reader(&payload);
        if reader.u8()? != VERSION {
            return Err(TokenError::Malformed);
        }
        let key_id = reader.u32()?;
        let key = self
            .keys
            .iter()
            .find(|key| key.id == key_id)
            .ok_or(TokenError::UnknownKey)?;
        if key.retires_at.is_some_and(|retires_at| now >= retires_at) {
            return Err(TokenError::UnknownKey);
        }
        let expected = mac(&key.secret, &payload);
        if signature.len() != MAC_LEN || !bool::from(expected.ct_eq(&signature)) {
            return Err(TokenError::BadSignature);
        }
        let expires_at = reader.u64()?;
        let generation = reader.u32()?;
        let role = Role::from_code(reader.u8()?).ok_or(TokenError::Malformed)?;
        let account = reader.name()?;
        let user = reader.name()?;
        if !reader.0.is_empty() {
            return Err(TokenError::Malformed);
        }
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(TokenClaims {
            principal: Principal {
                account,
                user,
                role,
            },
            expires_at,
            generation,
        })
    }
}

fn mac(secret: &[u8; 32], payload: &[u8]) -> [u8; MAC_LEN] {
    // Domain-separated, so no other HMAC this cluster computes can pass as a token.
    crate::signing::hmac_sha256(secret, &[TOKEN_MAC_DOMAIN, payload].concat())
}

const TOKEN_MAC_DOMAIN: &[u8] = b"strata-token-v1\0";

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TokenError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(TokenError::Malformed)?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, TokenError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn name(&mut self) -> Result<String, TokenError> {
        let len = self.u8()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: u64) -> TokenClaims {
        TokenClaims {
            principal: Principal {
                account: "acme".into(),
                user: "ann".into(),
                role: Role::Writer,
            },
            expires_at,
            generation: 3,
        }
    }

    fn keyring() -> TokenKeyring {
        TokenKeyring::new(vec![TokenKey {
            id: 7,
            secret: [7; 32],
            retires_at: None,
        }])
    }

    #[test]
    fn issue_then_verify() {
        let ring = keyring();
        let token = ring.issue(&claims(1_000)).unwrap();
        assert!(token.starts_with("AUTH_st1"));
        assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{token}");
        assert_eq!(ring.verify(&token, 999), Ok(claims(1_000)));
        assert_eq!(ring.verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn refuses_tampering_and_garbage() {
        let ring = keyring();
        let token = ring.issue(&claims(1_000)).unwrap();
        let check = |token: &str, expected: TokenError| {
            assert_eq!(ring.verify(token, 10), Err(expected), "{token}");
        };
        check("", TokenError::Malformed);
        check("AUTH_tk0123", TokenError::Malformed);
        check("AUTH_st1", TokenError::Malformed);
        check("AUTH_st1.", TokenError::Malformed);
        check("AUTH_st1!!.!!", TokenError::Malformed);
        check(&format!("{token}x"), TokenError::BadSignature);
        check(
            &format!("{}{}", token, "A".repeat(2000)),
            TokenError::Malformed,
        );
        // Another user's name under the same signature.
        let (payload, signature) = token.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(payload).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        check(
            &format!("{PREFIX}{}.{signature}", URL_SAFE_NO_PAD.encode(&raw)),
            TokenError::BadSignature,
        );
        // A longer expiry under the same signature.
        let mut raw = URL_SAFE_NO_PAD.decode(payload).unwrap();
        raw[12] = 0xff;
        check(
            &format!("{PREFIX}{}.{signature}", URL_SAFE_NO_PAD.encode(&raw)),
            TokenError::BadSignature,
        );
        let other = TokenKeyring::new(vec![TokenKey {
            id: 7,
            secret: [8; 32],
            retires_at: None,
        }]);
        assert_eq!(other.verify(&token, 10), Err(TokenError::BadSignature));
        assert_eq!(
            TokenKeyring::default().verify(&token, 10),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_for_the_overlap_only() {
        let mut ring = keyring();
        let old = ring.issue(&claims(100_000)).unwrap();
        let new_id = ring.rotate([9; 32], 1_000, 600);
        assert_eq!(new_id, 8);
        let new = ring.issue(&claims(100_000)).unwrap();
        assert!(ring.verify(&old, 1_599).is_ok());
        assert!(ring.verify(&new, 1_599).is_ok());
        assert_eq!(ring.verify(&old, 1_600), Err(TokenError::UnknownKey));
        assert!(ring.verify(&new, 50_000).is_ok());
        // A second rotation drops the key that has retired by then.
        ring.rotate([10; 32], 2_000, 600);
        assert_eq!(
            ring.keys().iter().map(|key| key.id).collect::<Vec<_>>(),
            [8, 9]
        );
    }

    #[test]
    fn names_are_bounded() {
        let mut long = claims(10);
        long.principal.user = "u".repeat(256);
        assert_eq!(keyring().issue(&long), Err(TokenError::NameTooLong));
    }
}

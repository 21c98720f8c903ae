//! The cryptographic core of SigV4: signing-key derivation, the HMACs, and
//! the rolling signature of aws-chunked bodies ([`ChunkSigner`]).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::amz_date::AmzDateTime;

type HmacSha256 = Hmac<Sha256>;

/// `AWS4-HMAC-SHA256`, the only algorithm this crate accepts.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";
const TRAILER_ALGORITHM: &str = "AWS4-HMAC-SHA256-TRAILER";

/// Hex SHA-256 of the empty string; part of every chunk string-to-sign.
pub(crate) const EMPTY_SHA256_HEX: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here;
    // the fallback only exists to avoid an unwrap.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The derived key `kSigning` for one secret, day, region and service:
/// HMAC chain over `"AWS4" + secret`, date, region, service, `aws4_request`.
pub(crate) fn signing_key(
    secret_key: &str,
    date_stamp: &str,
    region: &str,
    service: &str,
) -> [u8; 32] {
    let mut secret = Vec::with_capacity(secret_key.len() + 4);
    secret.extend_from_slice(b"AWS4");
    secret.extend_from_slice(secret_key.as_bytes());
    let date_key = hmac_sha256(&secret, date_stamp.as_bytes());
    let region_key = hmac_sha256(&date_key, region.as_bytes());
    let service_key = hmac_sha256(&region_key, service.as_bytes());
    hmac_sha256(&service_key, b"aws4_request")
}

/// The string-to-sign of a request: algorithm, timestamp, scope and the hex
/// SHA-256 of the canonical request, separated by newlines.
pub(crate) fn request_string_to_sign(
    datetime: &AmzDateTime,
    scope: &str,
    canonical_request: &[u8],
) -> String {
    format!(
        "{ALGORITHM}\n{datetime}\n{scope}\n{}",
        hex::encode(sha256(canonical_request))
    )
}

/// Decodes a hex signature as sent by a client. `None` for anything that is
/// not exactly 64 hex digits (either case).
pub(crate) fn parse_signature(text: &[u8]) -> Option<[u8; 32]> {
    let mut signature = [0u8; 32];
    hex::decode_to_slice(text, &mut signature).ok()?;
    Some(signature)
}

pub(crate) fn signatures_match(computed: &[u8; 32], provided: &[u8; 32]) -> bool {
    computed.ct_eq(provided).into()
}

/// Verifies the signatures of an aws-chunked body, one after the other.
///
/// Each chunk signature covers the previous signature (the request's "seed"
/// signature for the first chunk), so the chunks can neither be reordered,
/// dropped nor replayed into another request; the trailer signature chains
/// onto the signature of the final, empty chunk.
///
/// The signer holds the derived signing key, never the secret key itself.
#[derive(Clone)]
pub struct ChunkSigner {
    signing_key: [u8; 32],
    datetime: String,
    scope: String,
    previous_signature: [u8; 32],
}

impl ChunkSigner {
    /// A signer for a body whose request was signed at `datetime`
    /// (`YYYYMMDDTHHMMSSZ`) with credential scope `scope`
    /// (`date/region/service/aws4_request`), derived key `signing_key`, and
    /// request ("seed") signature `seed_signature`.
    ///
    /// [`crate::verify_request`] builds this for you; the constructor is
    /// public so that other doors (and tests) can verify bodies whose seed
    /// was checked elsewhere.
    pub fn new(
        signing_key: [u8; 32],
        datetime: String,
        scope: String,
        seed_signature: [u8; 32],
    ) -> Self {
        Self {
            signing_key,
            datetime,
            scope,
            previous_signature: seed_signature,
        }
    }

    /// The signature the next chunk (or the trailer) chains onto.
    pub fn previous_signature(&self) -> [u8; 32] {
        self.previous_signature
    }

    /// The expected signature of a chunk whose data hashes to `data_sha256`.
    pub fn chunk_signature(&self, data_sha256: &[u8; 32]) -> [u8; 32] {
        let string_to_sign = format!(
            "{CHUNK_ALGORITHM}\n{}\n{}\n{}\n{EMPTY_SHA256_HEX}\n{}",
            self.datetime,
            self.scope,
            hex::encode(self.previous_signature),
            hex::encode(data_sha256)
        );
        hmac_sha256(&self.signing_key, string_to_sign.as_bytes())
    }

    /// The expected trailer signature for the canonical trailer bytes
    /// (`name:value\n` per trailing header).
    pub fn trailer_signature(&self, canonical_trailers: &[u8]) -> [u8; 32] {
        let string_to_sign = format!(
            "{TRAILER_ALGORITHM}\n{}\n{}\n{}\n{}",
            self.datetime,
            self.scope,
            hex::encode(self.previous_signature),
            hex::encode(sha256(canonical_trailers))
        );
        hmac_sha256(&self.signing_key, string_to_sign.as_bytes())
    }

    /// Checks the signature of the next chunk and, when it matches, makes it
    /// the one the following chunk chains onto. Constant-time comparison.
    pub fn verify_chunk(&mut self, data_sha256: &[u8; 32], provided: &[u8; 32]) -> bool {
        let expected = self.chunk_signature(data_sha256);
        let matches = signatures_match(&expected, provided);
        if matches {
            self.previous_signature = expected;
        }
        matches
    }

    /// Checks the trailer signature (the last signature of a body).
    pub fn verify_trailer(&mut self, canonical_trailers: &[u8], provided: &[u8; 32]) -> bool {
        let expected = self.trailer_signature(canonical_trailers);
        let matches = signatures_match(&expected, provided);
        if matches {
            self.previous_signature = expected;
        }
        matches
    }
}

impl fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSigner")
            .field("signing_key", &"<redacted>")
            .field("datetime", &self.datetime)
            .field("scope", &self.scope)
            .field("previous_signature", &hex::encode(self.previous_signature))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SCOPE: &str = "20130524/us-east-1/s3/aws4_request";

    fn signer(seed: &str) -> ChunkSigner {
        ChunkSigner::new(
            signing_key(SECRET, "20130524", "us-east-1", "s3"),
            "20130524T000000Z".into(),
            SCOPE.into(),
            parse_signature(seed.as_bytes()).unwrap(),
        )
    }

    /// The chunk signatures of the AWS "PUT Object in multiple chunks"
    /// example (sigv4-streaming): 64 KiB of 'a', 1 KiB of 'a', then empty.
    #[test]
    fn aws_streaming_example_chunk_signatures() {
        let mut signer = signer("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
        let expected = [
            (
                vec![b'a'; 65_536],
                "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            ),
            (
                vec![b'a'; 1_024],
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            ),
            (
                Vec::new(),
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
            ),
        ];
        for (data, signature) in expected {
            let hash = sha256(&data);
            assert_eq!(hex::encode(signer.chunk_signature(&hash)), signature);
            assert!(signer.verify_chunk(&hash, &parse_signature(signature.as_bytes()).unwrap()));
        }
    }

    /// The AWS "trailing headers" example (sigv4-streaming-trailers): same
    /// chunks, then `x-amz-checksum-crc32c:sOO8/Q==` signed as a trailer.
    #[test]
    fn aws_trailer_example_signatures() {
        let mut signer = signer("106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e");
        let chunks = [
            (
                vec![b'a'; 65_536],
                "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            ),
            (
                vec![b'a'; 1_024],
                "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            ),
            (
                Vec::new(),
                "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
            ),
        ];
        for (data, signature) in chunks {
            let provided = parse_signature(signature.as_bytes()).unwrap();
            assert!(
                signer.verify_chunk(&sha256(&data), &provided),
                "{signature}"
            );
        }
        let trailer = b"x-amz-checksum-crc32c:sOO8/Q==\n";
        assert_eq!(
            hex::encode(signer.trailer_signature(trailer)),
            "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
        );
    }

    #[test]
    fn wrong_chunk_signature_does_not_advance() {
        let mut signer = signer("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
        let before = signer.previous_signature();
        assert!(!signer.verify_chunk(&sha256(b"x"), &[0; 32]));
        assert_eq!(signer.previous_signature(), before);
    }

    #[test]
    fn signature_parsing() {
        let check = |text: &str, ok: bool| {
            assert_eq!(parse_signature(text.as_bytes()).is_some(), ok, "{text}")
        };
        check(
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            true,
        );
        check(
            "AD80C730A21E5B8D04586A2213DD63B9A0E99E0E2307B0ADE35A65485A288648",
            true,
        );
        check(
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a28864",
            false,
        );
        check(
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a2886488",
            false,
        );
        check(
            "zd80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            false,
        );
        check("", false);
    }

    #[test]
    fn debug_redacts_the_key() {
        let text = format!("{:?}", signer(EMPTY_SHA256_HEX));
        assert!(text.contains("<redacted>"));
        assert!(!text.contains(&hex::encode(signing_key(
            SECRET,
            "20130524",
            "us-east-1",
            "s3"
        ))));
    }
}

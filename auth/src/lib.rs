//! # strata-auth: who sent this request, and is its body the one they signed?
//!
//! This crate owns AWS Signature Version 4 verification for strata's S3 API,
//! as a pure library. It answers two questions for the gateway:
//!
//! 1. **Is the request signed, and by whom?** [`verify_request`] checks a
//!    request authenticated either with an `Authorization: AWS4-HMAC-SHA256
//!    ...` header or with presigned-URL query parameters (`X-Amz-Algorithm`,
//!    `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
//!    `X-Amz-SignedHeaders`, `X-Amz-Signature`). On success it returns the
//!    [`Credential`] the request was signed with and a [`PayloadMode`]
//!    telling the door how the body is protected. A request with no
//!    authentication at all yields [`AuthError::Anonymous`]; what anonymous
//!    callers may do is the gateway's policy, not ours.
//! 2. **Is the body what was signed?** For `x-amz-content-sha256:
//!    STREAMING-*` bodies (`Content-Encoding: aws-chunked`), the
//!    [`AwsChunkedDecoder`] strips the chunk framing, verifies every chunk
//!    signature in sequence ([`ChunkSigner`]), and parses and verifies the
//!    trailer (`x-amz-checksum-*` lines, and `x-amz-trailer-signature` for
//!    signed trailers). It supports signed chunks with and without trailer
//!    and the unsigned-with-trailer variant (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`)
//!    that current SDKs send by default.
//!
//! Later this crate will also own session tokens and the account/user
//! model behind them; today a request carrying `x-amz-security-token` is
//! refused ([`AuthError::InvalidToken`]).
//!
//! ## Principals
//!
//! A principal is a [`Credential`]: an access key and its secret, plus the
//! account that owns it and the user within that account. Where credentials
//! live is not this crate's business: the gateway supplies a
//! [`CredentialLookup`] (a `HashMap<String, Credential>` is one).
//!
//! ## Key design decision: the server rebuilds the canonical request
//!
//! Nothing the client says about what it signed is trusted. The verifier
//! reconstructs the canonical request from the method, the URI exactly as
//! received on the wire (path decoded once and re-encoded with AWS
//! `UriEncode`, never double-encoded, never dot-normalised, as S3 does;
//! every query parameter decoded and re-encoded, sorted), the headers named
//! in `SignedHeaders` (a named header that is absent means the signature
//! cannot match), and the declared payload hash; it then derives the signing
//! key from the secret and compares HMACs in constant time (`subtle`).
//! Every `x-amz-*` header of the request must be among the signed ones, so
//! that a presigned URL cannot be extended with, say, `x-amz-copy-source`.
//!
//! The `aws-sigv4` crate is used only in tests, to sign requests the way the
//! AWS SDKs do; known-answer tests from the AWS documentation pin the
//! algorithm independently of it.
//!
//! ## What the gateway still has to do
//!
//! * [`PayloadMode::Sha256`]: hash the body while storing it and compare at
//!   the end (S3 error `XAmzContentSHA256Mismatch`).
//! * aws-chunked bodies: compare [`AwsChunkedDecoder::decoded_len`] with
//!   `x-amz-decoded-content-length`, check the trailers returned by
//!   [`AwsChunkedDecoder::finish`] against `x-amz-trailer` and verify the
//!   `x-amz-checksum-*` values, and strip `aws-chunked` from the stored
//!   `Content-Encoding`.
//! * Interpret query strings as this crate does (`+` is a space).
//!
//! ## Boundaries
//!
//! This crate depends on no other strata crate and never opens a socket,
//! reads a file or a clock: the caller passes `now`. It knows nothing of
//! HTTP routing or S3 XML; it uses only the `http` crate's types. It never
//! panics on input bytes: every malformed input is an [`AuthError`].

mod amz_date;
mod canonical;
mod chunked;
mod error;
mod key_hash;
mod principal;
mod signing;
mod swift_acl;
mod tempurl;
mod token;
mod verify;

#[cfg(test)]
mod sdk_tests;

pub use chunked::{AwsChunkedDecoder, ChunkLimits, ChunkedMode};
pub use error::{AuthError, ChunkError};
pub use key_hash::{hash_key, key_matches};
pub use principal::{Principal, Role};
pub use signing::ChunkSigner;
pub use swift_acl::{AclError, ContainerAcl, Decision, MAX_ACL_LEN, read_decision, write_decision};
pub use tempurl::{TEMPURL_DIGESTS, TempUrlError, TempUrlParams, sign_temp_url, verify_temp_url};
pub use token::{MAX_TOKEN_NAME_LEN, TokenClaims, TokenError, TokenKey, TokenKeyring};
pub use verify::{
    Credential, CredentialLookup, PayloadMode, SigV4Config, VerifiedRequest, verify_request,
};

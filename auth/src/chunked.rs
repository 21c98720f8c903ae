//! Incremental decoding of `aws-chunked` request bodies.
//!
//! Wire format (signed; the unsigned variant has no `;chunk-signature=`
//! extension):
//!
//! ```text
//! 10000;chunk-signature=<64 hex>\r\n<65536 bytes>\r\n
//! 400;chunk-signature=<64 hex>\r\n<1024 bytes>\r\n
//! 0;chunk-signature=<64 hex>\r\n
//! \r\n                                        (no trailer)
//! x-amz-checksum-crc32c:sOO8/Q==\r\n          (or: trailer lines,
//! x-amz-trailer-signature:<64 hex>\r\n         signature in signed mode,
//! \r\n                                         then an empty line)
//! ```
//!
//! The decoder is a push-driven state machine so that it can sit behind any
//! body type. In signed mode a chunk's bytes are hashed as they arrive but
//! only released once the chunk signature is verified, so at most one chunk
//! is buffered; in unsigned mode bytes are released as soon as they arrive.

use std::mem;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::error::AuthError;
use crate::signing::{ChunkSigner, parse_signature, sha256};
use crate::verify::PayloadMode;

const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const CHUNK_SIGNATURE: &str = "chunk-signature=";

/// Whether the chunks carry signatures.
#[derive(Debug, Clone)]
pub enum ChunkedMode {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: every chunk (and the
    /// trailer) is signed, chained from the request signature.
    Signed(ChunkSigner),
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: plain chunks.
    Unsigned,
}

/// Bounds on what the decoder buffers, so that a client cannot make it
/// hold more than one bounded chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest accepted chunk data size (clients use 64 KiB .. 8 MiB).
    pub max_chunk_size: usize,
    /// Longest accepted chunk header line, e.g. `10000;chunk-signature=...`
    /// (about 90 bytes in practice).
    pub max_line_length: usize,
    /// Largest accepted trailer section, all lines together.
    pub max_trailer_size: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_chunk_size: 16 * 1024 * 1024,
            max_line_length: 4 * 1024,
            max_trailer_size: 16 * 1024,
        }
    }
}

/// How much of a chunk buffer is reserved up front: enough for typical
/// chunks, without letting a chunk header that claims 16 MiB reserve it
/// before any byte of it arrived.
const INITIAL_CHUNK_RESERVE: usize = 1024 * 1024;

enum State {
    /// Reading a `size[;chunk-signature=...]` line.
    ChunkHeader,
    /// Reading the data of a chunk.
    Data {
        remaining: usize,
        /// Signed mode: the signature the chunk must have, the running hash
        /// of its data, and the data held back until it is verified.
        signed: Option<SignedChunk>,
    },
    /// Expecting the `\r\n` after chunk data; `seen` bytes of it matched.
    DataEnd { seen: usize },
    /// After the final chunk of a body without trailer: expecting `\r\n`.
    FinalCrlf { seen: usize },
    /// Reading trailer lines until the empty line.
    Trailer(TrailerState),
    /// The body is complete; the trailing headers, signature excluded.
    Done(Vec<(String, String)>),
    /// An error happened; every later call reports it again.
    Failed(AuthError),
}

struct SignedChunk {
    signature: [u8; 32],
    hasher: Sha256,
    data: BytesMut,
}

#[derive(Default)]
struct TrailerState {
    headers: Vec<(String, String)>,
    signature: Option<[u8; 32]>,
    /// Bytes of trailer lines consumed so far, for the size limit.
    size: usize,
}

/// Incremental aws-chunked decoder: push bytes as they arrive from the
/// network, get payload bytes out; verifies each chunk's signature (signed
/// mode), parses and verifies the trailer (`x-amz-checksum-*:value` lines
/// and, for signed trailers, `x-amz-trailer-signature`).
pub struct AwsChunkedDecoder {
    signer: Option<ChunkSigner>,
    expect_trailer: bool,
    limits: ChunkLimits,
    state: State,
    /// A chunk header or trailer line not yet terminated.
    partial_line: Vec<u8>,
    decoded_len: u64,
}

impl AwsChunkedDecoder {
    /// A decoder for one body. `expect_trailer` says whether the final chunk
    /// is followed by trailer lines (the `-TRAILER` payload modes).
    pub fn new(mode: ChunkedMode, expect_trailer: bool, limits: ChunkLimits) -> Self {
        Self {
            signer: match mode {
                ChunkedMode::Signed(signer) => Some(signer),
                ChunkedMode::Unsigned => None,
            },
            expect_trailer,
            limits,
            state: State::ChunkHeader,
            partial_line: Vec::new(),
            decoded_len: 0,
        }
    }

    /// The decoder matching a verified request's payload mode, or `None`
    /// when the body is not aws-chunked.
    pub fn for_payload(payload: &PayloadMode, limits: ChunkLimits) -> Option<Self> {
        match payload {
            PayloadMode::StreamingSigned { trailer, seed } => Some(Self::new(
                ChunkedMode::Signed(seed.clone()),
                *trailer,
                limits,
            )),
            PayloadMode::StreamingUnsignedTrailer => {
                Some(Self::new(ChunkedMode::Unsigned, true, limits))
            }
            PayloadMode::Sha256(_) | PayloadMode::UnsignedPayload => None,
        }
    }

    /// Payload bytes released so far; compare with
    /// `x-amz-decoded-content-length` at the end.
    pub fn decoded_len(&self) -> u64 {
        self.decoded_len
    }

    /// Whether the final chunk (and trailer) have been read completely.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// Consumes all of `input` (which is left empty on success); returns the
    /// payload bytes decoded from it, if any. Partial chunk headers and
    /// trailer lines are kept inside the decoder, so callers may pass a
    /// fresh buffer each time or keep appending to the same one.
    ///
    /// In signed mode a chunk's data is held back until its signature is
    /// verified, so at most one chunk (bounded by
    /// [`ChunkLimits::max_chunk_size`]) is buffered. After an error, every
    /// later call returns the same error.
    pub fn push(&mut self, input: &mut BytesMut) -> Result<Option<Bytes>, AuthError> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        let mut output = Output::default();
        match self.process(input, &mut output) {
            Ok(()) => Ok(output.into_bytes()),
            Err(error) => {
                input.clear();
                self.state = State::Failed(error.clone());
                Err(error)
            }
        }
    }

    /// Call at end of stream: the trailing headers (lower-case names,
    /// `x-amz-trailer-signature` excluded, possibly none) if the final
    /// 0-size chunk and, when expected, the trailer were complete and valid;
    /// [`AuthError::IncompleteBody`] for a truncated body.
    ///
    /// Lenient where clients are sloppy: a missing final empty line after
    /// the last complete trailer line, or a missing final CRLF after the
    /// final chunk of a body without trailer, is accepted.
    pub fn finish(self) -> Result<Vec<(String, String)>, AuthError> {
        let partial_line_empty = self.partial_line.is_empty();
        match self.state {
            State::Done(trailers) => Ok(trailers),
            State::Failed(error) => Err(error),
            State::FinalCrlf { .. } => Ok(Vec::new()),
            State::Trailer(trailer) if partial_line_empty => {
                let complete = match self.signer {
                    Some(_) => trailer.signature.is_some(),
                    None => !trailer.headers.is_empty(),
                };
                if !complete {
                    return Err(AuthError::IncompleteBody);
                }
                end_of_trailer(self.signer.as_ref(), trailer)
            }
            State::ChunkHeader | State::Data { .. } | State::DataEnd { .. } | State::Trailer(_) => {
                Err(AuthError::IncompleteBody)
            }
        }
    }

    fn process(&mut self, input: &mut BytesMut, output: &mut Output) -> Result<(), AuthError> {
        while !input.is_empty() {
            match &mut self.state {
                State::ChunkHeader => {
                    let limit = self.limits.max_line_length;
                    let Some(line) =
                        take_line(&mut self.partial_line, input, limit).map_err(|_| {
                            AuthError::InvalidChunk(format!(
                                "chunk header longer than {limit} bytes"
                            ))
                        })?
                    else {
                        continue;
                    };
                    self.state = self.chunk_header(&line)?;
                }
                State::Data { remaining, signed } => {
                    let take = (*remaining).min(input.len());
                    let piece = input.split_to(take);
                    *remaining -= take;
                    match signed {
                        None => {
                            self.decoded_len += piece.len() as u64;
                            output.push(piece.freeze());
                        }
                        Some(chunk) => {
                            chunk.hasher.update(&piece);
                            if chunk.data.is_empty() && *remaining == 0 {
                                // The whole chunk arrived at once: keep it
                                // without copying.
                                chunk.data = piece;
                            } else {
                                if chunk.data.is_empty() {
                                    chunk
                                        .data
                                        .reserve((take + *remaining).min(INITIAL_CHUNK_RESERVE));
                                }
                                chunk.data.extend_from_slice(&piece);
                            }
                        }
                    }
                    if *remaining == 0 {
                        if let Some(chunk) = signed.take() {
                            let hash: [u8; 32] = chunk.hasher.finalize().into();
                            self.verify_chunk(&hash, &chunk.signature)?;
                            self.decoded_len += chunk.data.len() as u64;
                            output.push(chunk.data.freeze());
                        }
                        self.state = State::DataEnd { seen: 0 };
                    }
                }
                State::DataEnd { seen } => {
                    if expect_crlf(seen, input)? {
                        self.state = State::ChunkHeader;
                    }
                }
                State::FinalCrlf { seen } => {
                    if expect_crlf(seen, input)? {
                        self.state = State::Done(Vec::new());
                    }
                }
                State::Trailer(trailer) => {
                    let budget = self.limits.max_trailer_size.saturating_sub(trailer.size);
                    let before = self.partial_line.len() + input.len();
                    let line = take_line(&mut self.partial_line, input, budget).map_err(|_| {
                        AuthError::InvalidTrailer(format!(
                            "trailer section longer than {} bytes",
                            self.limits.max_trailer_size
                        ))
                    })?;
                    let Some(line) = line else { continue };
                    trailer.size += before - input.len();
                    if line.is_empty() {
                        let trailer = mem::take(trailer);
                        self.state = State::Done(end_of_trailer(self.signer.as_ref(), trailer)?);
                    } else {
                        trailer_line(self.signer.is_some(), trailer, &line)?;
                    }
                }
                State::Done(_) => {
                    // Tolerate stray line ends after the end; nothing else.
                    if input
                        .iter()
                        .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
                    {
                        input.clear();
                    } else {
                        return Err(AuthError::InvalidChunk(
                            "data after the final chunk".to_owned(),
                        ));
                    }
                }
                State::Failed(error) => return Err(error.clone()),
            }
        }
        Ok(())
    }

    /// Parses a chunk header line (without its line end) and returns the
    /// state that follows it.
    fn chunk_header(&mut self, line: &[u8]) -> Result<State, AuthError> {
        let line = trim_end_blanks(line);
        let (size_text, extensions) = match line.iter().position(|&b| b == b';') {
            Some(index) => (&line[..index], Some(&line[index + 1..])),
            None => (line, None),
        };
        let size = parse_chunk_size(size_text)?;
        if size > self.limits.max_chunk_size as u64 {
            return Err(AuthError::ChunkTooLarge {
                size,
                limit: self.limits.max_chunk_size as u64,
            });
        }
        // `size` is at most `max_chunk_size`, a usize.
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let signature = match self.signer {
            // Unsigned bodies: chunk extensions carry nothing we use.
            None => None,
            Some(_) => Some(parse_chunk_signature(extensions)?),
        };
        if size == 0 {
            if let Some(signature) = signature {
                self.verify_chunk(&sha256(b""), &signature)?;
            }
            return Ok(if self.expect_trailer {
                State::Trailer(TrailerState::default())
            } else {
                State::FinalCrlf { seen: 0 }
            });
        }
        Ok(State::Data {
            remaining: size,
            signed: signature.map(|signature| SignedChunk {
                signature,
                hasher: Sha256::new(),
                data: BytesMut::new(),
            }),
        })
    }

    fn verify_chunk(
        &mut self,
        data_sha256: &[u8; 32],
        signature: &[u8; 32],
    ) -> Result<(), AuthError> {
        let verified = self
            .signer
            .as_mut()
            .is_some_and(|signer| signer.verify_chunk(data_sha256, signature));
        if verified {
            Ok(())
        } else {
            Err(AuthError::SignatureDoesNotMatch)
        }
    }
}

/// Payload bytes produced by one `push`: usually one piece, which is passed
/// on without copying; several pieces (several small chunks in one push)
/// are concatenated.
#[derive(Default)]
struct Output {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Output {
    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some(more) = &mut self.more {
            more.extend_from_slice(&piece);
        } else if let Some(first) = self.first.take() {
            let mut joined = BytesMut::with_capacity(first.len() + piece.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&piece);
            self.more = Some(joined);
        } else {
            self.first = Some(piece);
        }
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self.more {
            Some(more) => Some(more.freeze()),
            None => self.first,
        }
    }
}

/// The line is longer than allowed.
struct LineTooLong;

/// Moves bytes from `input` into `partial` up to and including the next
/// `\n`. Returns the complete line without its `\n` or `\r\n` end, or `None`
/// if `input` ran out first. Refuses lines longer than `limit` bytes (line
/// end included) before buffering them.
fn take_line(
    partial: &mut Vec<u8>,
    input: &mut BytesMut,
    limit: usize,
) -> Result<Option<Vec<u8>>, LineTooLong> {
    match input.iter().position(|&b| b == b'\n') {
        Some(index) => {
            if partial.len() + index + 1 > limit {
                return Err(LineTooLong);
            }
            partial.extend_from_slice(&input[..index]);
            let _ = input.split_to(index + 1);
            let mut line = mem::take(partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        None => {
            if partial.len() + input.len() > limit {
                return Err(LineTooLong);
            }
            partial.extend_from_slice(input);
            input.clear();
            Ok(None)
        }
    }
}

/// Consumes the bytes of an expected `\r\n`; `true` once it is complete.
fn expect_crlf(seen: &mut usize, input: &mut BytesMut) -> Result<bool, AuthError> {
    const CRLF: &[u8] = b"\r\n";
    while let Some(&expected) = CRLF.get(*seen) {
        let Some(&byte) = input.first() else {
            return Ok(false);
        };
        if byte != expected {
            return Err(AuthError::InvalidChunk(
                "chunk data is not followed by CRLF (wrong chunk size?)".to_owned(),
            ));
        }
        let _ = input.split_to(1);
        *seen += 1;
    }
    Ok(true)
}

fn trim_end_blanks(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// A chunk size: one or more hex digits, nothing else. Sizes that do not
/// fit in 64 bits are reported as `u64::MAX` (and refused as too large).
fn parse_chunk_size(text: &[u8]) -> Result<u64, AuthError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_hexdigit) {
        return Err(AuthError::InvalidChunk(format!(
            "invalid chunk size \"{}\"",
            String::from_utf8_lossy(&text[..text.len().min(32)])
        )));
    }
    let mut size: u64 = 0;
    for &digit in text {
        let value = u64::from(match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        });
        size = match size.checked_mul(16).and_then(|s| s.checked_add(value)) {
            Some(size) => size,
            None => return Ok(u64::MAX),
        };
    }
    Ok(size)
}

/// The `chunk-signature=<64 hex>` extension of a signed chunk; it must be
/// the only extension.
fn parse_chunk_signature(extensions: Option<&[u8]>) -> Result<[u8; 32], AuthError> {
    let extension = extensions.map(trim_end_blanks).ok_or_else(|| {
        AuthError::InvalidChunk("signed chunk without chunk-signature".to_owned())
    })?;
    let value = extension
        .strip_prefix(CHUNK_SIGNATURE.as_bytes())
        .ok_or_else(|| {
            AuthError::InvalidChunk("signed chunk without chunk-signature".to_owned())
        })?;
    parse_signature(value)
        .ok_or_else(|| AuthError::InvalidChunk("malformed chunk-signature".to_owned()))
}

/// Records one trailer line (`name:value`).
fn trailer_line(signed: bool, trailer: &mut TrailerState, line: &[u8]) -> Result<(), AuthError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| AuthError::InvalidTrailer("trailer line is not valid UTF-8".to_owned()))?;
    let (name, value) = line.split_once(':').ok_or_else(|| {
        AuthError::InvalidTrailer(format!("trailer line \"{}\" has no ':'", truncate(line)))
    })?;
    let name = name.trim().to_ascii_lowercase();
    let value = value.trim_matches([' ', '\t']);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::InvalidTrailer(format!(
            "invalid trailer name \"{}\"",
            truncate(&name)
        )));
    }
    if trailer.signature.is_some() {
        // Nothing after the signature is covered by it.
        return Err(AuthError::InvalidTrailer(format!(
            "trailer \"{}\" after {TRAILER_SIGNATURE}",
            truncate(&name)
        )));
    }
    if name == TRAILER_SIGNATURE {
        if !signed {
            return Err(AuthError::InvalidTrailer(format!(
                "{TRAILER_SIGNATURE} in an unsigned body"
            )));
        }
        let signature = parse_signature(value.as_bytes())
            .ok_or_else(|| AuthError::InvalidTrailer(format!("malformed {TRAILER_SIGNATURE}")))?;
        trailer.signature = Some(signature);
    } else {
        trailer.headers.push((name, value.to_owned()));
    }
    Ok(())
}

/// Checks a complete trailer and returns its headers.
fn end_of_trailer(
    signer: Option<&ChunkSigner>,
    trailer: TrailerState,
) -> Result<Vec<(String, String)>, AuthError> {
    let Some(signer) = signer else {
        return Ok(trailer.headers);
    };
    let signature = trailer.signature.ok_or_else(|| {
        AuthError::InvalidTrailer(format!("signed trailer without {TRAILER_SIGNATURE}"))
    })?;
    // The canonical trailer is `name:value\n` per header. Clients send them
    // in the order they signed them (sorted by name, in practice); should
    // one sign the sorted list but send them unsorted, the sorted order is
    // tried too. Both only ever cover what the client sent.
    let canonical = |headers: &[(String, String)]| -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    };
    let mut matched = signer
        .clone()
        .verify_trailer(&canonical(&trailer.headers), &signature);
    if !matched && trailer.headers.len() > 1 {
        let mut sorted = trailer.headers.clone();
        sorted.sort();
        matched = signer
            .clone()
            .verify_trailer(&canonical(&sorted), &signature);
    }
    if !matched {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    Ok(trailer.headers)
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::verify::SigV4Config;
    use crate::verify::tests::{at, chunked_put, chunked_put_with_trailer};

    /// The seed signer of the AWS chunked-upload example, obtained the way
    /// the gateway gets it: by verifying the example request.
    fn example_signer(trailer: bool) -> ChunkSigner {
        let request = if trailer {
            chunked_put_with_trailer()
        } else {
            chunked_put()
        };
        match request
            .verify(&SigV4Config::default(), at("20130524T000000Z"))
            .unwrap()
            .payload
        {
            PayloadMode::StreamingSigned { seed, trailer: t } if t == trailer => seed,
            other => panic!("unexpected payload mode {other:?}"),
        }
    }

    fn chunk(size_hex: &str, signature: &str, data: &[u8]) -> Vec<u8> {
        let mut out = format!("{size_hex};chunk-signature={signature}\r\n").into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The body of the AWS "PUT Object in multiple chunks" example.
    fn aws_example_body() -> Vec<u8> {
        let mut body = chunk(
            "10000",
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            &[b'a'; 65_536],
        );
        body.extend(chunk(
            "400",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            &[b'a'; 1_024],
        ));
        body.extend(b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
        body
    }

    /// The body of the AWS example with a signed `x-amz-checksum-crc32c`
    /// trailer.
    fn aws_trailer_example_body() -> Vec<u8> {
        let mut body = chunk(
            "10000",
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            &[b'a'; 65_536],
        );
        body.extend(chunk(
            "400",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            &[b'a'; 1_024],
        ));
        body.extend(b"0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n");
        body.extend(b"x-amz-checksum-crc32c:sOO8/Q==\r\n");
        body.extend(b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n");
        body.extend(b"\r\n");
        body
    }

    type Decoded = Result<(Vec<u8>, Vec<(String, String)>), AuthError>;

    /// Feeds `body` to a fresh decoder in pieces ending at `splits`.
    fn decode(mut decoder: AwsChunkedDecoder, body: &[u8], splits: &[usize]) -> Decoded {
        let mut payload = Vec::new();
        let mut start = 0;
        for end in splits.iter().copied().chain([body.len()]) {
            let end = end.clamp(start, body.len());
            let mut input = BytesMut::from(&body[start..end]);
            if let Some(bytes) = decoder.push(&mut input)? {
                payload.extend_from_slice(&bytes);
            }
            assert!(input.is_empty(), "push must consume its input");
            start = end;
        }
        assert_eq!(decoder.decoded_len(), payload.len() as u64);
        let trailers = decoder.finish()?;
        Ok((payload, trailers))
    }

    fn signed(trailer: bool) -> AwsChunkedDecoder {
        AwsChunkedDecoder::new(
            ChunkedMode::Signed(example_signer(trailer)),
            trailer,
            ChunkLimits::default(),
        )
    }

    fn unsigned(trailer: bool) -> AwsChunkedDecoder {
        AwsChunkedDecoder::new(ChunkedMode::Unsigned, trailer, ChunkLimits::default())
    }

    fn crc32c_trailer() -> Vec<(String, String)> {
        vec![("x-amz-checksum-crc32c".to_owned(), "sOO8/Q==".to_owned())]
    }

    fn check(decoder: impl Fn() -> AwsChunkedDecoder, body: &[u8], expected: Decoded) {
        assert_eq!(
            decode(decoder(), body, &[]),
            expected,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
    }

    #[test]
    fn aws_examples_decode() {
        assert_eq!(
            aws_example_body().len(),
            66_824,
            "Content-Length of the AWS example"
        );
        assert_eq!(
            aws_trailer_example_body().len(),
            66_946,
            "Content-Length of the AWS trailer example"
        );
        check(
            || signed(false),
            &aws_example_body(),
            Ok((vec![b'a'; 66_560], vec![])),
        );
        check(
            || signed(true),
            &aws_trailer_example_body(),
            Ok((vec![b'a'; 66_560], crc32c_trailer())),
        );
    }

    #[test]
    fn aws_example_split_anywhere_interesting() {
        for (trailer, body) in [
            (false, aws_example_body()),
            (true, aws_trailer_example_body()),
        ] {
            let expected_trailers = if trailer { crc32c_trailer() } else { vec![] };
            let expected = Ok((vec![b'a'; 66_560], expected_trailers));
            // Every split point near the framing, a stride elsewhere.
            let second_header = 88 + 65_536 + 2;
            let points: Vec<usize> = (0..200)
                .chain(second_header - 100..second_header + 200)
                .chain(body.len() - 400..=body.len())
                .chain((0..body.len()).step_by(997))
                .collect();
            for point in points {
                assert_eq!(
                    decode(signed(trailer), &body, &[point]),
                    expected,
                    "split at {point}"
                );
            }
            let every_byte: Vec<usize> = (1..body.len()).collect();
            assert_eq!(decode(signed(trailer), &body, &every_byte), expected);
        }
    }

    #[test]
    fn signed_data_is_released_only_after_verification() {
        let body = aws_example_body();
        let first_chunk_end = 88 + 65_536; // header line + data
        let mut decoder = signed(false);
        let mut released = 0;
        for (index, byte) in body.iter().enumerate() {
            let output = decoder.push(&mut BytesMut::from(&[*byte][..])).unwrap();
            let len = output.map_or(0, |bytes| bytes.len());
            if index + 1 == first_chunk_end {
                assert_eq!(len, 65_536, "the whole first chunk at once");
            } else if index + 1 == first_chunk_end + 2 + 86 + 1_024 {
                assert_eq!(len, 1_024, "the whole second chunk at once");
            } else {
                assert_eq!(len, 0, "nothing before a chunk is verified (byte {index})");
            }
            released += len;
        }
        assert_eq!(released, 66_560);
        assert!(decoder.is_complete());
    }

    #[test]
    fn unsigned_data_streams_as_it_arrives() {
        let mut decoder = unsigned(true);
        let mut input = BytesMut::from(&b"a;ext=1\r\nhel"[..]);
        assert_eq!(
            decoder.push(&mut input).unwrap().as_deref(),
            Some(&b"hel"[..])
        );
        let mut input = BytesMut::from(&b"lo"[..]);
        assert_eq!(
            decoder.push(&mut input).unwrap().as_deref(),
            Some(&b"lo"[..])
        );
        let mut input =
            BytesMut::from(&b"world\r\n3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"[..]);
        assert_eq!(
            decoder.push(&mut input).unwrap().as_deref(),
            Some(&b"worldabc"[..])
        );
        assert!(decoder.is_complete());
        assert_eq!(
            decoder.finish(),
            Ok(vec![(
                "x-amz-checksum-crc32".to_owned(),
                "AAAAAA==".to_owned()
            )])
        );
    }

    #[test]
    fn tampered_signed_bodies() {
        let body = aws_example_body();
        let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
            let index = body.windows(from.len()).position(|w| w == from).unwrap();
            let mut changed = body.clone();
            changed.splice(index..index + from.len(), to.iter().copied());
            changed
        };
        let mismatch = Err(AuthError::SignatureDoesNotMatch);
        // One data byte changed, in each chunk.
        let mut changed = body.clone();
        changed[100] = b'b';
        check(|| signed(false), &changed, mismatch.clone());
        let mut changed = body.clone();
        changed[body.len() - 200] = b'b';
        check(|| signed(false), &changed, mismatch.clone());
        // A chunk signature changed, in each chunk.
        check(
            || signed(false),
            &replace(b"=ad80", b"=ad81"),
            mismatch.clone(),
        );
        check(
            || signed(false),
            &replace(b"=0055", b"=0056"),
            mismatch.clone(),
        );
        check(
            || signed(false),
            &replace(b"=b6c6", b"=b6c7"),
            mismatch.clone(),
        );
        check(
            || signed(false),
            &replace(b"=b6c6", b"=B6C6"),
            Ok((vec![b'a'; 66_560], vec![])),
        );
        // The body replayed into another request (another seed).
        check(|| signed(true), &body, mismatch.clone());
        // The final chunk dropped and the body ended early.
        let final_chunk_len = 86;
        let without_final = &body[..body.len() - final_chunk_len];
        check(
            || signed(false),
            without_final,
            Err(AuthError::IncompleteBody),
        );
        // The second chunk dropped: the final chunk no longer chains.
        let mut skipped = body[..88 + 65_536 + 2].to_vec();
        skipped.extend_from_slice(&body[body.len() - final_chunk_len..]);
        check(|| signed(false), &skipped, mismatch.clone());
        // Signed mode requires signatures.
        check(
            || signed(false),
            b"3\r\nabc\r\n0\r\n\r\n",
            Err(AuthError::InvalidChunk(
                "signed chunk without chunk-signature".to_owned(),
            )),
        );
        check(
            || signed(false),
            b"3;chunk-signature=abc\r\nabc\r\n",
            Err(AuthError::InvalidChunk(
                "malformed chunk-signature".to_owned(),
            )),
        );
    }

    #[test]
    fn tampered_signed_trailers() {
        let body = aws_trailer_example_body();
        let replace = |from: &str, to: &str| -> Vec<u8> {
            String::from_utf8(body.clone())
                .unwrap()
                .replacen(from, to, 1)
                .into_bytes()
        };
        let ok = Ok((vec![b'a'; 66_560], crc32c_trailer()));
        check(
            || signed(true),
            &replace("sOO8/Q==", "AAAAAA=="),
            Err(AuthError::SignatureDoesNotMatch),
        );
        check(
            || signed(true),
            &replace("trailer-signature:d81f", "trailer-signature:d81e"),
            Err(AuthError::SignatureDoesNotMatch),
        );
        check(
            || signed(true),
            &replace("x-amz-trailer-signature:", "x-amz-other:"),
            Err(AuthError::InvalidTrailer(
                "signed trailer without x-amz-trailer-signature".to_owned(),
            )),
        );
        check(
            || signed(true),
            &replace("e435\r\n\r\n", "e435\r\nx-amz-extra:1\r\n\r\n"),
            Err(AuthError::InvalidTrailer(
                "trailer \"x-amz-extra\" after x-amz-trailer-signature".to_owned(),
            )),
        );
        check(
            || signed(true),
            &replace(
                "x-amz-checksum-crc32c:sOO8/Q==\r\n",
                "x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-extra:1\r\n",
            ),
            Err(AuthError::SignatureDoesNotMatch),
        );
        // Lenient: names are case-insensitive, whitespace around values and
        // the final empty line may vary.
        check(
            || signed(true),
            &replace("x-amz-checksum-crc32c:", "X-Amz-Checksum-CRC32C: "),
            ok.clone(),
        );
        check(
            || signed(true),
            &replace("sOO8/Q==\r\n", "sOO8/Q==  \r\n"),
            ok.clone(),
        );
        check(|| signed(true), &body[..body.len() - 2], ok.clone());
        // Truncated inside the trailer.
        check(
            || signed(true),
            &body[..body.len() - 3],
            Err(AuthError::IncompleteBody),
        );
        check(
            || signed(true),
            &body[..body.len() - 60],
            Err(AuthError::IncompleteBody),
        );
    }

    #[test]
    fn unsigned_trailer_bodies_like_boto3() {
        let ok = |payload: &[u8]| -> Decoded {
            Ok((
                payload.to_vec(),
                vec![("x-amz-checksum-crc32".to_owned(), "NhCmhg==".to_owned())],
            ))
        };
        let boto3 = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        check(|| unsigned(true), boto3, ok(b"hello"));
        check(
            || unsigned(true),
            b"0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
            ok(b""),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n",
            ok(b"hello"),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg== \t\r\n\r\n",
            ok(b"hello"),
        );
        check(
            || unsigned(true),
            b"5\nhello\r\n0\nx-amz-checksum-crc32:NhCmhg==\n\n",
            ok(b"hello"),
        );
        check(
            || unsigned(true),
            b"5;chunk-signature=00\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
            ok(b"hello"),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\n\r\n",
            Ok((b"hello".to_vec(), vec![])),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n\r\n",
            ok(b"hello"),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\n",
            Err(AuthError::IncompleteBody),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:Nh",
            Err(AuthError::IncompleteBody),
        );
        check(
            || unsigned(true),
            b"5\r\nhello\r\n",
            Err(AuthError::IncompleteBody),
        );
        check(
            || unsigned(true),
            b"5\r\nhel",
            Err(AuthError::IncompleteBody),
        );
        check(|| unsigned(true), b"", Err(AuthError::IncompleteBody));
        check(
            || unsigned(true),
            b"0\r\nx-amz-checksum-crc32\r\n\r\n",
            Err(AuthError::InvalidTrailer(
                "trailer line \"x-amz-checksum-crc32\" has no ':'".to_owned(),
            )),
        );
        check(
            || unsigned(true),
            b"0\r\n:value\r\n\r\n",
            Err(AuthError::InvalidTrailer(
                "invalid trailer name \"\"".to_owned(),
            )),
        );
        check(
            || unsigned(true),
            b"0\r\nx-amz-checksum-crc32:\xff\r\n\r\n",
            Err(AuthError::InvalidTrailer(
                "trailer line is not valid UTF-8".to_owned(),
            )),
        );
        check(
            || unsigned(true),
            b"0\r\nx-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n",
            Err(AuthError::InvalidTrailer("x-amz-trailer-signature in an unsigned body".to_owned())),
        );
        // Without a trailer the body ends with an empty line (or nothing).
        check(
            || unsigned(false),
            b"5\r\nhello\r\n0\r\n\r\n",
            Ok((b"hello".to_vec(), vec![])),
        );
        check(
            || unsigned(false),
            b"5\r\nhello\r\n0\r\n",
            Ok((b"hello".to_vec(), vec![])),
        );
        check(
            || unsigned(false),
            b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
            Err(AuthError::InvalidChunk(
                "chunk data is not followed by CRLF (wrong chunk size?)".to_owned(),
            )),
        );
    }

    #[test]
    fn framing_errors() {
        let too_large = |size: u64| {
            Err(AuthError::ChunkTooLarge {
                size,
                limit: 16 * 1024 * 1024,
            })
        };
        check(|| unsigned(false), b"1000001\r\n", too_large(0x100_0001));
        check(
            || unsigned(false),
            b"ffffffffffffffffffff\r\n",
            too_large(u64::MAX),
        );
        check(
            || unsigned(false),
            b"1000000\r\n",
            Err(AuthError::IncompleteBody),
        );
        check(
            || unsigned(false),
            b"0000000000000000000000003\r\nabc\r\n0\r\n\r\n",
            Ok((b"abc".to_vec(), vec![])),
        );
        check(
            || signed(false),
            b"1000001;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n",
            too_large(0x100_0001),
        );
        let long_header = [b"1".repeat(5_000), b"\r\n".to_vec()].concat();
        check(
            || unsigned(false),
            &long_header,
            Err(AuthError::InvalidChunk(
                "chunk header longer than 4096 bytes".to_owned(),
            )),
        );
        check(
            || unsigned(false),
            &b"1".repeat(5_000),
            Err(AuthError::InvalidChunk(
                "chunk header longer than 4096 bytes".to_owned(),
            )),
        );
        let long_trailer = [
            b"0\r\nx-amz-checksum-crc32:".to_vec(),
            b"A".repeat(20_000),
            b"\r\n\r\n".to_vec(),
        ]
        .concat();
        check(
            || unsigned(true),
            &long_trailer,
            Err(AuthError::InvalidTrailer(
                "trailer section longer than 16384 bytes".to_owned(),
            )),
        );
        for bad in ["", "x", "-1", "0x10", " 5", "5 5", "+5"] {
            let body = format!("{bad}\r\nhello\r\n0\r\n\r\n");
            check(
                || unsigned(false),
                body.as_bytes(),
                Err(AuthError::InvalidChunk(format!(
                    "invalid chunk size \"{}\"",
                    bad.split(';').next().unwrap().trim_end()
                ))),
            );
        }
        let not_crlf = Err(AuthError::InvalidChunk(
            "chunk data is not followed by CRLF (wrong chunk size?)".to_owned(),
        ));
        check(
            || unsigned(false),
            b"3\r\nhello\r\n0\r\n\r\n",
            not_crlf.clone(),
        );
        check(
            || unsigned(false),
            b"5\r\nhello\n0\r\n\r\n",
            not_crlf.clone(),
        );
        check(
            || unsigned(false),
            b"5\r\nhello\r\n0\r\n\r\nmore",
            Err(AuthError::InvalidChunk(
                "data after the final chunk".to_owned(),
            )),
        );
        // Small limits are honoured.
        let small = || {
            AwsChunkedDecoder::new(
                ChunkedMode::Unsigned,
                false,
                ChunkLimits {
                    max_chunk_size: 4,
                    max_line_length: 8,
                    max_trailer_size: 8,
                },
            )
        };
        check(
            small,
            b"4\r\nabcd\r\n0\r\n\r\n",
            Ok((b"abcd".to_vec(), vec![])),
        );
        check(
            small,
            b"5\r\nabcde\r\n0\r\n\r\n",
            Err(AuthError::ChunkTooLarge { size: 5, limit: 4 }),
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = unsigned(false);
        let error = AuthError::InvalidChunk("invalid chunk size \"x\"".to_owned());
        assert_eq!(
            decoder.push(&mut BytesMut::from(&b"x\r\n"[..])),
            Err(error.clone())
        );
        assert_eq!(
            decoder.push(&mut BytesMut::from(&b"0\r\n\r\n"[..])),
            Err(error.clone())
        );
        assert_eq!(decoder.finish(), Err(error));
    }

    #[test]
    fn for_payload_picks_the_mode() {
        let limits = ChunkLimits::default();
        assert!(AwsChunkedDecoder::for_payload(&PayloadMode::UnsignedPayload, limits).is_none());
        assert!(AwsChunkedDecoder::for_payload(&PayloadMode::Sha256([0; 32]), limits).is_none());
        let decoder =
            AwsChunkedDecoder::for_payload(&PayloadMode::StreamingUnsignedTrailer, limits).unwrap();
        assert_eq!(
            decode(decoder, b"0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n", &[]),
            Ok((
                vec![],
                vec![("x-amz-checksum-crc32".to_owned(), "NhCmhg==".to_owned())]
            ))
        );
        let seed = example_signer(false);
        let mode = PayloadMode::StreamingSigned {
            trailer: false,
            seed,
        };
        assert!(mode.is_aws_chunked());
        let decoder = AwsChunkedDecoder::for_payload(&mode, limits).unwrap();
        assert_eq!(
            decode(decoder, &aws_example_body(), &[]),
            Ok((vec![b'a'; 66_560], vec![]))
        );
    }

    /// A signed body of the given chunks, signed with this crate's signer
    /// (the AWS examples above pin the signer itself).
    fn signed_body(chunks: &[Vec<u8>], trailer: Option<&str>) -> Vec<u8> {
        let mut signer = example_signer(trailer.is_some());
        let mut body = Vec::new();
        for data in chunks.iter().chain([&Vec::new()]) {
            let signature = signer.chunk_signature(&sha256(data));
            assert!(signer.verify_chunk(&sha256(data), &signature));
            body.extend(
                format!(
                    "{:x};chunk-signature={}\r\n",
                    data.len(),
                    hex::encode(signature)
                )
                .as_bytes(),
            );
            if !data.is_empty() {
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
        match trailer {
            Some(line) => {
                let signature = signer.trailer_signature(format!("{line}\n").as_bytes());
                body.extend(
                    format!(
                        "{line}\r\nx-amz-trailer-signature:{}\r\n\r\n",
                        hex::encode(signature)
                    )
                    .as_bytes(),
                );
            }
            None => body.extend_from_slice(b"\r\n"),
        }
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_chunking_and_any_splits_decode(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..6),
            splits in proptest::collection::vec(0usize..2_000, 0..12),
            with_trailer in any::<bool>(),
        ) {
            let trailer = with_trailer.then_some("x-amz-checksum-sha256:abc=");
            let body = signed_body(&chunks, trailer);
            let mut splits = splits;
            splits.sort_unstable();
            let expected_trailers = if with_trailer {
                vec![("x-amz-checksum-sha256".to_owned(), "abc=".to_owned())]
            } else {
                vec![]
            };
            let decoder = AwsChunkedDecoder::new(
                ChunkedMode::Signed(example_signer(with_trailer)),
                with_trailer,
                ChunkLimits::default(),
            );
            prop_assert_eq!(decode(decoder, &body, &splits), Ok((chunks.concat(), expected_trailers)));
        }

        #[test]
        fn truncated_signed_bodies_never_succeed(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..4),
            cut in any::<proptest::sample::Index>(),
        ) {
            let body = signed_body(&chunks, Some("x-amz-checksum-crc32:AAAAAA=="));
            // Cutting before the final empty line leaves the trailer incomplete.
            let cut = cut.index(body.len() - 2);
            let decoder = AwsChunkedDecoder::new(ChunkedMode::Signed(example_signer(true)), true, ChunkLimits::default());
            prop_assert!(decode(decoder, &body[..cut], &[]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            splits in proptest::collection::vec(0usize..400, 0..8),
            signed_mode in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let mut splits = splits;
            splits.sort_unstable();
            let mode = if signed_mode { ChunkedMode::Signed(example_signer(false)) } else { ChunkedMode::Unsigned };
            let limits = ChunkLimits { max_chunk_size: 64, max_line_length: 128, max_trailer_size: 128 };
            let _ = decode(AwsChunkedDecoder::new(mode, trailer, limits), &body, &splits);
        }

        #[test]
        fn framing_like_bytes_never_panic(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just(b"\r\n".to_vec()),
                    Just(b"0".to_vec()),
                    Just(b"5".to_vec()),
                    Just(b";chunk-signature=".to_vec()),
                    Just(b"x-amz-checksum-crc32:".to_vec()),
                    Just(b"x-amz-trailer-signature:".to_vec()),
                    Just(b"hello".to_vec()),
                    Just(b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648".to_vec()),
                ],
                0..30,
            ),
            signed_mode in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let body = pieces.concat();
            let mode = if signed_mode { ChunkedMode::Signed(example_signer(trailer)) } else { ChunkedMode::Unsigned };
            let _ = decode(AwsChunkedDecoder::new(mode, trailer, ChunkLimits::default()), &body, &[]);
        }
    }
}

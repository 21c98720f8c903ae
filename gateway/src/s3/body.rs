//! Request bodies: streaming them out of hyper, undoing aws-chunked framing, and
//! checking every digest the client declared (signed SHA-256, Content-MD5,
//! `x-amz-checksum-*` in a header or a trailer) against what was stored.

use std::sync::Arc;

use crate::wire::RequestBody;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _, stream};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use strata_auth::{AuthError, AwsChunkedDecoder, ChunkLimits, PayloadMode};
use strata_store::{ChecksumAlgorithm, Digests, StageError, StageOptions, StagedBody};

use super::S3Request;
use super::error::{S3Error, S3Result};

/// Why reading a body failed.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or the body ended before its Content-Length.
    Http(hyper::Error),
    /// aws-chunked framing or a chunk signature was wrong.
    Chunked(AuthError),
}

impl From<BodyError> for S3Error {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::Http(err) => {
                tracing::debug!(error = %err, "request body failed");
                S3Error::new(
                    "IncompleteBody",
                    StatusCode::BAD_REQUEST,
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                )
            }
            BodyError::Chunked(err) => S3Error::from(err),
        }
    }
}

pub fn stage_error(err: StageError<BodyError>) -> S3Error {
    match err {
        StageError::Body(err) => err.into(),
        StageError::Store(err) => err.into(),
    }
}

/// What the aws-chunked decoder found at the end of the body.
#[derive(Debug, Default)]
pub struct ChunkedOutcome {
    pub decoded_len: u64,
    pub trailers: Vec<(String, String)>,
}

pub type ChunkedSlot = Arc<Mutex<Option<ChunkedOutcome>>>;

/// The body as a stream of payload bytes, aws-chunked framing removed. When the
/// body was aws-chunked, the slot holds its length and trailers once the stream
/// has ended.
pub fn payload_stream(
    body: RequestBody,
    payload: &PayloadMode,
) -> (
    impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
    ChunkedSlot,
) {
    struct State {
        body: RequestBody,
        decoder: Option<AwsChunkedDecoder>,
        slot: ChunkedSlot,
        done: bool,
    }
    let slot: ChunkedSlot = Arc::new(Mutex::new(None));
    let state = State {
        body,
        decoder: AwsChunkedDecoder::for_payload(payload, ChunkLimits::default()),
        slot: slot.clone(),
        done: false,
    };
    let stream = stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            match state.body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let Some(decoder) = &mut state.decoder else {
                        return Some((Ok(data), state));
                    };
                    let mut input = BytesMut::from(data);
                    match decoder.push(&mut input) {
                        Ok(Some(decoded)) => return Some((Ok(decoded), state)),
                        Ok(None) => continue,
                        Err(err) => {
                            state.done = true;
                            return Some((Err(BodyError::Chunked(err)), state));
                        }
                    }
                }
                Some(Err(err)) => {
                    state.done = true;
                    return Some((Err(BodyError::Http(err)), state));
                }
                None => {
                    state.done = true;
                    let decoder = state.decoder.take()?;
                    let decoded_len = decoder.decoded_len();
                    return match decoder.finish() {
                        Ok(trailers) => {
                            *state.slot.lock() = Some(ChunkedOutcome {
                                decoded_len,
                                trailers,
                            });
                            None
                        }
                        Err(err) => Some((Err(BodyError::Chunked(err)), state)),
                    };
                }
            }
        }
    });
    (stream, slot)
}

/// The digests a client declared for a body, and where they come from.
#[derive(Debug, Default)]
pub struct DeclaredDigests {
    content_md5: Option<[u8; 16]>,
    /// The additional checksum: its algorithm, and its value when it came in a
    /// header (otherwise it is expected in the trailer).
    checksum: Option<(ChecksumAlgorithm, Option<String>)>,
    decoded_length: Option<u64>,
    /// The trailer `x-amz-trailer` announces.
    trailer: Option<String>,
}

impl DeclaredDigests {
    pub fn from_headers(headers: &HeaderMap) -> S3Result<Self> {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let content_md5 = match header("content-md5") {
            Some(text) => Some(
                BASE64
                    .decode(text.trim())
                    .ok()
                    .and_then(|raw| <[u8; 16]>::try_from(raw).ok())
                    .ok_or_else(|| {
                        S3Error::new(
                            "InvalidDigest",
                            StatusCode::BAD_REQUEST,
                            "The Content-MD5 you specified is not valid.",
                        )
                    })?,
            ),
            None => None,
        };
        let mut checksum = None;
        for algo in ChecksumAlgorithm::ALL {
            let name = format!("x-amz-checksum-{}", algo.name().to_ascii_lowercase());
            if let Some(value) = header(&name) {
                if checksum.is_some() {
                    return Err(S3Error::invalid_request(
                        "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                    ));
                }
                checksum = Some((algo, Some(value.trim().to_owned())));
            }
        }
        let trailer = header("x-amz-trailer").map(str::trim);
        if checksum.is_none() {
            let named = trailer
                .and_then(|name| name.strip_prefix("x-amz-checksum-"))
                .or_else(|| header("x-amz-sdk-checksum-algorithm"));
            if let Some(name) = named {
                let algo = ChecksumAlgorithm::parse(name.trim()).ok_or_else(|| {
                    S3Error::invalid_request(format!("Unsupported checksum algorithm {name}"))
                })?;
                checksum = Some((algo, None));
            }
        }
        let decoded_length = match header("x-amz-decoded-content-length") {
            Some(text) => Some(text.trim().parse().map_err(|_| {
                S3Error::invalid_argument("x-amz-decoded-content-length is not a number")
            })?),
            None => None,
        };
        Ok(DeclaredDigests {
            content_md5,
            checksum,
            decoded_length,
            trailer: trailer.map(str::to_owned),
        })
    }

    pub fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.checksum.as_ref().map(|(algo, _)| *algo)
    }
}

/// Streams a request body into the pool, then checks every declared digest.
/// On any mismatch the staged body is dropped (and its extents released).
/// Returns the staged body and the checksum to record with it.
pub async fn stage_request_body(
    door: &super::S3Door,
    request: &S3Request,
    body: RequestBody,
    part: bool,
) -> S3Result<(StagedBody, Option<(ChecksumAlgorithm, String)>)> {
    let declared = DeclaredDigests::from_headers(&request.headers)?;
    // A body without a length, or no body at all and no length saying it is
    // empty (`curl -X PUT` of a presigned URL): S3 wants the length.
    let unannounced = !request.headers.contains_key(http::header::CONTENT_LENGTH)
        && hyper::body::Body::is_end_stream(&body);
    if (request.payload.is_aws_chunked() && declared.decoded_length.is_none())
        || (!request.payload.is_aws_chunked() && unannounced)
    {
        return Err(S3Error::new(
            "MissingContentLength",
            StatusCode::LENGTH_REQUIRED,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    let announced = declared.decoded_length.or_else(|| {
        request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse().ok())
    });
    let max_size = door.limits.max_object_size;
    if announced.is_some_and(|len| len > max_size) {
        return Err(strata_store::StoreError::TooLarge(max_size).into());
    }
    let options = StageOptions {
        sha256: matches!(request.payload, PayloadMode::Sha256(_)),
        checksum: declared.checksum_algorithm(),
        max_size,
    };
    let (stream, slot) = payload_stream(body, &request.payload);
    let staged = if part {
        door.store
            .stage_part(&request.bucket, stream, &options)
            .await
    } else {
        door.store.stage(&request.bucket, stream, &options).await
    }
    .map_err(stage_error)?;
    let chunked = slot.lock().take();
    let checksum = verify_digests(
        &request.payload,
        &declared,
        chunked,
        &staged.digests,
        staged.size,
    )?;
    Ok((staged, checksum))
}

fn verify_digests(
    payload: &PayloadMode,
    declared: &DeclaredDigests,
    chunked: Option<ChunkedOutcome>,
    digests: &Digests,
    size: u64,
) -> S3Result<Option<(ChecksumAlgorithm, String)>> {
    if let PayloadMode::Sha256(expected) = payload
        && digests.sha256.as_ref() != Some(expected)
    {
        return Err(S3Error::new(
            "XAmzContentSHA256Mismatch",
            StatusCode::BAD_REQUEST,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    let mut trailers = Vec::new();
    if payload.is_aws_chunked() {
        let Some(outcome) = chunked else {
            return Err(S3Error::from(AuthError::IncompleteBody));
        };
        if Some(outcome.decoded_len) != declared.decoded_length || outcome.decoded_len != size {
            return Err(S3Error::new(
                "IncompleteBody",
                StatusCode::BAD_REQUEST,
                "The decoded body length does not match x-amz-decoded-content-length.",
            ));
        }
        trailers = outcome.trailers;
        // The trailer holds the body's checksum, an unsigned payload's only
        // one: the trailer announced must come, and nothing else.
        let announced = declared.trailer.as_deref();
        let came = |name: &str| {
            trailers
                .iter()
                .any(|(sent, _)| sent.eq_ignore_ascii_case(name))
        };
        if let Some((name, _)) = trailers.iter().find(|(name, _)| {
            announced.is_none_or(|announced| !name.eq_ignore_ascii_case(announced))
        }) {
            return Err(malformed_trailer(&format!(
                "The trailer {name} was not announced in x-amz-trailer."
            )));
        }
        if let Some(name) = announced
            && !came(name)
        {
            return Err(malformed_trailer(&format!(
                "The trailer {name} announced in x-amz-trailer did not come."
            )));
        }
    }
    if let Some(expected) = declared.content_md5
        && expected != digests.md5
    {
        return Err(S3Error::bad_digest(
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    let Some((algo, header_value)) = &declared.checksum else {
        return Ok(None);
    };
    let trailer_name = format!("x-amz-checksum-{}", algo.name().to_ascii_lowercase());
    let trailer_value = trailers
        .iter()
        .find(|(name, _)| *name == trailer_name)
        .map(|(_, value)| value.trim().to_owned());
    let Some((computed_algo, computed)) = &digests.checksum else {
        return Ok(None);
    };
    debug_assert_eq!(computed_algo, algo);
    let computed = BASE64.encode(computed);
    match header_value.clone().or(trailer_value) {
        Some(expected) if expected != computed => Err(S3Error::bad_digest(format!(
            "The {} you specified did not match the calculated checksum.",
            algo.name()
        ))),
        _ => Ok(Some((*algo, computed))),
    }
}

/// S3's refusal of a trailer that breaks the rules of aws-chunked.
fn malformed_trailer(message: &str) -> S3Error {
    S3Error::new("MalformedTrailerError", StatusCode::BAD_REQUEST, message)
}

/// Reads a small request body (an XML document) whole, refusing more than `limit`
/// bytes, and checks its declared digests.
pub async fn read_small_body(
    request: &S3Request,
    body: RequestBody,
    limit: usize,
) -> S3Result<Bytes> {
    let declared = DeclaredDigests::from_headers(&request.headers)?;
    let (stream, slot) = payload_stream(body, &request.payload);
    let mut stream = std::pin::pin!(stream);
    let mut buffer = BytesMut::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(S3Error::from)?;
        if buffer.len() + piece.len() > limit {
            return Err(S3Error::new(
                "MaxMessageLengthExceeded",
                StatusCode::BAD_REQUEST,
                "Your request was too big.",
            ));
        }
        buffer.extend_from_slice(&piece);
    }
    let bytes = buffer.freeze();
    let mut hasher = strata_store::BodyHasher::new(
        matches!(request.payload, PayloadMode::Sha256(_)),
        declared.checksum_algorithm(),
    );
    hasher.update(&bytes);
    let digests = hasher.finish();
    let chunked = slot.lock().take();
    verify_digests(
        &request.payload,
        &declared,
        chunked,
        &digests,
        bytes.len() as u64,
    )?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE) of `hello`.
    const HELLO_CRC32: u32 = 0x3610_a686;

    /// The checks of an unsigned aws-chunked body of `hello` whose
    /// `x-amz-trailer` announced `announced` and whose trailer lines are
    /// `trailers`: the checksum stored, or the refusal.
    fn verify_trailers(announced: Option<&str>, trailers: &[(&str, &str)]) -> S3Result<String> {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-decoded-content-length", "5".parse().expect("value"));
        if let Some(name) = announced {
            headers.insert("x-amz-trailer", name.parse().expect("value"));
        }
        let declared = DeclaredDigests::from_headers(&headers)?;
        let crc = HELLO_CRC32.to_be_bytes().to_vec();
        let algo = declared
            .checksum_algorithm()
            .unwrap_or(ChecksumAlgorithm::Crc32);
        let digests = Digests {
            md5: [0; 16],
            sha256: None,
            checksum: Some((algo, crc)),
        };
        let outcome = ChunkedOutcome {
            decoded_len: 5,
            trailers: (trailers.iter())
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        };
        let payload = PayloadMode::StreamingUnsignedTrailer;
        let verified = verify_digests(&payload, &declared, Some(outcome), &digests, 5)?;
        Ok(verified.map(|(_, value)| value).unwrap_or_default())
    }

    fn refused_as(outcome: S3Result<String>, code: &str) -> bool {
        outcome.is_err_and(|err| err.code == code)
    }

    /// The trailer of an unsigned payload is its only checksum: the one
    /// announced must come and match, and none may come unannounced.
    #[test]
    fn an_unsigned_payloads_trailer_is_the_one_announced() {
        let name = "x-amz-checksum-crc32";
        let good = BASE64.encode(HELLO_CRC32.to_be_bytes());
        assert_eq!(
            verify_trailers(Some(name), &[(name, &good)]).ok(),
            Some(good.clone())
        );
        assert!(refused_as(
            verify_trailers(Some(name), &[(name, "AAAAAA==")]),
            "BadDigest"
        ));
        assert!(refused_as(
            verify_trailers(Some(name), &[]),
            "MalformedTrailerError"
        ));
        assert!(refused_as(
            verify_trailers(None, &[(name, &good)]),
            "MalformedTrailerError"
        ));
        let other = "x-amz-checksum-sha256";
        assert!(refused_as(
            verify_trailers(Some(name), &[(name, &good), (other, "x")]),
            "MalformedTrailerError"
        ));
        // Neither announced nor sent: nothing to check.
        assert_eq!(verify_trailers(None, &[]).ok(), Some(String::new()));
    }
}

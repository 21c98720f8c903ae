//! Round trips against the `aws-sigv4` crate, the signer of the AWS Rust
//! SDK: requests (and aws-chunked bodies) signed the way the S3 SDKs sign
//! them must verify, and any single change must not.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri};

use crate::canonical::uri_encode;
use crate::{
    AuthError, AwsChunkedDecoder, ChunkLimits, Credential, PayloadMode, SigV4Config, verify_request,
};

const REGION: &str = "eu-central-1";
const HOST: &str = "s3.strata.test";

/// 2024-02-29T12:34:56Z.
fn sign_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_210_096)
}

fn config() -> SigV4Config {
    SigV4Config::new(REGION)
}

/// Access keys and secrets as odd as the SDK accepts.
const KEYS: &[(&str, &str)] = &[
    ("AKIDPLAIN", "plainsecret"),
    (
        "AKIDSPACES",
        "secret with  spaces and / slashes + plus = equals",
    ),
    ("AKIDUNICODE", "sécrèt-ünïcødé-€-🔑"),
    ("AKIDPERCENT", "100%%2F%zz"),
];

fn lookup() -> HashMap<String, Credential> {
    KEYS.iter()
        .map(|(access, secret)| {
            let credential = Credential {
                access_key: (*access).to_owned(),
                secret_key: (*secret).to_owned(),
                account: "account".to_owned(),
                user: format!("user-{access}"),
                role: crate::Role::AccountAdmin,
            };
            ((*access).to_owned(), credential)
        })
        .collect()
}

fn identity(access: &str, secret: &str) -> Identity {
    Credentials::new(access, secret, None, None, "strata-test").into()
}

fn s3_settings(location: SignatureLocation) -> SigningSettings {
    // What the S3 SDKs use: no double encoding, no path normalisation, and
    // x-amz-content-sha256 on header-signed requests.
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    if location == SignatureLocation::Headers {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    } else {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(3_600));
    }
    settings
}

/// The path of an object URL as the S3 SDKs build it: every key byte
/// URI-encoded except `/`.
fn object_path(bucket: &str, key: &str) -> String {
    let mut out = format!("/{bucket}/").into_bytes();
    uri_encode(&mut out, key.as_bytes(), true);
    String::from_utf8(out).unwrap()
}

/// A request as it reaches the gateway: origin-form URI, Host header.
#[derive(Clone)]
struct Wire {
    method: Method,
    uri: String,
    headers: HeaderMap,
}

impl Wire {
    fn verify(&self, now: SystemTime) -> Result<crate::VerifiedRequest, AuthError> {
        let uri: Uri = self.uri.parse().unwrap();
        verify_request(&self.method, &uri, &self.headers, &lookup(), &config(), now)
    }
}

/// Signs `method path_and_query` with `headers` and `body` through
/// aws-sigv4, and returns the request as the server receives it plus the
/// signature.
fn signed(
    (access, secret): (&str, &str),
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: SignableBody<'_>,
    location: SignatureLocation,
) -> (Wire, String) {
    let full_uri = format!("https://{HOST}{path_and_query}");
    let mut all_headers: Vec<(&str, &str)> = vec![("host", HOST)];
    all_headers.extend_from_slice(headers);
    let identity = identity(access, secret);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(sign_time())
        .settings(s3_settings(location))
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        method,
        Cow::Borrowed(full_uri.as_str()),
        all_headers.iter().copied(),
        body,
    )
    .unwrap();
    let (instructions, signature) = sign(signable, &params).unwrap().into_parts();

    let mut request = Request::builder().method(method).uri(&full_uri);
    for (name, value) in &all_headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    let uri = request.uri().path_and_query().unwrap().as_str().to_owned();
    let wire = Wire {
        method: request.method().clone(),
        uri,
        headers: request.headers().clone(),
    };
    (wire, signature)
}

fn describe(result: &Result<crate::VerifiedRequest, AuthError>) -> Result<String, AuthError> {
    result
        .as_ref()
        .map_err(Clone::clone)
        .map(|verified| match &verified.payload {
            PayloadMode::Sha256(hash) => format!("sha256:{}", hex::encode(hash)),
            PayloadMode::UnsignedPayload => "unsigned".to_owned(),
            PayloadMode::StreamingSigned { trailer, .. } => {
                format!("streaming-signed:trailer={trailer}")
            }
            PayloadMode::StreamingUnsignedTrailer => "streaming-unsigned-trailer".to_owned(),
        })
}

/// Ways to change a request after signing; each must break the signature.
fn tamperings(wire: &Wire, signature: &str) -> Vec<(&'static str, Wire)> {
    let mut out = Vec::new();
    let flip_last_hex = |text: &str| -> String {
        let mut chars: Vec<char> = text.chars().collect();
        let position = chars.iter().rposition(char::is_ascii_hexdigit).unwrap();
        chars[position] = if chars[position] == '0' { '1' } else { '0' };
        chars.into_iter().collect()
    };

    // One more byte in the path.
    let mut changed = wire.clone();
    let (path, query) = wire.uri.split_once('?').unwrap_or((&wire.uri, ""));
    changed.uri = if query.is_empty() {
        format!("{path}x")
    } else {
        format!("{path}x?{query}")
    };
    out.push(("path", changed));

    // The method.
    let mut changed = wire.clone();
    changed.method = if wire.method == Method::GET {
        Method::HEAD
    } else {
        Method::POST
    };
    out.push(("method", changed));

    // An added query parameter.
    let mut changed = wire.clone();
    changed.uri = if wire.uri.contains('?') {
        format!("{}&extra=1", wire.uri)
    } else {
        format!("{}?extra=1", wire.uri)
    };
    out.push(("query", changed));

    // The signature itself, wherever it is.
    let mut changed = wire.clone();
    if let Some(value) = wire.headers.get("authorization") {
        let value = value
            .to_str()
            .unwrap()
            .replace(signature, &flip_last_hex(signature));
        changed
            .headers
            .insert("authorization", value.parse().unwrap());
    } else {
        changed.uri = wire.uri.replace(signature, &flip_last_hex(signature));
    }
    out.push(("signature", changed));

    // Every signed header value, one at a time (Host included).
    for name in wire.headers.keys() {
        if name == "authorization" {
            continue;
        }
        let value = wire.headers.get(name).unwrap().to_str().unwrap();
        let mut changed = wire.clone();
        let new_value = if name == "x-amz-content-sha256" && value.len() == 64 {
            flip_last_hex(value)
        } else if name == "x-amz-date" {
            // One second later: still within the skew, but signed otherwise.
            value.replace("56Z", "57Z")
        } else {
            format!("{value}x")
        };
        changed
            .headers
            .insert(name.clone(), new_value.parse().unwrap());
        out.push((leak(format!("header {name}")), changed));
    }
    out
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

fn check(wire: &Wire, signature: &str, expected: &str) {
    assert_eq!(
        describe(&wire.verify(sign_time())),
        Ok(expected.to_owned()),
        "{}",
        wire.uri
    );
    for (what, changed) in tamperings(wire, signature) {
        let result = changed.verify(sign_time());
        let expected_error =
            if what == "header x-amz-content-sha256" && !expected.starts_with("sha256:") {
                // A changed keyword (UNSIGNED-PAYLOAD, STREAMING-...) is no
                // keyword at all.
                Err(crate::verify::invalid_content_sha256())
            } else {
                Err(AuthError::SignatureDoesNotMatch)
            };
        assert_eq!(
            describe(&result),
            expected_error,
            "tampered {what}: {}",
            changed.uri
        );
    }
}

const KEY_NAMES: &[&str] = &[
    "plain.txt",
    "with space/and  double  space.txt",
    "ünïcödé/€uro/日本語/🦀.bin",
    "plus+sign+key",
    "percent%20literal%zz%",
    "tilde~star*quote'paren()comma,semi;colon:at@",
    "equals=amp&question?hash#dollar$bang!",
    "dir//double-slash/./dot/../dotdot",
    "control\u{7}\u{1f}and\u{7f}",
    "trailing/",
];

#[test]
fn header_signed_requests_round_trip() {
    for &key in KEYS {
        for name in KEY_NAMES {
            let path = object_path("bucket", name);
            let (wire, signature) = signed(
                key,
                "GET",
                &path,
                &[
                    ("range", "bytes=0-9"),
                    ("x-amz-meta-note", "  two   spaces  "),
                ],
                SignableBody::Bytes(b""),
                SignatureLocation::Headers,
            );
            check(
                &wire,
                &signature,
                &format!("sha256:{}", crate::signing::EMPTY_SHA256_HEX),
            );
        }
    }
}

#[test]
fn put_with_body_hash_round_trips() {
    let body = b"Welcome to strata.\n";
    let (wire, signature) = signed(
        KEYS[1],
        "PUT",
        &object_path("bucket", "docs/welcome.txt"),
        &[
            ("content-type", "text/plain"),
            ("x-amz-storage-class", "STANDARD"),
            ("content-length", "19"),
        ],
        SignableBody::Bytes(body),
        SignatureLocation::Headers,
    );
    let expected = format!("sha256:{}", hex::encode(crate::signing::sha256(body)));
    check(&wire, &signature, &expected);
}

#[test]
fn query_strings_round_trip() {
    let queries = [
        "list-type=2&prefix=photos%2F2024%2F&delimiter=%2F&max-keys=10",
        "prefix=a%20b%2Bc&encoding-type=url",
        "prefix=raw/slash&delimiter=/",
        "prefix=plus+means+space",
        "uploads",
        "acl=",
        "versionId=3%2FL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY%2BMTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
        "continuation-token=1ueGcxLPRx1Tr%2FXYExHnhbYLgveDs2J%2Fwm36Hy4vbOwM%3D&list-type=2",
        "b=2&a=2&a=1&c",
        "unicode=%E2%82%AC%F0%9F%A6%80&%C3%A9=key",
        "tagging&versionId=null",
    ];
    for query in queries {
        let (wire, signature) = signed(
            KEYS[2],
            "GET",
            &format!("/bucket?{query}"),
            &[],
            SignableBody::Bytes(b""),
            SignatureLocation::Headers,
        );
        check(
            &wire,
            &signature,
            &format!("sha256:{}", crate::signing::EMPTY_SHA256_HEX),
        );
    }
}

#[test]
fn repeated_headers_round_trip() {
    let (wire, signature) = signed(
        KEYS[0],
        "GET",
        "/bucket/key",
        &[
            ("x-amz-meta-list", "one"),
            ("x-amz-meta-list", "two  and   three"),
            ("if-none-match", "\"etag\""),
        ],
        SignableBody::UnsignedPayload,
        SignatureLocation::Headers,
    );
    assert_eq!(wire.headers.get_all("x-amz-meta-list").iter().count(), 2);
    check(&wire, &signature, "unsigned");
}

#[test]
fn presigned_urls_round_trip() {
    for &key in KEYS {
        for name in KEY_NAMES {
            let path = object_path("bucket", name);
            for query in ["", "?response-content-type=text%2Fplain&versionId=v%2B1"] {
                let (wire, signature) = signed(
                    key,
                    "GET",
                    &format!("{path}{query}"),
                    &[],
                    SignableBody::UnsignedPayload,
                    SignatureLocation::QueryParams,
                );
                assert!(wire.uri.contains("X-Amz-Signature="), "{}", wire.uri);
                check(&wire, &signature, "unsigned");
                let later = sign_time() + Duration::from_secs(3_601);
                assert_eq!(
                    describe(&wire.verify(later)),
                    Err(AuthError::RequestExpired)
                );
            }
        }
    }
}

/// Frames `chunks` as the SDKs do, signing each with aws-sigv4's
/// `sign_chunk` and the trailer with `sign_trailer`.
fn sdk_signed_body(
    (access, secret): (&str, &str),
    seed: &str,
    chunks: &[&[u8]],
    trailers: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let identity = identity(access, secret);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(sign_time())
        .settings(())
        .build()
        .unwrap();
    let mut running = seed.to_owned();
    let mut body = Vec::new();
    for data in chunks.iter().copied().chain([&b""[..]]) {
        let signature = v4::sign_chunk(&Bytes::copy_from_slice(data), &running, &params)
            .unwrap()
            .signature()
            .to_owned();
        body.extend(format!("{:x};chunk-signature={signature}\r\n", data.len()).as_bytes());
        if !data.is_empty() {
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        running = signature;
    }
    match trailers {
        None => body.extend_from_slice(b"\r\n"),
        Some(trailers) => {
            let mut headers = aws_smithy_runtime_api::http::Headers::new();
            for (name, value) in trailers {
                headers.insert(name.to_string(), value.to_string());
            }
            let signature = v4::sign_trailer(&headers, &running, &params)
                .unwrap()
                .signature()
                .to_owned();
            for (name, value) in trailers {
                body.extend(format!("{name}:{value}\r\n").as_bytes());
            }
            body.extend(format!("x-amz-trailer-signature:{signature}\r\n\r\n").as_bytes());
        }
    }
    body
}

/// A decoded body: payload and trailers.
type Decoded = (Vec<u8>, Vec<(String, String)>);

/// Trailing headers to sign and send, in wire order.
type Trailers<'a> = &'a [(&'a str, &'a str)];

fn decode_all(payload: &PayloadMode, body: &[u8], piece: usize) -> Result<Decoded, AuthError> {
    let mut decoder = AwsChunkedDecoder::for_payload(payload, ChunkLimits::default()).unwrap();
    let mut out = Vec::new();
    for part in body.chunks(piece) {
        if let Some(bytes) = decoder.push(&mut BytesMut::from(part))? {
            out.extend_from_slice(&bytes);
        }
    }
    Ok((out, decoder.finish()?))
}

#[test]
fn streaming_signed_bodies_round_trip() {
    let chunks: [&[u8]; 3] = [
        &[b'x'; 8_192],
        b"second chunk",
        &[0u8, 255, 13, 10, 48, 13, 10],
    ];
    let payload: Vec<u8> = chunks.concat();
    let cases: [(&str, Option<Trailers<'_>>); 4] = [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", None),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Some(&[("x-amz-checksum-crc32c", "wdBDMA==")]),
        ),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Some(&[
                ("x-amz-checksum-crc32", "AAAAAA=="),
                (
                    "x-amz-checksum-sha256",
                    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                ),
            ]),
        ),
        // Sent unsorted, while sign_trailer signs them sorted by name.
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Some(&[
                (
                    "x-amz-checksum-sha256",
                    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                ),
                ("x-amz-checksum-crc32", "AAAAAA=="),
            ]),
        ),
    ];
    for &key in KEYS {
        for (content_sha256, trailers) in cases {
            let body = if trailers.is_some() {
                SignableBody::StreamingSignedPayloadTrailer
            } else {
                SignableBody::Precomputed(content_sha256.to_owned())
            };
            let trailer_names =
                trailers.map(|t| t.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","));
            let mut headers = vec![
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "8211"),
            ];
            if let Some(names) = &trailer_names {
                headers.push(("x-amz-trailer", names));
            }
            let (wire, seed) = signed(
                key,
                "PUT",
                "/bucket/streamed",
                &headers,
                body,
                SignatureLocation::Headers,
            );
            let verified = wire.verify(sign_time()).unwrap();
            assert_eq!(
                describe(&Ok(verified.clone())),
                Ok(format!("streaming-signed:trailer={}", trailers.is_some()))
            );
            let body = sdk_signed_body(key, &seed, &chunks, trailers);
            let expected_trailers: Vec<(String, String)> = trailers
                .unwrap_or_default()
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            for piece in [1, 7, 100, 8_192, body.len()] {
                // Compared by hash: a failure should not print 8 KiB.
                let decoded =
                    decode_all(&verified.payload, &body, piece).map(|(bytes, trailers)| {
                        (hex::encode(crate::signing::sha256(&bytes)), trailers)
                    });
                let expected = (
                    hex::encode(crate::signing::sha256(&payload)),
                    expected_trailers.clone(),
                );
                assert_eq!(
                    decoded,
                    Ok(expected),
                    "{content_sha256} in pieces of {piece}"
                );
            }
            // A body signed for another request (another seed) fails.
            let other = sdk_signed_body(key, &"0".repeat(64), &chunks, trailers);
            assert_eq!(
                decode_all(&verified.payload, &other, 1_000),
                Err(AuthError::SignatureDoesNotMatch)
            );
            // Any single flipped byte of the body fails one way or another.
            for index in (0..body.len()).step_by(61) {
                let mut tampered = body.clone();
                tampered[index] ^= 0x01;
                assert!(
                    decode_all(&verified.payload, &tampered, 4_096).is_err(),
                    "byte {index} flipped"
                );
            }
        }
    }
}

#[test]
fn streaming_unsigned_trailer_round_trips() {
    let (wire, signature) = signed(
        KEYS[3],
        "PUT",
        "/bucket/boto3-upload",
        &[
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "5"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ],
        SignableBody::StreamingUnsignedPayloadTrailer,
        SignatureLocation::Headers,
    );
    check(&wire, &signature, "streaming-unsigned-trailer");
    let verified = wire.verify(sign_time()).unwrap();
    let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
    assert_eq!(
        decode_all(&verified.payload, body, 3),
        Ok((
            b"hello".to_vec(),
            vec![("x-amz-checksum-crc32".to_owned(), "NhCmhg==".to_owned())]
        ))
    );
}

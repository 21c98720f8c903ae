//! The pieces of the SigV4 canonical request that depend on how the request
//! looked on the wire: the URI path, the query string and header values.
//!
//! Everything works on bytes, not `str`: a path or query may percent-decode
//! to bytes that are not UTF-8, and header values may contain obs-text, yet
//! the client signed them all the same, so the server must reproduce them
//! byte for byte instead of rejecting or lossily converting them.

/// AWS `UriEncode`: every byte except the unreserved characters
/// `A-Z a-z 0-9 - _ . ~` becomes `%XX` with upper-case hex; `/` is kept only
/// when `keep_slash` (paths) and encoded otherwise (query names and values).
pub(crate) fn uri_encode(out: &mut Vec<u8>, input: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in input {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && byte == b'/') {
            out.push(byte);
        } else {
            out.push(b'%');
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        }
    }
}

/// Percent-decodes `input`. A `%` not followed by two hex digits is kept as
/// it is, the way lenient HTTP stacks (and the clients that produced such
/// URIs) treat it. With `plus_is_space`, `+` decodes to a space, as in
/// `application/x-www-form-urlencoded` query strings.
pub(crate) fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&byte) = input.get(i) {
        match byte {
            b'%' => {
                let high = input.get(i + 1).and_then(|&b| hex_value(b));
                let low = input.get(i + 2).and_then(|&b| hex_value(b));
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(byte),
        }
        i += 1;
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The canonical URI: the path as received, decoded once and re-encoded
/// with [`uri_encode`]. S3 does not normalise `.`/`..` segments or double
/// slashes, and does not double-encode, unlike other AWS services.
pub(crate) fn canonical_uri(raw_path: &str) -> Vec<u8> {
    if raw_path.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::with_capacity(raw_path.len() + 16);
    uri_encode(&mut out, &percent_decode(raw_path.as_bytes(), false), true);
    out
}

/// One query parameter, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryParam {
    pub(crate) name: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// Splits a raw query string into decoded parameters, in order. Empty
/// segments (`a=1&&b=2`, a trailing `&`) are not parameters; a segment
/// without `=` is a parameter with an empty value (`?lifecycle`).
pub(crate) fn parse_query(raw_query: &str) -> Vec<QueryParam> {
    raw_query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            QueryParam {
                name: percent_decode(name.as_bytes(), true),
                value: percent_decode(value.as_bytes(), true),
            }
        })
        .collect()
}

/// The canonical query string: every parameter for which `include` says
/// yes, name and value [`uri_encode`]d (slash included), sorted by encoded
/// name then encoded value, joined as `name=value` with `&`.
pub(crate) fn canonical_query(
    params: &[QueryParam],
    include: impl Fn(&QueryParam) -> bool,
) -> Vec<u8> {
    let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = params
        .iter()
        .filter(|param| include(param))
        .map(|param| {
            let mut name = Vec::with_capacity(param.name.len());
            uri_encode(&mut name, &param.name, false);
            let mut value = Vec::with_capacity(param.value.len());
            uri_encode(&mut value, &param.value, false);
            (name, value)
        })
        .collect();
    encoded.sort();
    let mut out = Vec::new();
    for (index, (name, value)) in encoded.into_iter().enumerate() {
        if index > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(&name);
        out.push(b'=');
        out.extend_from_slice(&value);
    }
    out
}

/// Appends a header value in canonical form: leading and trailing spaces
/// and tabs removed, inner runs of spaces collapsed to one. Only the space
/// character is collapsed, as S3 does; other bytes are kept unchanged.
pub(crate) fn push_canonical_header_value(out: &mut Vec<u8>, value: &[u8]) {
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    let mut previous_space = false;
    for &byte in value.get(start..end).unwrap_or_default() {
        if byte == b' ' {
            if !previous_space {
                out.push(byte);
            }
            previous_space = true;
        } else {
            out.push(byte);
            previous_space = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: &str) {
        assert_eq!(
            String::from_utf8(canonical_uri(path)).unwrap(),
            expected,
            "{path}"
        );
    }

    #[test]
    fn canonical_uris() {
        check("", "/");
        check("/", "/");
        check("/test.txt", "/test.txt");
        check("/test$file.text", "/test%24file.text");
        check("/test%24file.text", "/test%24file.text");
        check("/a%2fb", "/a/b");
        check("/bucket/my%20key+plus", "/bucket/my%20key%2Bplus");
        check("/bucket/%E2%82%AC", "/bucket/%E2%82%AC");
        check("/bucket/%e2%82%ac", "/bucket/%E2%82%AC");
        check("/bucket/a//b/../c/./d", "/bucket/a//b/../c/./d");
        check("/bucket/100%", "/bucket/100%25");
        check("/bucket/%zz", "/bucket/%25zz");
        check("/bucket/%ff%fe", "/bucket/%FF%FE");
        check("/~user/a-b_c.d", "/~user/a-b_c.d");
        check("/bucket/key%3Fwith%23chars", "/bucket/key%3Fwith%23chars");
    }

    fn check_query(raw: &str, expected: &str) {
        let params = parse_query(raw);
        let canonical = canonical_query(&params, |p| p.name != b"X-Amz-Signature");
        assert_eq!(String::from_utf8(canonical).unwrap(), expected, "{raw}");
    }

    #[test]
    fn canonical_queries() {
        check_query("", "");
        check_query("lifecycle", "lifecycle=");
        check_query("max-keys=2&prefix=J", "max-keys=2&prefix=J");
        check_query("prefix=J&max-keys=2", "max-keys=2&prefix=J");
        check_query("b=2&a=3&a=1", "a=1&a=3&b=2");
        check_query("a=1&&b=2&", "a=1&b=2");
        check_query("key=a/b", "key=a%2Fb");
        check_query("key=a%2Fb", "key=a%2Fb");
        check_query("key=a+b", "key=a%20b");
        check_query("key=a%2Bb", "key=a%2Bb");
        check_query("key=%7e~", "key=~~");
        check_query("uploads=&key=", "key=&uploads=");
        check_query("acl=&X-Amz-Signature=abc", "acl=");
        check_query("=x", "=x");
        check_query("k=v=w", "k=v%3Dw");
        check_query("%E2%82%AC=%e2%82%ac", "%E2%82%AC=%E2%82%AC");
        check_query("a=b&%41=c&-=d", "-=d&A=c&a=b");
        // Sorting is on the encoded bytes: "a/" encodes to "a%2F", and "%"
        // (0x25) sorts before "." (0x2E) although "/" sorts after it.
        check_query("a.=1&a/=2", "a%2F=2&a.=1");
    }

    fn check_header(value: &[u8], expected: &[u8]) {
        let mut out = Vec::new();
        push_canonical_header_value(&mut out, value);
        assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(value));
    }

    #[test]
    fn header_values() {
        check_header(b"value", b"value");
        check_header(b"  value  ", b"value");
        check_header(b"\ta   b  c\t", b"a b c");
        check_header(b"\"a   b\"", b"\"a b\"");
        check_header(b"", b"");
        check_header(b"   ", b"");
        check_header(b"a\t\tb", b"a\t\tb");
        check_header(b"caf\xc3\xa9  \xff", b"caf\xc3\xa9 \xff");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b+c", false), b"a b+c");
        assert_eq!(percent_decode(b"a%20b+c", true), b"a b c");
        assert_eq!(percent_decode(b"%", false), b"%");
        assert_eq!(percent_decode(b"%4", false), b"%4");
        assert_eq!(percent_decode(b"%41%4g", false), b"A%4g");
    }
}

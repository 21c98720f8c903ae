//! `X-{Account,Container,Object}-Meta-*` headers: what a request sets or
//! removes, within Swift's default limits (which `/info` announces).

use std::collections::BTreeMap;

use http::HeaderMap;

use super::error::{SwiftError, SwiftResult};

pub(crate) const MAX_META_NAME_LENGTH: usize = 128;
pub(crate) const MAX_META_VALUE_LENGTH: usize = 256;
pub(crate) const MAX_META_COUNT: usize = 90;
pub(crate) const MAX_META_OVERALL_SIZE: usize = 4096;

/// Whose metadata a header names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MetaKind {
    Account,
    Container,
    Object,
}

impl MetaKind {
    fn prefix(self) -> &'static str {
        match self {
            MetaKind::Account => "x-account-meta-",
            MetaKind::Container => "x-container-meta-",
            MetaKind::Object => "x-object-meta-",
        }
    }

    fn remove_prefix(self) -> &'static str {
        match self {
            MetaKind::Account => "x-remove-account-meta-",
            MetaKind::Container => "x-remove-container-meta-",
            MetaKind::Object => "x-remove-object-meta-",
        }
    }

    /// The response header for a stored name.
    pub fn header(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }
}

/// The names a request sets (`Some(value)`) or removes (`None`: an empty
/// value or an `X-Remove-…-Meta-` header), lower-case without the prefix.
pub(crate) fn meta_changes(
    headers: &HeaderMap,
    kind: MetaKind,
) -> SwiftResult<Vec<(String, Option<String>)>> {
    let mut changes = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let (meta_name, removal) = if let Some(rest) = name.strip_prefix(kind.prefix()) {
            (rest, false)
        } else if let Some(rest) = name.strip_prefix(kind.remove_prefix()) {
            (rest, true)
        } else {
            continue;
        };
        if meta_name.is_empty() {
            return Err(SwiftError::bad_request("Metadata name cannot be empty"));
        }
        if meta_name.len() > MAX_META_NAME_LENGTH {
            return Err(SwiftError::bad_request(format!(
                "Metadata name too long; max {MAX_META_NAME_LENGTH}"
            )));
        }
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| SwiftError::bad_request("Metadata values must be UTF-8"))?
            .trim();
        if value.len() > MAX_META_VALUE_LENGTH {
            return Err(SwiftError::bad_request(format!(
                "Metadata value longer than {MAX_META_VALUE_LENGTH}"
            )));
        }
        let value = (!removal && !value.is_empty()).then(|| value.to_owned());
        changes.push((meta_name.to_owned(), value));
    }
    Ok(changes)
}

/// Applies `changes` to `meta` and checks the count and total size.
pub(crate) fn apply_changes(
    meta: &mut BTreeMap<String, String>,
    changes: Vec<(String, Option<String>)>,
) -> SwiftResult<()> {
    for (name, value) in changes {
        match value {
            Some(value) => meta.insert(name, value),
            None => meta.remove(&name),
        };
    }
    if meta.len() > MAX_META_COUNT {
        return Err(SwiftError::bad_request(format!(
            "Too many metadata items; max {MAX_META_COUNT}"
        )));
    }
    let size: usize = meta
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if size > MAX_META_OVERALL_SIZE {
        return Err(SwiftError::bad_request(format!(
            "Total metadata too large; max {MAX_META_OVERALL_SIZE}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn status(pairs: &[(&str, &str)]) -> Result<BTreeMap<String, String>, u16> {
        let mut meta = BTreeMap::from([("old".to_owned(), "1".to_owned())]);
        meta_changes(&headers(pairs), MetaKind::Container)
            .and_then(|changes| apply_changes(&mut meta, changes))
            .map(|()| meta)
            .map_err(|err| err.status.as_u16())
    }

    #[test]
    fn sets_removes_and_limits() {
        let got = status(&[("x-container-meta-Color", "blue"), ("x-object-meta-x", "y")]).unwrap();
        assert_eq!(got.get("color").map(String::as_str), Some("blue"));
        assert_eq!(got.len(), 2, "object meta is not container meta");
        assert!(status(&[("x-container-meta-old", "")]).unwrap().is_empty());
        assert!(
            status(&[("x-remove-container-meta-old", "x")])
                .unwrap()
                .is_empty()
        );

        let long_name = format!("x-container-meta-{}", "n".repeat(129));
        assert_eq!(status(&[(&long_name, "v")]), Err(400));
        assert_eq!(
            status(&[("x-container-meta-v", &"v".repeat(257))]),
            Err(400)
        );
        assert!(status(&[("x-container-meta-v", &"v".repeat(256))]).is_ok());
        let many: Vec<(String, String)> = (0..91)
            .map(|n| (format!("x-container-meta-k{n}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(status(&many), Err(400));
        let big: Vec<(String, String)> = (0..20)
            .map(|n| (format!("x-container-meta-k{n}"), "v".repeat(250)))
            .collect();
        let big: Vec<(&str, &str)> = big.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(status(&big), Err(400));
    }
}

//! Swift container ACLs (`X-Container-Read`, `X-Container-Write`) and the
//! access decisions made from them, with Swift's syntax and semantics:
//!
//! * `.r:*` any referrer (anonymous reads of objects), `.r:example.com` that
//!   host, `.r:.example.com` any host under it, `.r:-host` deny; the last
//!   matching referrer entry decides;
//! * `.rlistings` anonymous listings too (with a matching `.r:` entry);
//! * `account`, `account:user`, `*:user`, `account:*`, `*:*` grant to
//!   authenticated users of other accounts (or restricted users of this one).

use thiserror::Error;

use crate::principal::Principal;

/// Longest ACL header strata accepts.
pub const MAX_ACL_LEN: usize = 8192;

/// A parsed ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAcl {
    /// Referrer entries in order, without `.r:` (`*`, `host`, `.domain`, `-host`).
    pub referrers: Vec<String>,
    /// `.rlistings`: referrers may also list the container.
    pub listings: bool,
    /// Account and user grants (`account`, `account:user`, wildcards `*`).
    pub grants: Vec<String>,
}

/// An ACL header that does not parse; Swift answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct AclError(pub String);

/// Whether an access is allowed, and why: the doors log the reason and turn a
/// refusal into their protocol's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: &'static str,
}

impl Decision {
    pub const fn allow(reason: &'static str) -> Decision {
        Decision {
            allowed: true,
            reason,
        }
    }

    pub const fn deny(reason: &'static str) -> Decision {
        Decision {
            allowed: false,
            reason,
        }
    }
}

impl ContainerAcl {
    /// Parses an `X-Container-Read` value.
    pub fn parse_read(text: &str) -> Result<ContainerAcl, AclError> {
        parse(text)
    }

    /// Parses an `X-Container-Write` value: referrers cannot write.
    pub fn parse_write(text: &str) -> Result<ContainerAcl, AclError> {
        let acl = parse(text)?;
        if !acl.referrers.is_empty() || acl.listings {
            return Err(AclError("Referrers not allowed in write ACL".into()));
        }
        Ok(acl)
    }

    pub fn is_empty(&self) -> bool {
        self.referrers.is_empty() && !self.listings && self.grants.is_empty()
    }

    /// The canonical header value (entries in order, comma-separated).
    pub fn to_header(&self) -> String {
        let mut items: Vec<String> = self
            .referrers
            .iter()
            .map(|referrer| format!(".r:{referrer}"))
            .collect();
        if self.listings {
            items.push(".rlistings".into());
        }
        items.extend(self.grants.iter().cloned());
        items.join(",")
    }

    /// Whether a request with this `Referer` header passes the referrer entries.
    pub fn allows_referrer(&self, referrer: Option<&str>) -> bool {
        let host = referrer.and_then(referrer_host);
        let mut allowed = false;
        for entry in &self.referrers {
            let (deny, pattern) = match entry.strip_prefix('-') {
                Some(pattern) => (true, pattern),
                None => (false, entry.as_str()),
            };
            let matches = pattern == "*"
                || host.as_deref().is_some_and(|host| {
                    host == pattern || (pattern.starts_with('.') && host.ends_with(pattern))
                });
            if matches {
                allowed = !deny;
            }
        }
        allowed
    }

    /// Whether an account or user grant names `principal`.
    pub fn grants(&self, principal: &Principal) -> bool {
        self.grants.iter().any(|grant| {
            let (account, user) = grant.split_once(':').unwrap_or((grant, "*"));
            (account == "*" || account == principal.account)
                && (user == "*" || user == principal.user)
        })
    }
}

/// May `principal` (or an anonymous caller, `None`) read objects — or, with
/// `listing`, list — a container of `owner` with read ACL `acl`?
pub fn read_decision(
    acl: &ContainerAcl,
    owner: &str,
    principal: Option<&Principal>,
    referrer: Option<&str>,
    listing: bool,
) -> Decision {
    if let Some(principal) = principal {
        if principal.reads_account(owner) {
            return Decision::allow("user of the owning account");
        }
        if acl.grants(principal) {
            return Decision::allow("granted by the container read ACL");
        }
    }
    if listing && !acl.listings {
        return Decision::deny("the read ACL does not allow listings");
    }
    if acl.allows_referrer(referrer) {
        return Decision::allow("public by the container read ACL");
    }
    Decision::deny(if principal.is_some() {
        "not granted by the container read ACL"
    } else {
        "anonymous access to a private container"
    })
}

/// May `principal` write objects in a container of `owner` with write ACL `acl`?
pub fn write_decision(acl: &ContainerAcl, owner: &str, principal: &Principal) -> Decision {
    if principal.writes_account(owner) {
        return Decision::allow("writer in the owning account");
    }
    if acl.grants(principal) {
        return Decision::allow("granted by the container write ACL");
    }
    if principal.reads_account(owner) {
        return Decision::deny("the user's role is read-only");
    }
    Decision::deny("not granted by the container write ACL")
}

fn parse(text: &str) -> Result<ContainerAcl, AclError> {
    if text.len() > MAX_ACL_LEN {
        return Err(AclError(format!("ACL is longer than {MAX_ACL_LEN} bytes")));
    }
    let mut acl = ContainerAcl::default();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        if item == ".rlistings" {
            acl.listings = true;
            continue;
        }
        if let Some((designator, value)) = item.split_once(':')
            && designator.starts_with('.')
        {
            if !matches!(designator, ".r" | ".ref" | ".referer" | ".referrer") {
                return Err(AclError(format!(
                    "Unknown designator {designator:?} in ACL"
                )));
            }
            let value = value.trim();
            let (deny, host) = match value.strip_prefix('-') {
                Some(host) => (true, host),
                None => (false, value),
            };
            // Swift reads `*.example.com` as `.example.com`.
            let host = match host.strip_prefix('*') {
                Some(rest) if !rest.is_empty() => rest,
                _ => host,
            };
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(AclError(format!(
                    "No host/domain value after referrer designation in ACL: {item:?}"
                )));
            }
            let host = host.to_ascii_lowercase();
            acl.referrers
                .push(if deny { format!("-{host}") } else { host });
            continue;
        }
        if item.starts_with('.') {
            return Err(AclError(format!("Unknown designator {item:?} in ACL")));
        }
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != ',')
        };
        let (account, user) = item.split_once(':').unwrap_or((item, "*"));
        if !valid_name(account) || !valid_name(user) {
            return Err(AclError(format!("Invalid grant {item:?} in ACL")));
        }
        acl.grants.push(item.to_owned());
    }
    Ok(acl)
}

/// The host of a `Referer` URL, lower-case, without user info and port.
fn referrer_host(referrer: &str) -> Option<String> {
    let rest = referrer
        .split_once("://")
        .map_or(referrer, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;

    fn who(account: &str, user: &str, role: Role) -> Principal {
        Principal {
            account: account.into(),
            user: user.into(),
            role,
        }
    }

    #[test]
    fn parses_swift_syntax() {
        let check = |text: &str, expected: &str| {
            assert_eq!(
                ContainerAcl::parse_read(text).unwrap().to_header(),
                expected,
                "{text}"
            );
        };
        check("", "");
        check(".r:*", ".r:*");
        check(" .r:*, .rlistings ", ".r:*,.rlistings");
        check(
            ".referrer:Example.COM,.r:-bad.com",
            ".r:example.com,.r:-bad.com",
        );
        check(".r:*.example.com", ".r:.example.com");
        check("acme,acme:ann,*:bob", "acme,acme:ann,*:bob");
        for bad in [".r:", ".r:-", ".x:y", ".admin", "acme:", ":ann", "a:b:c"] {
            assert!(ContainerAcl::parse_read(bad).is_err(), "{bad}");
        }
        assert!(ContainerAcl::parse_write(".r:*").is_err());
        assert!(ContainerAcl::parse_write(".rlistings").is_err());
        assert!(ContainerAcl::parse_write("acme:ann").is_ok());
        assert!(ContainerAcl::parse_read(&"a,".repeat(5000)).is_err());
    }

    #[test]
    fn referrer_rules() {
        let check = |acl: &str, referrer: Option<&str>, allowed: bool| {
            let acl = ContainerAcl::parse_read(acl).unwrap();
            assert_eq!(
                acl.allows_referrer(referrer),
                allowed,
                "{acl:?} {referrer:?}"
            );
        };
        check(".r:*", None, true);
        check(".r:*", Some("http://anything/"), true);
        check("", Some("http://example.com/"), false);
        check(".r:example.com", None, false);
        check(
            ".r:example.com",
            Some("https://Example.com:8443/page"),
            true,
        );
        check(".r:example.com", Some("https://www.example.com/"), false);
        check(".r:.example.com", Some("https://www.example.com/"), true);
        check(".r:.example.com", Some("https://evilexample.com/"), false);
        check(".r:*,.r:-bad.com", Some("http://bad.com/x"), false);
        check(".r:*,.r:-bad.com", Some("http://user@good.com/x"), true);
        check(".r:-bad.com,.r:*", Some("http://bad.com/x"), true);
    }

    #[test]
    fn read_and_write_decisions() {
        let public = ContainerAcl::parse_read(".r:*").unwrap();
        let listed = ContainerAcl::parse_read(".r:*,.rlistings").unwrap();
        let private = ContainerAcl::default();
        let shared = ContainerAcl::parse_read("other:bob").unwrap();
        let owner = who("acme", "ann", Role::Reader);
        let bob = who("other", "bob", Role::AccountAdmin);
        let eve = who("other", "eve", Role::AccountAdmin);

        assert!(read_decision(&private, "acme", Some(&owner), None, true).allowed);
        assert!(!read_decision(&private, "acme", None, None, false).allowed);
        assert!(read_decision(&public, "acme", None, None, false).allowed);
        assert!(!read_decision(&public, "acme", None, None, true).allowed);
        assert!(read_decision(&listed, "acme", None, None, true).allowed);
        assert!(read_decision(&shared, "acme", Some(&bob), None, true).allowed);
        assert!(!read_decision(&shared, "acme", Some(&eve), None, false).allowed);
        assert!(read_decision(&public, "acme", Some(&eve), None, false).allowed);

        let writers = ContainerAcl::parse_write("other:bob").unwrap();
        assert!(!write_decision(&private, "acme", &owner).allowed, "reader");
        assert!(write_decision(&private, "acme", &who("acme", "w", Role::Writer)).allowed);
        assert!(write_decision(&writers, "acme", &bob).allowed);
        assert!(!write_decision(&writers, "acme", &eve).allowed);
        assert!(write_decision(&private, "acme", &who("ops", "root", Role::ResellerAdmin)).allowed);
    }
}

//! Failed logins per client address at the token endpoints.
//!
//! Swift keys are chosen by people, so they can be guessed, and a token
//! request answers whether a guess was right. A refused key costs its
//! client [`REFUSAL_DELAY`], and an address with `max_failures` refused
//! keys, each within `block` of the one before, is refused outright (even
//! with a right key, or guessing would go on) until `block` has passed
//! since its last failure: the policy the FTP door applies to its logins.

use std::net::IpAddr;
use std::time::Duration;

/// What a refused key costs the client that sent it.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(750);

/// Addresses remembered at once; past that the least recently failed are
/// forgotten first, so memory stays bounded when many addresses guess.
const MAX_ADDRESSES: u64 = 100_000;

/// Counts refused logins per client address (an IPv6 client by its /64,
/// the least a single site is given).
pub struct LoginGuard {
    max_failures: u32,
    /// Failures per address; an entry expires `block` after its last write.
    failures: moka::sync::Cache<IpAddr, u32>,
}

impl LoginGuard {
    /// `max_failures` 0: no address is ever blocked (behind a proxy every
    /// client has the proxy's address); refusals are still delayed.
    pub fn new(max_failures: u32, block: Duration) -> Self {
        LoginGuard {
            max_failures,
            failures: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(block)
                .build(),
        }
    }

    /// Whether logins from `client` are refused without being checked.
    pub fn is_blocked(&self, client: IpAddr) -> bool {
        self.max_failures > 0
            && self
                .failures
                .get(&site(client))
                .is_some_and(|failures| failures >= self.max_failures)
    }

    pub fn failed(&self, client: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        self.failures
            .entry(site(client))
            .and_upsert_with(|failures| failures.map_or(1, |entry| entry.into_value() + 1));
    }

    /// A right key clears the address's count.
    pub fn succeeded(&self, client: IpAddr) {
        self.failures.invalidate(&site(client));
    }
}

/// The key an address is counted under: IPv4 as it is (also when mapped
/// into IPv6), IPv6 by its /64.
fn site(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        LoginGuard::new(3, Duration::from_secs(60))
    }

    #[test]
    fn an_address_is_blocked_at_its_last_allowed_failure_and_others_are_not() {
        let guard = guard();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..2 {
            guard.failed(client);
            assert!(!guard.is_blocked(client));
        }
        guard.failed(client);
        assert!(guard.is_blocked(client));
        assert!(!guard.is_blocked("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn a_right_key_clears_the_count() {
        let guard = guard();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        guard.failed(client);
        guard.failed(client);
        guard.succeeded(client);
        guard.failed(client);
        guard.failed(client);
        assert!(!guard.is_blocked(client));
    }

    #[test]
    fn an_ipv6_site_counts_as_one_and_a_mapped_ipv4_as_its_address() {
        let guard = guard();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            guard.failed(host.parse().unwrap());
        }
        assert!(guard.is_blocked("2001:db8:1:2::77".parse().unwrap()));
        assert!(!guard.is_blocked("2001:db8:1:3::1".parse().unwrap()));

        for _ in 0..3 {
            guard.failed("::ffff:192.0.2.9".parse().unwrap());
        }
        assert!(guard.is_blocked("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn zero_failures_allowed_blocks_nobody() {
        let guard = LoginGuard::new(0, Duration::from_secs(60));
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            guard.failed(client);
        }
        assert!(!guard.is_blocked(client));
    }
}

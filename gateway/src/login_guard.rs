//! Failed logins per client address at the token endpoints.
//!
//! The keys strata makes are random, but the root account's is whatever
//! its operator chose (`STRATA_ROOT_SECRET_KEY`), and a token request
//! answers at once whether a guess was right. A refused key costs its
//! client [`REFUSAL_DELAY`], and an address with `max_failures` refused
//! keys, each within `block` of the one before, is refused outright (even
//! with a right key, or guessing would go on) until `block` has passed
//! since its last failure: the policy the FTP door applies to its logins.
//! A right key does not clear the count (a user of the same address could
//! otherwise reset it between guesses), and each attempt is counted before
//! its key is checked, so parallel requests cannot all slip under the
//! limit.

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
    block: Duration,
    /// Failures per address, and attempts whose key is being checked; an
    /// entry expires `block` after its last write.
    failures: moka::sync::Cache<IpAddr, u32>,
}

/// A login being checked, counted as a failure unless it [`succeeded`].
///
/// [`succeeded`]: Attempt::succeeded
pub struct Attempt<'a> {
    guard: &'a LoginGuard,
    site: IpAddr,
}

impl LoginGuard {
    /// `max_failures` 0: no address is ever blocked (behind a proxy every
    /// client has the proxy's address); refusals are still delayed.
    pub fn new(max_failures: u32, block: Duration) -> Self {
        LoginGuard {
            max_failures,
            block,
            failures: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(block)
                .build(),
        }
    }

    /// How long an address stays blocked after its last failure.
    pub fn block(&self) -> Duration {
        self.block
    }

    /// A login from `client` to check, or None while the address is
    /// blocked. Blocked requests are not counted, so that a client that
    /// keeps trying is let in once `block` has passed since its last
    /// refused key.
    pub fn attempt(&self, client: IpAddr) -> Option<Attempt<'_>> {
        let site = site(client);
        if self.max_failures == 0 {
            return Some(Attempt { guard: self, site });
        }
        if self
            .failures
            .get(&site)
            .is_some_and(|failures| failures >= self.max_failures)
        {
            return None;
        }
        let counted = self
            .failures
            .entry(site)
            .and_upsert_with(|failures| failures.map_or(1, |entry| entry.into_value() + 1))
            .into_value();
        if counted > self.max_failures {
            // Parallel attempts passed the check above together: the ones
            // past the limit are refused, and do not count.
            Attempt { guard: self, site }.succeeded();
            return None;
        }
        Some(Attempt { guard: self, site })
    }
}

impl Attempt<'_> {
    /// The key was right (or not checked): the attempt is not a failure.
    pub fn succeeded(self) {
        if self.guard.max_failures == 0 {
            return;
        }
        self.guard
            .failures
            .entry(self.site)
            .and_compute_with(|failures| match failures {
                Some(entry) => match entry.into_value().saturating_sub(1) {
                    0 => moka::ops::compute::Op::Remove,
                    left => moka::ops::compute::Op::Put(left),
                },
                None => moka::ops::compute::Op::Nop,
            });
    }
}

/// The key an address is counted under: IPv4 as it is (also when mapped
/// into IPv6), IPv6 by its /64.
fn site(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LoginGuard {
        LoginGuard::new(3, Duration::from_secs(60))
    }

    /// One refused key from `client`: an attempt that is not let off.
    fn refused(guard: &LoginGuard, client: &str) -> bool {
        guard.attempt(client.parse().unwrap()).is_some()
    }

    fn blocked(guard: &LoginGuard, client: &str) -> bool {
        guard.attempt(client.parse().unwrap()).is_none()
    }

    #[test]
    fn an_address_is_blocked_after_its_allowed_failures_and_others_are_not() {
        let guard = guard();
        for _ in 0..3 {
            assert!(refused(&guard, "192.0.2.7"));
        }
        assert!(blocked(&guard, "192.0.2.7"));
        assert!(!blocked(&guard, "192.0.2.8"));
    }

    #[test]
    fn right_keys_are_not_failures_and_do_not_clear_the_count() {
        let guard = guard();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(refused(&guard, "192.0.2.7"));
        assert!(refused(&guard, "192.0.2.7"));
        for _ in 0..5 {
            guard.attempt(client).unwrap().succeeded();
        }
        assert!(refused(&guard, "192.0.2.7"));
        assert!(blocked(&guard, "192.0.2.7"));
    }

    #[test]
    fn attempts_being_checked_count_against_the_limit() {
        let guard = guard();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let pending: Vec<_> = (0..3).map(|_| guard.attempt(client).unwrap()).collect();
        assert!(
            guard.attempt(client).is_none(),
            "a fourth parallel attempt was let through"
        );
        for attempt in pending {
            attempt.succeeded();
        }
        assert!(guard.attempt(client).is_some());
    }

    #[test]
    fn an_ipv6_site_counts_as_one_and_a_mapped_ipv4_as_its_address() {
        let guard = guard();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            assert!(refused(&guard, host));
        }
        assert!(blocked(&guard, "2001:db8:1:2::77"));
        assert!(!blocked(&guard, "2001:db8:1:3::1"));

        for _ in 0..3 {
            assert!(refused(&guard, "::ffff:192.0.2.9"));
        }
        assert!(blocked(&guard, "192.0.2.9"));
    }

    #[test]
    fn zero_failures_allowed_blocks_nobody() {
        let guard = LoginGuard::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            assert!(refused(&guard, "192.0.2.7"));
        }
    }
}

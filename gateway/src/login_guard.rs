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
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

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
    /// Each address's failures and the attempts being checked. The cache's
    /// own expiry, `block` after an entry's last write, only bounds memory:
    /// right keys write the entry too, so whether failures still count is
    /// decided by the time of the last one ([`Site::failures_at`]).
    sites: moka::sync::Cache<IpAddr, Site>,
}

/// One address's record.
#[derive(Clone, Copy, Default)]
struct Site {
    failures: u32,
    /// Attempts whose key is being checked: failures until they succeed.
    checking: u32,
    last_failure: Option<Instant>,
}

impl Site {
    /// Failures that still count at `now`: those of a run whose last one
    /// is less than `block` old.
    fn failures_at(&self, now: Instant, block: Duration) -> u32 {
        match self.last_failure {
            Some(last) if now.saturating_duration_since(last) < block => self.failures,
            _ => 0,
        }
    }

    fn into_op(self) -> Op<Site> {
        match (self.failures, self.checking) {
            (0, 0) => Op::Remove,
            _ => Op::Put(self),
        }
    }
}

/// A login being checked: a failure when dropped, unless it [`succeeded`].
///
/// [`succeeded`]: Attempt::succeeded
pub struct Attempt<'a> {
    guard: &'a LoginGuard,
    site: IpAddr,
    succeeded: bool,
}

impl LoginGuard {
    /// `max_failures` 0: no address is ever blocked (behind a proxy every
    /// client has the proxy's address); refusals are still delayed.
    pub fn new(max_failures: u32, block: Duration) -> Self {
        LoginGuard {
            max_failures,
            block,
            sites: moka::sync::Cache::builder()
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
    /// refused key; nor are attempts past the limit that arrive while
    /// others are being checked.
    pub fn attempt(&self, client: IpAddr) -> Option<Attempt<'_>> {
        let site = site(client);
        if self.max_failures > 0 && !self.let_in(site) {
            return None;
        }
        Some(Attempt {
            guard: self,
            site,
            succeeded: false,
        })
    }

    /// Counts an attempt from `site` as being checked, unless its failures
    /// and the attempts being checked reach the limit.
    fn let_in(&self, site: IpAddr) -> bool {
        let now = Instant::now();
        let mut let_in = false;
        self.sites.entry(site).and_compute_with(|entry| {
            let mut record = entry.map(|entry| entry.into_value()).unwrap_or_default();
            let failures = record.failures_at(now, self.block);
            if failures.saturating_add(record.checking) >= self.max_failures {
                return Op::Nop;
            }
            let_in = true;
            record.failures = failures;
            record.checking += 1;
            Op::Put(record)
        });
        let_in
    }
}

impl Attempt<'_> {
    /// The key was right (or not checked): the attempt is not a failure.
    pub fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let guard = self.guard;
        if guard.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        guard.sites.entry(self.site).and_compute_with(|entry| {
            let mut record = entry.map(|entry| entry.into_value()).unwrap_or_default();
            record.checking = record.checking.saturating_sub(1);
            if !self.succeeded {
                record.failures = record.failures_at(now, guard.block) + 1;
                record.last_failure = Some(now);
            }
            record.into_op()
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

    /// Failures count within `block` of the last one, however many right
    /// keys the address sent since: users who keep logging in from one
    /// address do not add up its typos of last week.
    #[test]
    fn failures_expire_while_right_keys_keep_coming() {
        let block = Duration::from_millis(300);
        let guard = LoginGuard::new(3, block);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(refused(&guard, "192.0.2.7"));
        assert!(refused(&guard, "192.0.2.7"));
        let until = Instant::now() + block * 2;
        while Instant::now() < until {
            guard.attempt(client).unwrap().succeeded();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(refused(&guard, "192.0.2.7"));
        assert!(refused(&guard, "192.0.2.7"));
        assert!(
            refused(&guard, "192.0.2.7"),
            "failures older than the block still counted"
        );
        assert!(blocked(&guard, "192.0.2.7"));
        // Blocked until `block` has passed since the last failure, however
        // often it tries meanwhile.
        std::thread::sleep(block / 2);
        assert!(blocked(&guard, "192.0.2.7"));
        std::thread::sleep(block);
        assert!(guard.attempt(client).map(Attempt::succeeded).is_some());
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

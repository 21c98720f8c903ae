//! Address ranges in CIDR notation (`10.0.0.0/8`, `fc00::/7`, or one
//! address), as configuration names who may read `/metrics`.

use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// The addresses whose first `prefix` bits are those of `network`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Loopback and the private ranges (RFC 1918, IPv6 unique local): where
    /// a monitoring system usually reaches a gateway from, and the open
    /// internet does not.
    pub fn private_networks() -> Vec<AddressRange> {
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "::1/128",
            "fc00::/7",
        ]
        .iter()
        .filter_map(|range| range.parse().ok())
        .collect()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client on an IPv6 socket arrives mapped (::ffff:a.b.c.d).
        let address = address.to_canonical();
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => same_prefix(
                u32::from(network).into(),
                u32::from(address).into(),
                32,
                self.prefix,
            ),
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_prefix(network.into(), address.into(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of the `bits` low bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let ignored = u32::from(bits - prefix);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{text:?} is not an address or a range like 10.0.0.0/8");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| invalid())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| invalid())?,
            None => bits,
        };
        if prefix > bits {
            return Err(invalid());
        }
        // Clients come as IPv4 when mapped (`contains`); so do such ranges.
        if let IpAddr::V6(v6) = network
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            return Ok(AddressRange {
                network: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Ok(AddressRange { network, prefix })
    }
}

impl TryFrom<String> for AddressRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> AddressRange {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_hold_the_addresses_of_their_prefix_only() {
        let tens = range("10.0.0.0/8");
        assert!(tens.contains(ip("10.255.3.4")));
        assert!(!tens.contains(ip("11.0.0.1")));
        assert!(tens.contains(ip("::ffff:10.1.2.3")));
        assert!(!tens.contains(ip("fc00::1")));

        let twelve = range("172.16.0.0/12");
        assert!(twelve.contains(ip("172.31.255.255")));
        assert!(!twelve.contains(ip("172.32.0.0")));

        let unique_local = range("fc00::/7");
        assert!(unique_local.contains(ip("fd12:3456::1")));
        assert!(!unique_local.contains(ip("fe80::1")));

        let one = range("192.0.2.7");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));

        assert!(range("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        assert!(range("::ffff:10.0.0.0/104").contains(ip("::ffff:10.9.9.9")));
        assert!(range("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for text in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host/8",
        ] {
            assert!(text.parse::<AddressRange>().is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn private_networks_hold_loopback_and_private_addresses_only() {
        let private = AddressRange::private_networks();
        assert_eq!(private.len(), 6);
        let allowed = |address: &str| private.iter().any(|range| range.contains(ip(address)));
        for address in [
            "127.0.0.1",
            "::1",
            "10.1.1.1",
            "172.20.0.1",
            "192.168.1.1",
            "fd00::9",
        ] {
            assert!(allowed(address), "{address} refused");
        }
        for address in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "169.254.1.1"] {
            assert!(!allowed(address), "{address} allowed");
        }
    }
}

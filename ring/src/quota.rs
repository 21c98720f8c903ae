//! How many partition-replicas each zone and device should hold.
//!
//! Two rules, in this order: spread, then weight. Spread says how many replicas of
//! one partition a zone must and may hold: replicas go round-robin over the zones
//! (a zone cannot take more than it has devices, since one device holds one replica
//! of a partition), so with at least as many zones as replicas every zone may hold
//! one and none must; with fewer, every zone holds its fair turn. Weight then shares
//! the ring's `partitions × replicas` among the zones in proportion to their weight,
//! clamped to what spread allows, and each zone's share among its devices in
//! proportion to theirs, clamped to one replica per partition. The result is an
//! integer quota per device that sums exactly to the ring's partition-replicas.

use std::collections::BTreeMap;

use crate::{Device, ZoneKey};

/// How many replicas of every partition a zone must (`min`) and may (`max`) hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ZoneSpread {
    pub min: u32,
    pub max: u32,
}

/// The targets a rebalance works towards.
#[derive(Debug)]
pub(crate) struct Targets {
    /// Zones with weight; a zone missing here may hold nothing.
    pub zones: BTreeMap<ZoneKey, ZoneSpread>,
    /// Partition-replicas each device should hold, indexed by device id; zero for
    /// removed devices and devices without weight.
    pub device_quota: Vec<u64>,
}

/// Targets for `n_parts` partitions of `replicas` replicas over `devices` (indexed by
/// id, `None` for removed ones). The caller guarantees at least `replicas` devices
/// with weight, which makes every bound below satisfiable.
pub(crate) fn targets(n_parts: u64, replicas: u32, devices: &[Option<Device>]) -> Targets {
    let mut zone_members: BTreeMap<ZoneKey, Vec<&Device>> = BTreeMap::new();
    for device in devices.iter().flatten().filter(|d| d.weight > 0) {
        zone_members
            .entry(device.zone_key())
            .or_default()
            .push(device);
    }
    let devices_per_zone: Vec<u32> = zone_members.values().map(|m| m.len() as u32).collect();
    let spreads = zone_spread(&devices_per_zone, replicas);

    let zone_weights: Vec<u64> = zone_members
        .values()
        .map(|members| members.iter().map(|d| d.weight).sum())
        .collect();
    let zone_bounds: Vec<(u64, u64)> = spreads
        .iter()
        .map(|s| (u64::from(s.min) * n_parts, u64::from(s.max) * n_parts))
        .collect();
    let zone_quota = water_fill(&zone_weights, &zone_bounds, n_parts * u64::from(replicas));

    let mut device_quota = vec![0; devices.len()];
    for (members, &quota) in zone_members.values().zip(&zone_quota) {
        let weights: Vec<u64> = members.iter().map(|d| d.weight).collect();
        let bounds = vec![(0, n_parts); members.len()];
        for (device, share) in members.iter().zip(water_fill(&weights, &bounds, quota)) {
            device_quota[device.id.index()] = share;
        }
    }
    // A zone whose quota is all it may hold must hold that much of every partition
    // (and one at its floor may hold no more): saying so lets placement put those
    // replicas there first instead of discovering the shortage rounds later.
    let spreads = spreads
        .into_iter()
        .zip(&zone_quota)
        .map(|(spread, &quota)| {
            if quota == u64::from(spread.max) * n_parts {
                ZoneSpread {
                    min: spread.max,
                    ..spread
                }
            } else if quota == u64::from(spread.min) * n_parts {
                ZoneSpread {
                    max: spread.min,
                    ..spread
                }
            } else {
                spread
            }
        });
    Targets {
        zones: zone_members.keys().copied().zip(spreads).collect(),
        device_quota,
    }
}

/// Widest spread of `replicas` over zones holding `devices_per_zone` devices: deal
/// replicas round-robin; zones served in every full round must hold that many, zones
/// that may be served in the last, partial round may hold one more.
pub(crate) fn zone_spread(devices_per_zone: &[u32], replicas: u32) -> Vec<ZoneSpread> {
    let dealt = |rounds: u32| -> u32 { devices_per_zone.iter().map(|&n| n.min(rounds)).sum() };
    let most = devices_per_zone.iter().copied().max().unwrap_or(0);
    let mut full_rounds = 0;
    while full_rounds < most && dealt(full_rounds + 1) <= replicas {
        full_rounds += 1;
    }
    let exact = dealt(full_rounds) == replicas;
    devices_per_zone
        .iter()
        .map(|&n| ZoneSpread {
            min: n.min(full_rounds),
            max: if exact {
                n.min(full_rounds)
            } else {
                n.min(full_rounds + 1)
            },
        })
        .collect()
}

/// Shares `total` in proportion to `weights`, each share clamped to its `bounds`,
/// rounded to integers that sum exactly to `total` (largest remainders win, ties to
/// the lower index, so the result is deterministic). Items of weight zero get their
/// lower bound. Requires `Σ lower ≤ total ≤ Σ upper`.
pub(crate) fn water_fill(weights: &[u64], bounds: &[(u64, u64)], total: u64) -> Vec<u64> {
    let shares_at = |level: f64| -> Vec<f64> {
        weights
            .iter()
            .zip(bounds)
            .map(|(&w, &(lo, hi))| (level * w as f64).clamp(lo as f64, hi as f64))
            .collect()
    };
    // The clamped sum grows with the water level; bisect for the level where it
    // reaches the total. 200 halvings reach the resolution of f64 from any start.
    let mut below = 0.0_f64;
    let mut above = weights
        .iter()
        .zip(bounds)
        .filter(|(w, _)| **w > 0)
        .map(|(&w, &(_, hi))| hi as f64 / w as f64)
        .fold(0.0_f64, f64::max);
    for _ in 0..200 {
        let level = (below + above) / 2.0;
        if shares_at(level).iter().sum::<f64>() < total as f64 {
            below = level;
        } else {
            above = level;
        }
    }
    round_to_total(&shares_at(above), bounds, total)
}

fn round_to_total(shares: &[f64], bounds: &[(u64, u64)], total: u64) -> Vec<u64> {
    let mut rounded: Vec<u64> = shares
        .iter()
        .zip(bounds)
        .map(|(&s, &(lo, hi))| (s.floor() as u64).clamp(lo, hi))
        .collect();
    // What rounding has not yet given each item; recomputed as units are handed out.
    let remainder = |rounded: &[u64], i: usize| shares[i] - rounded[i] as f64;
    loop {
        let sum: u64 = rounded.iter().sum();
        if sum < total {
            let best = (0..rounded.len())
                .filter(|&i| rounded[i] < bounds[i].1)
                .max_by(|&a, &b| {
                    remainder(&rounded, a)
                        .total_cmp(&remainder(&rounded, b))
                        .then(b.cmp(&a))
                });
            match best {
                Some(i) => rounded[i] += 1,
                None => return rounded,
            }
        } else if sum > total {
            let best = (0..rounded.len())
                .filter(|&i| rounded[i] > bounds[i].0)
                .min_by(|&a, &b| {
                    remainder(&rounded, a)
                        .total_cmp(&remainder(&rounded, b))
                        .then(b.cmp(&a))
                });
            match best {
                Some(i) => rounded[i] -= 1,
                None => return rounded,
            }
        } else {
            return rounded;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_spread(devices_per_zone: &[u32], replicas: u32, expected: &[(u32, u32)]) {
        let spread: Vec<(u32, u32)> = zone_spread(devices_per_zone, replicas)
            .iter()
            .map(|s| (s.min, s.max))
            .collect();
        assert_eq!(
            spread, expected,
            "zones {devices_per_zone:?}, {replicas} replicas"
        );
    }

    #[test]
    fn spread() {
        // More zones than replicas: any zone may hold one, none must.
        check_spread(&[1, 1, 1, 1], 3, &[(0, 1), (0, 1), (0, 1), (0, 1)]);
        check_spread(&[4, 2, 1, 1], 3, &[(0, 1), (0, 1), (0, 1), (0, 1)]);
        // As many zones as replicas: one each.
        check_spread(&[2, 5, 1], 3, &[(1, 1), (1, 1), (1, 1)]);
        // Fewer zones: every zone has its turn, the remainder goes to some.
        check_spread(&[3, 3], 3, &[(1, 2), (1, 2)]);
        check_spread(&[2, 2, 2], 4, &[(1, 2), (1, 2), (1, 2)]);
        // A small zone cannot hold more than it has devices; the others make up.
        check_spread(&[1, 5], 4, &[(1, 1), (3, 3)]);
        check_spread(&[1, 2, 9], 5, &[(1, 1), (2, 2), (2, 2)]);
        check_spread(&[1, 3, 3], 6, &[(1, 1), (2, 3), (2, 3)]);
        // One zone holds everything.
        check_spread(&[3], 3, &[(3, 3)]);
        check_spread(&[5], 1, &[(1, 1)]);
    }

    fn check_fill(weights: &[u64], bounds: &[(u64, u64)], total: u64, expected: &[u64]) {
        assert_eq!(
            water_fill(weights, bounds, total),
            expected,
            "weights {weights:?}, bounds {bounds:?}, total {total}"
        );
    }

    #[test]
    fn fill() {
        // Plain proportional shares.
        check_fill(&[1, 1], &[(0, 100), (0, 100)], 100, &[50, 50]);
        check_fill(&[1, 3], &[(0, 100), (0, 100)], 100, &[25, 75]);
        // Remainders: the larger fractional part gets the odd unit, ties the lower index.
        check_fill(&[1, 1, 1], &[(0, 10); 3], 10, &[4, 3, 3]);
        check_fill(&[2, 1], &[(0, 10); 2], 10, &[7, 3]);
        // A capped item hands its surplus to the others, in proportion.
        check_fill(&[10, 1, 1], &[(0, 256); 3], 3 * 256, &[256, 256, 256]);
        check_fill(&[8, 1, 1], &[(0, 100); 3], 150, &[100, 25, 25]);
        // A floor is honoured even against weight.
        check_fill(&[100, 1], &[(50, 100), (50, 100)], 150, &[100, 50]);
        check_fill(&[0, 1], &[(5, 10), (0, 10)], 10, &[5, 5]);
    }

    #[test]
    fn targets_follow_weight_within_zones() {
        let device = |id: u32, zone: u32, weight: u64| {
            Some(Device {
                id: crate::DeviceId(id),
                node: format!("10.0.0.{id}:7001"),
                region: 1,
                zone,
                weight,
                name: None,
            })
        };
        // Three zones, three replicas: every zone holds one replica of each of the
        // 256 partitions whatever its weight; inside a zone, weight decides.
        let devices = vec![
            device(0, 1, 100),
            device(1, 1, 300),
            device(2, 2, 10),
            device(3, 3, 50),
            None,
            device(5, 3, 0),
        ];
        let targets = targets(256, 3, &devices);
        assert_eq!(targets.device_quota, vec![64, 192, 256, 256, 0, 0]);
        assert!(
            targets
                .zones
                .values()
                .all(|s| *s == ZoneSpread { min: 1, max: 1 })
        );
    }
}

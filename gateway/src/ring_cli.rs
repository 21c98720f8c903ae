//! `strata ring create|add|remove|set-weight|rebalance|show`: edits a ring
//! builder file as swift-ring-builder does, and writes the ring every node
//! loads (`<builder>.ring`) on rebalance. The arithmetic is the ring crate's;
//! this is files and printing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use strata_ring::{DeviceId, DeviceSpec, RingBuilder};

#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Start a builder file: 2^PART_POWER partitions, REPLICAS copies each.
    Create {
        builder: PathBuf,
        #[arg(long)]
        part_power: u8,
        #[arg(long, default_value_t = 2)]
        replicas: u8,
        /// Salts the placement hash; nodes refuse a ring of another cluster.
        #[arg(long)]
        cluster_id: String,
        /// Hours a partition's replicas stay put after one of them moved, so
        /// that a rebalance soon after another never moves a second replica
        /// before the first was copied (Swift's min_part_hours).
        #[arg(long, default_value_t = 1)]
        min_part_hours: u64,
    },
    /// Add a device: a storage node's address, its zone (and region) and a
    /// weight (its capacity, in any unit used alike for every device).
    Add {
        builder: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long)]
        zone: u32,
        #[arg(long, default_value_t = 1)]
        region: u32,
        #[arg(long)]
        weight: u64,
        /// A name for people (`sdb`, `ssd1`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a device: its partitions move to others at the next rebalance.
    Remove { builder: PathBuf, device: u32 },
    /// Change a device's weight (0 drains it).
    SetWeight {
        builder: PathBuf,
        device: u32,
        weight: u64,
    },
    /// Change how long a partition's replicas stay put after one moved.
    SetMinPartHours { builder: PathBuf, hours: u64 },
    /// Move partitions towards the weights (at most one replica of each per
    /// rebalance, and none of a partition that moved within the last
    /// min-part-hours) and write the ring (`BUILDER.ring` unless --ring
    /// names it).
    Rebalance {
        builder: PathBuf,
        #[arg(long)]
        ring: Option<PathBuf>,
    },
    /// Devices, their partitions and how far each is from its share.
    Show { builder: PathBuf },
}

pub fn run(command: RingCommand) -> anyhow::Result<()> {
    match command {
        RingCommand::Create {
            builder,
            part_power,
            replicas,
            cluster_id,
            min_part_hours,
        } => {
            if builder.exists() {
                bail!("{} exists already", builder.display());
            }
            let mut ring = RingBuilder::new(cluster_id, part_power, replicas)?;
            ring.set_min_part_seconds(hours_in_seconds(min_part_hours));
            save(&builder, &ring)?;
            println!(
                "created {}: {} partitions, {replicas} replicas",
                builder.display(),
                1u64 << part_power
            );
        }
        RingCommand::Add {
            builder,
            node,
            zone,
            region,
            weight,
            name,
        } => {
            let mut ring = load(&builder)?;
            let id = ring.add_device(DeviceSpec {
                node,
                region,
                zone,
                weight,
                name,
            })?;
            save(&builder, &ring)?;
            println!("added device {} (rebalance to use it)", id.0);
        }
        RingCommand::Remove { builder, device } => {
            let mut ring = load(&builder)?;
            let removed = ring.remove_device(DeviceId(device))?;
            save(&builder, &ring)?;
            println!(
                "removed device {device} ({}); rebalance to move its partitions",
                removed.node
            );
        }
        RingCommand::SetWeight {
            builder,
            device,
            weight,
        } => {
            let mut ring = load(&builder)?;
            ring.set_weight(DeviceId(device), weight)?;
            save(&builder, &ring)?;
            println!("device {device} weighs {weight} (rebalance to apply)");
        }
        RingCommand::SetMinPartHours { builder, hours } => {
            let mut ring = load(&builder)?;
            ring.set_min_part_seconds(hours_in_seconds(hours));
            save(&builder, &ring)?;
            println!("a partition's replicas stay put {hours} h after one moved");
        }
        RingCommand::Rebalance { builder, ring } => {
            let mut state = load(&builder)?;
            let report = state.rebalance_at(crate::wire::unix_now())?;
            let table = state.ring()?;
            let ring_path = ring.unwrap_or_else(|| ring_path_of(&builder));
            // The builder first: a ring without its builder could not be
            // rebalanced from again, the reverse only repeats this run.
            save(&builder, &state)?;
            write_atomically(&ring_path, &table.to_bytes())?;
            println!(
                "version {}: placed {}, moved {}, recovered {} from removed devices, \
                 held back {}; worst device {:.1}% from its share; ring in {}",
                state.version(),
                report.placed,
                report.moved,
                report.recovered,
                report.held_back,
                report.worst_deviation_percent,
                ring_path.display()
            );
            if let Some(until) = report.waiting_until {
                let when = chrono::DateTime::from_timestamp(until as i64, 0)
                    .map_or_else(|| until.to_string(), |at| at.to_rfc3339());
                println!(
                    "{} partitions moved a replica within the last {} h and wait until {when}",
                    report.waiting,
                    state.min_part_seconds() / 3600
                );
            }
            if report.held_back > 0 && report.waiting == 0 {
                println!("rebalance again once the moved data has been copied");
            }
        }
        RingCommand::Show { builder } => print!("{}", show(&load(&builder)?)),
    }
    Ok(())
}

fn hours_in_seconds(hours: u64) -> u64 {
    hours.saturating_mul(3600)
}

/// `ring.builder` → `ring.builder.ring`.
fn ring_path_of(builder: &Path) -> PathBuf {
    let mut name = builder.as_os_str().to_owned();
    name.push(".ring");
    PathBuf::from(name)
}

fn load(path: &Path) -> anyhow::Result<RingBuilder> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    RingBuilder::from_json(&text).with_context(|| format!("{} is no ring builder", path.display()))
}

fn save(path: &Path, ring: &RingBuilder) -> anyhow::Result<()> {
    write_atomically(path, ring.to_json().as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames
/// it over `path`, so a crash leaves the old file or the new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The builder as a table: every device with its replica count against the
/// share its weight asks for.
fn show(ring: &RingBuilder) -> String {
    let partitions = 1u32 << ring.part_power();
    let mut held: BTreeMap<DeviceId, u64> = BTreeMap::new();
    for part in 0..partitions {
        for device in ring.assignment(part).into_iter().flatten() {
            *held.entry(device).or_default() += 1;
        }
    }
    let total_weight: u64 = ring.devices().map(|device| device.weight).sum();
    let slots = u64::from(partitions) * ring.replicas() as u64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}, version {}: {partitions} partitions, {} replicas, {} devices; \
         min part hours {}",
        ring.cluster_id(),
        ring.version(),
        ring.replicas(),
        ring.devices().count(),
        ring.min_part_seconds() / 3600
    );
    let _ = writeln!(
        out,
        "{:>4} {:>6} {:>4} {:<24} {:<8} {:>8} {:>10} {:>8}",
        "id", "region", "zone", "node", "name", "weight", "partitions", "balance"
    );
    for device in ring.devices() {
        let count = held.get(&device.id).copied().unwrap_or(0);
        let wanted = if total_weight == 0 {
            0.0
        } else {
            slots as f64 * device.weight as f64 / total_weight as f64
        };
        let balance = if wanted > 0.0 {
            format!("{:+.1}%", (count as f64 - wanted) / wanted * 100.0)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>4} {:<24} {:<8} {:>8} {:>10} {:>8}",
            device.id.0,
            device.region,
            device.zone,
            device.node,
            device.name.as_deref().unwrap_or("-"),
            device.weight,
            count,
            balance
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(builder: &Path, node: &str, zone: u32) -> anyhow::Result<()> {
        run(RingCommand::Add {
            builder: builder.to_owned(),
            node: node.to_owned(),
            zone,
            region: 1,
            weight: 100,
            name: None,
        })
    }

    #[test]
    fn create_add_rebalance_show_and_remove() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let builder = dir.path().join("object.builder");
        run(RingCommand::Create {
            builder: builder.clone(),
            part_power: 6,
            replicas: 2,
            cluster_id: "test-cluster".to_owned(),
            min_part_hours: 1,
        })?;
        assert!(
            run(RingCommand::Create {
                builder: builder.clone(),
                part_power: 6,
                replicas: 2,
                cluster_id: "other".to_owned(),
                min_part_hours: 1,
            })
            .is_err(),
            "create must not overwrite a builder"
        );
        for (node, zone) in [
            ("10.0.0.1:7000", 1),
            ("10.0.0.2:7000", 2),
            ("10.0.0.3:7000", 3),
        ] {
            add(&builder, node, zone)?;
        }
        run(RingCommand::Rebalance {
            builder: builder.clone(),
            ring: None,
        })?;
        let ring_bytes = std::fs::read(dir.path().join("object.builder.ring"))?;
        let ring = strata_ring::Ring::from_bytes(&ring_bytes)?;
        ring.ensure_cluster("test-cluster")?;
        assert_eq!(ring.partition_count(), 64);

        let table = show(&load(&builder)?);
        // 128 replicas over three equal devices: 42 or 43 each.
        for line in table.lines().skip(2) {
            let count: u64 = line.split_whitespace().nth(6).unwrap_or("0").parse()?;
            assert!((42..=43).contains(&count), "{table}");
        }

        run(RingCommand::Remove {
            builder: builder.clone(),
            device: 2,
        })?;
        run(RingCommand::Rebalance {
            builder: builder.clone(),
            ring: None,
        })?;
        let ring =
            strata_ring::Ring::from_bytes(&std::fs::read(dir.path().join("object.builder.ring"))?)?;
        for part in ring.partitions() {
            assert!(
                !ring.primaries(part).contains(&DeviceId(2)),
                "a removed device still holds a partition"
            );
        }
        assert!(
            run(RingCommand::SetWeight {
                builder: builder.clone(),
                device: 2,
                weight: 5,
            })
            .is_err(),
            "a removed device cannot be reweighted"
        );
        Ok(())
    }

    #[test]
    fn a_damaged_builder_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let builder = dir.path().join("bad.builder");
        std::fs::write(&builder, "{\"not\": \"a builder\"}")?;
        let err = run(RingCommand::Show {
            builder: builder.clone(),
        })
        .err()
        .map(|err| format!("{err:#}"))
        .unwrap_or_default();
        assert!(err.contains("is no ring builder"), "{err}");
        Ok(())
    }
}

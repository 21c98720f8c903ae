//! Human units on the command line: object sizes (`4KiB`, `1MiB`, `1GiB`) and
//! phase durations (`10s`, `500ms`, `2m`).

use std::time::Duration;

use anyhow::{Context, bail};

/// Parses an object size: a whole number with an optional unit.
///
/// IEC units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, SI units (`kB`,
/// `KB`, `MB`, `GB`, `TB`) powers of 1000, and the bare letters `K`, `M`, `G`, `T`
/// are read as IEC because that is what `dd` and most storage people mean by
/// them. No unit, or `B`, means bytes. Units are case-sensitive only where the
/// case carries meaning (`b` is not a byte, so it is refused).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        bail!("size {text:?} does not start with a number");
    }
    let count: u64 = digits
        .parse()
        .with_context(|| format!("size {text:?} is out of range"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => bail!(
            "size {text:?} has unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB)"
        ),
    };
    count
        .checked_mul(multiplier)
        .with_context(|| format!("size {text:?} is out of range"))
}

/// Formats a byte count in the largest IEC unit that divides it exactly, so
/// that `format_size(parse_size(s))` gives back the spelling people typed.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// Parses a phase duration: a whole number followed by `ms`, `s`, `m` or `h`.
/// A bare number means seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        bail!("duration {text:?} does not start with a number");
    }
    let count: u64 = digits
        .parse()
        .with_context(|| format!("duration {text:?} is out of range"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => bail!("duration {text:?} has unknown unit {other:?} (use ms, s, m, h)"),
    };
    let millis = count
        .checked_mul(millis_per_unit)
        .with_context(|| format!("duration {text:?} is out of range"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_size(input: &str, expected: Option<u64>) {
        let actual = parse_size(input).ok();
        assert_eq!(actual, expected, "parse_size({input:?})");
    }

    #[test]
    fn sizes() {
        check_size("4KiB", Some(4096));
        check_size("1MiB", Some(1 << 20));
        check_size("1GiB", Some(1 << 30));
        check_size("2TiB", Some(2 << 40));
        check_size("4096", Some(4096));
        check_size("0", Some(0));
        check_size("17B", Some(17));
        check_size("4K", Some(4096));
        check_size("4k", Some(4096));
        check_size("64M", Some(64 << 20));
        check_size("1G", Some(1 << 30));
        check_size("1kB", Some(1_000));
        check_size("1MB", Some(1_000_000));
        check_size("5GB", Some(5_000_000_000));
        check_size(" 8 MiB ", Some(8 << 20));
        check_size("", None);
        check_size("KiB", None);
        check_size("1.5MiB", None);
        check_size("-1", None);
        check_size("4kib", None);
        check_size("4b", None);
        check_size("99999999999999999999", None);
        check_size("17000000TiB", None);
    }

    fn check_format(bytes: u64, expected: &str) {
        assert_eq!(format_size(bytes), expected, "format_size({bytes})");
    }

    #[test]
    fn formatted_sizes() {
        check_format(0, "0B");
        check_format(1000, "1000B");
        check_format(4096, "4KiB");
        check_format(1 << 20, "1MiB");
        check_format(1536 << 10, "1536KiB");
        check_format(1 << 30, "1GiB");
        check_format(3 << 40, "3TiB");
    }

    fn check_duration(input: &str, expected: Option<Duration>) {
        let actual = parse_duration(input).ok();
        assert_eq!(actual, expected, "parse_duration({input:?})");
    }

    #[test]
    fn durations() {
        check_duration("10s", Some(Duration::from_secs(10)));
        check_duration("10", Some(Duration::from_secs(10)));
        check_duration("500ms", Some(Duration::from_millis(500)));
        check_duration("2m", Some(Duration::from_secs(120)));
        check_duration("1h", Some(Duration::from_secs(3600)));
        check_duration("0s", Some(Duration::ZERO));
        check_duration("s", None);
        check_duration("1.5s", None);
        check_duration("10d", None);
        check_duration("99999999999999999999h", None);
    }
}

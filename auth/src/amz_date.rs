//! The ISO 8601 "basic" timestamps SigV4 uses (`20130524T000000Z`), converted
//! to and from [`SystemTime`] without a calendar crate: SigV4 only ever needs
//! UTC and whole seconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A request timestamp, kept both as seconds since the Unix epoch (to compare
/// with the clock) and as its civil fields (to print the scope date).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct AmzDateTime {
    unix_seconds: u64,
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl AmzDateTime {
    /// Parses exactly `YYYYMMDDTHHMMSSZ`. Anything else (other lengths,
    /// separators, fractional seconds, impossible dates, years before 1970)
    /// is refused rather than guessed at.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let digits = bytes.get(range)?;
            digits.iter().try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
        };
        let year = number(0..4)?;
        let month = number(4..6)?;
        let day = number(6..8)?;
        let hour = number(9..11)?;
        let minute = number(11..13)?;
        let second = number(13..15)?;
        if year < 1970
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        // A leap second (":60") is folded into the next second, as every
        // client library formats from a clock that never shows it anyway.
        let days = days_from_civil(year, month, day);
        let unix_seconds =
            days * 86_400 + u64::from(hour) * 3_600 + u64::from(minute) * 60 + u64::from(second);
        Some(Self {
            unix_seconds,
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// The timestamp of `time`, truncated to whole seconds. `None` before
    /// 1970 or past year 9999 (which the four-digit format cannot show).
    pub(crate) fn from_system_time(time: SystemTime) -> Option<Self> {
        let unix_seconds = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let days = unix_seconds / 86_400;
        let rest = unix_seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        if year > 9999 {
            return None;
        }
        // `rest` < 86 400, so every field fits in u32.
        let rest = u32::try_from(rest).ok()?;
        Some(Self {
            unix_seconds,
            year,
            month,
            day,
            hour: rest / 3_600,
            minute: rest / 60 % 60,
            second: rest % 60,
        })
    }

    /// Parses exactly the extended form `YYYY-MM-DDTHH:MM:SSZ` (Swift's
    /// `temp_url_expires`), with the same rules as [`AmzDateTime::parse`].
    pub(crate) fn parse_extended(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 20
            || bytes[4] != b'-'
            || bytes[7] != b'-'
            || bytes[13] != b':'
            || bytes[16] != b':'
        {
            return None;
        }
        let basic: String = text.chars().filter(|c| *c != '-' && *c != ':').collect();
        Self::parse(&basic)
    }

    pub(crate) fn unix_seconds(&self) -> u64 {
        self.unix_seconds
    }

    pub(crate) fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix_seconds)
    }

    /// `YYYYMMDD`, the first element of the credential scope.
    pub(crate) fn date_stamp(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for AmzDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl fmt::Debug for AmzDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date on or after it (Howard Hinnant's
/// `days_from_civil`, restricted to non-negative results).
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let year = u64::from(if month <= 2 { year - 1 } else { year });
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month = u64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + u64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 is the day number of 1970-01-01 counted from 0000-03-01.
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (
        u32::try_from(year).unwrap_or(u32::MAX),
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_unix: Option<u64>) {
        let parsed = AmzDateTime::parse(input);
        assert_eq!(parsed.map(|d| d.unix_seconds), expected_unix, "{input}");
        if let Some(parsed) = parsed {
            if !input.ends_with("60Z") {
                assert_eq!(parsed.to_string(), input);
            }
            let back = AmzDateTime::from_system_time(parsed.system_time()).unwrap();
            assert_eq!(back.unix_seconds, parsed.unix_seconds);
        }
    }

    #[test]
    fn parses_and_formats() {
        check("19700101T000000Z", Some(0));
        check("20130524T000000Z", Some(1_369_353_600));
        check("20000229T235959Z", Some(951_868_799));
        check("20240229T120000Z", Some(1_709_208_000));
        check("21000301T000000Z", Some(4_107_542_400));
        check("20161231T235960Z", Some(1_483_228_800));
        check("20130524T000000", None);
        check("20130524 000000Z", None);
        check("2013-05-24T00:00:00Z", None);
        check("20130230T000000Z", None);
        check("19000229T000000Z", None);
        check("21000229T000000Z", None);
        check("20131324T000000Z", None);
        check("20130524T240000Z", None);
        check("20130524T006000Z", None);
        check("19691231T235959Z", None);
        check("2013052aT000000Z", None);
        check("+0130524T000000Z", None);
        check("２０130524T000000Z", None);
        check("", None);
    }

    #[test]
    fn every_day_round_trips() {
        // Walk 600 years day by day: formatting and parsing must agree.
        for day in 0..(600 * 366) {
            let time = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3_723);
            let date = AmzDateTime::from_system_time(time).unwrap();
            let reparsed = AmzDateTime::parse(&date.to_string()).unwrap();
            assert_eq!(reparsed.system_time(), time);
            assert_eq!(reparsed.date_stamp(), date.to_string()[..8]);
        }
    }
}

//! Dates on the wire: RFC 2822 with a literal `+0000`, e.g.
//! `Wed, 17 Sep 2014 08:26:22 +0000` — the exact format the Docker Cloud and
//! Tutum clients parse with `strptime("%a, %d %b %Y %H:%M:%S +0000")`.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// The wire format, as a chrono format string.
pub const WIRE_FORMAT: &str = "%a, %d %b %Y %H:%M:%S +0000";

/// Formats a UTC instant the way the clients expect.
pub fn format(dt: &DateTime<Utc>) -> String {
    dt.format(WIRE_FORMAT).to_string()
}

/// The earliest instant a client may name: 0001-01-01T00:00:00Z. Both
/// stores hold every instant from here to [`MAX_EPOCH_SECONDS`]
/// (PostgreSQL's `timestamptz` stops at 4713 BC and 294276 AD, SQLite's
/// microseconds at ±292,000 years), so a date in range never fails in the
/// database and one outside is the client's mistake (a 400).
pub const MIN_EPOCH_SECONDS: i64 = -62_135_596_800;
/// The last instant a client may name: 9999-12-31T23:59:59Z.
pub const MAX_EPOCH_SECONDS: i64 = 253_402_300_799;

/// Whether both stores can hold `dt` (see [`MIN_EPOCH_SECONDS`]).
pub fn storable(dt: &DateTime<Utc>) -> bool {
    (MIN_EPOCH_SECONDS..=MAX_EPOCH_SECONDS).contains(&dt.timestamp())
}

/// Parses a date a client may send in a filter: RFC 2822 (any offset),
/// RFC 3339 / ISO 8601 with an offset, a naive ISO 8601 date-time or date
/// (taken as UTC), or integer epoch seconds. Dates outside the years
/// 1–9999 are refused ([`storable`]).
pub fn parse_filter(s: &str) -> Option<DateTime<Utc>> {
    parse_any(s).filter(storable)
}

fn parse_any(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc2822(s) {
        return Some(dt.with_timezone(&Utc));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&naive));
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .ok()
            .and_then(|n| Utc.timestamp_opt(n, 0).single());
    }
    None
}

/// Serde helpers for `Option<DateTime<Utc>>` in the wire format (`null` when unset).
pub mod wire_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as the wire format or `null`.
    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(dt) => s.serialize_str(&super::format(dt)),
            None => s.serialize_none(),
        }
    }

    /// Accepts the wire format (or any format [`super::parse_filter`] takes) or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => super::parse_filter(s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid date {s:?}"))),
        }
    }
}

/// Serde helpers for `DateTime<Utc>` in the wire format.
pub mod wire {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as the wire format.
    pub fn serialize<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(v))
    }

    /// Accepts the wire format (or any format [`super::parse_filter`] takes).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_filter(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid date {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_exactly_like_the_spec_example() {
        let dt = Utc.with_ymd_and_hms(2014, 9, 17, 8, 26, 22).unwrap();
        assert_eq!(format(&dt), "Wed, 17 Sep 2014 08:26:22 +0000");
        let single = Utc.with_ymd_and_hms(2014, 9, 7, 8, 26, 22).unwrap();
        assert_eq!(format(&single), "Sun, 07 Sep 2014 08:26:22 +0000");
    }

    #[test]
    fn filter_dates_accept_what_clients_send() {
        let want = Utc.with_ymd_and_hms(2014, 9, 17, 8, 26, 22).unwrap();
        for s in [
            "Wed, 17 Sep 2014 08:26:22 +0000",
            "Wed, 17 Sep 2014 10:26:22 +0200",
            "2014-09-17T08:26:22Z",
            "2014-09-17T08:26:22+00:00",
            "2014-09-17T08:26:22",
            "2014-09-17 08:26:22",
            "1410942382",
        ] {
            assert_eq!(parse_filter(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_filter("2014-09-17"),
            Some(Utc.with_ymd_and_hms(2014, 9, 17, 0, 0, 0).unwrap())
        );
        for bad in ["", "yesterday", "2014-13-45", "17/09/2014"] {
            assert_eq!(parse_filter(bad), None, "{bad}");
        }
    }

    #[test]
    fn filter_dates_stay_within_what_both_stores_hold() {
        assert!(parse_filter("9999-12-31T23:59:59Z").is_some());
        assert!(parse_filter("0001-01-01").is_some());
        assert!(parse_filter(&MAX_EPOCH_SECONDS.to_string()).is_some());
        for bad in [
            "10000000000000",
            "+10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "9223372036854775807",
        ] {
            assert_eq!(parse_filter(bad), None, "{bad}");
        }
    }
}

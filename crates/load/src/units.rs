//! Parsing of human durations (`30s`, `250ms`, `1.5s`, `2m`) and rates, shared by flags,
//! scenario files and thresholds. Pure: no I/O, no clock.

use std::time::Duration;

/// Parses `N[unit]` with unit one of `us`, `ms`, `s`, `m`, `h`; `default_unit` applies to
/// a bare number. Fractions are allowed (`1.5s`). Negative or non-finite values are refused.
pub fn parse_duration_with(text: &str, default_unit: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = if unit.is_empty() {
        default_unit
    } else {
        unit.trim()
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 250ms, 2m)"))?;
    let secs = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use us, ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse_duration_with`] where a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_with(text, "s")
}

/// Serde helper: a duration written as a string (`"30s"`) in TOML.
pub mod serde_duration {
    use super::parse_duration;
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Deserialises `"30s"`-style strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration_with("7", "ms").unwrap(),
            Duration::from_millis(7)
        );
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

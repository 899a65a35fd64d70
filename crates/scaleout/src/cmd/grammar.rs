//! The one command-line grammar of every subcommand (issue 15):
//!
//! - a duration is a number with a unit: `500ms`, `30s`, `2m` ([`Dur`]); a bare number is
//!   refused (is `--timeout 5` five seconds or five milliseconds?), except `0`;
//! - a percentage carries its sign: `5%`, `0.1%` ([`Pct`]);
//! - `-c/--config FILE` is a config file wherever `-c` exists;
//! - `--json FILE` (`-` for stdout) writes the report wherever a command has one;
//! - choices are clap value enums, listed by `--help`.
//!
//! Old spellings (`--startup-s 30`, `--noise-pct 5`, `load -c 64`, `audit --format json`,
//! a bare `--duration 10`) still work for one release: they are hidden from `--help` and
//! print one `warning: ... is deprecated` line on stderr saying what to write instead
//! ([`deprecated`]). This module only parses; it never reads the environment or files.

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};

/// Prints the deprecation warning for an old spelling (stderr, one line).
pub fn deprecated(old: &str, new: &str) {
    eprintln!("warning: {old} is deprecated and will be removed in the next release; write {new}");
}

/// A duration flag value: a number and a unit (`us`, `ms`, `s`, `m`, `h`), fractions
/// allowed (`1.5s`); `0` alone is zero. Displays in the largest exact unit (`30s`, `2m`,
/// `250ms`), so `--help` defaults read the way they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    /// Whole milliseconds.
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    /// Milliseconds, rounded down (for library fields named `*_ms`).
    pub fn as_millis_u64(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    /// Whole seconds, refused when the value has a fraction (for per-second models).
    pub fn whole_secs(self, flag: &str) -> anyhow::Result<u64> {
        anyhow::ensure!(
            self.0.subsec_nanos() == 0,
            "{flag}: {self} is not a whole number of seconds (the model steps once a second)"
        );
        Ok(self.0.as_secs())
    }
}

fn is_bare_number(t: &str) -> bool {
    !t.is_empty() && t.parse::<f64>().is_ok()
}

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Dur, String> {
        let t = s.trim();
        if is_bare_number(t) && t.parse::<f64>() != Ok(0.0) {
            return Err(format!("`{t}` needs a unit: {t}ms, {t}s or {t}m"));
        }
        load::parse_duration(t).map(Dur)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let nanos = d.as_nanos();
        if nanos == 0 {
            write!(f, "0s")
        } else if nanos.is_multiple_of(3_600_000_000_000) {
            write!(f, "{}h", nanos / 3_600_000_000_000)
        } else if nanos.is_multiple_of(60_000_000_000) {
            write!(f, "{}m", nanos / 60_000_000_000)
        } else if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{}ms", d.as_secs_f64() * 1e3)
        }
    }
}

/// A percentage flag value, written with its sign (`5%`, `0.1%`, `99%`); `0` alone is
/// zero. Holds the percent (5.0 for `5%`); 0..=100 unless the flag says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Pct(pub f64);

impl Pct {
    /// The fraction (0.05 for `5%`).
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

fn parse_pct_number(t: &str) -> Result<f64, String> {
    let n: f64 = t
        .trim()
        .parse()
        .map_err(|_| format!("`{t}` is not a percentage (e.g. 5%, 0.1%)"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("`{t}%` is outside 0%..=100%"));
    }
    Ok(n)
}

impl FromStr for Pct {
    type Err = String;

    fn from_str(s: &str) -> Result<Pct, String> {
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(n) => parse_pct_number(n).map(Pct),
            None if t.parse::<f64>() == Ok(0.0) => Ok(Pct(0.0)),
            None => Err(format!(
                "`{t}` needs a % sign: {t}% (a percentage, not a fraction)"
            )),
        }
    }
}

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// The flag's name as the user wrote it, for messages (`--duration`).
fn flag_name(arg: Option<&clap::Arg>) -> String {
    arg.and_then(|a| a.get_long().map(|l| format!("--{l}")))
        .unwrap_or_else(|| "the value".into())
}

fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, value: &str, why: &str) -> clap::Error {
    let mut e = clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("invalid value '{value}' for '{}': {why}\n", flag_name(arg)),
    );
    e = e.with_cmd(cmd);
    e
}

/// A [`Dur`] parser for flags that accepted a bare number before the one grammar:
/// a bare number still parses, in `bare_unit`, with a deprecation warning naming the flag.
#[derive(Debug, Clone, Copy)]
pub struct LegacyDur {
    /// The unit a bare number meant (`"s"` or `"ms"`).
    pub bare_unit: &'static str,
}

impl TypedValueParser for LegacyDur {
    type Value = Dur;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Dur, clap::Error> {
        let s = value.to_string_lossy();
        let t = s.trim();
        if is_bare_number(t) && t.parse::<f64>() != Ok(0.0) {
            let flag = flag_name(arg);
            let d = load::parse_duration_with(t, self.bare_unit)
                .map_err(|e| invalid(cmd, arg, t, &e))?;
            deprecated(
                &format!("`{flag} {t}` (a duration without a unit)"),
                &format!("`{flag} {t}{}`", self.bare_unit),
            );
            return Ok(Dur(d));
        }
        t.parse::<Dur>().map_err(|e| invalid(cmd, arg, t, &e))
    }
}

/// A [`Pct`] parser for flags that accepted a bare number as a percentage before the one
/// grammar (`--max-errors 0.1` meaning 0.1%): still parsed so, with a warning.
#[derive(Debug, Clone, Copy)]
pub struct LegacyPct;

impl TypedValueParser for LegacyPct {
    type Value = Pct;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Pct, clap::Error> {
        let s = value.to_string_lossy();
        let t = s.trim();
        if is_bare_number(t) && t.parse::<f64>() != Ok(0.0) {
            let n = parse_pct_number(t).map_err(|e| invalid(cmd, arg, t, &e))?;
            let flag = flag_name(arg);
            deprecated(
                &format!("`{flag} {t}` (a percentage without %)"),
                &format!("`{flag} {t}%`"),
            );
            return Ok(Pct(n));
        }
        t.parse::<Pct>().map_err(|e| invalid(cmd, arg, t, &e))
    }
}

/// `--strategy` of the balancer, as a clap value enum over `balance::StrategyKind` (the
/// names are the config file's; the old aliases such as `p2c` and `rr` still parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategyArg(pub balance::StrategyKind);

impl clap::ValueEnum for StrategyArg {
    fn value_variants<'a>() -> &'a [Self] {
        use balance::StrategyKind as K;
        &[
            StrategyArg(K::RoundRobin),
            StrategyArg(K::WeightedRoundRobin),
            StrategyArg(K::LeastConnections),
            StrategyArg(K::P2cPeakEwma),
            StrategyArg(K::Random),
            StrategyArg(K::IpHash),
            StrategyArg(K::Sticky),
            StrategyArg(K::ConsistentHash),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        use balance::StrategyKind as K;
        let v = PossibleValue::new(self.0.name());
        Some(match self.0 {
            K::RoundRobin => v
                .help("each backend in turn")
                .aliases(["rr", "round-robin"]),
            K::WeightedRoundRobin => v
                .help("smooth weighted round robin (nginx)")
                .aliases(["wrr", "weighted-round-robin"]),
            K::LeastConnections => v
                .help("fewest in-flight requests per unit of weight")
                .aliases(["least_conn", "leastconn", "least-connections"]),
            K::P2cPeakEwma => v
                .help("power of two choices on peak-EWMA latency (default)")
                .aliases(["p2c", "ewma", "peak_ewma", "p2c-peak-ewma"]),
            K::Random => v.help("weighted random"),
            K::IpHash => v.help("Maglev hash of the client IP").alias("ip-hash"),
            K::Sticky => v.help("pin a client by cookie"),
            K::ConsistentHash => v.help("Maglev hash of a request key").aliases([
                "maglev",
                "hash",
                "consistent-hash",
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_display_as_written() {
        assert_eq!("30s".parse::<Dur>().unwrap(), Dur::secs(30));
        assert_eq!("500ms".parse::<Dur>().unwrap(), Dur::millis(500));
        assert_eq!("2m".parse::<Dur>().unwrap(), Dur::secs(120));
        assert_eq!("0".parse::<Dur>().unwrap(), Dur::secs(0));
        let e = "5".parse::<Dur>().unwrap_err();
        assert!(e.contains("needs a unit"), "{e}");
        assert!("fast".parse::<Dur>().is_err());
        for (d, s) in [
            (Dur::secs(30), "30s"),
            (Dur::secs(120), "2m"),
            (Dur::millis(250), "250ms"),
            (Dur::millis(1500), "1500ms"),
            (Dur::secs(0), "0s"),
            (Dur::secs(7200), "2h"),
        ] {
            assert_eq!(d.to_string(), s);
            assert_eq!(s.parse::<Dur>().unwrap(), d, "round trip of {s}");
        }
        assert!(Dur::millis(1500).whole_secs("--startup").is_err());
        assert_eq!(Dur::secs(3).whole_secs("--startup").unwrap(), 3);
    }

    #[test]
    fn percentages_need_their_sign() {
        assert_eq!("5%".parse::<Pct>().unwrap(), Pct(5.0));
        assert_eq!("0.1%".parse::<Pct>().unwrap().fraction(), 0.001);
        assert_eq!("0".parse::<Pct>().unwrap(), Pct(0.0));
        let e = "5".parse::<Pct>().unwrap_err();
        assert!(e.contains("needs a % sign"), "{e}");
        assert!("101%".parse::<Pct>().is_err());
        assert!("-1%".parse::<Pct>().is_err());
        assert_eq!(Pct(5.0).to_string(), "5%");
    }

    #[test]
    fn every_strategy_name_parses_through_the_value_enum() {
        use clap::ValueEnum;
        for k in balance::StrategyKind::ALL {
            assert_eq!(StrategyArg::from_str(k.name(), false).unwrap().0, k);
            // The library's own parser agrees on every alias the enum offers.
            let pv = StrategyArg(k).to_possible_value().unwrap();
            for alias in pv.get_name_and_aliases() {
                assert_eq!(
                    alias.parse::<balance::StrategyKind>().unwrap(),
                    k,
                    "{alias}"
                );
            }
        }
        assert!(StrategyArg::from_str("fastest", false).is_err());
    }
}

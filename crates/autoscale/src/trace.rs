//! Demand traces: one line per second, requests per second.
//!
//! Format (CSV): `#` starts a comment (whole line or after the value); blank lines are
//! skipped; the first non-comment line may be a header (any line whose first field is not
//! a number, e.g. `rps` or `t,rps`). Each data line is either `rps` or `t,rps` where `t`
//! must count seconds from 0 without gaps. Values must be finite and >= 0. Anything else
//! is refused with the line number. This module also generates the shipped traces
//! (`generate`) so they are reproducible; it never touches the file system itself except
//! through [`Trace::from_path`].

use std::path::Path;

/// The longest trace accepted, seconds (one week).
pub const MAX_TRACE_S: usize = 7 * 86_400;

/// A refused trace.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    /// A line could not be read as a demand sample.
    #[error("trace line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The trace holds no sample.
    #[error("trace has no samples")]
    Empty,
    /// The trace is longer than [`MAX_TRACE_S`].
    #[error("trace longer than {MAX_TRACE_S} seconds (line {line})")]
    TooLong {
        /// The first line past the limit.
        line: usize,
    },
    /// The file could not be read.
    #[error("cannot read trace {path}: {message}")]
    Io {
        /// The path given.
        path: String,
        /// The OS error.
        message: String,
    },
}

/// Demand per second, requests/s.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// `rps[t]` is the arrival rate during second `t`.
    pub rps: Vec<f64>,
}

impl Trace {
    /// Reads and parses a trace file.
    pub fn from_path(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses trace text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut rps = Vec::new();
        let mut seen_data_or_header = false;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let first_is_number = fields[0].parse::<f64>().is_ok();
            if !seen_data_or_header && !first_is_number {
                seen_data_or_header = true;
                if fields.len() > 2 {
                    return Err(line_err(
                        line_no,
                        "header has more than 2 columns (want `rps` or `t,rps`)",
                    ));
                }
                continue;
            }
            seen_data_or_header = true;
            let value = match fields.as_slice() {
                [v] => parse_value(line_no, v, "rps")?,
                [t, v] => {
                    let t = t.parse::<u64>().map_err(|_| {
                        line_err(
                            line_no,
                            format!("time `{t}` is not a whole number of seconds"),
                        )
                    })?;
                    if t != rps.len() as u64 {
                        return Err(line_err(
                            line_no,
                            format!("time {t} out of sequence: expected {}", rps.len()),
                        ));
                    }
                    parse_value(line_no, v, "rps")?
                }
                _ => {
                    return Err(line_err(
                        line_no,
                        format!("{} columns; want `rps` or `t,rps`", fields.len()),
                    ));
                }
            };
            if rps.len() >= MAX_TRACE_S {
                return Err(TraceError::TooLong { line: line_no });
            }
            rps.push(value);
        }
        if rps.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(Self { rps })
    }

    /// Length in seconds.
    pub fn len_s(&self) -> usize {
        self.rps.len()
    }

    /// Writes the trace as `t,rps` CSV with a comment line on top.
    pub fn to_csv(&self, comment: &str) -> String {
        let mut out = String::new();
        for c in comment.lines() {
            out.push_str("# ");
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("t,rps\n");
        for (t, v) in self.rps.iter().enumerate() {
            out.push_str(&format!("{t},{v:.1}\n"));
        }
        out
    }
}

fn line_err(line: usize, message: impl Into<String>) -> TraceError {
    TraceError::Line {
        line,
        message: message.into(),
    }
}

fn parse_value(line: usize, v: &str, what: &str) -> Result<f64, TraceError> {
    let x = v
        .parse::<f64>()
        .map_err(|_| line_err(line, format!("{what} `{v}` is not a number")))?;
    if !x.is_finite() || x < 0.0 {
        return Err(line_err(
            line,
            format!("{what} {v} must be finite and >= 0"),
        ));
    }
    Ok(x)
}

/// The shipped traces, generated by documented functions (no randomness: noise is the
/// simulator's job, from its seed).
pub mod generate {
    use super::Trace;

    /// Names of the shipped traces, in report order.
    pub const NAMES: [&str; 4] = ["step", "sine", "flash-crowd", "daily"];

    /// A shipped trace by name, with its one-line description.
    pub fn by_name(name: &str) -> Option<(Trace, &'static str)> {
        Some(match name {
            "step" => (
                step(),
                "step 10x: 100 rps for 300 s, 1000 rps for 600 s, 100 rps for 600 s",
            ),
            "sine" => (sine(), "sine: 300 +- 250 rps, period 600 s, 1800 s"),
            "flash-crowd" => (
                flash_crowd(),
                "flash crowd: 150 rps, 20 s ramp to 1500 rps at 300 s, 120 s plateau, 300 s exponential decay, 1500 s",
            ),
            "daily" => (
                daily(),
                "daily: 24 h pattern compressed to 7200 s (300 s per hour), 3 days, 40-800 rps",
            ),
            _ => return None,
        })
    }

    /// 100 rps for 300 s, 1000 rps for 600 s, 100 rps for 600 s.
    pub fn step() -> Trace {
        let rps = (0..1500)
            .map(|t| {
                if (300..900).contains(&t) {
                    1000.0
                } else {
                    100.0
                }
            })
            .collect();
        Trace { rps }
    }

    /// 300 + 250 sin(2 pi t / 600) rps for 1800 s.
    pub fn sine() -> Trace {
        let rps = (0..1800)
            .map(|t| 300.0 + 250.0 * (2.0 * std::f64::consts::PI * t as f64 / 600.0).sin())
            .collect();
        Trace { rps }
    }

    /// 150 rps; from 300 s a 20 s linear ramp to 1500 rps; 120 s plateau; then an
    /// exponential decay back to 150 (time constant 60 s); 1500 s in all.
    pub fn flash_crowd() -> Trace {
        let base = 150.0;
        let peak = 1500.0;
        let rps = (0..1500)
            .map(|t| {
                let t = t as f64;
                if t < 300.0 {
                    base
                } else if t < 320.0 {
                    base + (peak - base) * (t - 300.0) / 20.0
                } else if t < 440.0 {
                    peak
                } else {
                    base + (peak - base) * (-(t - 440.0) / 60.0).exp()
                }
            })
            .collect();
        Trace { rps }
    }

    /// A working-day curve compressed to 7200 s per day (300 s per hour), three days:
    /// night trough 40 rps, morning rise, lunch peak 800 rps, afternoon plateau, evening
    /// fall. Piecewise linear between hourly points.
    pub fn daily() -> Trace {
        const HOURLY: [f64; 25] = [
            60.0, 45.0, 40.0, 40.0, 45.0, 60.0, 120.0, 300.0, 550.0, 650.0, 700.0, 760.0, 800.0,
            740.0, 680.0, 660.0, 640.0, 600.0, 480.0, 360.0, 260.0, 180.0, 120.0, 80.0, 60.0,
        ];
        let per_hour = 300usize;
        let day = 24 * per_hour;
        let rps = (0..3 * day)
            .map(|t| {
                let in_day = t % day;
                let h = in_day / per_hour;
                let frac = (in_day % per_hour) as f64 / per_hour as f64;
                HOURLY[h] + (HOURLY[h + 1] - HOURLY[h]) * frac
            })
            .collect();
        Trace { rps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_timed_lines_with_header_and_comments() {
        let t = Trace::parse("# a comment\nrps\n10\n 20.5 # trailing\n\n30\n").unwrap();
        assert_eq!(t.rps, vec![10.0, 20.5, 30.0]);
        let t = Trace::parse("t,rps\n0,5\n1,6\n").unwrap();
        assert_eq!(t.rps, vec![5.0, 6.0]);
    }

    #[test]
    fn refuses_bad_lines_naming_the_line() {
        let cases = [
            ("rps\n10\nabc\n", 3, "not a number"),
            ("10\n-1\n", 2, ">= 0"),
            ("10\nNaN\n", 2, "finite"),
            ("t,rps\n0,1\n2,1\n", 3, "out of sequence"),
            ("1,2,3\n", 1, "columns"),
            ("rps\n5\nrps\n", 3, "not a number"),
            ("0,1\n1.5,2\n", 2, "whole number"),
        ];
        for (text, line, needle) in cases {
            match Trace::parse(text) {
                Err(TraceError::Line { line: l, message }) => {
                    assert_eq!(l, line, "{text:?}: {message}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected a line error, got {other:?}"),
            }
        }
        assert_eq!(Trace::parse("# nothing\nrps\n"), Err(TraceError::Empty));
    }

    #[test]
    fn generated_traces_round_trip_through_csv() {
        for name in generate::NAMES {
            let (t, desc) = generate::by_name(name).unwrap();
            let back = Trace::parse(&t.to_csv(desc)).unwrap();
            assert_eq!(back.len_s(), t.len_s());
            for (a, b) in back.rps.iter().zip(&t.rps) {
                assert!((a - b).abs() <= 0.05 + 1e-9);
            }
        }
    }
}

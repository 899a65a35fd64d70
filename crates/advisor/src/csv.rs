//! Sweeps kept as CSV, the way capacity data usually is: a header naming the columns,
//! then one measured level per line.
//!
//! Accepted column names (case, spaces, `_`, `-`, `/` and quotes ignored):
//! - the level: `n`, `load`, `concurrency`, `users`, `clients`, `vusers` (a concurrency
//!   sweep; `load` is the R `usl` package's name, `concurrency` usl4j's);
//!   `instances`, `nodes`, `servers`, `replicas`, `pods` (an instance sweep);
//!   `processors`, `cpus`, `cores`, `workers`, `threads` (a workers sweep, i.e. scale up;
//!   `processors` is the R package's raytracer data set).
//! - throughput, req/s: `throughput`, `throughput_rps`, `x`, `tput`, `rps`, `req/s`,
//!   `qps`, `tps`.
//! - optional: `p99_ms` (or `p99`, milliseconds), `errors_pct` (or `error_pct`).
//!
//! Other columns are ignored and listed in the notes (so a typo is visible); an empty
//! first column name is R's `write.csv` row-name column. Fields may be quoted; `NA` or an
//! empty field is a missing optional value. Comma, semicolon or tab separated, chosen by
//! the header. Lines starting with `#` and blank lines are skipped.
//!
//! Must never: guess a number. Every refusal names the line and the column.

use crate::AdvisorError;
use crate::sweep::{Sweep, SweepKind, SweepPoint};

/// A sweep read from CSV, with what the reader decided along the way.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSweep {
    /// The sweep.
    pub sweep: Sweep,
    /// The header's name for the level column, as written.
    pub level_column: String,
    /// The header's name for the throughput column, as written.
    pub throughput_column: String,
    /// Columns present but not used, as written.
    pub ignored_columns: Vec<String>,
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Level(SweepKind),
    Throughput,
    P99,
    ErrorsPct,
    RowNames,
    Other,
}

fn classify(name: &str, index: usize) -> Column {
    let key: String = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '%')
        .flat_map(char::to_lowercase)
        .collect();
    match key.as_str() {
        "" if index == 0 => Column::RowNames,
        "n" | "load" | "concurrency" | "users" | "clients" | "vusers" => {
            Column::Level(SweepKind::Concurrency)
        }
        "instances" | "nodes" | "servers" | "replicas" | "pods" => {
            Column::Level(SweepKind::Instances)
        }
        "processors" | "cpus" | "cores" | "workers" | "threads" => {
            Column::Level(SweepKind::Workers)
        }
        "throughput" | "throughputrps" | "x" | "tput" | "rps" | "reqs" | "qps" | "tps" => {
            Column::Throughput
        }
        "p99ms" | "p99" => Column::P99,
        "errorspct" | "errorpct" | "errors%" => Column::ErrorsPct,
        _ => Column::Other,
    }
}

fn split(line: &str, sep: char) -> Vec<String> {
    line.split(sep)
        .map(|f| {
            let f = f.trim();
            f.strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(f)
                .trim()
                .to_string()
        })
        .collect()
}

/// Parses a CSV sweep. `kind` overrides the kind the level column's name implies.
pub fn parse(text: &str, kind: Option<SweepKind>) -> Result<CsvSweep, AdvisorError> {
    let bad = |m: String| Err(AdvisorError::BadInput(format!("sweep CSV: {m}")));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start_matches('\u{feff}').trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return bad("empty: expected a header line such as `n,throughput,p99_ms`".into());
    };
    let sep = [',', ';', '\t']
        .into_iter()
        .find(|&c| header.contains(c))
        .unwrap_or(',');
    let names = split(header, sep);
    let cols: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(i, n)| classify(n, i))
        .collect();
    if names
        .iter()
        .zip(&cols)
        .any(|(n, c)| n.parse::<f64>().is_ok() && matches!(c, Column::Other | Column::RowNames))
    {
        return bad(format!(
            "line {header_line}: the first line must be a header naming the columns (e.g. `n,throughput,p99_ms`), found `{header}`"
        ));
    }
    let find = |want: &dyn Fn(Column) -> bool, what: &str| -> Result<Option<usize>, AdvisorError> {
        let hits: Vec<usize> = (0..cols.len()).filter(|&i| want(cols[i])).collect();
        match hits.as_slice() {
            [] => Ok(None),
            [i] => Ok(Some(*i)),
            [a, b, ..] => Err(AdvisorError::BadInput(format!(
                "sweep CSV: line {header_line}: columns {} ({}) and {} ({}) both name the {what}",
                a + 1,
                names[*a],
                b + 1,
                names[*b]
            ))),
        }
    };
    let level = find(&|c| matches!(c, Column::Level(_)), "load level")?;
    let tput = find(&|c| c == Column::Throughput, "throughput")?;
    let p99 = find(&|c| c == Column::P99, "p99 latency")?;
    let errs = find(&|c| c == Column::ErrorsPct, "error percentage")?;
    let (Some(level), Some(tput)) = (level, tput) else {
        return bad(format!(
            "line {header_line}: the header `{header}` needs a load-level column (n, load, concurrency, instances, processors, ...) and a throughput column (throughput, x, tput, ...)"
        ));
    };
    let Column::Level(named_kind) = cols[level] else {
        unreachable!("level column classified as a level")
    };
    let mut points = Vec::new();
    for (line_no, line) in lines {
        let fields = split(line, sep);
        if fields.len() != names.len() {
            return bad(format!(
                "line {line_no}: {} field(s), but the header has {} ({})",
                fields.len(),
                names.len(),
                names.join(&sep.to_string())
            ));
        }
        let number = |i: usize, required: bool| -> Result<Option<f64>, AdvisorError> {
            let raw = fields[i].as_str();
            let at = format!("line {line_no}, column {} ({})", i + 1, names[i]);
            if raw.is_empty() || raw.eq_ignore_ascii_case("na") {
                return if required {
                    Err(AdvisorError::BadInput(format!(
                        "sweep CSV: {at}: missing value"
                    )))
                } else {
                    Ok(None)
                };
            }
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(AdvisorError::BadInput(format!(
                    "sweep CSV: {at}: `{raw}` is not a number"
                ))),
            }
        };
        let n = number(level, true)?.expect("required");
        let x = number(tput, true)?.expect("required");
        let point = SweepPoint {
            n,
            throughput_rps: x,
            p99_ms: p99.map(|i| number(i, false)).transpose()?.flatten(),
            errors_pct: errs.map(|i| number(i, false)).transpose()?.flatten(),
            tiers: None,
        };
        let col_of = |field: &str| match field {
            "n" => level,
            "throughput_rps" => tput,
            "p99_ms" => p99.unwrap_or(level),
            _ => errs.unwrap_or(level),
        };
        if let Err((field, why)) = crate::sweep::check_point(&point) {
            let i = col_of(field);
            return bad(format!(
                "line {line_no}, column {} ({}): {why}",
                i + 1,
                names[i]
            ));
        }
        points.push(point);
    }
    if points.is_empty() {
        return bad(format!(
            "no data lines after the header on line {header_line}"
        ));
    }
    let ignored_columns = names
        .iter()
        .zip(&cols)
        .filter(|(_, c)| **c == Column::Other)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(CsvSweep {
        sweep: Sweep {
            kind: kind.unwrap_or(named_kind),
            points,
            p99_bound_ms: None,
            stateless: None,
        },
        level_column: names[level].clone(),
        throughput_column: names[tput].clone(),
        ignored_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_accepted_header_set() {
        for (header, kind) in [
            ("n,throughput,p99_ms", SweepKind::Concurrency),
            ("load,throughput", SweepKind::Concurrency),
            ("concurrency,throughput", SweepKind::Concurrency),
            ("N,X", SweepKind::Concurrency),
            ("processors,tput", SweepKind::Workers),
            ("Instances,Throughput RPS,P99 (ms)", SweepKind::Instances),
            ("\"\",\"load\",\"throughput\"", SweepKind::Concurrency),
        ] {
            let cols = header.split(',').count();
            let row = |a: &str, b: &str| {
                let mut f = vec![a.to_string(), b.to_string()];
                if header.starts_with('"') {
                    f.insert(0, "\"1\"".into());
                } else if cols == 3 {
                    f.push("4.5".into());
                }
                f.join(",")
            };
            let text = format!("{header}\n{}\n{}\n", row("1", "100"), row("2", "180.5"));
            let c = parse(&text, None).unwrap_or_else(|e| panic!("{header}: {e}"));
            assert_eq!(c.sweep.kind, kind, "{header}");
            assert_eq!(c.sweep.points.len(), 2, "{header}");
            assert_eq!(c.sweep.points[1].n, 2.0);
            assert_eq!(c.sweep.points[1].throughput_rps, 180.5);
            assert!(
                c.ignored_columns.is_empty(),
                "{header}: {:?}",
                c.ignored_columns
            );
        }
    }

    #[test]
    fn semicolons_tabs_comments_and_optional_columns() {
        let c = parse(
            "# measured 2026-12-01\nn;throughput;p99_ms;timestamp\n1;10;NA;a\n\n2;19;;b\r\n",
            Some(SweepKind::Instances),
        )
        .unwrap();
        assert_eq!(c.sweep.kind, SweepKind::Instances);
        assert_eq!(c.sweep.points[0].p99_ms, None);
        assert_eq!(c.ignored_columns, vec!["timestamp".to_string()]);
        let t = parse("n\tthroughput\n1\t5\n", None).unwrap();
        assert_eq!(t.sweep.points[0].throughput_rps, 5.0);
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = |text: &str| parse(text, None).unwrap_err().to_string();
        assert!(
            e("n,throughput\n1,10\n2,abc\n")
                .contains("line 3, column 2 (throughput): `abc` is not a number")
        );
        assert!(
            e("n,throughput\n1,10\n2,-5\n").contains("line 3, column 2 (throughput): must be >= 0")
        );
        assert!(e("n,throughput\n0,10\n").contains("line 2, column 1 (n): must be > 0"));
        assert!(e("n,throughput\n1,10,3\n").contains("line 2: 3 field(s), but the header has 2"));
        assert!(e("n,throughput\n1,\n").contains("line 2, column 2 (throughput): missing value"));
        assert!(e("n,throughput,p99_ms\n1,10,-1\n").contains("line 2, column 3 (p99_ms)"));
        assert!(e("1,10\n2,20\n").contains("line 1: the first line must be a header"));
        assert!(e("n,latency\n1,10\n").contains("needs a load-level column"));
        assert!(
            e("n,load,throughput\n1,1,1\n")
                .contains("columns 1 (n) and 2 (load) both name the load level")
        );
        assert!(e("").contains("empty"));
        assert!(e("n,throughput\n").contains("no data lines"));
        assert!(e("n,throughput\n1,inf\n").contains("`inf` is not a number"));
    }
}

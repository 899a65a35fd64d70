//! SVG chart of a report: rate (scheduled and completed per second) and latency
//! (p50, p99, max per slice) over time, drawn with plotters' SVG backend.
//!
//! Reads a finished [`Report`] only; it must never be called on the hot path.

use std::path::Path;

use plotters::prelude::*;

use crate::LoadError;
use crate::report::Report;

/// Writes the chart of `report` to `path` (SVG).
pub fn write_svg(report: &Report, path: &Path) -> Result<(), LoadError> {
    draw(report, path).map_err(|e| LoadError::Output {
        path: path.display().to_string(),
        reason: e,
    })
}

fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let slice_s = report.slice_ms as f64 / 1e3;
    let t_end = report
        .slices
        .last()
        .map(|s| s.t_s + slice_s)
        .unwrap_or(report.duration_s)
        .max(slice_s);
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(360);
    let rate_max = report
        .slices
        .iter()
        .map(|s| (s.scheduled as f64 / slice_s).max(s.rps))
        .fold(1.0, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} rate, requests/s ({})",
                report.mode,
                report.targets.join(", ")
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_end, 0f64..rate_max)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("req/s")
        .draw()
        .map_err(|e| err(&e))?;
    if report.mode == "open-loop" {
        c.draw_series(LineSeries::new(
            report
                .slices
                .iter()
                .map(|s| (s.t_s, s.scheduled as f64 / slice_s)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("scheduled")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    c.draw_series(LineSeries::new(
        report.slices.iter().map(|s| (s.t_s, s.rps)),
        &GREEN,
    ))
    .map_err(|e| err(&e))?
    .label("completed")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;

    let lat_max = report.slices.iter().map(|s| s.max_ms).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "latency per slice, ms (from intended send time in open loop)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_end, 0f64..lat_max)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    for (name, color, f) in [
        (
            "p50",
            GREEN,
            (|s: &crate::SliceReport| s.p50_ms) as fn(&crate::SliceReport) -> f64,
        ),
        ("p99", RED, |s| s.p99_ms),
        ("max", BLACK, |s| s.max_ms),
    ] {
        c.draw_series(LineSeries::new(
            report.slices.iter().map(|s| (s.t_s, f(s))),
            &color,
        ))
        .map_err(|e| err(&e))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

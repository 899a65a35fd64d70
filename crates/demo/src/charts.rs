//! SVG charts for the report (plotters' SVG backend: no fonts or system libraries).

use std::path::Path;

use plotters::prelude::*;

use crate::DemoError;
use crate::report::DemoReport;

fn err<E: std::fmt::Display>(e: E) -> DemoError {
    DemoError::Step(format!("chart: {e}"))
}

/// Writes every chart whose act ran.
pub fn write_all(r: &DemoReport, dir: &Path) -> Result<(), DemoError> {
    if let Some(a) = &r.act1 {
        let pts: Vec<(f64, f64)> = a
            .points
            .iter()
            .map(|p| (p.concurrency as f64, p.throughput_rps))
            .collect();
        let p99: Vec<(f64, f64)> = a
            .points
            .iter()
            .map(|p| (p.concurrency as f64, p.p99_ms))
            .collect();
        two_series(
            &dir.join("act1-knee.svg"),
            "Act 1: one instance, throughput and p99 vs concurrency",
            "concurrency",
            ("req/s", &pts),
            ("p99 ms", &p99),
            None,
            None,
        )?;
    }
    if let Some(a) = &r.act3 {
        let pts: Vec<(f64, f64)> = a
            .runs
            .iter()
            .map(|p| (p.n as f64, p.throughput_rps))
            .collect();
        let curve: Option<Vec<(f64, f64)>> = a.usl.as_ref().ok().map(|f| {
            let top = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 2.0;
            (0..=100)
                .map(|i| 1.0 + (top - 1.0) * i as f64 / 100.0)
                .map(|n| (n, f.predict(n).x))
                .collect()
        });
        let p99: Vec<(f64, f64)> = a.runs.iter().map(|p| (p.n as f64, p.p99_ms)).collect();
        two_series(
            &dir.join("act3-scale-out.svg"),
            "Act 3: throughput vs instances (line: USL fit)",
            "instances",
            ("req/s", &pts),
            ("p99 ms", &p99),
            curve.as_deref(),
            None,
        )?;
    }
    if let Some(a) = &r.act6 {
        let rps: Vec<(f64, f64)> = a.slices.iter().map(|s| (s.0, s.1)).collect();
        let errs: Vec<(f64, f64)> = a.slices.iter().map(|s| (s.0, s.2)).collect();
        two_series(
            &dir.join("act6-failure.svg"),
            &format!(
                "Act 6: instance killed at {:.1} s: completed req/s and failures per second",
                a.killed_at_s
            ),
            "seconds",
            ("req/s", &rps),
            ("failed/s", &errs),
            None,
            Some((a.killed_at_s, "instance killed")),
        )?;
    }
    if let Some(a) = &r.act7 {
        let inst: Vec<(f64, f64)> = a.timeline.iter().map(|s| (s.0, s.1)).collect();
        let p99: Vec<(f64, f64)> = a.timeline.iter().map(|s| (s.0, s.3)).collect();
        two_series(
            &dir.join("act7-spike.svg"),
            "Act 7: 10x step: instances ready and p99 over time",
            "seconds",
            ("instances", &inst),
            ("p99 ms", &p99),
            None,
            Some((a.step_at_s, "10x step")),
        )?;
    }
    Ok(())
}

/// A chart with a left-axis series (points and line), a right-axis series, and an
/// optional fitted curve on the left axis.
fn two_series(
    path: &Path,
    title: &str,
    x_label: &str,
    left: (&str, &[(f64, f64)]),
    right: (&str, &[(f64, f64)]),
    curve: Option<&[(f64, f64)]>,
    marker: Option<(f64, &str)>,
) -> Result<(), DemoError> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let all_x = left
        .1
        .iter()
        .chain(right.1)
        .chain(curve.unwrap_or(&[]))
        .map(|p| p.0);
    let x_max = all_x.fold(1.0, f64::max) * 1.05;
    let y_left = left
        .1
        .iter()
        .chain(curve.unwrap_or(&[]))
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.15;
    let y_right = right
        .1
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_left)
        .map_err(err)?
        .set_secondary_coord(0f64..x_max, 0f64..y_right);
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(left.0)
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc(right.0)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            left.1.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label(left.0)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(left.1.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(err)?;
    if let Some(c) = curve {
        chart
            .draw_series(LineSeries::new(c.iter().copied(), GREEN.stroke_width(1)))
            .map_err(err)?
            .label("USL fit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    }
    chart
        .draw_secondary_series(LineSeries::new(
            right.1.iter().copied().filter(|p| p.1.is_finite()),
            RED.stroke_width(2),
        ))
        .map_err(err)?
        .label(right.0)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    if let Some((x, label)) = marker {
        chart
            .draw_series(LineSeries::new(
                [(x, 0.0), (x, y_left)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

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
            (None, None),
        )?;
    }
    if let Some(a) = &r.act3 {
        // Throughput against the CPU the instances were given: act 3 (N envelopes) and
        // act 2 (one bigger envelope) on the same axis, with linear scaling from one
        // unit for reference. Without envelopes, against the instance count.
        let x = |run: &crate::report::Run| match run.envelope {
            Some(e) => e.cpu * run.n as f64,
            None => run.n as f64,
        };
        let out: Vec<(f64, f64)> = a.runs.iter().map(|p| (x(p), p.throughput_rps)).collect();
        let up: Vec<(f64, f64)> = r
            .act2
            .as_ref()
            .filter(|_| a.envelope.is_some())
            .map(|b| {
                b.runs
                    .iter()
                    .filter_map(|p| Some((p.envelope?.cpu, p.throughput_rps)))
                    .collect()
            })
            .unwrap_or_default();
        let linear: Vec<(f64, f64)> = match out.first() {
            Some(&(x0, y0)) if x0 > 0.0 => out.iter().map(|&(xi, _)| (xi, y0 * xi / x0)).collect(),
            _ => Vec::new(),
        };
        let x_label = if a.envelope.is_some() {
            "CPU given to the instances (cores)"
        } else {
            "instances"
        };
        lines(
            &dir.join("act3-scale-out.svg"),
            "Act 3: scale out (N envelopes) vs scale up (one bigger envelope), req/s",
            x_label,
            "req/s",
            &[
                ("scale out: N instances", &out, BLUE),
                ("scale up: 1 instance", &up, RED),
                ("linear from 1 instance", &linear, GREEN),
            ],
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
            (Some((a.killed_at_s, "instance killed")), None),
        )?;
    }
    if let Some(a) = &r.act7 {
        // Instances only where the fleet was sampled: the shutdown is not "0 instances".
        let inst: Vec<(f64, f64)> = a
            .timeline
            .iter()
            .filter_map(|s| Some((s.t_s, s.instances?)))
            .collect();
        let p99: Vec<(f64, f64)> = a.timeline.iter().map(|s| (s.t_s, s.p99_ms)).collect();
        two_series(
            &dir.join("act7-spike.svg"),
            &format!(
                "Act 7: {:.0} -> {:.0} req/s step: instances ready and p99 (SLO {:.0} ms)",
                a.base_rps, a.spike_rps, a.slo_p99_ms
            ),
            "seconds",
            ("instances ready", &inst),
            ("p99 ms", &p99),
            None,
            (Some((a.step_at_s, "step")), Some((a.slo_p99_ms, "p99 SLO"))),
        )?;
    }
    Ok(())
}

/// A vertical marker on the x axis and a horizontal line on the right axis, each labelled.
type Marks<'a> = (Option<(f64, &'a str)>, Option<(f64, &'a str)>);

/// A labelled series and its colour.
type Series<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

/// A chart with a left-axis series (points and line), a right-axis series, and an
/// optional fitted curve on the left axis.
fn two_series(
    path: &Path,
    title: &str,
    x_label: &str,
    left: (&str, &[(f64, f64)]),
    right: (&str, &[(f64, f64)]),
    curve: Option<&[(f64, f64)]>,
    (marker, right_hline): Marks,
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
        .chain(right_hline.map(|h| h.0))
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
    if let Some((y, label)) = right_hline {
        chart
            .draw_secondary_series(LineSeries::new(
                [(0.0, y), (x_max, y)],
                RED.mix(0.5).stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.5)));
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

/// Several series (points and lines) on one pair of axes; empty series are skipped.
fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), DemoError> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let all = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x_max, y_max) = all.fold((0.1f64, 1.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max * 1.08, 0f64..y_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    for &(label, pts, color) in series {
        if pts.is_empty() {
            continue;
        }
        let dashed = label.starts_with("linear");
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                color.stroke_width(if dashed { 1 } else { 2 }),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if !dashed {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

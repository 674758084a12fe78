//! SVG plots (plotters, SVG backend only):
//! - `latency_e2e_gen<N>.svg`: e2e latency per backend × scenario at one generation length — a box
//!   (type-7 quartiles, the median as a line, whiskers to min and max) with every measured run as a
//!   dot beside it;
//! - `scaling_<trial>.svg`: ln(params) vs ln(latency), the fitted line and the band spanned by the
//!   slope's CI (pivoting at the points' centroid), titled with slope, CI, R² and the TR121 verdict.
//!
//! Quartiles come from [`crate::stats::quantile`], not plotters' own box plot, so the plot shows
//! the same numbers as the report's tables.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::ReportError;
use crate::stats;

use super::analysis::LatencyRow;
use super::scaling::ScalingFit;

const BOX: RGBColor = RGBColor(70, 110, 170);
const DOT: RGBColor = RGBColor(200, 80, 40);

fn plot_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// File-name-safe form of a trial name (`scaling.fit_ci::ort-cpu` → `scaling.fit_ci--ort-cpu`).
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .replace("--", "-")
}

/// One latency plot per generation length; returns the files written.
pub fn write_latency_plots(dir: &Path, rows: &[LatencyRow]) -> Result<Vec<PathBuf>, ReportError> {
    let mut gens: Vec<usize> = rows.iter().map(|r| r.gen_tokens).collect();
    gens.sort_unstable();
    gens.dedup();
    let mut written = Vec::new();
    for gen in gens {
        let group: Vec<&LatencyRow> = rows.iter().filter(|r| r.gen_tokens == gen).collect();
        let path = dir.join(format!("latency_e2e_gen{gen}.svg"));
        let svg = latency_svg(&group, gen).map_err(|e| plot_err(&path, e))?;
        super::write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn latency_svg(rows: &[&LatencyRow], gen: usize) -> Result<String, Box<dyn std::error::Error>> {
    let n = rows.len();
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            if r.variant.is_empty() {
                format!("{} · {}", r.backend, r.scenario)
            } else {
                format!("{} · {} · {}", r.backend, r.scenario, r.variant)
            }
        })
        .collect();
    let width = (180 + 150 * n).max(640) as u32;
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| r.e2e_ms.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("End-to-end latency, {gen} generated tokens (measured runs only)"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, (lo - pad)..(hi + pad))?;
        // Category names at integer positions; plotters places ticks at round numbers, so asking for
        // a tick every half unit puts one on every category (the others stay unlabelled).
        let label_of = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&label_of)
            .y_desc("e2e latency (ms)")
            .x_desc("backend · scenario (box: quartiles and median; whiskers: min–max; dots: runs)")
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let x = i as f64;
            let q = |p: f64| stats::quantile(&r.e2e_ms, p).unwrap_or(f64::NAN);
            let (q1, q3) = (q(0.25), q(0.75));
            chart.draw_series([Rectangle::new(
                [(x - 0.22, q1), (x + 0.02, q3)],
                BOX.mix(0.25).filled(),
            )])?;
            chart.draw_series([Rectangle::new(
                [(x - 0.22, q1), (x + 0.02, q3)],
                BOX.stroke_width(1),
            )])?;
            chart.draw_series([PathElement::new(
                vec![(x - 0.22, r.e2e.median), (x + 0.02, r.e2e.median)],
                BOX.stroke_width(3),
            )])?;
            for (a, b) in [(r.e2e.min, q1), (q3, r.e2e.max)] {
                chart.draw_series([PathElement::new(
                    vec![(x - 0.10, a), (x - 0.10, b)],
                    BOX.stroke_width(1),
                )])?;
            }
            for end in [r.e2e.min, r.e2e.max] {
                chart.draw_series([PathElement::new(
                    vec![(x - 0.16, end), (x - 0.04, end)],
                    BOX.stroke_width(1),
                )])?;
            }
            // Strip: every run, spread deterministically to the right of the box.
            let k = r.e2e_ms.len().max(1) as f64;
            chart.draw_series(r.e2e_ms.iter().enumerate().map(|(j, &v)| {
                Circle::new(
                    (x + 0.08 + 0.14 * (j as f64 + 0.5) / k, v),
                    3,
                    DOT.mix(0.8).filled(),
                )
            }))?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// One plot per scaling fit; returns the files written.
pub fn write_scaling_plots(dir: &Path, fits: &[ScalingFit]) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for f in fits {
        let path = dir.join(format!("scaling_{}.svg", file_stem(&f.trial)));
        let svg = scaling_svg(f).map_err(|e| plot_err(&path, e))?;
        super::write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn scaling_svg(f: &ScalingFit) -> Result<String, Box<dyn std::error::Error>> {
    let xs: Vec<f64> = f.points.iter().map(|p| p.params.ln()).collect();
    let ys: Vec<f64> = f.points.iter().map(|p| p.latency_ms.ln()).collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let xpad = ((x1 - x0) * 0.08).max(0.05);
    // Room on the right for the last point's label.
    let (x0, x1) = (x0 - xpad, x1 + 2.0 * xpad);
    // The line is straight and the band's edges bend only at the centroid: three x values suffice
    // (more would only add pixel-rounding wiggles).
    let cx = f.centroid().0;
    let grid: Vec<f64> = [x0, cx, x1]
        .into_iter()
        .filter(|x| (x0..=x1).contains(x))
        .collect();
    let band: Vec<(f64, f64)> = grid.iter().map(|&x| f.band(x)).collect();
    let all_y = ys
        .iter()
        .copied()
        .chain(band.iter().flat_map(|&(a, b)| [a, b]));
    let (y0, y1) = all_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let ypad = ((y1 - y0) * 0.08).max(0.05);
    let r2 = f
        .r_squared
        .map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"));
    let title = format!(
        "{}: slope {:.3}, 95% CIs span [{:.3}, {:.3}], R² {r2}: {}",
        f.trial,
        f.slope,
        f.slope_ci.0,
        f.slope_ci.1,
        f.verdict_words()
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - ypad)..(y1 + ypad))?;
        chart
            .configure_mesh()
            .x_desc("ln(parameters)")
            .y_desc("ln(latency ms)")
            .draw()?;
        let mut outline: Vec<(f64, f64)> = grid
            .iter()
            .zip(&band)
            .map(|(&x, &(lo, _))| (x, lo))
            .collect();
        outline.extend(grid.iter().zip(&band).rev().map(|(&x, &(_, hi))| (x, hi)));
        chart
            .draw_series([Polygon::new(outline, BOX.mix(0.18).filled())])?
            .label("slope 95% CIs (t and bootstrap)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BOX.mix(0.3).filled()));
        chart
            .draw_series(LineSeries::new(
                grid.iter().map(|&x| (x, f.line(x))),
                BOX.stroke_width(2),
            ))?
            .label("OLS fit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BOX.stroke_width(2)));
        chart
            .draw_series(
                xs.iter()
                    .zip(&ys)
                    .map(|(&x, &y)| Circle::new((x, y), 5, DOT.filled())),
            )?
            .label("models")
            .legend(|(x, y)| Circle::new((x + 7, y), 4, DOT.filled()));
        chart.draw_series(
            f.points
                .iter()
                .zip(xs.iter().zip(&ys))
                .map(|(p, (&x, &y))| Text::new(p.label.clone(), (x, y), ("sans-serif", 12))),
        )?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(
            file_stem("scaling.fit_ci::ort-cpu::short"),
            "scaling.fit_ci-ort-cpu-short"
        );
        assert_eq!(file_stem("a/b c"), "a-b-c");
    }
}

//! The progress chart (`--svg`): a self-contained SVG written by hand, no plotting crate.
//!
//! One thin step line per leecher (fraction of the file verified against simulated time), the
//! mean over leechers as a thick line, a dashed vertical line at the Kumar–Ross bound and a
//! solid one at the makespan. Output depends only on the inputs, so it is reproducible.

use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 52.0;

/// A step of 1, 2 or 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * p
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Finite points with the fraction clamped to `[0, 1]` and time `>= 0`, sorted by time.
fn clean(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .filter(|(t, f)| t.is_finite() && f.is_finite())
        .map(|&(t, f)| (t.max(0.0), f.clamp(0.0, 1.0)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The mean over all series of their step functions (each is 0 before its first point), as
/// `(t, mean)` at every time any series changes, starting at `(0, 0)`.
fn mean_series(series: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let n = series.len();
    if n == 0 {
        return Vec::new();
    }
    let mut changes: Vec<(f64, usize, f64)> = series
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.iter().map(move |&(t, f)| (t, i, f)))
        .collect();
    changes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut current = vec![0.0; n];
    let mut sum = 0.0;
    let mut out = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < changes.len() {
        let t = changes[i].0;
        while i < changes.len() && changes[i].0 == t {
            let (_, s, f) = changes[i];
            sum += f - current[s];
            current[s] = f;
            i += 1;
        }
        out.push((t, sum / n as f64));
    }
    out
}

/// Pixel coordinates of a step line through `points`, skipping repeats, as a `points` value.
fn step_path(points: &[(f64, f64)], x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) -> String {
    let mut out = String::new();
    let mut last: Option<(f64, f64)> = None;
    let mut push = |px: f64, py: f64| {
        let p = ((px * 10.0).round() / 10.0, (py * 10.0).round() / 10.0);
        if last != Some(p) {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{:.1},{:.1}", p.0, p.1);
            last = Some(p);
        }
    };
    let mut prev = 0.0;
    push(x(0.0), y(0.0));
    for &(t, f) in points {
        push(x(t), y(prev));
        push(x(t), y(f));
        prev = f;
    }
    out
}

/// Renders the progress chart. `series` holds, per leecher, its name and `(seconds, fraction)`
/// samples; `bound_s` and `makespan_s` are marked with vertical lines (skipped if not finite).
/// Non-finite samples are ignored, so any input gives a valid document.
pub fn render_progress_svg(
    series: &[(String, Vec<(f64, f64)>)],
    bound_s: f64,
    makespan_s: f64,
) -> String {
    let cleaned: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, s)| clean(s)).collect();
    let finite_pos = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let latest = cleaned
        .iter()
        .flat_map(|s| s.last().map(|p| p.0))
        .fold(0.0, f64::max);
    let span = latest
        .max(finite_pos(bound_s))
        .max(finite_pos(makespan_s))
        .max(1e-6);
    let step = nice_step(span / 5.0);
    let x_max = (span / step).ceil().max(1.0) * step;

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / x_max * plot_w;
    let y = |f: f64| TOP + (1.0 - f) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="20" font-size="14">Leecher progress ({} leechers; thick: mean)</text>"##,
        series.len()
    );

    // Axes, grid and ticks.
    let _ = writeln!(
        svg,
        r##"<g class="axes" stroke="#999999" stroke-width="1">"##
    );
    let (x0, x1, y0, y1) = (x(0.0), x(x_max), y(0.0), y(1.0));
    let _ = writeln!(
        svg,
        r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}"/>"#
    );
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r##"<g class="ticks" fill="#333333">"##);
    let ticks = (x_max / step).round() as u32;
    for i in 0..=ticks {
        let t = f64::from(i) * step;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            y0 + 18.0,
            trim_number(t)
        );
    }
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"#,
            x0 - 6.0,
            y(f) + 4.0,
            i * 25
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated time (s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(svg, "</g>");

    // One thin line per leecher.
    let _ = writeln!(
        svg,
        r##"<g class="peers" fill="none" stroke="#4a90d9" stroke-width="0.75" stroke-opacity="0.4">"##
    );
    for ((name, _), points) in series.iter().zip(&cleaned) {
        let _ = writeln!(
            svg,
            r#"<polyline points="{}"><title>{}</title></polyline>"#,
            step_path(points, x, y),
            escape(name)
        );
    }
    let _ = writeln!(svg, "</g>");

    // The mean.
    if !cleaned.is_empty() {
        let _ = writeln!(
            svg,
            r##"<polyline class="mean" fill="none" stroke="#d62728" stroke-width="2.5" points="{}"><title>mean</title></polyline>"##,
            step_path(&mean_series(&cleaned)[1..], x, y)
        );
    }

    // Bound and makespan markers.
    for (value, class, label, dash) in [
        (
            bound_s,
            "bound",
            "Kumar–Ross bound",
            r#" stroke-dasharray="6 4""#,
        ),
        (makespan_s, "makespan", "makespan", ""),
    ] {
        if value.is_finite() && value >= 0.0 {
            let vx = x(value);
            let _ = writeln!(
                svg,
                r##"<line class="{class}" x1="{vx:.1}" y1="{y1:.1}" x2="{vx:.1}" y2="{y0:.1}" stroke="#333333" stroke-width="1.5"{dash}/>"##
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#333333">{label} {}s</text>"##,
                vx + 4.0,
                if class == "bound" {
                    y1 + 12.0
                } else {
                    y1 + 26.0
                },
                trim_number((value * 100.0).round() / 100.0)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// A number without trailing zeros: `2`, `2.5`, `0.25`.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest properly and that every element opened is closed.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "{tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_owned());
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    #[test]
    fn chart_has_the_expected_elements() {
        let series = vec![
            ("peer <1>".to_owned(), vec![(1.0, 0.5), (2.0, 1.0)]),
            ("peer 2".to_owned(), vec![(1.5, 0.25), (3.0, 1.0)]),
        ];
        let svg = render_progress_svg(&series, 1.8, 3.0);
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("<title>peer &lt;1&gt;</title>"));
        assert!(svg.contains(r#"class="mean""#));
        assert!(svg.contains(r#"<line class="bound""#));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("Kumar–Ross bound 1.8s"));
        assert!(svg.contains("makespan 3s"));
        assert_eq!(render_progress_svg(&series, 1.8, 3.0), svg, "deterministic");
    }

    #[test]
    fn mean_is_the_average_of_step_functions() {
        let m = mean_series(&[vec![(1.0, 0.5), (2.0, 1.0)], vec![(1.0, 0.25), (3.0, 1.0)]]);
        assert_eq!(m, [(0.0, 0.0), (1.0, 0.375), (2.0, 0.625), (3.0, 1.0)]);
    }

    #[test]
    fn degenerate_inputs_still_render() {
        for svg in [
            render_progress_svg(&[], f64::NAN, f64::INFINITY),
            render_progress_svg(
                &[("x".into(), vec![(f64::NAN, 0.5), (-1.0, 7.0)])],
                0.0,
                0.0,
            ),
        ] {
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
        assert_eq!(trim_number(2.0), "2");
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(41.0), 50.0);
    }
}

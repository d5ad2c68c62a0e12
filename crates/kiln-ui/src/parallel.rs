//! The compare view's parallel-coordinates plot, drawn on the server as SVG: one vertical
//! axis per numeric param and one for the chosen metric, one polyline per run, coloured by
//! the metric (low blue, high red), so a few hundred runs cost no script at all.

use maud::{Markup, html};

/// One run's values, in axis order (`None`: the run has no value there).
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

const W: f64 = 960.0;
const H: f64 = 360.0;
const PAD_X: f64 = 70.0;
const PAD_TOP: f64 = 40.0;
const PAD_BOTTOM: f64 = 30.0;

fn fmt(v: f64) -> String {
    if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The SVG; `axes` are the axis names (the metric last), every line as long as `axes`.
pub fn svg(axes: &[String], lines: &[Line]) -> Markup {
    let n = axes.len().max(2);
    let x_of = |i: usize| PAD_X + (W - 2.0 * PAD_X) * i as f64 / (n - 1) as f64;
    let ranges: Vec<(f64, f64)> = (0..axes.len())
        .map(|i| {
            let vals = lines.iter().filter_map(|l| l.values.get(i).copied().flatten());
            let (lo, hi) =
                vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
        })
        .collect();
    let y_of = |i: usize, v: f64| {
        let (lo, hi) = ranges[i];
        let f = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        PAD_TOP + (H - PAD_TOP - PAD_BOTTOM) * (1.0 - f)
    };
    let metric = axes.len().saturating_sub(1);
    let colour = |l: &Line| match l.values.get(metric).copied().flatten() {
        Some(v) => {
            let (lo, hi) = ranges[metric];
            let f = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            format!("rgb({},{},{})", (40.0 + 200.0 * f) as u8, 70, (230.0 - 190.0 * f) as u8)
        }
        None => "#8c959f".to_owned(),
    };
    html! {
        svg class="parallel" viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("Parallel coordinates of {} runs over {}", lines.len(), axes.join(", "))) {
            @for l in lines {
                @let pts: Vec<String> = l.values.iter().enumerate()
                    .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_of(i), y_of(i, v)))).collect();
                polyline points=(pts.join(" ")) fill="none" stroke=(colour(l)) stroke-width="1.5" stroke-opacity="0.8" {
                    title { (l.label) }
                }
            }
            @for (i, axis) in axes.iter().enumerate() {
                line x1=(x_of(i)) x2=(x_of(i)) y1=(PAD_TOP) y2=(H - PAD_BOTTOM) stroke="#1f2328" stroke-width="1" {}
                text x=(x_of(i)) y=(PAD_TOP - 22.0) text-anchor="middle" font-size="13" font-weight=(if i == metric { "700" } else { "400" }) { (axis) }
                text x=(x_of(i)) y=(PAD_TOP - 6.0) text-anchor="middle" font-size="11" fill="#57606a" { (fmt(ranges[i].1)) }
                text x=(x_of(i)) y=(H - PAD_BOTTOM + 16.0) text-anchor="middle" font-size="11" fill="#57606a" { (fmt(ranges[i].0)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_polyline_per_run_and_one_axis_per_name() {
        let axes = vec!["lr".to_owned(), "hidden".to_owned(), "val_accuracy".to_owned()];
        let lines = vec![
            Line { label: "a".into(), values: vec![Some(0.01), Some(32.0), Some(0.9)] },
            Line { label: "b".into(), values: vec![Some(0.1), None, Some(0.7)] },
        ];
        let out = svg(&axes, &lines).into_string();
        assert_eq!(out.matches("<polyline").count(), 2);
        assert_eq!(out.matches("<line ").count(), 3);
        assert!(out.contains(">val_accuracy<"));
    }
}

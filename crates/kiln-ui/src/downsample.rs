//! Server-side downsampling of metric series: M4 (the first, last, smallest and largest
//! point of each bucket of steps), so a chart shows every extreme and both ends of a series
//! of any length with at most [`MAX_POINTS`] points, and a zoom re-fetches the narrower
//! range at full resolution again.
//!
//! PostgreSQL does the bucketing for stored series (kiln-db's `runs::series_buckets`, with
//! the same [`bucket_of`] formula), so a million-point run never leaves the database
//! whole; [`m4`] is the same reduction in memory, and [`flatten`] turns buckets from
//! either into the points a chart draws.

use serde::Serialize;

/// At most this many points per series in one chart answer.
pub const MAX_POINTS: usize = 2000;

/// Buckets per series: each contributes at most four points.
pub const BUCKETS: usize = MAX_POINTS / 4;

/// One metric point: its step (an epoch for Kiln jobs), value and wall time (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: i64,
    pub value: f64,
    pub t: f64,
}

/// One bucket's four representative points. A bucket of one point has it four times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub first: Point,
    pub last: Point,
    pub min: Point,
    pub max: Point,
}

/// The bucket (0..`buckets`) of `step` in the inclusive range `lo..=hi`: equal widths of
/// steps. kiln-db's SQL computes exactly this (`floor((step - lo) * buckets / (hi - lo + 1))`).
pub fn bucket_of(step: i64, lo: i64, hi: i64, buckets: usize) -> usize {
    let width = (hi as f64 - lo as f64 + 1.0).max(1.0);
    let b = ((step as f64 - lo as f64) * buckets as f64 / width).floor();
    (b.max(0.0) as usize).min(buckets.saturating_sub(1))
}

/// M4 in memory: `points` in step order (those outside `lo..=hi` are skipped), reduced to
/// at most `buckets` buckets. Values order as PostgreSQL orders floats (NaN above every
/// number), so the SQL path and this one pick the same points.
pub fn m4(points: &[Point], lo: i64, hi: i64, buckets: usize) -> Vec<Bucket> {
    let mut out: Vec<(usize, Bucket)> = Vec::new();
    for p in points.iter().filter(|p| p.step >= lo && p.step <= hi) {
        let b = bucket_of(p.step, lo, hi, buckets);
        match out.last_mut() {
            Some((last_b, bucket)) if *last_b == b => {
                if p.step < bucket.first.step {
                    bucket.first = *p;
                }
                if p.step >= bucket.last.step {
                    bucket.last = *p;
                }
                if p.value.total_cmp(&bucket.min.value).is_lt() {
                    bucket.min = *p;
                }
                // Ties: the smallest value's first step, the largest value's last step, as
                // PostgreSQL's min/max of `[value, step]` arrays choose.
                if p.value.total_cmp(&bucket.max.value).is_ge() {
                    bucket.max = *p;
                }
            }
            _ => out.push((b, Bucket { first: *p, last: *p, min: *p, max: *p })),
        }
    }
    out.into_iter().map(|(_, b)| b).collect()
}

/// The points a chart draws from buckets in step order: each bucket's four points in step
/// order, every step once.
pub fn flatten(buckets: &[Bucket]) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::with_capacity(buckets.len() * 4);
    for b in buckets {
        let mut four = [b.first, b.min, b.max, b.last];
        four.sort_by_key(|p| p.step);
        for p in four {
            if out.last().is_none_or(|last| last.step != p.step) {
                out.push(p);
            }
        }
    }
    out
}

/// [`m4`] then [`flatten`] over a whole in-memory series (every step), to at most
/// `max_points` points.
pub fn downsample(points: &[Point], max_points: usize) -> Vec<Point> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    flatten(&m4(points, first.step, last.step, (max_points / 4).max(1)))
}

/// Which x-axis a chart wants: steps (epochs for Kiln jobs) or wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XAxis {
    #[default]
    Step,
    Time,
}

impl XAxis {
    pub fn parse(s: Option<&str>) -> XAxis {
        match s {
            Some("time") => XAxis::Time,
            _ => XAxis::Step,
        }
    }
}

/// The JSON a chart fetches (`GET /ui/runs/{id}/series.json`, `/ui/compare/series.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartData {
    pub x: XAxis,
    pub series: Vec<ChartSeries>,
}

/// One line of a chart. `steps` and `values` are parallel; with wall time asked for,
/// `times` are milliseconds after `t0` (Unix seconds), parallel too: small integers, so a
/// time axis costs a few bytes a point. Non-finite values (and unknown times) are `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartSeries {
    /// The metric's name.
    pub name: String,
    /// The legend: the metric, or the run for a compare chart.
    pub label: String,
    pub steps: Vec<i64>,
    /// Values as f32: the chart's resolution, and half the bytes of f64's digits.
    pub values: Vec<Option<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<Option<i64>>>,
    /// True when the range held more points than were sent (it was reduced).
    pub downsampled: bool,
}

impl ChartSeries {
    pub fn new(name: &str, label: &str, points: &[Point], x: XAxis, downsampled: bool) -> Self {
        let t0 = points.iter().map(|p| p.t).filter(|t| t.is_finite()).reduce(f64::min);
        let wall = x == XAxis::Time;
        ChartSeries {
            name: name.to_owned(),
            label: label.to_owned(),
            steps: points.iter().map(|p| p.step).collect(),
            values: points.iter().map(|p| p.value.is_finite().then_some(p.value as f32)).collect(),
            t0: if wall { Some(t0.unwrap_or(0.0)) } else { None },
            times: wall.then(|| {
                let t0 = t0.unwrap_or(0.0);
                points
                    .iter()
                    .map(|p| p.t.is_finite().then(|| ((p.t - t0) * 1000.0).round() as i64))
                    .collect()
            }),
            downsampled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: i64, f: impl Fn(i64) -> f64) -> Vec<Point> {
        (0..n).map(|s| Point { step: s, value: f(s), t: s as f64 }).collect()
    }

    #[test]
    fn output_is_bounded_whatever_the_input() {
        for n in [1, 3, 1999, 2000, 2001, 10_000, 1_000_000] {
            let pts = series(n, |s| ((s * 7919) % 1000) as f64);
            let out = downsample(&pts, MAX_POINTS);
            assert!(out.len() <= MAX_POINTS, "{n} points gave {}", out.len());
            assert!(out.windows(2).all(|w| w[0].step < w[1].step), "steps strictly ascend");
        }
    }

    #[test]
    fn keeps_both_endpoints_and_every_extreme() {
        let mut pts = series(1_000_000, |s| (s as f64 / 1000.0).sin());
        pts[123_457].value = 50.0; // a spike
        pts[876_543].value = -50.0; // a dip
        let out = downsample(&pts, MAX_POINTS);
        assert_eq!(out.first(), pts.first());
        assert_eq!(out.last(), pts.last());
        assert!(out.contains(&pts[123_457]), "the global maximum survives");
        assert!(out.contains(&pts[876_543]), "the global minimum survives");
        // Every bucket's extremes survive, not only the global ones: the drawn envelope is
        // the real one.
        let buckets = m4(&pts, 0, 999_999, BUCKETS);
        assert_eq!(buckets.len(), BUCKETS);
        for b in &buckets {
            assert!(out.contains(&b.min) && out.contains(&b.max));
        }
    }

    #[test]
    fn small_series_pass_through_unchanged() {
        let pts = series(1000, |s| s as f64 * 0.5);
        assert_eq!(downsample(&pts, MAX_POINTS), pts);
        assert!(downsample(&[], MAX_POINTS).is_empty());
    }

    #[test]
    fn a_range_keeps_only_its_steps_at_full_resolution() {
        let pts = series(1_000_000, |s| s as f64);
        let out = flatten(&m4(&pts, 5000, 5999, BUCKETS));
        assert_eq!(out.len(), 1000, "1,000 steps fit unreduced");
        assert_eq!(out.first().map(|p| p.step), Some(5000));
        assert_eq!(out.last().map(|p| p.step), Some(5999));
    }

    #[test]
    fn nan_orders_above_numbers_as_in_postgresql() {
        let mut pts = series(10, |s| s as f64);
        pts[4].value = f64::NAN;
        let b = m4(&pts, 0, 9, 1);
        assert!(b[0].max.value.is_nan());
        assert_eq!(b[0].min.step, 0);
        let json = ChartSeries::new("x", "x", &flatten(&b), XAxis::Step, true);
        assert!(json.values.contains(&None), "NaN is sent as null");
    }

    #[test]
    fn wall_times_are_millisecond_offsets() {
        let pts: Vec<Point> = (0..3)
            .map(|s| Point { step: s, value: 1.0, t: 1_700_000_000.25 + s as f64 * 1.5 })
            .collect();
        let s = ChartSeries::new("x", "x", &pts, XAxis::Time, false);
        assert_eq!(s.t0, Some(1_700_000_000.25));
        assert_eq!(s.times, Some(vec![Some(0), Some(1500), Some(3000)]));
        let s = ChartSeries::new("x", "x", &pts, XAxis::Step, false);
        assert_eq!((s.t0, s.times), (None, None), "no times unless asked");
    }

    #[test]
    fn bucket_of_covers_the_range_evenly() {
        assert_eq!(bucket_of(0, 0, 999, 500), 0);
        assert_eq!(bucket_of(999, 0, 999, 500), 499);
        assert_eq!(bucket_of(2, 0, 999, 500), 1);
        assert_eq!(bucket_of(5, 5, 5, 500), 0);
        // Out of range clamps rather than indexing past the end.
        assert_eq!(bucket_of(10_000, 0, 999, 500), 499);
    }
}

//! The JSON the UI's charts fetch: series downsampled in PostgreSQL (M4 buckets,
//! `runs::series_buckets`) to at most 2,000 points each, for the whole run or the range a
//! zoom asks for (`x_min`, `x_max` in steps); and what this replica measured of a
//! deployment's traffic.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use kiln_db::repo::runs as run_repo;
use kiln_ui::downsample::{self, Bucket, ChartData, ChartSeries, Point, XAxis};
use uuid::Uuid;

use super::{Session, UiError};
use crate::routes;
use crate::state::AppState;

/// The most series one chart request may ask for.
const MAX_SERIES: usize = 16;

fn point(p: run_repo::SeriesPoint) -> Point {
    Point { step: p.step, value: p.value, t: 0.0 }
}

/// One series of a run over `range` (the whole series when `None`), in `buckets` buckets.
async fn series(
    state: &AppState,
    run: Uuid,
    name: &str,
    label: &str,
    range: (Option<i64>, Option<i64>),
    buckets: u32,
    x: XAxis,
) -> Result<ChartSeries, UiError> {
    let bounds = match range {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        (lo, hi) => run_repo::series_bounds(&state.db, run, name)
            .await?
            .map(|(a, b)| (lo.unwrap_or(a).max(a), hi.unwrap_or(b).min(b))),
    };
    let Some(bounds) = bounds.filter(|(lo, hi)| lo <= hi) else {
        return Ok(ChartSeries::new(name, label, &[], x, false));
    };
    let rows = run_repo::series_buckets(&state.db, run, name, bounds, buckets).await?;
    let total: i64 = rows.iter().map(|b| b.count).sum();
    let buckets: Vec<Bucket> = rows
        .into_iter()
        .map(|b| Bucket {
            first: point(b.first),
            last: point(b.last),
            min: point(b.min),
            max: point(b.max),
        })
        .collect();
    let mut points = downsample::flatten(&buckets);
    let reduced = (points.len() as i64) < total;
    if x == XAxis::Time {
        let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
        let times = run_repo::series_times(&state.db, run, name, &steps).await?;
        for p in &mut points {
            p.t = times.get(&p.step).copied().unwrap_or(f64::NAN);
        }
    }
    Ok(ChartSeries::new(name, label, &points, x, reduced))
}

fn range_of(qs: &str) -> (Option<i64>, Option<i64>) {
    let num = |k: &str| {
        kiln_ui::query::first(qs, k).and_then(|v| v.parse::<f64>().ok()).map(|v| v as i64)
    };
    (num("x_min"), num("x_max"))
}

fn json(data: &ChartData) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(data)
}

/// `GET /ui/runs/{id}/series.json?names=a,b[&x=time][&x_min=&x_max=]`: a run's (or job's)
/// series, each at most 2,000 points.
pub async fn run_series(
    state: web::Data<AppState>,
    s: Session,
    id: web::Path<Uuid>,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let run = routes::runs::get(state.clone(), s.caller, id).await?.into_inner();
    let qs = req.query_string();
    let x = XAxis::parse(kiln_ui::query::first(qs, "x").as_deref());
    let names: Vec<String> = match kiln_ui::query::first(qs, "names") {
        Some(n) => n.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect(),
        None => run_repo::series_names(&state.db, run.id).await?,
    };
    if names.len() > MAX_SERIES {
        return Err(UiError::BadRequest(format!("at most {MAX_SERIES} series per chart")));
    }
    let range = range_of(qs);
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        out.push(series(&state, run.id, name, name, range, downsample::BUCKETS as u32, x).await?);
    }
    Ok(json(&ChartData { x, series: out }))
}

/// `GET /ui/compare/series.json?name=M&id=…&id=…`: metric `M` of up to 100 runs, one line
/// per run; each run gets a share of 20,000 points (2,000 for up to ten runs).
pub async fn compare_series(
    state: web::Data<AppState>,
    s: Session,
    req: HttpRequest,
) -> Result<HttpResponse, UiError> {
    let qs = req.query_string();
    let name = kiln_ui::query::first(qs, "name")
        .ok_or_else(|| UiError::BadRequest("`name` names the metric".to_owned()))?;
    let runs = super::pages::compared_runs(&state, s.caller, qs).await?;
    let x = XAxis::parse(kiln_ui::query::first(qs, "x").as_deref());
    let range = range_of(qs);
    let per_run = (20_000 / runs.len().max(1)).clamp(200, downsample::MAX_POINTS);
    let mut out = Vec::with_capacity(runs.len());
    for run in &runs {
        out.push(series(&state, run.id, &name, &run.name, range, (per_run / 4) as u32, x).await?);
    }
    Ok(json(&ChartData { x, series: out }))
}

/// What this replica's Prometheus series say of a deployment's predictions since it started
/// (kiln-serving keeps cumulative histograms, not a time window).
pub(crate) fn traffic(state: &AppState, team: &str, deployment: &str) -> kiln_ui::pages::Traffic {
    let families = state.metrics.registry.gather();
    let ours = |m: &prometheus::proto::Metric| {
        let label =
            |k: &str| m.get_label().iter().find(|l| l.name() == k).map(|l| l.value().to_owned());
        label("team").as_deref() == Some(team) && label("deployment").as_deref() == Some(deployment)
    };
    // Summed over versions: (count, sum, cumulative buckets by upper bound).
    let histogram = |name: &str| {
        let mut count = 0u64;
        let mut sum = 0.0;
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for f in families.iter().filter(|f| f.name() == name) {
            for m in f.get_metric().iter().filter(|m| ours(m)) {
                let h = m.get_histogram();
                count += h.get_sample_count();
                sum += h.get_sample_sum();
                for (i, b) in h.get_bucket().iter().enumerate() {
                    match buckets.get_mut(i) {
                        Some(slot) => slot.1 += b.cumulative_count(),
                        None => buckets.push((b.upper_bound(), b.cumulative_count())),
                    }
                }
            }
        }
        (count, sum, buckets)
    };
    let quantile = |buckets: &[(f64, u64)], count: u64, q: f64| -> Option<f64> {
        if count == 0 {
            return None;
        }
        let rank = q * count as f64;
        let mut prev = (0.0, 0u64);
        for &(upper, cum) in buckets {
            if cum as f64 >= rank {
                let within = (cum - prev.1).max(1) as f64;
                return Some(prev.0 + (upper - prev.0) * ((rank - prev.1 as f64) / within));
            }
            prev = (upper, cum);
        }
        Some(prev.0)
    };
    let (count, _, latency) = histogram("kiln_prediction_duration_seconds");
    let (batches, rows, _) = histogram("kiln_prediction_batch_rows");
    kiln_ui::pages::Traffic {
        requests: count,
        seconds: super::STARTED.elapsed().as_secs_f64(),
        p50_ms: quantile(&latency, count, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&latency, count, 0.99).map(|s| s * 1000.0),
        mean_batch_rows: (batches > 0).then(|| rows / batches as f64),
    }
}

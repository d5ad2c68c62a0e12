//! Every page of the UI, server-rendered from kiln-types' wire types. Pages take what the
//! handler read (already scoped to the caller's team) and a [`Ctx`] (who is signed in, the
//! session's CSRF token); they never fetch anything themselves.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kiln_types::api;
use kiln_types::{JobState, Role};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use crate::assets::ASSETS;
use crate::session::CSRF_FIELD;

/// The signed-in caller, as pages need it.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    pub role: Role,
    /// How the header names the caller: `team demo · maintainer`.
    pub who: String,
}

impl Ctx {
    pub fn can(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// The header's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Jobs,
    Runs,
    Studies,
    Datasets,
    Models,
    Deployments,
    Admin,
    None,
}

fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(ctx.csrf); }
}

/// The frame of every page: header with navigation and sign-out, the main landmark.
pub fn layout(ctx: Option<&Ctx>, nav: Nav, title: &str, body: Markup) -> Markup {
    let a = &*ASSETS;
    let item = |section: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == section).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Kiln" }
                link rel="stylesheet" href=(a.uplot_css.url());
                link rel="stylesheet" href=(a.app_css.url());
                script src=(a.uplot_js.url()) defer {}
                script src=(a.app_js.url()) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Kiln" }
                    @if let Some(ctx) = ctx {
                        nav aria-label="Sections" {
                            @if ctx.role == Role::Admin {
                                (item(Nav::Admin, "/ui/admin", "Admin"))
                            } @else {
                                (item(Nav::Jobs, "/ui/jobs", "Jobs"))
                                (item(Nav::Runs, "/ui/runs", "Runs"))
                                (item(Nav::Studies, "/ui/studies", "Studies"))
                                (item(Nav::Datasets, "/ui/datasets", "Datasets"))
                                (item(Nav::Models, "/ui/models", "Models"))
                                (item(Nav::Deployments, "/ui/deployments", "Deployments"))
                            }
                        }
                        span.who { (ctx.who) }
                        form method="post" action="/ui/sign-out" {
                            (csrf_field(ctx))
                            button.secondary type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// The sign-in page: a Kiln token in a password field (never in a URL), the double-submit
/// nonce, where to go next.
pub fn sign_in(nonce: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        Nav::None,
        "Sign in",
        html! {
            div.signin {
                h1 { "Sign in to Kiln" }
                @if let Some(e) = error { p.notice.error role="alert" { (e) } }
                form method="post" action="/ui/sign-in" {
                    input type="hidden" name=(CSRF_FIELD) value=(nonce);
                    input type="hidden" name="next" value=(next);
                    p {
                        label for="token" { "Kiln token" }
                        br;
                        input type="password" id="token" name="token" autocomplete="off" required
                            placeholder="kiln_…" aria-describedby="token-help";
                    }
                    p id="token-help" .muted {
                        "A team token (viewer, member or maintainer) or an admin token. The quickstart printed one and wrote it to "
                        code { ".kiln/env" } " as " code { "KILN_TOKEN" } ". The token stays on the server: "
                        "the browser gets a session cookie for 12 hours."
                    }
                    button type="submit" id="sign-in" { "Sign in" }
                }
            }
        },
    )
}

/// An error page that says what to do next.
pub fn error_page(ctx: Option<&Ctx>, heading: &str, message: &str, next: Markup) -> Markup {
    layout(
        ctx,
        Nav::None,
        heading,
        html! {
            h1 { (heading) }
            p.notice.error role="alert" { (message) }
            p { (next) }
        },
    )
}

/// 404: missing, or another team's (the UI cannot tell them apart, by design).
pub fn not_found(ctx: Option<&Ctx>, what: &str) -> Markup {
    error_page(
        ctx,
        "Not found",
        &format!("There is no {what} here for your team."),
        html! {
            "It may have been deleted, or it belongs to another team: signed in with another team's token, sign out and sign in with that team's token. "
            a href="/ui" { "Go to the start page" } "."
        },
    )
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("state state-{state}")) { (state) } }
}

fn time(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

fn opt_time(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// `1h 02m`, `3m 04s`, `12s`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn job_duration(job: &api::Job, now: DateTime<Utc>) -> String {
    match job.started_at {
        Some(start) => duration((job.finished_at.unwrap_or(now) - start).num_seconds()),
        None => "—".to_owned(),
    }
}

fn progress(p: &api::Progress) -> Markup {
    match (p.epoch, p.epochs) {
        (Some(e), Some(n)) if n > 0 => {
            let pct = (e as f64 / n as f64 * 100.0).clamp(0.0, 100.0);
            html! {
                span.bar role="progressbar" aria-valuemin="0" aria-valuemax=(n) aria-valuenow=(e)
                    aria-label="epochs done" { span style=(format!("width:{pct:.0}%")) {} }
                " " (e) "/" (n)
            }
        }
        _ => html! { span.muted { "—" } },
    }
}

/// An id's last 8 hex digits: ids are UUIDv7, whose leading digits are a timestamp shared by
/// everything made in the same minutes; the tail is random.
pub fn short(id: &uuid::Uuid) -> String {
    id.to_string()[28..].to_owned()
}

/// The jobs list: a state filter (every state kiln-types knows), rows refreshed live.
pub fn jobs(ctx: &Ctx, jobs: &[api::Job], state: Option<&str>, now: DateTime<Utc>) -> Markup {
    let poll = match state {
        Some(s) => format!("/ui/jobs/rows?state={s}"),
        None => "/ui/jobs/rows".to_owned(),
    };
    layout(
        Some(ctx),
        Nav::Jobs,
        "Jobs",
        html! {
            h1 { "Jobs" }
            form.inline method="get" action="/ui/jobs" {
                label for="state" { "State" }
                select id="state" name="state" {
                    option value="" selected[state.is_none()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[state == Some(s.as_str())] { (s.as_str()) }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if jobs.is_empty() {
                div.empty {
                    @if state.is_some() { "No job is in this state. " a href="/ui/jobs" { "Show every job" } "." }
                    @else {
                        "No jobs yet. Submit one with " code { "kiln jobs submit examples/iris-mlp.json --wait" }
                        " (after uploading a dataset: " code { "kiln datasets upload data/iris.csv --name iris" } ") and it appears here, live."
                    }
                }
            } @else {
                div.table-wrap {
                    table id="jobs" {
                        thead { tr {
                            th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "State" }
                            th scope="col" { "Progress" } th scope="col" { "Device" } th scope="col" .num { "Attempt" }
                            th scope="col" { "Duration" } th scope="col" { "Created" }
                        } }
                        tbody data-poll=(poll) { (job_rows(jobs, now)) }
                    }
                }
            }
        },
    )
}

/// The jobs table's rows (the live fragment).
pub fn job_rows(jobs: &[api::Job], now: DateTime<Utc>) -> Markup {
    html! {
        @for j in jobs {
            tr data-job=(j.id) {
                td { a href=(format!("/ui/jobs/{}", j.id)) { code { (short(&j.id)) } } }
                td { (j.kind) }
                td { (state_badge(&j.state)) @if j.cancel_requested && !is_terminal(&j.state) { " " span.muted { "cancelling" } } }
                td { (progress(&j.progress)) }
                td { (j.ran_on_device.as_deref().unwrap_or(&j.device)) }
                td.num { (j.attempt) "/" (j.max_attempts) }
                td { (job_duration(j, now)) }
                td { (time(&j.created_at)) }
            }
        }
    }
}

fn is_terminal(state: &str) -> bool {
    state.parse::<JobState>().map(JobState::is_terminal).unwrap_or(false)
}

/// One attempt of a job, as its page lists it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// Charts for a run's series: losses together, every other series on its own.
pub fn chart_groups(names: &[String]) -> Vec<(String, Vec<String>)> {
    let losses: Vec<String> = names.iter().filter(|n| n.contains("loss")).cloned().collect();
    let mut groups = Vec::new();
    if !losses.is_empty() {
        groups.push(("loss".to_owned(), losses));
    }
    for n in names.iter().filter(|n| !n.contains("loss")) {
        groups.push((n.clone(), vec![n.clone()]));
    }
    groups
}

fn charts(run_id: &uuid::Uuid, names: &[String], live: bool, xlabel: &str) -> Markup {
    html! {
        @if names.is_empty() {
            div.empty { @if live { "No metrics yet: the first points appear when the first epoch ends." }
                @else { "This run recorded no metrics." } }
        } @else {
            form.inline onsubmit="return false" {
                label for="x-axis" { "X-axis" }
                select.x-axis id="x-axis" { option value="step" { (xlabel) } option value="time" { "wall time" } }
                span.muted { "Drag across a chart to zoom (it re-fetches that range at full resolution); double-click to reset." }
            }
            div.charts {
                @for (title, group) in chart_groups(names) {
                    div.chart id=(format!("chart-{title}")) data-src=(format!("/ui/runs/{run_id}/series.json?names={}", group.join(",")))
                        data-live=(if live { "1" } else { "0" }) data-xlabel=(xlabel) {
                        h3 { (title) }
                        div.chart-status aria-live="polite" { "Loading when scrolled into view…" }
                        div.chart-plot role="img" aria-label=(format!("Chart of {} by {xlabel}", group.join(", "))) {}
                    }
                }
            }
        }
    }
}

/// The live part of a job page: state, progress, attempt, duration (refreshed until the job
/// ends; `data-final` stops the refresh).
pub fn job_summary(job: &api::Job, now: DateTime<Utc>) -> Markup {
    let terminal = is_terminal(&job.state);
    html! {
        dl.cards id="job-summary" data-state=(job.state) {
            div.card { dt { "State" } dd { (state_badge(&job.state)) @if job.cancel_requested && !terminal { " cancelling" } } }
            div.card { dt { "Progress (epochs)" } dd { (progress(&job.progress)) } }
            div.card { dt { "Attempt" } dd { (job.attempt) " of " (job.max_attempts) } }
            div.card { dt { "Device" } dd { (job.device) @if let Some(d) = &job.ran_on_device { " → ran on " (d) } } }
            div.card { dt { "Duration" } dd { (job_duration(job, now)) } }
            div.card { dt { "Checkpoint" } dd { @match job.checkpoint_epoch { Some(e) => { "epoch " (e) }, None => span.muted { "none yet" } } } }
            div.card { dt { "Resumed from epoch" } dd { @match job.resumed_from_epoch { Some(e) => { (e) }, None => span.muted { "not resumed" } } } }
            div.card { dt { "Created / finished" } dd { (time(&job.created_at)) br; (opt_time(job.finished_at.as_ref())) } }
            @if terminal { span data-final="1" hidden {} }
        }
        @if let Some(err) = &job.error { p.notice.error role="alert" { strong { "Error: " } (err) } }
    }
}

/// A job: the live summary, charts, logs, attempts, spec, and cancel/retry for members.
pub fn job(
    ctx: &Ctx,
    job: &api::Job,
    series: &[String],
    attempts: &[Attempt],
    now: DateTime<Utc>,
) -> Markup {
    let terminal = is_terminal(&job.state);
    let can_cancel = ctx.can(Role::Member) && !terminal;
    let can_retry = ctx.can(Role::Member) && matches!(job.state.as_str(), "failed" | "cancelled");
    layout(
        Some(ctx),
        Nav::Jobs,
        &format!("Job {}", short(&job.id)),
        html! {
            h1 { "Job " code { (short(&job.id)) } " " span.muted { (job.kind) } }
            p.muted { (job.id) " · " a href=(format!("/ui/runs/{}", job.id)) { "its run" } }
            div data-poll=(format!("/ui/jobs/{}/summary", job.id)) { (job_summary(job, now)) }
            @if can_cancel || can_retry {
                div {
                    @if can_cancel {
                        form.inline method="post" action=(format!("/ui/jobs/{}/cancel", job.id)) {
                            (csrf_field(ctx)) button.danger type="submit" id="cancel" { "Cancel job" }
                        }
                    }
                    @if can_retry {
                        form.inline method="post" action=(format!("/ui/jobs/{}/retry", job.id)) {
                            (csrf_field(ctx)) button type="submit" id="retry" { "Retry (resumes from its last checkpoint)" }
                        }
                    }
                }
            }
            h2 { "Metrics" }
            (charts(&job.id, series, !terminal, "epoch"))
            h2 { "Logs" }
            p { input type="checkbox" id="follow" checked; " " label for="follow" { "Follow (keep the newest line in view)" } }
            pre id="logs" data-logs=(format!("/ui/jobs/{}/logs.json", job.id)) data-follow="follow" tabindex="0" aria-label="Job logs" {}
            h2 { "Attempts" }
            @if attempts.is_empty() { div.empty { "Not claimed by a worker yet: it waits in the queue (is a " code { "kiln-worker" } " running?)." } }
            @else {
                div.table-wrap { table {
                    thead { tr { th { "Attempt" } th { "Worker" } th { "Started" } th { "Ended" } th { "Outcome" } th { "Error" } } }
                    tbody { @for a in attempts { tr {
                        td.num { (a.attempt) } td { code { (a.worker) } } td { (time(&a.started_at)) } td { (opt_time(a.ended_at.as_ref())) }
                        td { (a.outcome.as_deref().unwrap_or("running")) } td { (a.error.as_deref().unwrap_or("")) }
                    } } }
                } }
            }
            @if let Some(m) = &job.metrics { h2 { "Final metrics" } (json_block(m)) }
            h2 { "Spec" }
            (json_block(&job.spec))
        },
    )
}

fn json_block(v: &Value) -> Markup {
    html! { pre { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
}

/// A run row: the run and its latest value of each series.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run: api::Run,
    pub metrics: BTreeMap<String, f64>,
}

impl RunRow {
    pub fn params(&self) -> BTreeMap<String, Value> {
        match &self.run.params {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => BTreeMap::new(),
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn number(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.3e}")
    }
}

/// The columns a runs list can show: `param:NAME` and `metric:NAME`.
pub fn run_columns(rows: &[RunRow]) -> Vec<String> {
    let mut params = BTreeSet::new();
    let mut metrics = BTreeSet::new();
    for r in rows {
        params.extend(r.params().into_keys());
        metrics.extend(r.metrics.keys().cloned());
    }
    params
        .into_iter()
        .map(|p| format!("param:{p}"))
        .chain(metrics.into_iter().map(|m| format!("metric:{m}")))
        .collect()
}

fn cell(row: &RunRow, column: &str) -> Markup {
    if let Some(p) = column.strip_prefix("param:") {
        return html! { td { (row.params().get(p).map(value_text).unwrap_or_default()) } };
    }
    let m = column.strip_prefix("metric:").unwrap_or(column);
    html! { td.num { (row.metrics.get(m).map(|v| number(*v)).unwrap_or_default()) } }
}

/// The runs list: search, column picker, select runs to compare.
pub fn runs(
    ctx: &Ctx,
    rows: &[RunRow],
    q: &str,
    shown: &[String],
    all: &[String],
    error: Option<&str>,
) -> Markup {
    layout(
        Some(ctx),
        Nav::Runs,
        "Runs",
        html! {
            h1 { "Runs" }
            form method="get" action="/ui/runs" {
                p {
                    label for="q" { "Search" } " "
                    input type="search" id="q" name="q" value=(q) size="40" placeholder="lr=0.01 val_accuracy>0.9 optimizer~adam";
                    " " button type="submit" { "Search" }
                }
                @if !all.is_empty() {
                    details {
                        summary { "Columns (" (shown.len()) " of " (all.len()) ")" }
                        fieldset {
                            legend { "Show these columns" }
                            @for c in all {
                                label style="font-weight:400;margin-right:12px" {
                                    input type="checkbox" name="col" value=(c) checked[shown.contains(c)]; " " (c)
                                }
                            }
                        }
                        button type="submit" { "Apply" }
                    }
                }
            }
            @if let Some(e) = error { p.notice.error role="alert" { (e) } }
            @if rows.is_empty() {
                div.empty {
                    @if q.is_empty() { "No runs yet. Every training job is a run; a notebook can track one with " code { "kiln runs create NAME --param lr=0.01" } " or the MLflow client." }
                    @else { "No run matches this search. " a href="/ui/runs" { "Clear it" } "." }
                }
            } @else {
                form method="get" action="/ui/compare" {
                    p { button type="submit" id="compare" { "Compare selected (up to 100)" } }
                    div.table-wrap { table id="runs" {
                        thead { tr {
                            th scope="col" { span.skip { "Select" } } th scope="col" { "Run" } th scope="col" { "Status" } th scope="col" { "Created" }
                            @for c in shown { th scope="col" { (c) } }
                        } }
                        tbody { @for r in rows { tr {
                            td { input type="checkbox" name="id" value=(r.run.id) aria-label=(format!("select {}", r.run.name)); }
                            td { a href=(format!("/ui/runs/{}", r.run.id)) { (r.run.name) } @if r.run.is_job { " " span.muted { "job" } } }
                            td { (state_badge(&r.run.status)) }
                            td { (time(&r.run.created_at)) }
                            @for c in shown { (cell(r, c)) }
                        } } }
                    } }
                }
            }
        },
    )
}

/// One run: params and charts (a job's run links its job page).
pub fn run(ctx: &Ctx, row: &RunRow, series: &[String]) -> Markup {
    let r = &row.run;
    layout(
        Some(ctx),
        Nav::Runs,
        &r.name,
        html! {
            h1 { "Run " (r.name) }
            p.muted { (r.id) " · " (state_badge(&r.status)) " · created " (time(&r.created_at))
                @if let Some(job) = r.job_id { " · " a href=(format!("/ui/jobs/{job}")) { "its job" } } }
            h2 { "Params" }
            @if row.params().is_empty() { p.muted { "No params." } }
            @else { div.table-wrap { table { tbody { @for (k, v) in row.params() { tr { th scope="row" { (k) } td { (value_text(&v)) } } } } } } }
            h2 { "Metrics" }
            (charts(&r.id, series, r.status == "running", if r.is_job { "epoch" } else { "step" }))
        },
    )
}

/// The compare view: overlaid charts per metric, the diff table, parallel coordinates.
pub fn compare(
    ctx: &Ctx,
    rows: &[RunRow],
    metric_names: &[String],
    metric: Option<&str>,
    parallel: Markup,
) -> Markup {
    let ids: Vec<String> = rows.iter().map(|r| r.run.id.to_string()).collect();
    let ids_q = ids.iter().map(|i| format!("id={i}")).collect::<Vec<_>>().join("&");
    let columns = run_columns(rows);
    layout(
        Some(ctx),
        Nav::Runs,
        "Compare runs",
        html! {
            h1 { "Compare " (rows.len()) " runs" }
            @if rows.len() < 2 { p.notice { "Select two runs or more on the " a href="/ui/runs" { "runs list" } " to compare them." } }
            h2 { "Params and metrics" }
            p { input type="checkbox" id="diff-only" data-diff-only="diff" checked; " " label for="diff-only" { "Show differences only" } }
            div.table-wrap { table id="diff" {
                thead { tr { th scope="col" { "" } @for r in rows { th scope="col" { a href=(format!("/ui/runs/{}", r.run.id)) { (r.run.name) } } } } }
                tbody {
                    @for c in &columns {
                        @let texts: Vec<String> = rows.iter().map(|r| cell(r, c).into_string()).collect();
                        @let same = texts.windows(2).all(|w| w[0] == w[1]);
                        tr class=(if same { "same" } else { "differs" }) {
                            th scope="row" { (c) }
                            @for t in &texts { (PreEscaped(t.clone())) }
                        }
                    }
                }
            } }
            h2 { "Metrics over steps" }
            @if metric_names.is_empty() { div.empty { "These runs recorded no metrics." } }
            @else {
                form.inline onsubmit="return false" {
                    label for="x-axis" { "X-axis" }
                    select.x-axis id="x-axis" { option value="step" { "step / epoch" } option value="time" { "wall time" } }
                }
                div.charts {
                    @for name in metric_names {
                        div.chart id=(format!("chart-{name}")) data-src=(format!("/ui/compare/series.json?name={name}&{ids_q}")) data-live="0" {
                            h3 { (name) }
                            div.chart-status aria-live="polite" { "Loading when scrolled into view…" }
                            div.chart-plot role="img" aria-label=(format!("Chart of {name} for each compared run")) {}
                        }
                    }
                }
            }
            h2 { "Parallel coordinates" }
            form.inline method="get" action="/ui/compare" {
                @for i in &ids { input type="hidden" name="id" value=(i); }
                label for="metric" { "Metric" }
                select id="metric" name="metric" {
                    @for n in metric_names { option value=(n) selected[metric == Some(n.as_str())] { (n) } }
                }
                button type="submit" { "Plot" }
            }
            (parallel)
        },
    )
}

/// Datasets, newest first.
pub fn datasets(ctx: &Ctx, items: &[api::Dataset]) -> Markup {
    layout(
        Some(ctx),
        Nav::Datasets,
        "Datasets",
        html! {
            h1 { "Datasets" }
            @if items.is_empty() { div.empty { "No datasets yet. Upload one: " code { "kiln datasets upload data/iris.csv --name iris" } "." } }
            @else {
                div.table-wrap { table id="datasets" {
                    thead { tr { th { "Name" } th.num { "Version" } th { "Format" } th.num { "Size" } th { "sha256" } th { "Created" } } }
                    tbody { @for d in items { tr {
                        td { a href=(format!("/ui/datasets/{}", d.id)) { (d.name) } }
                        td.num { (d.version) } td { (d.format) } td.num { (bytes(d.size_bytes)) }
                        td { code { (d.sha256.to_string()[..16]) "…" } } td { (time(&d.created_at)) }
                    } } }
                } }
            }
        },
    )
}

pub fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// One dataset version: schema, digest, and the jobs that trained on it.
pub fn dataset(
    ctx: &Ctx,
    d: &api::Dataset,
    versions: &[api::Dataset],
    jobs: &[api::Job],
    now: DateTime<Utc>,
) -> Markup {
    layout(
        Some(ctx),
        Nav::Datasets,
        &d.name,
        html! {
            h1 { "Dataset " (d.name) " v" (d.version) }
            dl.cards {
                div.card { dt { "Format" } dd { (d.format) } }
                div.card { dt { "Size" } dd { (bytes(d.size_bytes)) " (" (d.size_bytes) " bytes)" } }
                div.card { dt { "sha256" } dd { code { (d.sha256.to_string()) } } }
                div.card { dt { "Uploaded" } dd { (time(&d.created_at)) } }
            }
            h2 { "Versions of " (d.name) }
            div.table-wrap { table { thead { tr { th.num { "Version" } th.num { "Size" } th { "sha256" } th { "Created" } } }
                tbody { @for v in versions { tr {
                    td.num { a href=(format!("/ui/datasets/{}", v.id)) { "v" (v.version) } } td.num { (bytes(v.size_bytes)) }
                    td { code { (v.sha256.to_string()[..16]) "…" } } td { (time(&v.created_at)) }
                } } } } }
            h2 { "Schema" }
            (json_block(&serde_json::to_value(&d.schema).unwrap_or_default()))
            h2 { "Jobs that used this version" }
            @if jobs.is_empty() { div.empty { "No job has trained on it yet. Put its id (" code { (d.id) } ") in a job spec's " code { "dataset_id" } "." } }
            @else { div.table-wrap { table { tbody { (job_rows(jobs, now)) } } } }
        },
    )
}

/// Registered models.
pub fn models(ctx: &Ctx, items: &[api::ModelSummary]) -> Markup {
    layout(
        Some(ctx),
        Nav::Models,
        "Models",
        html! {
            h1 { "Models" }
            @if items.is_empty() { div.empty { "No models yet. Register a succeeded job: " code { "kiln models register iris --job JOB_ID" } "." } }
            @else { div.table-wrap { table id="models" {
                thead { tr { th { "Model" } th.num { "Latest version" } th { "Aliases" } th { "Created" } } }
                tbody { @for m in items { tr {
                    td { a href=(format!("/ui/models/{}", m.name)) { (m.name) } }
                    td.num { (m.latest_version.map(|v| v.to_string()).unwrap_or_default()) }
                    td { @for (a, v) in &m.aliases { code { (a) "→" (v) } " " } }
                    td { (time(&m.created_at)) }
                } } }
            } } }
        },
    )
}

/// One move of an alias, from the audit log.
#[derive(Debug, Clone)]
pub struct AliasMove {
    pub ts: DateTime<Utc>,
    pub actor: String,
    pub alias: String,
    pub version: i32,
    pub previous_version: Option<i32>,
}

/// One model: versions with metrics and lineage, aliases and their history, promote and
/// rollback for maintainers.
pub fn model(
    ctx: &Ctx,
    m: &api::ModelDetail,
    versions: &[api::ModelVersion],
    history: &[AliasMove],
    message: Option<&str>,
) -> Markup {
    let maintainer = ctx.can(Role::Maintainer);
    layout(
        Some(ctx),
        Nav::Models,
        &m.name,
        html! {
            h1 { "Model " (m.name) }
            @if let Some(msg) = message { p.notice role="status" { (msg) } }
            h2 { "Aliases" }
            @if m.aliases.is_empty() { div.empty { "No aliases yet." @if maintainer { " Promote a version below." } } }
            @else { p { @for (a, v) in &m.aliases { code id=(format!("alias-{a}")) { (a) " → v" (v) } " " } } }
            @if maintainer && !versions.is_empty() {
                form.inline method="post" action=(format!("/ui/models/{}/aliases", m.name)) {
                    (csrf_field(ctx))
                    label for="alias" { "Point alias" }
                    input id="alias" name="alias" value="production" size="12" required;
                    label for="version" { "at version" }
                    select id="version" name="version" { @for v in versions { option value=(v.version) { "v" (v.version) } } }
                    button type="submit" id="promote" { "Move alias" }
                }
                p.muted { "Deployments following the alias roll to the new version without failing a request. To roll back, point it at the previous version." }
            }
            h2 { "Versions" }
            @if versions.is_empty() { div.empty { "No versions." } }
            @else { div.table-wrap { table id="versions" {
                thead { tr { th.num { "Version" } th { "Aliases" } th { "Metrics" } th { "Job" } th { "Dataset sha256" } th { "Created" } @if maintainer { th { "" } } } }
                tbody { @for v in versions { tr {
                    td.num { "v" (v.version) }
                    td { @for a in &v.aliases { code { (a) } " " } }
                    td { @if let Value::Object(ms) = &v.metrics { @for (k, x) in ms { @if let Some(x) = x.as_f64() { span { (k) "=" (number(x)) } br; } } } }
                    td {
                        @if let Some(j) = v.job_id { a href=(format!("/ui/jobs/{j}")) { code { (short(&j)) } } }
                        @if v.spec.as_object().is_some_and(|o| !o.is_empty()) {
                            details { summary { "spec" } (json_block(&v.spec)) }
                        }
                    }
                    td { @if let Some(d) = &v.dataset_sha256 { code { (d.get(..16).unwrap_or(d)) "…" } } }
                    td { (time(&v.created_at)) }
                    @if maintainer { td {
                        form.inline method="post" action=(format!("/ui/models/{}/aliases", m.name)) {
                            (csrf_field(ctx))
                            input type="hidden" name="alias" value="production";
                            input type="hidden" name="version" value=(v.version);
                            button.secondary type="submit" id=(format!("promote-{}", v.version)) { "Make production" }
                        }
                    } }
                } } }
            } } }
            h2 { "Alias history" }
            @if history.is_empty() { div.empty { "No alias has moved yet." } }
            @else { div.table-wrap { table id="alias-history" {
                thead { tr { th { "When" } th { "Alias" } th { "From" } th { "To" } th { "Who" } } }
                tbody { @for h in history { tr {
                    td { (time(&h.ts)) } td { code { (h.alias) } }
                    td { (h.previous_version.map(|v| format!("v{v}")).unwrap_or_else(|| "—".to_owned())) }
                    td { "v" (h.version) } td { (h.actor) }
                } } }
            } } }
        },
    )
}

/// Deployments.
pub fn deployments(ctx: &Ctx, items: &[api::Deployment]) -> Markup {
    layout(
        Some(ctx),
        Nav::Deployments,
        "Deployments",
        html! {
            h1 { "Deployments" }
            @if items.is_empty() { div.empty { "No deployments yet. Serve a model: " code { "kiln deployments create iris --model iris --alias production" } "." } }
            @else { div.table-wrap { table id="deployments" {
                thead { tr { th { "Deployment" } th { "Model" } th { "Follows" } th { "Status" } th { "Traffic" } } }
                tbody { @for d in items { tr {
                    td { a href=(format!("/ui/deployments/{}", d.name)) { (d.name) } }
                    td { a href=(format!("/ui/models/{}", d.model)) { (d.model) } }
                    td { @if let Some(a) = &d.alias { "alias " code { (a) } } @else if let Some(v) = d.version { "pinned v" (v) } }
                    td { (state_badge(&d.status)) }
                    td { (traffic_text(&d.traffic)) }
                } } }
            } } }
        },
    )
}

fn traffic_text(t: &[api::TrafficSplit]) -> String {
    t.iter().map(|s| format!("v{} {}%", s.version, s.weight)).collect::<Vec<_>>().join(", ")
}

/// One sampled prediction.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub version: i32,
    pub input: Value,
    pub output: Value,
}

/// What this replica measured of a deployment's traffic (kiln-serving's Prometheus
/// series, cumulative since the process started).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub requests: u64,
    pub seconds: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_batch_rows: Option<f64>,
}

/// One deployment: status, traffic split (editable for maintainers), traffic, drift, samples.
pub fn deployment(
    ctx: &Ctx,
    d: &api::Deployment,
    traffic: &Traffic,
    drift: Result<&api::DriftReport, &str>,
    samples: &[Sample],
    message: Option<&str>,
) -> Markup {
    let maintainer = ctx.can(Role::Maintainer);
    let split: String = d
        .traffic
        .iter()
        .map(|s| format!("{}={}", s.version, s.weight))
        .collect::<Vec<_>>()
        .join(" ");
    layout(
        Some(ctx),
        Nav::Deployments,
        &d.name,
        html! {
            h1 { "Deployment " (d.name) }
            @if let Some(msg) = message { p.notice role="status" { (msg) } }
            dl.cards {
                div.card { dt { "Status" } dd { (state_badge(&d.status)) @if let Some(e) = &d.error { br; (e) } } }
                div.card { dt { "Model" } dd { a href=(format!("/ui/models/{}", d.model)) { (d.model) }
                    @if let Some(a) = &d.alias { " following " code { (a) } } @else if let Some(v) = d.version { " pinned to v" (v) } } }
                div.card { dt { "Traffic split" } dd id="traffic" { (traffic_text(&d.traffic)) } }
                div.card { dt { "Batching" } dd { "up to " (d.batching.max_batch_size) " rows, " (d.batching.max_wait_ms) " ms" } }
                div.card { dt { "Loaded here" } dd { @for v in &d.versions_loaded { "v" (v.version) " on " (v.device) ", queue " (v.queue_depth) br; } } }
            }
            @if maintainer {
                h2 { "Change the traffic split" }
                form.inline method="post" action=(format!("/ui/deployments/{}/traffic", d.name)) {
                    (csrf_field(ctx))
                    label for="split" { "Split (version=percent, summing to 100; empty: all to the alias)" }
                    input id="split" name="split" value=(split) size="24" placeholder="2=90 1=10";
                    button type="submit" id="set-traffic" { "Apply split" }
                }
            }
            h2 { "Traffic on this replica" }
            @if traffic.requests == 0 { div.empty { "No predictions served by this replica since it started. Try " code { "kiln predict " (d.name) " --instances examples/iris-instances.json" } "." } }
            @else {
                dl.cards {
                    div.card { dt { "Requests" } dd { (traffic.requests) } }
                    div.card { dt { "Requests/s (since start)" } dd { (number(traffic.requests as f64 / traffic.seconds.max(1.0))) } }
                    div.card { dt { "Latency p50 / p99" } dd { (traffic.p50_ms.map(number).unwrap_or_default()) " / " (traffic.p99_ms.map(number).unwrap_or_default()) " ms" } }
                    div.card { dt { "Mean batch rows" } dd { (traffic.mean_batch_rows.map(number).unwrap_or_default()) } }
                }
                p.muted { "Cumulative since this API process started (its Prometheus histograms); per-hour rates across replicas are on the Grafana dashboard." }
            }
            h2 { "Drift" }
            @match drift {
                Ok(r) => {
                    p { "Version " (r.model_version) ", " (r.window) " recent sampled rows, threshold PSI " (number(r.threshold))
                        @if r.insufficient_samples { " — fewer than " (r.min_samples) " samples: shown, not judged" } }
                    @let top = r.features.iter().map(|f| f.psi).fold(r.threshold * 1.5, f64::max);
                    @for f in &r.features {
                        div.psi {
                            span style="width:140px" { (f.feature) }
                            span.track role="img" aria-label=(format!("PSI {} of threshold {}", number(f.psi), number(r.threshold))) {
                                span class=(if f.drifted { "fill drifted" } else { "fill" }) style=(format!("display:block;width:{:.1}%", (f.psi / top * 100.0).clamp(0.0, 100.0))) {}
                                span.threshold style=(format!("left:{:.1}%", r.threshold / top * 100.0)) {}
                            }
                            span { (number(f.psi)) @if f.drifted { " drifted" } }
                        }
                    }
                }
                Err(why) => { div.empty { (why) } }
            }
            h2 { "Recent sampled predictions" }
            @if samples.is_empty() { div.empty { "No sampled predictions yet (a share of predicted rows is sampled: KILN_SERVING_SAMPLE_RATE)." } }
            @else { div.table-wrap { table { thead { tr { th { "When" } th.num { "Version" } th { "Input" } th { "Output" } } }
                tbody { @for s in samples { tr { td { (time(&s.ts)) } td.num { (s.version) } td { code { (s.input.to_string()) } } td { code { (s.output.to_string()) } } } } } } } }
        },
    )
}

/// One worker row of the admin page.
#[derive(Debug, Clone)]
pub struct AdminView<'a> {
    pub teams: &'a [api::Team],
    pub queue: &'a api::QueueStats,
    pub workers: &'a [api::Worker],
}

/// Admin: teams and quotas, queue depth by state and team, workers.
pub fn admin(ctx: &Ctx, v: AdminView<'_>) -> Markup {
    let mut by_team: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for c in &v.queue.counts {
        *by_team.entry(&c.team).or_default().entry(&c.state).or_default() += c.count;
    }
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    layout(
        Some(ctx),
        Nav::Admin,
        "Admin",
        html! {
            h1 { "Platform" }
            h2 { "Queue depth by state and team" }
            @if let Some(age) = v.queue.oldest_queued_age_seconds { p { "Oldest queued job: " (duration(age as i64)) " old." } }
            @if by_team.is_empty() { div.empty { "No jobs on the queue." } }
            @else { div.table-wrap { table id="queue" {
                thead { tr { th { "Team" } @for s in &states { th.num { (s) } } } }
                tbody { @for (team, counts) in &by_team { tr { th scope="row" { (team) } @for s in &states { td.num { (counts.get(s).copied().unwrap_or(0)) } } } } }
            } } }
            h2 { "Workers" }
            @if v.workers.is_empty() { div.empty { "No workers have registered. Start one: " code { "kiln-worker" } " (same KILN_DATABASE_URL and KILN_ARTIFACT_STORE as the API)." } }
            @else { div.table-wrap { table id="workers" {
                thead { tr { th { "Worker" } th { "Host" } th { "Device" } th { "Current job" } th { "Last heartbeat" } th { "State" } } }
                tbody { @for w in v.workers { tr {
                    td { code { (short(&w.id)) } } td { (w.host) } td { (w.device) }
                    td { @if let Some(j) = w.current_job_id { code { (short(&j)) } } }
                    td { (time(&w.last_heartbeat_at)) " (" (duration(w.heartbeat_age_seconds as i64)) " ago)" }
                    td { @if w.lost { span.state.state-failed { "lost" } } @else if w.stopped_at.is_some() { span.state { "stopped" } } @else { span.state.state-succeeded { "live" } } }
                } } }
            } } }
            h2 { "Teams and quotas" }
            @if v.teams.is_empty() { div.empty { "No teams. Create one: " code { "kiln admin teams create NAME" } "." } }
            @else { div.table-wrap { table id="teams" {
                thead { tr { th { "Team" } th.num { "Max running jobs" } th { "Created" } } }
                tbody { @for t in v.teams { tr { td { (t.name) } td.num { (t.max_running_jobs) } td { (time(&t.created_at)) } } } }
            } } }
        },
    )
}

/// Studies, newest first.
pub fn studies(ctx: &Ctx, items: &[kiln_types::study::Study]) -> Markup {
    layout(
        Some(ctx),
        Nav::Studies,
        "Studies",
        html! {
            h1 { "Studies" }
            @if items.is_empty() {
                div.empty { "No studies yet. Start a hyperparameter search with "
                    code { "kiln studies create FILE --dataset ID" } " (docs/studies.md)." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Trials" }
                        th scope="col" { "Best" } th scope="col" { "Created" } } }
                    tbody { @for s in items {
                        @let c = &s.counts;
                        tr {
                            td { a href=(format!("/ui/studies/{}", s.id)) { (s.name) } }
                            td { (state_badge(s.state.as_str())) }
                            td { (c.queued + c.running + c.succeeded + c.pruned + c.failed + c.cancelled) " / " (s.spec.trial_budget())
                                @if c.pruned > 0 { span.muted { " (" (c.pruned) " pruned)" } } }
                            td { @match &s.best_trial {
                                Some(b) => { (s.spec.objective.metric) " " (number(b.objective)) }
                                None => { span.muted { "—" } }
                            } }
                            td { (time(&s.created_at)) }
                        }
                    } }
                } }
            }
        },
    )
}

/// The objective of every trial that has one, by trial number, coloured by state.
pub fn objective_by_trial(study: &kiln_types::study::Study) -> Markup {
    const W: f64 = 960.0;
    const H: f64 = 260.0;
    const PAD: f64 = 50.0;
    let points: Vec<(u32, f64, JobState)> =
        study.trials.iter().filter_map(|t| Some((t.number, t.objective?, t.state))).collect();
    if points.is_empty() {
        return html! { div.empty { "No trial has reported its objective yet." } };
    }
    let n = study.trials.len().max(2) as f64;
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let x = |i: u32| PAD + (W - 2.0 * PAD) * f64::from(i) / (n - 1.0);
    let y = |v: f64| {
        let f = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        H - PAD - (H - 2.0 * PAD) * f
    };
    let colour = |s: JobState| match s {
        JobState::Succeeded => "#1a7f37",
        JobState::Pruned => "#9a6700",
        JobState::Failed => "#cf222e",
        _ => "#0969da",
    };
    let metric = &study.spec.objective.metric;
    html! {
        svg class="objective" viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("{metric} of each of {} trials", points.len())) {
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#8c959f" {}
            line x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) stroke="#8c959f" {}
            text x=(PAD) y=(PAD - 12.0) font-size="13" { (metric) }
            text x=(PAD - 6.0) y=(y(hi) + 4.0) font-size="11" text-anchor="end" { (number(hi)) }
            text x=(PAD - 6.0) y=(y(lo) + 4.0) font-size="11" text-anchor="end" { (number(lo)) }
            text x=(W - PAD) y=(H - PAD + 20.0) font-size="12" text-anchor="end" { "trial" }
            @for (i, v, s) in &points {
                circle cx=(format!("{:.1}", x(*i))) cy=(format!("{:.1}", y(*v))) r="5" fill=(colour(*s)) {
                    title { "trial " (i) " (" (s.as_str()) "): " (number(*v)) }
                }
            }
        }
        p.muted { "Green: succeeded · amber: pruned · red: failed · blue: open." }
    }
}

/// One study: state, best trial, the objective by trial, parallel coordinates of the
/// parameters against the objective, and every trial (with a stop button for members).
pub fn study(ctx: &Ctx, s: &kiln_types::study::Study, parallel: Markup) -> Markup {
    let c = &s.counts;
    let paths: Vec<&String> = s.spec.parameters.keys().collect();
    layout(
        Some(ctx),
        Nav::Studies,
        &s.name,
        html! {
            h1 { "Study " (s.name) }
            p.muted { (s.id) " · " (state_badge(s.state.as_str())) " · created " (time(&s.created_at))
                @if let Some(r) = &s.reason { " · " (r) } }
            @if ctx.can(Role::Member) && s.state == kiln_types::study::StudyState::Running {
                form method="post" action=(format!("/ui/studies/{}/stop", s.id)) {
                    (csrf_field(ctx))
                    button.secondary type="submit" id="stop-study" { "Stop study" }
                }
            }
            dl.summary {
                dt { "Objective" } dd { (s.spec.objective.metric) " (" (value_text(&serde_json::to_value(s.spec.objective.goal).unwrap_or_default())) ")" }
                dt { "Best" } dd { @match &s.best_trial {
                    Some(b) => { (number(b.objective)) " — " a href=(format!("/ui/jobs/{}", b.job_id)) { "trial " (b.number) } }
                    None => { span.muted { "no trial has finished yet" } }
                } }
                dt { "Trials" } dd { (c.succeeded) " succeeded, " (c.pruned) " pruned, " (c.running) " running, "
                    (c.queued) " queued, " (c.failed) " failed, " (c.cancelled) " cancelled of " (s.spec.trial_budget()) }
            }
            h2 { "Objective by trial" }
            (objective_by_trial(s))
            h2 { "Parameters against the objective" }
            (parallel)
            h2 { "Trials" }
            div.table-wrap { table id="trials" {
                thead { tr { th scope="col" { "#" } th scope="col" { "State" } th scope="col" { (s.spec.objective.metric) }
                    th scope="col" { "Epochs" } @for p in &paths { th scope="col" { (p) } } } }
                tbody { @for t in &s.trials {
                    tr {
                        td { a href=(format!("/ui/jobs/{}", t.job_id)) { (t.number) } }
                        td { (state_badge(t.state.as_str())) }
                        td { @match t.objective { Some(v) => { (number(v)) } None => { span.muted { "—" } } } }
                        td { (t.epochs) @if t.promotions > 0 { span.muted { " (promoted " (t.promotions) "×)" } } }
                        @for p in &paths { td { @match t.params.get(*p) { Some(v) => { (value_text(v)) } None => { "—" } } } }
                    }
                } }
            } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(role: Role) -> Ctx {
        Ctx { csrf: "c".repeat(64), role, who: "team demo".into() }
    }

    #[test]
    fn every_form_carries_the_csrf_token_and_the_page_never_the_token() {
        let page = sign_in("n".repeat(64).as_str(), "/ui", None).into_string();
        assert!(page.contains(&format!("name=\"csrf\" value=\"{}\"", "n".repeat(64))));
        assert!(page.contains("type=\"password\""));
        let page = layout(Some(&ctx(Role::Viewer)), Nav::Jobs, "t", html! {}).into_string();
        assert!(page.contains(&format!("value=\"{}\"", "c".repeat(64))), "the sign-out form");
    }

    #[test]
    fn job_states_come_from_kiln_types() {
        let page = jobs(&ctx(Role::Viewer), &[], None, Utc::now()).into_string();
        for s in JobState::ALL {
            assert!(page.contains(&format!("<option value=\"{}\"", s.as_str())));
        }
    }

    #[test]
    fn text_is_escaped() {
        let page = not_found(None, "<script>x</script>").into_string();
        assert!(!page.contains("<script>x"));
    }

    #[test]
    fn loss_series_share_a_chart() {
        let names = ["train_loss", "val_accuracy", "val_loss"].map(String::from);
        let groups = chart_groups(&names);
        assert_eq!(
            groups[0],
            ("loss".to_owned(), vec!["train_loss".to_owned(), "val_loss".to_owned()])
        );
        assert_eq!(groups[1].0, "val_accuracy");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(184), "3m 04s");
        assert_eq!(duration(3720), "1h 02m");
    }
}

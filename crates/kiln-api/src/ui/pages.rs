//! The UI's page handlers. Each reads through the REST API's own handlers (or the same
//! repositories and queue) with the session's [`Caller`], so scoping and roles are the
//! API's.
//!
//! [`Caller`]: crate::auth::Caller

use std::collections::BTreeSet;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use kiln_db::repo::{audit, deployments as dep_repo, runs as run_repo, tokens, ui_sessions};
use kiln_types::api;
use kiln_types::{ErrorCode, Role};
use kiln_ui::pages::{self as view, RunRow};
use kiln_ui::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, SessionSecret};
use serde::Deserialize;
use uuid::Uuid;

use super::{Session, UiError, html_page, is_tls, see_other};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::ListQuery;
use crate::routes;
use crate::state::AppState;

type Page = Result<HttpResponse, UiError>;

fn list(limit: u64) -> web::Query<ListQuery> {
    web::Query(ListQuery { limit: Some(limit), cursor: None })
}

/// `/ui`: the team's jobs, or the platform page for an admin.
pub async fn home(s: Session) -> Page {
    Ok(see_other(if s.caller.role() == Role::Admin { "/ui/admin" } else { "/ui/jobs" }))
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The sign-in form, with a fresh double-submit nonce in its own cookie.
pub async fn sign_in_form(req: HttpRequest, q: web::Query<NextQuery>) -> HttpResponse {
    sign_in_page(&req, q.next.as_deref(), None, actix_web::http::StatusCode::OK)
}

fn sign_in_page(
    req: &HttpRequest,
    next: Option<&str>,
    error: Option<&str>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    let nonce = session::sign_in_nonce();
    let mut res = html_page(view::sign_in(&nonce, &session::safe_next(next), error));
    *res.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(&session::set_cookie(
        SIGN_IN_COOKIE,
        &nonce,
        600,
        is_tls(req),
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The sign-in form's fields. `Debug` leaves the token out.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

impl std::fmt::Debug for SignInForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInForm").field("token", &"***").field("next", &self.next).finish()
    }
}

/// Signs in: the double-submit nonce must match; the token is authenticated like a bearer
/// token (hashed and looked up); a session row records the token's id and the secret's hash.
pub async fn sign_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SignInForm>,
) -> Page {
    let form = form.into_inner();
    let nonce = req
        .headers()
        .get(header::COOKIE)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| session::cookie(h, SIGN_IN_COOKIE))
        .unwrap_or_default();
    if !session::tokens_match(nonce, &form.csrf) {
        return Err(UiError::Csrf);
    }
    let token = form.token.trim();
    let principal = if token.starts_with("kiln_") {
        tokens::authenticate_hashed(&state.db, tokens::hash_token(token)).await?
    } else {
        None
    };
    let Some(principal) = principal else {
        return Ok(sign_in_page(
            &req,
            form.next.as_deref(),
            Some(
                "That token is not valid (mistyped, revoked, or from another Kiln). Paste the whole token, starting with kiln_.",
            ),
            actix_web::http::StatusCode::UNAUTHORIZED,
        ));
    };
    let secret = SessionSecret::generate();
    let expires = Utc::now() + chrono::Duration::seconds(session::SESSION_SECONDS);
    ui_sessions::create(&state.db, secret.id_hash(), principal.token_id, expires).await?;
    let tls = is_tls(&req);
    let mut res = see_other(&session::safe_next(form.next.as_deref()));
    for cookie in [
        session::set_cookie(SESSION_COOKIE, secret.expose(), session::SESSION_SECONDS, tls),
        session::set_cookie(SIGN_IN_COOKIE, "", 0, tls),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Signs out: the session row is deleted and the cookie cleared.
pub async fn sign_out(
    state: web::Data<AppState>,
    req: HttpRequest,
    s: Session,
    form: web::Form<CsrfForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    ui_sessions::delete(&state.db, s.secret.id_hash()).await?;
    let mut res = see_other("/ui/sign-in");
    if let Ok(v) =
        header::HeaderValue::from_str(&session::set_cookie(SESSION_COOKIE, "", 0, is_tls(&req)))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    state: Option<String>,
}

async fn job_list(
    state: &web::Data<AppState>,
    s: &Session,
    filter: Option<String>,
) -> Result<Vec<api::Job>, UiError> {
    let q = routes::jobs::JobListQuery { state: filter, limit: Some(100), cursor: None };
    Ok(routes::jobs::list(state.clone(), s.caller, web::Query(q)).await?.into_inner().items)
}

fn state_filter(q: &StateQuery) -> Option<String> {
    q.state.clone().filter(|s| !s.is_empty())
}

pub async fn jobs(state: web::Data<AppState>, s: Session, q: web::Query<StateQuery>) -> Page {
    let filter = state_filter(&q);
    let items = job_list(&state, &s, filter.clone()).await?;
    Ok(html_page(view::jobs(&s.ctx, &items, filter.as_deref(), Utc::now())))
}

/// The jobs table's rows, for the list's live refresh.
pub async fn job_rows(state: web::Data<AppState>, s: Session, q: web::Query<StateQuery>) -> Page {
    let items = job_list(&state, &s, state_filter(&q)).await?;
    Ok(html_page(view::job_rows(&items, Utc::now())))
}

async fn get_job(
    state: &web::Data<AppState>,
    caller: Caller,
    id: Uuid,
) -> Result<api::Job, UiError> {
    Ok(routes::jobs::get(state.clone(), caller, web::Path::from(id)).await?.into_inner())
}

pub async fn job(state: web::Data<AppState>, s: Session, id: web::Path<Uuid>) -> Page {
    let job = get_job(&state, s.caller, *id).await?;
    let mut series = run_repo::series_names(&state.db, job.id).await?;
    // A training job that has not reported yet gets the charts of the series its task
    // reports, so a page opened before the first epoch ends still fills in live.
    if series.is_empty()
        && job.kind == "train"
        && job.finished_at.is_none()
        && let Ok(spec) = kiln_types::spec::JobSpec::parse(&job.spec)
    {
        let names: &[&str] = match spec.task {
            kiln_types::spec::Task::Classification => {
                &["train_loss", "val_loss", "val_accuracy", "val_f1"]
            }
            kiln_types::spec::Task::Regression => {
                &["train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"]
            }
        };
        series = names.iter().map(|n| (*n).to_owned()).collect();
    }
    let attempts = state
        .queue
        .attempts(job.id)
        .await?
        .into_iter()
        .map(|a| view::Attempt {
            attempt: a.attempt,
            worker: view::short(&a.worker_id),
            started_at: a.started_at,
            ended_at: a.ended_at,
            outcome: a.outcome,
            error: a.error,
        })
        .collect::<Vec<_>>();
    Ok(html_page(view::job(&s.ctx, &job, &series, &attempts, Utc::now())))
}

/// The job page's live summary.
pub async fn job_summary(state: web::Data<AppState>, s: Session, id: web::Path<Uuid>) -> Page {
    let job = get_job(&state, s.caller, *id).await?;
    Ok(html_page(view::job_summary(&job, Utc::now())))
}

/// Log lines after a cursor (the API's long-poll route, as JSON for the page's script).
pub async fn job_logs(
    state: web::Data<AppState>,
    s: Session,
    id: web::Path<Uuid>,
    q: web::Query<routes::jobs::LogsQuery>,
) -> Page {
    let q = routes::jobs::LogsQuery { limit: Some(500), cursor: q.cursor.clone(), wait: q.wait };
    let page = routes::jobs::logs(state, s.caller, id, web::Query(q)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page.into_inner()))
}

pub async fn cancel(
    state: web::Data<AppState>,
    s: Session,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    let id = id.into_inner();
    routes::jobs::cancel(state, s.caller, web::Path::from(id)).await?;
    Ok(see_other(&format!("/ui/jobs/{id}")))
}

pub async fn retry(
    state: web::Data<AppState>,
    s: Session,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    let id = id.into_inner();
    routes::jobs::retry(state, s.caller, web::Path::from(id)).await?;
    Ok(see_other(&format!("/ui/jobs/{id}")))
}

async fn run_row(state: &AppState, run: api::Run) -> Result<RunRow, UiError> {
    let metrics = run_repo::latest_values(&state.db, run.id).await?;
    Ok(RunRow { run, metrics })
}

/// The runs list: search (params and latest metric values), column picker.
pub async fn runs(state: web::Data<AppState>, s: Session, req: HttpRequest) -> Page {
    let qs = req.query_string();
    let q = kiln_ui::query::first(qs, "q").unwrap_or_default();
    let page = routes::runs::list(state.clone(), s.caller, list(200)).await?.into_inner();
    let mut rows = Vec::with_capacity(page.items.len());
    for run in page.items {
        rows.push(run_row(&state, run).await?);
    }
    let (rows, error) = match kiln_ui::search::parse(&q) {
        Ok(terms) => (
            rows.into_iter()
                .filter(|r| {
                    let params = r.params();
                    kiln_ui::search::matches(
                        &terms,
                        kiln_ui::search::Subject {
                            name: &r.run.name,
                            params: &params,
                            metrics: &r.metrics,
                        },
                    )
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (rows, Some(e.to_string())),
    };
    let all = view::run_columns(&rows);
    let picked: Vec<String> = kiln_ui::query::all(qs, "col");
    let shown: Vec<String> = if picked.is_empty() {
        all.iter().take(8).cloned().collect()
    } else {
        all.iter().filter(|c| picked.contains(c)).cloned().collect()
    };
    Ok(html_page(view::runs(&s.ctx, &rows, &q, &shown, &all, error.as_deref())))
}

pub async fn run(state: web::Data<AppState>, s: Session, id: web::Path<Uuid>) -> Page {
    let run = routes::runs::get(state.clone(), s.caller, id).await?.into_inner();
    let series = run_repo::series_names(&state.db, run.id).await?;
    let row = run_row(&state, run).await?;
    Ok(html_page(view::run(&s.ctx, &row, &series)))
}

/// The most runs one compare view takes.
pub const MAX_COMPARE: usize = 100;

/// Runs named by `?id=` (each looked up team-scoped: another team's is a 404), at most 100.
pub(crate) async fn compared_runs(
    state: &web::Data<AppState>,
    caller: Caller,
    qs: &str,
) -> Result<Vec<api::Run>, UiError> {
    let mut seen = BTreeSet::new();
    let ids: Vec<Uuid> = kiln_ui::query::all(qs, "id")
        .iter()
        .filter_map(|i| i.parse().ok())
        .filter(|i| seen.insert(*i))
        .collect();
    if ids.len() > MAX_COMPARE {
        return Err(UiError::BadRequest(format!(
            "{} runs are selected; compare at most {MAX_COMPARE} at a time",
            ids.len()
        )));
    }
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        runs.push(
            routes::runs::get(state.clone(), caller, web::Path::from(id)).await?.into_inner(),
        );
    }
    Ok(runs)
}

/// Compare up to 100 runs: diff table, overlaid charts per metric, parallel coordinates.
pub async fn compare(state: web::Data<AppState>, s: Session, req: HttpRequest) -> Page {
    let qs = req.query_string();
    let runs = compared_runs(&state, s.caller, qs).await?;
    let mut rows = Vec::with_capacity(runs.len());
    for run in runs {
        rows.push(run_row(&state, run).await?);
    }
    let metric_names: Vec<String> = rows
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chosen = kiln_ui::query::first(qs, "metric")
        .filter(|m| metric_names.contains(m))
        .or_else(|| metric_names.iter().find(|m| m.contains("accuracy")).cloned())
        .or_else(|| metric_names.first().cloned());
    let numeric_params: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.params().into_iter().filter(|(_, v)| number_of(v).is_some()).map(|(k, _)| k)
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let parallel = match &chosen {
        Some(metric) => {
            let mut axes = numeric_params.clone();
            axes.push(metric.clone());
            let lines: Vec<kiln_ui::parallel::Line> = rows
                .iter()
                .map(|r| {
                    let params = r.params();
                    let mut values: Vec<Option<f64>> =
                        numeric_params.iter().map(|p| params.get(p).and_then(number_of)).collect();
                    values.push(r.metrics.get(metric).copied());
                    kiln_ui::parallel::Line { label: r.run.name.clone(), values }
                })
                .collect();
            kiln_ui::parallel::svg(&axes, &lines)
        }
        None => maud::html! { div.empty { "No metric to plot: these runs recorded none." } },
    };
    Ok(html_page(view::compare(&s.ctx, &rows, &metric_names, chosen.as_deref(), parallel)))
}

fn number_of(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

pub async fn studies(state: web::Data<AppState>, s: Session) -> Page {
    let items = routes::studies::list(state, s.caller, list(200)).await?.into_inner().items;
    Ok(html_page(view::studies(&s.ctx, &items)))
}

/// A study, with its parameters (the numeric ones) against its objective.
pub async fn study(state: web::Data<AppState>, s: Session, id: web::Path<Uuid>) -> Page {
    let study = routes::studies::get(state, s.caller, id).await?.into_inner();
    let numeric: Vec<String> = study
        .spec
        .parameters
        .iter()
        .filter(|(_, p)| !matches!(p, kiln_types::study::ParamSpec::Categorical { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    let parallel = if numeric.is_empty() {
        maud::html! { div.empty { "No numeric parameter to plot (categorical values are in the table)." } }
    } else {
        let mut axes = numeric.clone();
        axes.push(study.spec.objective.metric.clone());
        let lines: Vec<kiln_ui::parallel::Line> = study
            .trials
            .iter()
            .map(|t| {
                let mut values: Vec<Option<f64>> =
                    numeric.iter().map(|p| t.params.get(p).and_then(number_of)).collect();
                values.push(t.objective);
                kiln_ui::parallel::Line { label: format!("trial {}", t.number), values }
            })
            .collect();
        kiln_ui::parallel::svg(&axes, &lines)
    };
    Ok(html_page(view::study(&s.ctx, &study, parallel)))
}

pub async fn stop_study(
    state: web::Data<AppState>,
    s: Session,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    let id = id.into_inner();
    routes::studies::stop(state, s.caller, web::Path::from(id)).await?;
    Ok(see_other(&format!("/ui/studies/{id}")))
}

pub async fn datasets(state: web::Data<AppState>, s: Session) -> Page {
    let q = routes::datasets::DatasetListQuery { name: None, limit: Some(200), cursor: None };
    let items = routes::datasets::list(state, s.caller, web::Query(q)).await?.into_inner().items;
    Ok(html_page(view::datasets(&s.ctx, &items)))
}

pub async fn dataset(state: web::Data<AppState>, s: Session, id: web::Path<Uuid>) -> Page {
    let d = routes::datasets::get(state.clone(), s.caller, id).await?.into_inner();
    let q = routes::datasets::DatasetListQuery {
        name: Some(d.name.clone()),
        limit: Some(100),
        cursor: None,
    };
    let versions =
        routes::datasets::list(state.clone(), s.caller, web::Query(q)).await?.into_inner().items;
    // The team's recent jobs whose typed inputs name this dataset.
    let team = s.team()?;
    let jobs = state
        .queue
        .list(team, None, None, 500)
        .await?
        .into_iter()
        .filter(|j| j.inputs.dataset.as_ref().is_some_and(|b| b.id == d.id))
        .map(routes::jobs::job_view)
        .collect::<Vec<_>>();
    Ok(html_page(view::dataset(&s.ctx, &d, &versions, &jobs, Utc::now())))
}

pub async fn models(state: web::Data<AppState>, s: Session) -> Page {
    let items = routes::models::list(state, s.caller, list(200)).await?.into_inner().items;
    Ok(html_page(view::models(&s.ctx, &items)))
}

/// `details` of a `model.alias.move` audit entry, as `routes::models::set_alias` writes it.
#[derive(Debug, Deserialize)]
struct AliasMoveDetails {
    version: i32,
    previous_version: Option<i32>,
}

async fn model_page(
    state: &web::Data<AppState>,
    s: &Session,
    name: String,
    message: Option<&str>,
) -> Page {
    let detail = routes::models::get(state.clone(), s.caller, web::Path::from(name.clone()))
        .await?
        .into_inner();
    let versions =
        routes::models::versions(state.clone(), s.caller, web::Path::from(name.clone()), list(500))
            .await?
            .into_inner()
            .items;
    let prefix = format!("{name}@");
    let history = audit::of_action(&state.db, s.team()?, "model.alias.move", "model_alias", 500)
        .await?
        .into_iter()
        .filter_map(|r| {
            let alias = r.resource_id.as_deref()?.strip_prefix(&prefix)?.to_owned();
            let d: AliasMoveDetails = serde_json::from_value(r.details).ok()?;
            Some(view::AliasMove {
                ts: r.ts,
                actor: r.actor,
                alias,
                version: d.version,
                previous_version: d.previous_version,
            })
        })
        .collect::<Vec<_>>();
    Ok(html_page(view::model(&s.ctx, &detail, &versions, &history, message)))
}

pub async fn model(state: web::Data<AppState>, s: Session, name: web::Path<String>) -> Page {
    model_page(&state, &s, name.into_inner(), None).await
}

#[derive(Debug, Deserialize)]
pub struct AliasForm {
    #[serde(default)]
    csrf: String,
    alias: String,
    version: i32,
}

/// Promote or roll back: the REST route's alias move (its checks, audit and roll-out).
pub async fn move_alias(
    state: web::Data<AppState>,
    s: Session,
    name: web::Path<String>,
    form: web::Form<AliasForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    let name = name.into_inner();
    let form = form.into_inner();
    let moved = routes::models::set_alias(
        state.clone(),
        s.caller,
        web::Path::from((name.clone(), form.alias.clone())),
        web::Json(api::SetAlias { version: form.version }),
    )
    .await?
    .into_inner();
    let message = match moved.previous_version {
        Some(p) if p != moved.version => format!(
            "{} now points at v{} (was v{p}); deployments following it rolled over.",
            moved.alias, moved.version
        ),
        Some(_) => format!("{} already pointed at v{}.", moved.alias, moved.version),
        None => format!("{} now points at v{}.", moved.alias, moved.version),
    };
    model_page(&state, &s, name, Some(&message)).await
}

pub async fn deployments(state: web::Data<AppState>, s: Session) -> Page {
    let items = routes::deployments::list(state, s.caller, list(200)).await?.into_inner().items;
    Ok(html_page(view::deployments(&s.ctx, &items)))
}

async fn deployment_page(
    state: &web::Data<AppState>,
    s: &Session,
    name: String,
    message: Option<&str>,
) -> Page {
    let d = routes::deployments::get(state.clone(), s.caller, web::Path::from(name.clone()))
        .await?
        .into_inner();
    let q = routes::deployments::DriftQuery { window: None, threshold: None, version: None };
    let drift =
        routes::deployments::drift(state.clone(), s.caller, web::Path::from(name), web::Query(q))
            .await;
    let drift = drift.map(|d| d.into_inner()).map_err(|e| match e.code {
        ErrorCode::Unavailable => "Drift is not available yet: the deployment is still loading on this replica. Reload in a few seconds.".to_owned(),
        _ => format!("No drift report: {}", e.one_line()),
    });
    let samples = dep_repo::recent_samples(&state.db, d.id, 10)
        .await?
        .into_iter()
        .map(|r| view::Sample { ts: r.ts, version: r.version, input: r.input, output: r.output })
        .collect::<Vec<_>>();
    let team_name =
        s.ctx.who.strip_prefix("team ").and_then(|w| w.split(" · ").next()).unwrap_or_default();
    let traffic = super::charts::traffic(state, team_name, &d.name);
    Ok(html_page(view::deployment(
        &s.ctx,
        &d,
        &traffic,
        drift.as_ref().map_err(String::as_str),
        &samples,
        message,
    )))
}

pub async fn deployment(state: web::Data<AppState>, s: Session, name: web::Path<String>) -> Page {
    deployment_page(&state, &s, name.into_inner(), None).await
}

#[derive(Debug, Deserialize)]
pub struct TrafficForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    split: String,
}

/// `2=90 1=10` (or `2:90, 1:10`) → the traffic split; empty: follow the alias again.
pub(crate) fn parse_split(text: &str) -> Result<Vec<api::TrafficSplit>, String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (v, w) = pair
                .split_once(['=', ':'])
                .ok_or_else(|| format!("`{pair}`: write version=percent, like 2=90"))?;
            let version = v
                .trim()
                .trim_start_matches('v')
                .parse()
                .map_err(|_| format!("`{v}` is not a version number"))?;
            let weight = w
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| format!("`{w}` is not a percentage"))?;
            Ok(api::TrafficSplit { version, weight })
        })
        .collect()
}

/// Changes the split through the REST route (its validation, bundle checks and sync).
pub async fn set_traffic(
    state: web::Data<AppState>,
    s: Session,
    name: web::Path<String>,
    form: web::Form<TrafficForm>,
) -> Page {
    s.check_csrf(&form.csrf)?;
    let name = name.into_inner();
    let traffic = parse_split(&form.split).map_err(UiError::BadRequest)?;
    let body =
        api::PatchDeployment { traffic: Some(traffic), batching: None, allow_extra_features: None };
    let d = routes::deployments::patch(
        state.clone(),
        s.caller,
        web::Path::from(name.clone()),
        web::Json(body),
    )
    .await?
    .into_inner();
    let split = d
        .traffic
        .iter()
        .map(|t| format!("v{} {}%", t.version, t.weight))
        .collect::<Vec<_>>()
        .join(", ");
    deployment_page(&state, &s, name, Some(&format!("Traffic is now {split}."))).await
}

/// The platform page (admin tokens).
pub async fn admin(state: web::Data<AppState>, s: Session) -> Page {
    if s.caller.role() != Role::Admin {
        return Err(UiError::Api(ApiError::forbidden("the platform page needs an admin token")));
    }
    let teams = routes::teams::list(state.clone(), s.caller, list(500)).await?.into_inner().items;
    let queue = routes::admin::queue_stats(state.clone(), s.caller).await?.into_inner();
    let workers = routes::admin::workers(state, s.caller).await?.into_inner();
    Ok(html_page(view::admin(
        &s.ctx,
        view::AdminView { teams: &teams, queue: &queue, workers: &workers },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_splits_parse_from_what_people_type() {
        let s = parse_split("2=90 1=10").unwrap();
        assert_eq!(
            s,
            vec![
                api::TrafficSplit { version: 2, weight: 90 },
                api::TrafficSplit { version: 1, weight: 10 }
            ]
        );
        assert_eq!(parse_split("v2:90%, v1:10%").unwrap(), s);
        assert!(parse_split("").unwrap().is_empty());
        assert!(parse_split("2").is_err());
        assert!(parse_split("x=1").is_err());
    }
}

//! The HTTP side of the web UI (kiln-ui renders; this module routes, authenticates and
//! reads), mounted under `/ui`, with `/` redirecting there.
//!
//! A page is an ordinary handler: [`Session`] turns the session cookie into the same
//! [`Caller`] the REST API uses, and the page reads through the REST handlers themselves
//! (`routes::jobs::get(state, caller, ...)`) or the same repositories and queue, so team
//! scoping and roles are the API's by construction: another team's job is the API's 404,
//! rendered as a page that says what to do next. Every POST checks the session's CSRF token
//! before it acts. The token a user signs in with is only hashed and looked up (never stored,
//! logged, put in a URL or a page); the session row keeps the token's id.

mod charts;
mod pages;

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use kiln_db::repo::{tokens::Principal, ui_sessions};
use kiln_types::ErrorCode;
use kiln_ui::pages::{self as view, Ctx};
use kiln_ui::session::{self, SESSION_COOKIE, SessionSecret};
use maud::{Markup, html};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// When this process mounted the UI: "since start" rates on the deployment page.
pub(crate) static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Mounts `/`, `/ui` and everything under it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    LazyLock::force(&STARTED);
    cfg.service(web::resource("/").get(to_ui))
        .service(web::resource("/ui").get(pages::home))
        .service(web::resource("/ui/").get(to_ui))
        .service(web::resource("/ui/static/{name}").get(asset))
        .service(web::resource("/ui/sign-in").get(pages::sign_in_form).post(pages::sign_in))
        .service(web::resource("/ui/sign-out").post(pages::sign_out))
        .service(web::resource("/ui/jobs").get(pages::jobs))
        .service(web::resource("/ui/jobs/rows").get(pages::job_rows))
        .service(web::resource("/ui/jobs/{id}").get(pages::job))
        .service(web::resource("/ui/jobs/{id}/summary").get(pages::job_summary))
        .service(web::resource("/ui/jobs/{id}/logs.json").get(pages::job_logs))
        .service(web::resource("/ui/jobs/{id}/cancel").post(pages::cancel))
        .service(web::resource("/ui/jobs/{id}/retry").post(pages::retry))
        .service(web::resource("/ui/runs").get(pages::runs))
        .service(web::resource("/ui/runs/{id}").get(pages::run))
        .service(web::resource("/ui/runs/{id}/series.json").get(charts::run_series))
        .service(web::resource("/ui/compare").get(pages::compare))
        .service(web::resource("/ui/compare/series.json").get(charts::compare_series))
        .service(web::resource("/ui/studies").get(pages::studies))
        .service(web::resource("/ui/studies/{id}").get(pages::study))
        .service(web::resource("/ui/studies/{id}/stop").post(pages::stop_study))
        .service(web::resource("/ui/datasets").get(pages::datasets))
        .service(web::resource("/ui/datasets/{id}").get(pages::dataset))
        .service(web::resource("/ui/models").get(pages::models))
        .service(web::resource("/ui/models/{name}").get(pages::model))
        .service(web::resource("/ui/models/{name}/aliases").post(pages::move_alias))
        .service(web::resource("/ui/deployments").get(pages::deployments))
        .service(web::resource("/ui/deployments/{name}").get(pages::deployment))
        .service(web::resource("/ui/deployments/{name}/traffic").post(pages::set_traffic))
        .service(web::resource("/ui/admin").get(pages::admin));
}

async fn to_ui() -> HttpResponse {
    see_other("/ui")
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// A content-hashed static file, cached for a year.
async fn asset(name: web::Path<String>) -> Result<HttpResponse, UiError> {
    let asset = kiln_ui::assets::find(&name).ok_or(UiError::NotFound("file"))?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, kiln_ui::assets::CACHE_CONTROL))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(asset.bytes))
}

/// An HTML page, never cached (it shows live state and carries the CSRF token).
pub(crate) fn html_page(markup: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(markup.into_string())
}

/// True when the request reached us over TLS (directly or through a proxy that says so), so
/// cookies get `Secure`.
pub(crate) fn is_tls(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// A signed-in browser: the API's [`Caller`] behind the session cookie, and the session's
/// CSRF token. Without a live session, a page answers a redirect to the sign-in page (and a
/// JSON or fragment request a bare 401).
#[derive(Debug)]
pub struct Session {
    pub caller: Caller,
    pub secret: SessionSecret,
    pub ctx: Ctx,
}

impl Session {
    /// 403 unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<(), UiError> {
        if session::tokens_match(&self.secret.csrf_token(), given) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }

    pub fn team(&self) -> Result<uuid::Uuid, UiError> {
        Ok(self.caller.team()?)
    }
}

/// The session secret in a request's cookie, if it has the shape of one.
pub(crate) fn cookie_secret(req: &HttpRequest) -> Option<SessionSecret> {
    let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
    SessionSecret::parse(session::cookie(header, SESSION_COOKIE)?)
}

async fn ctx_of(state: &AppState, principal: &Principal, csrf: String) -> Result<Ctx, ApiError> {
    let who = match principal.team_id {
        Some(team) => {
            let name = kiln_db::repo::teams::get(&state.db, team)
                .await?
                .map(|t| t.name)
                .unwrap_or_else(|| team.to_string());
            format!("team {name} · {}", principal.role)
        }
        None => format!("platform · {}", principal.role),
    };
    Ok(Ctx { csrf, role: principal.role, who })
}

impl FromRequest for Session {
    type Error = UiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, UiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let secret = cookie_secret(req);
        let wants_page = !(req.path().ends_with(".json")
            || req.path().ends_with("/rows")
            || req.path().ends_with("/summary"));
        let next = match req.query_string() {
            "" => req.path().to_owned(),
            q => format!("{}?{q}", req.path()),
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let no_session =
                || if wants_page { UiError::SignIn { next } } else { UiError::Unauthenticated };
            let Some(secret) = secret else { return Err(no_session()) };
            let Some(principal) = ui_sessions::principal(&state.db, secret.id_hash()).await? else {
                return Err(no_session());
            };
            let ctx = ctx_of(&state, &principal, secret.csrf_token()).await?;
            Ok(Session { caller: Caller(principal), secret, ctx })
        })
    }
}

/// What a UI request can fail with, each answered as a page that says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("sign in first")]
    SignIn { next: String },
    #[error("no session")]
    Unauthenticated,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the form's CSRF token is missing or stale")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<kiln_db::repo::RepoError> for UiError {
    fn from(err: kiln_db::repo::RepoError) -> Self {
        UiError::Api(err.into())
    }
}

impl From<kiln_queue::QueueError> for UiError {
    fn from(err: kiln_queue::QueueError) -> Self {
        UiError::Api(err.into())
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn { .. } => StatusCode::SEE_OTHER,
            UiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let page = |markup: Markup| {
            HttpResponse::build(self.status_code())
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(markup.into_string())
        };
        match self {
            UiError::SignIn { next } => {
                let to = format!("/ui/sign-in?next={}", encode(&session::safe_next(Some(next))));
                see_other(&to)
            }
            UiError::Unauthenticated => page(html! { "Your session has ended: sign in again." }),
            UiError::NotFound(what) => page(view::not_found(None, what)),
            UiError::Csrf => page(view::error_page(
                None,
                "Form expired",
                "This form's security token is missing or belongs to another session, so nothing was changed.",
                html! { "Go back, reload the page and submit it again. " a href="/ui" { "Start page" } },
            )),
            UiError::BadRequest(message) => page(view::error_page(
                None,
                "Cannot do that",
                message,
                html! { "Go back and correct it. " a href="/ui" { "Start page" } },
            )),
            UiError::Api(e) => {
                if e.status_code().is_server_error() {
                    // Logged as the API logs it (the cause chain, for operators).
                    let _ = e.error_response();
                }
                let next = match e.code {
                    ErrorCode::NotFound => {
                        return page(view::not_found(None, "such page or object"));
                    }
                    ErrorCode::Forbidden => html! {
                        "Your token's role does not allow this: ask a maintainer of your team, or sign in with a token that has the role. "
                        a href="/ui" { "Start page" }
                    },
                    ErrorCode::Unavailable => {
                        html! { "Retry in a few seconds. " a href="/ui" { "Start page" } }
                    }
                    _ => html! { "Go back and correct it. " a href="/ui" { "Start page" } },
                };
                page(view::error_page(None, &title_of(e), &e.one_line(), next))
            }
        }
    }
}

fn title_of(e: &ApiError) -> String {
    match e.code {
        ErrorCode::Forbidden => "Not allowed".to_owned(),
        ErrorCode::Unavailable => "Unavailable".to_owned(),
        ErrorCode::ValidationFailed => "Invalid input".to_owned(),
        ErrorCode::InvalidState | ErrorCode::InUse => "Cannot do that now".to_owned(),
        _ => "Something went wrong".to_owned(),
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

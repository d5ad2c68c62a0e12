//! The OpenAPI 3 document, generated from the handlers' annotations with utoipa, served at
//! `/openapi.json` and committed at `docs/api/openapi.json` (a test fails when stale).

use std::sync::LazyLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, audit, datasets, deployments, health, jobs, models, runs, submit, teams, tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln API", version = "1.0.0",
         description = "Kiln's REST API for teams: datasets, training jobs, metrics, model registry and serving."),
    paths(
        health::healthz, health::readyz, health::metrics, health::openapi,
        teams::create, teams::list,
        tokens::create, tokens::list, tokens::revoke,
        datasets::upload, datasets::list, datasets::get,
        submit::submit, jobs::list, jobs::get, jobs::cancel, jobs::retry, jobs::metrics, jobs::logs,
        runs::create, runs::list, runs::log_metrics, runs::metrics, runs::finish,
        models::register, models::list, models::versions, models::set_alias, models::bundle,
        deployments::create, deployments::list, deployments::get, deployments::patch,
        deployments::delete, deployments::predict, deployments::drift,
        audit::list,
        admin::queue_stats, admin::workers, admin::artifacts_gc,
    ),
    components(schemas(kiln_types::api::ErrorBody, kiln_types::api::ErrorDetail, jobs::LogsPage)),
    modifiers(&BearerAuth),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises"));

/// The document as pretty JSON (what `docs/api/openapi.json` holds).
pub fn document_json() -> &'static str {
    &DOCUMENT
}

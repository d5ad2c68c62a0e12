//! The OpenAPI 3 document, generated from the handlers' annotations with utoipa, served at
//! `/openapi.json` and committed at `docs/api/openapi.json` (a test fails when stale).

use std::sync::LazyLock;

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, audit, batch, datasets, deployments, health, jobs, models, runs, studies, submit, teams,
    tokens,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln API", version = "1.0.0",
         description = "Kiln's REST API for teams: datasets, training jobs, metrics, hyperparameter studies, model registry and serving."),
    paths(
        health::healthz, health::readyz, health::metrics, health::openapi,
        teams::create, teams::list,
        tokens::create, tokens::list, tokens::revoke,
        datasets::upload, datasets::list, datasets::get, datasets::download, datasets::delete,
        submit::submit, jobs::list, jobs::get, jobs::cancel, jobs::retry, jobs::metrics, jobs::logs,
        runs::create, runs::list, runs::get, runs::delete, runs::log_metrics, runs::metrics,
        runs::finish,
        models::register, models::list, models::get, models::versions, models::delete_version,
        models::set_alias, models::bundle,
        deployments::create, deployments::list, deployments::get, deployments::patch,
        deployments::delete, deployments::predict, deployments::drift,
        batch::create, batch::list, batch::get, batch::output,
        studies::create, studies::list, studies::get, studies::stop, studies::register,
        audit::list,
        admin::queue_stats, admin::workers, admin::artifacts_gc,
    ),
    components(schemas(kiln_types::api::ErrorBody, kiln_types::api::ErrorDetail, jobs::LogsPage)),
    modifiers(&BearerAuth, &CommonErrors, &BinaryBodies, &PageItemsByRef, &TaggedVariantsFlat),
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

/// The error answers every secured operation can give besides its own: each handler's
/// annotation lists what is particular to it (409, a 422 it raises itself, ...), and this
/// adds, with the `ErrorBody` schema, the ones that come from the shared machinery:
/// - 400 (a malformed query string, a URL holding `%00`), 401 (no, unknown or revoked
///   token), 403 (a role too low, an admin token on a team route), 503 (the database or the
///   artifact store does not answer) on every one;
/// - 404 on those with path parameters (a malformed id names nothing);
/// - 413 (too large), 415 (wrong content type) and 422 (fields that do not validate) on
///   those with a body, and 422 on those with query parameters (a `limit` out of range).
struct CommonErrors;

impl CommonErrors {
    const ANSWERS: [(&'static str, &'static str); 8] = [
        ("400", "Malformed request: bad query string, malformed JSON, or a URL holding %00"),
        ("401", "No bearer token, or an unknown or revoked one"),
        ("403", "The token's role does not allow this action (or an admin token on a team route)"),
        ("404", "No such resource in the caller's team (another team's answers the same)"),
        ("413", "The body is larger than this route accepts"),
        ("415", "The body's content type is not one this route accepts"),
        ("422", "Validation failed; `details.fields` names every offending field"),
        ("503", "A dependency (the database, the artifact store) does not answer; retry later"),
    ];

    fn applies(code: &str, operation: &Operation) -> bool {
        let params = operation.parameters.as_deref().unwrap_or_default();
        let has_body = operation.request_body.is_some();
        match code {
            "404" => params.iter().any(|p| p.parameter_in == ParameterIn::Path),
            "413" | "415" => has_body,
            "422" => has_body || params.iter().any(|p| p.parameter_in == ParameterIn::Query),
            _ => true,
        }
    }

    fn response(description: &str) -> RefOr<Response> {
        let content =
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build(),
        )
    }
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            if operation.security.as_ref().is_none_or(|s| s.is_empty()) {
                continue; // public routes (health, metrics, the document itself)
            }
            for (code, description) in Self::ANSWERS {
                if Self::applies(code, operation) {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| Self::response(description));
                }
            }
        }
    }
}

/// Every operation of every path, mutably.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// Bodies that are bytes (a dataset upload or download, a model bundle) as
/// `{"type": "string", "format": "binary"}`: utoipa writes `Vec<u8>` as an array of
/// integers, which generated clients would send and expect as JSON numbers.
struct BinaryBodies;

impl BinaryBodies {
    const MEDIA_TYPES: [&'static str; 3] =
        ["text/csv", "application/octet-stream", "application/zip"];

    fn binary<'a>(
        content: impl IntoIterator<Item = (&'a String, &'a mut utoipa::openapi::Content)>,
    ) {
        for (media, body) in content {
            if Self::MEDIA_TYPES.contains(&media.as_str()) {
                body.schema = Some(RefOr::T(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                        .into(),
                ));
            }
        }
    }
}

impl Modify for BinaryBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            if let Some(body) = operation.request_body.as_mut() {
                Self::binary(body.content.iter_mut());
            }
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    Self::binary(response.content.iter_mut());
                }
            }
        }
    }
}

/// Internally tagged enums whose variants wrap a struct (`DatasetSchema::Csv(CsvSchema)`,
/// tagged by `format`) as plain objects: utoipa writes each such variant as
/// `allOf: [{$ref: CsvSchema}, {properties: {format}}]`, a union member that client
/// generators cannot parse (openapi-python-client drops the enum and every schema that uses
/// it). Each becomes one object with the struct's properties and the tag, titled after the
/// tag and the enum (`CsvDatasetSchema`: the struct's own name is taken by its component,
/// and generators name the union's models by title).
struct TaggedVariantsFlat;

impl TaggedVariantsFlat {
    fn flatten(
        schemas: &std::collections::BTreeMap<String, RefOr<utoipa::openapi::schema::Schema>>,
        enum_name: &str,
        variant: &mut RefOr<utoipa::openapi::schema::Schema>,
    ) {
        use utoipa::openapi::schema::Schema;
        let RefOr::T(Schema::AllOf(all)) = variant else { return };
        let [RefOr::Ref(inner), RefOr::T(Schema::Object(tag))] = all.items.as_slice() else {
            return;
        };
        let name = inner.ref_location.trim_start_matches("#/components/schemas/");
        let Some(RefOr::T(Schema::Object(object))) = schemas.get(name) else { return };
        let Some(tag_value) = tag.properties.values().find_map(|p| match p {
            RefOr::T(Schema::Object(o)) => o.enum_values.as_ref()?.first()?.as_str(),
            _ => None,
        }) else {
            return;
        };
        let mut chars = tag_value.chars();
        let Some(first) = chars.next() else { return };
        let mut flat = object.clone();
        flat.title = Some(format!("{}{}{enum_name}", first.to_uppercase(), chars.as_str()));
        flat.description = all.description.clone().or(flat.description);
        for (key, property) in &tag.properties {
            flat.properties.insert(key.clone(), property.clone());
        }
        for key in &tag.required {
            if !flat.required.contains(key) {
                flat.required.push(key.clone());
            }
        }
        *variant = RefOr::T(Schema::Object(flat));
    }
}

impl Modify for TaggedVariantsFlat {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else { return };
        let schemas = components.schemas.clone();
        for (name, schema) in components.schemas.iter_mut() {
            if let RefOr::T(Schema::OneOf(one_of)) = schema {
                for variant in &mut one_of.items {
                    Self::flatten(&schemas, name, variant);
                }
            }
        }
    }
}

/// A list page's items by reference: utoipa writes `Page<Dataset>` with the `Dataset` schema
/// copied inline, which client generators turn into a second `Dataset` model per list
/// (`PageDatasetItemsItem`). Each `Page_X` whose `X` is a component refers to it instead.
struct PageItemsByRef;

impl Modify for PageItemsByRef {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayItems, Schema};
        let Some(components) = openapi.components.as_mut() else { return };
        let names: Vec<String> = components.schemas.keys().cloned().collect();
        for (name, schema) in components.schemas.iter_mut() {
            let Some(item) = name.strip_prefix("Page_").filter(|i| names.iter().any(|n| n == i))
            else {
                continue;
            };
            let RefOr::T(Schema::Object(page)) = schema else { continue };
            if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
                items.items = ArrayItems::RefOrSchema(Box::new(Ref::from_schema_name(item).into()));
            }
        }
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises"));

/// The document as pretty JSON (what `docs/api/openapi.json` holds).
pub fn document_json() -> &'static str {
    &DOCUMENT
}

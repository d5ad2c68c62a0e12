//! `kiln datasets` (streamed upload and download with a progress bar, list, show, delete)
//! and `kiln models` (list, show, versions, register, alias, delete).

use anyhow::Context;
use futures::StreamExt;
use kiln_types::api::{
    Alias, Dataset, ModelSummary, ModelVersion, Page, RegisterVersion, SetAlias,
};
use reqwest::Method;

use crate::args::{DatasetsCommand, ModelsCommand, OutputFormat};
use crate::client::Client;
use crate::output::{self, opt};

fn dataset_row(d: &Dataset) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.name.clone(),
        d.version.to_string(),
        d.format.clone(),
        d.size_bytes.to_string(),
        d.sha256[..12].to_owned(),
    ]
}

const DATASET_HEADERS: [&str; 6] = ["ID", "NAME", "VERSION", "FORMAT", "BYTES", "SHA256"];

pub async fn run(
    cmd: DatasetsCommand,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match cmd {
        DatasetsCommand::Upload { file, name, format: data_format } => {
            let handle = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = handle.metadata().await?.len();
            let progress = crate::output::byte_progress(size, format == OutputFormat::Table);
            let bar = progress.clone();
            let stream = tokio_util::io::ReaderStream::new(handle).map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    bar.inc(bytes.len() as u64);
                }
                chunk
            });
            let content_type = match file.extension().and_then(|e| e.to_str()) {
                Some("csv") => "text/csv",
                _ => "application/octet-stream",
            };
            let mut query = vec![("name", name)];
            if let Some(f) = data_format {
                query.push(("format", f));
            }
            let req = client
                .request(Method::POST, "/v1/datasets")?
                .query(&query)
                .header("content-type", content_type)
                .header("content-length", size)
                .body(reqwest::Body::wrap_stream(stream));
            let dataset: Result<Dataset, _> = client.send(req).await;
            progress.finish_and_clear();
            let dataset = dataset?;
            output::print(format, &dataset, &DATASET_HEADERS, vec![dataset_row(&dataset)]);
            Ok(())
        }
        DatasetsCommand::List { name } => {
            let mut path = "/v1/datasets?limit=500".to_owned();
            if let Some(name) = name {
                path.push_str(&format!("&name={}", super::runs::urlencode(&name)));
            }
            let page: Page<Dataset> = client.get(&path).await?;
            let rows = page.items.iter().map(dataset_row).collect();
            output::print(format, &page.items, &DATASET_HEADERS, rows);
            Ok(())
        }
        DatasetsCommand::Show { id } => {
            let d: Dataset = client.get(&format!("/v1/datasets/{id}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &d, &[], vec![]),
                OutputFormat::Table => {
                    let fields = [
                        ("id", d.id.to_string()),
                        ("name", d.name.clone()),
                        ("version", d.version.to_string()),
                        ("format", d.format.clone()),
                        ("size_bytes", d.size_bytes.to_string()),
                        ("sha256", d.sha256.to_string()),
                        ("created", d.created_at.to_rfc3339()),
                        ("schema", serde_json::to_string_pretty(&d.schema)?),
                    ];
                    for (k, v) in fields {
                        outln!("{k:<12}{v}");
                    }
                }
            }
            Ok(())
        }
        DatasetsCommand::Download { id, dest, force } => {
            super::download::dataset(client, id, dest, force, format).await
        }
        DatasetsCommand::Delete { id } => {
            let req = client.request(Method::DELETE, &format!("/v1/datasets/{id}"))?;
            client.execute(req).await.with_context(|| format!("dataset {id} not deleted"))?;
            match format {
                OutputFormat::Json => outln!("{}", serde_json::json!({ "deleted": id })),
                OutputFormat::Table => outln!("dataset {id} deleted"),
            }
            Ok(())
        }
    }
}

fn version_row(v: &ModelVersion) -> Vec<String> {
    vec![
        v.model.clone(),
        v.version.to_string(),
        opt(v.job_id),
        v.aliases.join(","),
        v.metrics
            .get("val_accuracy")
            .or(v.metrics.get("val_r2"))
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into()),
    ]
}

const VERSION_HEADERS: [&str; 5] = ["MODEL", "VERSION", "JOB", "ALIASES", "METRIC"];

pub async fn models(
    cmd: ModelsCommand,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::List => {
            let page: Page<ModelSummary> = client.get("/v1/models?limit=500").await?;
            let rows = page
                .items
                .iter()
                .map(|m| {
                    let aliases: Vec<String> =
                        m.aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
                    vec![m.name.clone(), opt(m.latest_version), aliases.join(",")]
                })
                .collect();
            output::print(format, &page.items, &["NAME", "LATEST", "ALIASES"], rows);
        }
        ModelsCommand::Show { name } => {
            let model: ModelSummary = client.get(&format!("/v1/models/{name}")).await?;
            let versions: Page<ModelVersion> =
                client.get(&format!("/v1/models/{name}/versions?limit=500")).await?;
            match format {
                OutputFormat::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "model": model, "versions": versions.items })
                    )?
                ),
                OutputFormat::Table => {
                    let aliases: Vec<String> =
                        model.aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
                    outln!("{:<10}{}", "name", model.name);
                    outln!("{:<10}{}", "latest", opt(model.latest_version));
                    outln!("{:<10}{}", "aliases", aliases.join(", "));
                    outln!("{:<10}{}", "created", model.created_at.to_rfc3339());
                    if !versions.items.is_empty() {
                        outln!();
                        let rows: Vec<Vec<String>> =
                            versions.items.iter().map(version_row).collect();
                        out!("{}", output::table(&VERSION_HEADERS, &rows));
                    }
                }
            }
        }
        ModelsCommand::Delete { name, model_version } => {
            let path = format!("/v1/models/{name}/versions/{model_version}");
            client
                .execute(client.request(Method::DELETE, &path)?)
                .await
                .with_context(|| format!("model {name} version {model_version} not deleted"))?;
            match format {
                OutputFormat::Json => outln!(
                    "{}",
                    serde_json::json!({ "deleted": { "model": name, "version": model_version } })
                ),
                OutputFormat::Table => outln!("model {name} version {model_version} deleted"),
            }
        }
        ModelsCommand::Versions { name } => {
            let page: Page<ModelVersion> =
                client.get(&format!("/v1/models/{name}/versions?limit=500")).await?;
            let rows = page.items.iter().map(version_row).collect();
            output::print(format, &page.items, &VERSION_HEADERS, rows);
        }
        ModelsCommand::Register { name, job } => {
            let version: ModelVersion = client
                .post(&format!("/v1/models/{name}/versions"), &RegisterVersion { job_id: job })
                .await?;
            output::print(format, &version, &VERSION_HEADERS, vec![version_row(&version)]);
        }
        ModelsCommand::Alias { name, alias, model_version: version } => {
            let req = client
                .request(Method::PUT, &format!("/v1/models/{name}/aliases/{alias}"))?
                .json(&SetAlias { version });
            let moved: Alias = client.send(req).await?;
            let row = vec![
                moved.model.clone(),
                moved.alias.clone(),
                moved.version.to_string(),
                opt(moved.previous_version),
            ];
            output::print(format, &moved, &["MODEL", "ALIAS", "VERSION", "PREVIOUS"], vec![row]);
        }
    }
    Ok(())
}

//! `kiln deployments ...`, `kiln predict` and `kiln artifacts gc`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use kiln_types::api::{
    Batching, CreateDeployment, Deployment, DriftReport, GcReport, GcRequest, Page,
    PatchDeployment, PredictResponse, Prediction, TrafficSplit,
};
use reqwest::Method;
use serde_json::Value;

use crate::args::{ArtifactsCommand, DeploymentsCommand, OutputFormat};
use crate::client::Client;
use crate::output::{self, opt};

const HEADERS: [&str; 6] = ["NAME", "MODEL", "FOLLOWS", "STATUS", "TRAFFIC", "LOADED"];

fn row(d: &Deployment) -> Vec<String> {
    let follows = match (&d.alias, d.version) {
        (Some(alias), _) => format!("@{alias}"),
        (None, Some(v)) => format!("v{v}"),
        (None, None) => "-".to_owned(),
    };
    let traffic: Vec<String> =
        d.traffic.iter().map(|t| format!("v{}={}", t.version, t.weight)).collect();
    let loaded: Vec<String> =
        d.versions_loaded.iter().map(|v| format!("v{} ({})", v.version, v.device)).collect();
    let status = match &d.error {
        Some(error) => format!("{} ({error})", d.status),
        None => d.status.clone(),
    };
    vec![d.name.clone(), d.model.clone(), follows, status, traffic.join(" "), loaded.join(", ")]
}

/// Parses `VERSION=WEIGHT` pairs.
fn parse_splits(splits: &[String]) -> anyhow::Result<Vec<TrafficSplit>> {
    splits
        .iter()
        .map(|pair| {
            let (version, weight) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("`{pair}` is not VERSION=WEIGHT (for example 2=10)"))?;
            Ok(TrafficSplit {
                version: version
                    .trim()
                    .trim_start_matches('v')
                    .parse()
                    .with_context(|| format!("`{version}` in `{pair}` is not a version number"))?,
                weight: weight.trim().parse().with_context(|| {
                    format!("`{weight}` in `{pair}` is not a weight (0 to 100; they sum to 100)")
                })?,
            })
        })
        .collect()
}

pub async fn deployments(
    cmd: DeploymentsCommand,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match cmd {
        DeploymentsCommand::Create {
            name,
            model,
            alias,
            model_version,
            max_batch_size,
            max_wait_ms,
            allow_extra_features,
            update,
        } => {
            // Only what was given: the API's defaults for the rest.
            let batching = (max_batch_size.is_some() || max_wait_ms.is_some()).then(|| {
                let defaults = Batching::default();
                Batching {
                    max_batch_size: max_batch_size.unwrap_or(defaults.max_batch_size),
                    max_wait_ms: max_wait_ms.unwrap_or(defaults.max_wait_ms),
                }
            });
            let body = CreateDeployment {
                name: name.clone(),
                model,
                alias,
                version: model_version,
                batching,
                allow_extra_features,
            };
            let res = client
                .transport(client.request(Method::POST, "/v1/deployments")?.json(&body))
                .await?;
            let d: Deployment = if res.status() == reqwest::StatusCode::CONFLICT {
                if !update {
                    bail!(
                        "deployment `{name}` already exists: pass --update to change its batching \
                         and version instead, or see `kiln deployments update --help`"
                    );
                }
                update_existing(client, &body).await?
            } else {
                let url = res.url().to_string();
                client
                    .check(res)
                    .await?
                    .json()
                    .await
                    .with_context(|| format!("unexpected answer from {url}"))?
            };
            output::print(format, &d, &HEADERS, vec![row(&d)]);
        }
        DeploymentsCommand::Traffic { name, splits } => {
            let body = PatchDeployment {
                traffic: Some(parse_splits(&splits)?),
                batching: None,
                allow_extra_features: None,
            };
            let req =
                client.request(Method::PATCH, &format!("/v1/deployments/{name}"))?.json(&body);
            let d: Deployment = client.send(req).await?;
            output::print(format, &d, &HEADERS, vec![row(&d)]);
        }
        DeploymentsCommand::Update {
            name,
            traffic,
            reset_traffic,
            max_batch_size,
            max_wait_ms,
            allow_extra_features,
        } => {
            if traffic.is_empty()
                && !reset_traffic
                && max_batch_size.is_none()
                && max_wait_ms.is_none()
                && allow_extra_features.is_none()
            {
                bail!(
                    "nothing to change: give --traffic, --reset-traffic, --max-batch-size, \
                     --max-wait-ms or --allow-extra-features"
                );
            }
            let traffic = if reset_traffic {
                Some(Vec::new())
            } else if traffic.is_empty() {
                None
            } else {
                Some(parse_splits(&traffic)?)
            };
            // The API takes batching whole: a field not given keeps its current value.
            let batching = if max_batch_size.is_some() || max_wait_ms.is_some() {
                let current: Deployment = client.get(&format!("/v1/deployments/{name}")).await?;
                Some(Batching {
                    max_batch_size: max_batch_size.unwrap_or(current.batching.max_batch_size),
                    max_wait_ms: max_wait_ms.unwrap_or(current.batching.max_wait_ms),
                })
            } else {
                None
            };
            let body = PatchDeployment { traffic, batching, allow_extra_features };
            let req =
                client.request(Method::PATCH, &format!("/v1/deployments/{name}"))?.json(&body);
            let d: Deployment = client.send(req).await?;
            match format {
                OutputFormat::Json => output::print(format, &d, &[], vec![]),
                OutputFormat::Table => {
                    out!("{}", output::table(&HEADERS, &[row(&d)]));
                    outln!(
                        "\nbatching: up to {} rows, waiting up to {} ms; extra features {}",
                        d.batching.max_batch_size,
                        d.batching.max_wait_ms,
                        if d.allow_extra_features { "ignored" } else { "refused" }
                    );
                }
            }
        }
        DeploymentsCommand::Show { name } => {
            let d: Deployment = client.get(&format!("/v1/deployments/{name}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &d, &[], vec![]),
                OutputFormat::Table => {
                    out!("{}", output::table(&HEADERS, &[row(&d)]));
                    let rows: Vec<Vec<String>> = d
                        .versions_loaded
                        .iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                v.device.clone(),
                                v.queue_depth.to_string(),
                                v.loaded_at.to_rfc3339(),
                                v.bundle_sha256[..12.min(v.bundle_sha256.len())].to_owned(),
                            ]
                        })
                        .collect();
                    outln!(
                        "\nbatching: up to {} rows, waiting up to {} ms",
                        d.batching.max_batch_size,
                        d.batching.max_wait_ms
                    );
                    if !rows.is_empty() {
                        outln!();
                        out!(
                            "{}",
                            output::table(
                                &["VERSION", "DEVICE", "QUEUED", "LOADED_AT", "BUNDLE"],
                                &rows
                            )
                        );
                    }
                }
            }
        }
        DeploymentsCommand::List => {
            let page: Page<Deployment> = client.get("/v1/deployments?limit=500").await?;
            let rows = page.items.iter().map(row).collect();
            output::print(format, &page.items, &HEADERS, rows);
        }
        DeploymentsCommand::Delete { name } => {
            let req = client.request(Method::DELETE, &format!("/v1/deployments/{name}"))?;
            client.execute(req).await?;
            if format == OutputFormat::Table {
                outln!("deployment {name} deleted");
            } else {
                outln!("{}", serde_json::json!({"deleted": name}));
            }
        }
        DeploymentsCommand::Drift { name, window, threshold } => {
            let report: DriftReport = client
                .get(&format!("/v1/deployments/{name}/drift?window={window}&threshold={threshold}"))
                .await?;
            match format {
                OutputFormat::Json => output::print(format, &report, &[], vec![]),
                OutputFormat::Table => {
                    let rows: Vec<Vec<String>> = report
                        .features
                        .iter()
                        .map(|f| {
                            vec![
                                f.feature.clone(),
                                format!("{:.4}", f.psi),
                                if f.drifted {
                                    "DRIFTED".to_owned()
                                } else if f.insufficient_samples {
                                    "too few rows".to_owned()
                                } else {
                                    "ok".to_owned()
                                },
                                f.rows.to_string(),
                                f.missing.to_string(),
                            ]
                        })
                        .collect();
                    out!(
                        "{}",
                        output::table(&["FEATURE", "PSI", "STATUS", "ROWS", "MISSING"], &rows)
                    );
                    let verdict = if report.insufficient_samples {
                        format!(
                            "insufficient samples (at least {} are needed to judge drift)",
                            report.min_samples
                        )
                    } else if report.drifted {
                        "drift detected".to_owned()
                    } else {
                        "no drift".to_owned()
                    };
                    outln!(
                        "\nversion {} over the last {} sampled rows; threshold {}: {verdict}",
                        report.model_version,
                        report.window,
                        report.threshold,
                    );
                }
            }
        }
    }
    Ok(())
}

/// `deployments create --update` of an existing deployment: PATCH it to what the create
/// asked for (batching, the version, extra features). The alias a deployment follows is
/// fixed at creation: a different one is refused rather than silently ignored.
async fn update_existing(client: &Client, body: &CreateDeployment) -> anyhow::Result<Deployment> {
    let path = format!("/v1/deployments/{}", body.name);
    let current: Deployment = client.get(&path).await?;
    if current.model != body.model {
        bail!(
            "deployment `{}` serves model `{}`, not `{}`: delete it first to serve another model",
            body.name,
            current.model,
            body.model
        );
    }
    if let Some(alias) = &body.alias
        && current.alias.as_deref() != Some(alias.as_str())
    {
        bail!(
            "deployment `{}` does not follow alias `{alias}` (it {}): the alias is fixed at \
             creation; delete and create it again, or move the alias",
            body.name,
            match (&current.alias, current.version) {
                (Some(a), _) => format!("follows `{a}`"),
                (None, Some(v)) => format!("is pinned to version {v}"),
                (None, None) => "has no target".to_owned(),
            }
        );
    }
    let traffic = body
        .version
        .filter(|v| current.traffic.as_slice() != [TrafficSplit { version: *v, weight: 100 }])
        .map(|version| vec![TrafficSplit { version, weight: 100 }]);
    let patch = PatchDeployment {
        traffic,
        batching: body.batching,
        allow_extra_features: body.allow_extra_features.then_some(true),
    };
    if patch.traffic.is_none() && patch.batching.is_none() && patch.allow_extra_features.is_none() {
        return Ok(current);
    }
    client.send(client.request(Method::PATCH, &path)?.json(&patch)).await
}

/// Reads `{"instances": [...]}` or a bare array.
fn read_instances(path: &Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    match value {
        Value::Array(_) => Ok(serde_json::json!({ "instances": value })),
        Value::Object(ref map) if map.get("instances").is_some_and(Value::is_array) => Ok(value),
        _ => {
            bail!("{} must hold {{\"instances\": [...]}} or an array of instances", path.display())
        }
    }
}

pub async fn predict(
    deployment: &str,
    instances: &Path,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let body = read_instances(instances)?;
    let answer: PredictResponse =
        client.post(&format!("/v1/deployments/{deployment}/predict"), &body).await?;
    let rows = answer
        .predictions
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Prediction::Class { label, probabilities } => vec![
                i.to_string(),
                label.clone(),
                opt(probabilities.get(label).map(|p| format!("{p:.4}"))),
            ],
            Prediction::Value { value } => {
                vec![i.to_string(), format!("{value:.6}"), "-".to_owned()]
            }
        })
        .collect();
    output::print(format, &answer, &["#", "PREDICTION", "PROBABILITY"], rows);
    if format == OutputFormat::Table {
        outln!("\nanswered by {} version {}", answer.deployment, answer.model_version);
    }
    Ok(())
}

pub async fn artifacts(
    cmd: ArtifactsCommand,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let ArtifactsCommand::Gc { apply, grace_hours } = cmd;
    if !(grace_hours.is_finite() && grace_hours >= 0.0) {
        bail!("--grace-hours must be a non-negative number of hours");
    }
    let body = GcRequest { apply, grace_seconds: (grace_hours * 3600.0).round() as u64 };
    let report: GcReport = client.post("/v1/admin/artifacts/gc", &body).await?;
    match format {
        OutputFormat::Json => output::print(format, &report, &[], vec![]),
        OutputFormat::Table => {
            for key in &report.sample {
                outln!("{} {key}", if report.applied { "deleted" } else { "would delete" });
            }
            outln!(
                "{} objects scanned: {} referenced, {} younger than {} h, {} unreferenced ({} bytes){}",
                report.scanned,
                report.referenced,
                report.too_young,
                grace_hours,
                report.candidates,
                report.candidate_bytes,
                if report.applied {
                    format!("; {} deleted", report.deleted)
                } else {
                    "; dry run, nothing deleted (use --apply)".to_owned()
                }
            );
        }
    }
    Ok(())
}

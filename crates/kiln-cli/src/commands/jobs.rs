//! `kiln jobs`: submit (optionally following to the end, see `progress`), list, show,
//! cancel, retry, metrics, logs.

use std::io::Read;

use anyhow::{Context, bail};
use kiln_types::api::{Job, LogLine, MetricSeries, Page};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::args::{JobsCommand, OutputFormat};
use crate::client::Client;
use crate::output::{self, opt};

#[derive(Debug, Deserialize)]
struct LogsPage {
    items: Vec<LogLine>,
    next_cursor: Option<String>,
    done: bool,
}

fn job_row(j: &Job) -> Vec<String> {
    let progress = match (j.progress.epoch, j.progress.epochs) {
        (Some(e), Some(n)) => format!("{e}/{n}"),
        _ => "-".to_owned(),
    };
    vec![
        j.id.to_string(),
        j.state.clone(),
        progress,
        format!("{}/{}", j.attempt, j.max_attempts),
        j.created_at.to_rfc3339(),
    ]
}

const JOB_HEADERS: [&str; 5] = ["ID", "STATE", "EPOCH", "ATTEMPT", "CREATED"];

pub async fn run(cmd: JobsCommand, client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Submit { spec, wait, idempotency_key } => {
            let text = if spec.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&spec)
                    .with_context(|| format!("cannot read {}", spec.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", spec.display()))?;
            let mut req = client.request(Method::POST, "/v1/jobs")?.json(&body);
            if let Some(key) = idempotency_key {
                req = req.header("Idempotency-Key", key);
            }
            let job: Job = client.send(req).await?;
            if !wait {
                output::print(format, &job, &JOB_HEADERS, vec![job_row(&job)]);
                return Ok(());
            }
            eprintln!("submitted job {}", job.id);
            let show = format == OutputFormat::Table;
            let job = super::progress::follow(client, &job.id.to_string(), show).await?;
            match (format, &job.metrics) {
                (OutputFormat::Json, _) => outln!("{}", serde_json::to_string_pretty(&job)?),
                (OutputFormat::Table, Some(metrics)) => eprintln!("final metrics: {metrics}"),
                (OutputFormat::Table, None) => {}
            }
            if job.state != "succeeded" {
                bail!("job {} ended {}: {}", job.id, job.state, job.error.unwrap_or_default());
            }
            Ok(())
        }
        JobsCommand::List { state, limit } => {
            let mut path = format!("/v1/jobs?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={}", super::runs::urlencode(&state)));
            }
            let page: Page<Job> = client.get(&path).await?;
            let rows = page.items.iter().map(job_row).collect();
            output::print(format, &page.items, &JOB_HEADERS, rows);
            Ok(())
        }
        JobsCommand::Show { id } => {
            let job: Job = client.get(&format!("/v1/jobs/{id}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &job, &[], vec![]),
                OutputFormat::Table => {
                    let fields = [
                        ("id", job.id.to_string()),
                        ("state", job.state.clone()),
                        ("attempt", format!("{}/{}", job.attempt, job.max_attempts)),
                        ("progress", job_row(&job)[2].clone()),
                        (
                            "device",
                            format!(
                                "{} (ran on {})",
                                job.device,
                                opt(job.ran_on_device.as_deref())
                            ),
                        ),
                        ("resumed_from_epoch", opt(job.resumed_from_epoch)),
                        ("error", opt(job.error.as_deref())),
                        ("model_bundle", opt(job.model_bundle.as_deref())),
                        ("metrics", opt(job.metrics.as_ref())),
                        ("created", job.created_at.to_rfc3339()),
                        ("finished", opt(job.finished_at.map(|t| t.to_rfc3339()))),
                    ];
                    for (k, v) in fields {
                        outln!("{k:<20}{v}");
                    }
                }
            }
            Ok(())
        }
        JobsCommand::Cancel { id } => {
            let job: Job = client
                .send(client.request(Method::POST, &format!("/v1/jobs/{id}/cancel"))?)
                .await?;
            output::print(format, &job, &JOB_HEADERS, vec![job_row(&job)]);
            Ok(())
        }
        JobsCommand::Retry { id } => {
            let job: Job =
                client.send(client.request(Method::POST, &format!("/v1/jobs/{id}/retry"))?).await?;
            output::print(format, &job, &JOB_HEADERS, vec![job_row(&job)]);
            Ok(())
        }
        JobsCommand::Metrics { id, name } => {
            let path =
                super::runs::metrics_path(&format!("/v1/jobs/{id}/metrics"), name.as_deref());
            let series: MetricSeries = client.get(&path).await?;
            super::runs::print_series(&series, "EPOCH", format);
            Ok(())
        }
        JobsCommand::Logs { id, follow } => {
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/jobs/{id}/logs?limit=500");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", super::runs::urlencode(c)));
                }
                if follow {
                    path.push_str("&wait=20");
                }
                let page: LogsPage = client.get(&path).await?;
                for line in &page.items {
                    match format {
                        OutputFormat::Json => outln!("{}", serde_json::to_string(line)?),
                        OutputFormat::Table => {
                            outln!("{} {:<5} {}", line.ts.to_rfc3339(), line.level, line.message)
                        }
                    }
                }
                cursor = page.next_cursor.or(cursor);
                if page.done || (!follow && page.items.len() < 500) {
                    return Ok(());
                }
            }
        }
    }
}

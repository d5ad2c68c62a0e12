//! `kiln batch-predictions`: create (optionally following to the end), list, show, and
//! download the predictions (streamed to a hidden file, checked against the output's size,
//! then renamed into place; `-` writes to stdout).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use kiln_types::api::Page;
use kiln_types::batch::BatchPrediction;
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::args::{BatchCommand, OutputFormat};
use crate::client::Client;
use crate::output::{self, opt};

const HEADERS: [&str; 7] = ["ID", "STATE", "MODEL", "ROWS", "BAD", "ATTEMPT", "CREATED"];

fn rows_text(b: &BatchPrediction) -> String {
    match b.progress.rows {
        Some(n) => format!("{}/{n}", b.progress.rows_done),
        None => "-".to_owned(),
    }
}

fn row(b: &BatchPrediction) -> Vec<String> {
    vec![
        b.id.to_string(),
        b.state.clone(),
        format!("{} v{}", b.model, b.version),
        rows_text(b),
        b.bad_rows.to_string(),
        format!("{}/{}", b.attempt, b.max_attempts),
        b.created_at.to_rfc3339(),
    ]
}

fn ended(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

pub async fn run(cmd: BatchCommand, client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        BatchCommand::Create {
            model,
            model_version: version,
            alias,
            dataset,
            id_column,
            rows_per_part,
            wait,
            download: to,
            force,
        } => {
            let mut body = json!({"model": model, "dataset_id": dataset});
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            if let Some(a) = alias {
                body["alias"] = json!(a);
            }
            if let Some(c) = id_column {
                body["id_column"] = json!(c);
            }
            if let Some(n) = rows_per_part {
                body["rows_per_part"] = json!(n);
            }
            let created: BatchPrediction = client
                .send(client.request(Method::POST, "/v1/batch-predictions")?.json(&body))
                .await?;
            if !wait && to.is_none() {
                output::print(format, &created, &HEADERS, vec![row(&created)]);
                return Ok(());
            }
            eprintln!("queued batch prediction {}", created.id);
            let done = follow(client, created.id, format == OutputFormat::Table).await?;
            match format {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&done)?),
                OutputFormat::Table => show(&done),
            }
            if done.state != "succeeded" {
                bail!(
                    "batch prediction {} ended {}: {}",
                    done.id,
                    done.state,
                    done.error.unwrap_or_default()
                );
            }
            if let Some(to) = to {
                // With --json the answer above is the whole output: nothing more on stdout.
                download(client, done.id, Some(to), force, format, format == OutputFormat::Table)
                    .await?;
            }
            Ok(())
        }
        BatchCommand::List { limit } => {
            let page: Page<BatchPrediction> =
                client.get(&format!("/v1/batch-predictions?limit={limit}")).await?;
            let rows = page.items.iter().map(row).collect();
            output::print(format, &page.items, &HEADERS, rows);
            Ok(())
        }
        BatchCommand::Show { id } => {
            let b: BatchPrediction = client.get(&format!("/v1/batch-predictions/{id}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &b, &[], vec![]),
                OutputFormat::Table => show(&b),
            }
            Ok(())
        }
        BatchCommand::Download { id, dest, force } => {
            download(client, id, dest, force, format, true).await
        }
    }
}

fn show(b: &BatchPrediction) {
    let version = match &b.alias {
        Some(a) => format!("{} v{} (alias {a})", b.model, b.version),
        None => format!("{} v{}", b.model, b.version),
    };
    let fields = [
        ("id", b.id.to_string()),
        ("state", b.state.clone()),
        ("model", version),
        ("dataset", opt(b.dataset_id)),
        ("rows", rows_text(b)),
        ("bad rows", b.bad_rows.to_string()),
        ("attempt", format!("{}/{}", b.attempt, b.max_attempts)),
        ("device", opt(b.ran_on_device.as_deref())),
        ("error", opt(b.error.as_deref())),
        (
            "output",
            b.output.as_ref().map_or_else(
                || "-".to_owned(),
                |o| {
                    format!(
                        "{} predictions in {} part(s), {} bytes: kiln batch-predictions download {}",
                        o.predictions,
                        o.parts.len(),
                        o.size_bytes,
                        b.id
                    )
                },
            ),
        ),
    ];
    for (k, v) in fields {
        outln!("{k:<10} {v}");
    }
    for bad in b.bad_row_samples.iter().take(10) {
        outln!(
            "  bad row {}{}: {}",
            bad.row,
            bad.field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default(),
            bad.error
        );
    }
    if b.bad_rows > 10 {
        outln!("  ... {} more (all counted; the first 100 are in --json)", b.bad_rows - 10);
    }
}

/// Polls until the batch prediction ends, printing progress on a terminal.
async fn follow(client: &Client, id: Uuid, show: bool) -> anyhow::Result<BatchPrediction> {
    let mut last = String::new();
    loop {
        let b: BatchPrediction = client.get(&format!("/v1/batch-predictions/{id}")).await?;
        let line = format!("{} rows {}, {} bad", b.state, rows_text(&b), b.bad_rows);
        if show && line != last {
            eprintln!("{line}");
            last = line;
        }
        if ended(&b.state) {
            return Ok(b);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn download(
    client: &Client,
    id: Uuid,
    dest: Option<PathBuf>,
    force: bool,
    format: OutputFormat,
    announce: bool,
) -> anyhow::Result<()> {
    let b: BatchPrediction = client.get(&format!("/v1/batch-predictions/{id}")).await?;
    let Some(out) = &b.output else {
        bail!("batch prediction {id} is {}; its output is ready once it has succeeded", b.state);
    };
    let joined_parts = out.parts.iter().enumerate().filter(|(i, p)| *i == 0 || p.predictions > 0);
    // Every part after the first loses its header line when joined.
    let expected: u64 = joined_parts
        .map(
            |(i, p)| if i == 0 { p.size_bytes } else { p.size_bytes - out.header.len() as u64 - 1 },
        )
        .sum();
    let dest = dest.unwrap_or_else(|| PathBuf::from(format!("{id}.csv")));
    let to_stdout = dest.as_os_str() == "-";
    if !to_stdout && dest.exists() && !force {
        bail!("{} exists; pass --force to replace it", dest.display());
    }
    let res = client
        .execute(client.request(Method::GET, &format!("/v1/batch-predictions/{id}/output"))?)
        .await?;
    let partial = if to_stdout {
        None
    } else {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().context("the destination names no file")?;
        Some(dir.join(format!(".{}.kiln-partial-{}", name.to_string_lossy(), Uuid::new_v4())))
    };
    let mut size = 0u64;
    let mut body = res.bytes_stream();
    let result: anyhow::Result<()> = async {
        let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin> = match &partial {
            Some(path) => Box::new(
                tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("cannot write {}", path.display()))?,
            ),
            None => Box::new(tokio::io::stdout()),
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the connection broke off")?;
            sink.write_all(&chunk).await.context("writing the download")?;
            size += chunk.len() as u64;
        }
        sink.flush().await.context("writing the download")?;
        if size != expected {
            bail!("the download has {size} bytes, the output {expected}: incomplete");
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        if let Some(path) = &partial {
            let _ = std::fs::remove_file(path);
        }
        return Err(err);
    }
    if let Some(path) = &partial {
        if !force && dest.exists() {
            let _ = std::fs::remove_file(path);
            bail!("{} appeared meanwhile; pass --force to replace it", dest.display());
        }
        std::fs::rename(path, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
        if !announce {
            return Ok(());
        }
        match format {
            OutputFormat::Json => outln!(
                "{}",
                json!({"id": id, "path": dest.display().to_string(), "size_bytes": size,
                       "predictions": out.predictions})
            ),
            OutputFormat::Table => outln!(
                "{} predictions ({size} bytes) written to {}",
                out.predictions,
                dest.display()
            ),
        }
    }
    Ok(())
}

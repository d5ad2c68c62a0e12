//! `kiln studies`: create a hyperparameter search from a JSON file (optionally following it
//! to the end), list, show (the trials as a table), stop, and register the best trial's
//! model.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_types::api::{ModelVersion, Page};
use kiln_types::study::{Study, StudyState};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::args::{OutputFormat, StudiesCommand};
use crate::client::Client;
use crate::output::{self, opt};

const HEADERS: [&str; 7] = ["ID", "NAME", "STATE", "TRIALS", "BEST", "ALGORITHM", "CREATED"];

fn trials_text(s: &Study) -> String {
    let c = &s.counts;
    let total = c.queued + c.running + c.succeeded + c.pruned + c.failed + c.cancelled;
    format!("{total}/{}", s.spec.trial_budget())
}

fn best_text(s: &Study) -> String {
    s.best_trial.as_ref().map_or_else(
        || "-".to_owned(),
        |b| format!("{} {:.4} (trial {})", s.spec.objective.metric, b.objective, b.number),
    )
}

fn row(s: &Study) -> Vec<String> {
    vec![
        s.id.to_string(),
        s.name.clone(),
        s.state.as_str().to_owned(),
        trials_text(s),
        best_text(s),
        serde_json::to_value(s.spec.algorithm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        s.created_at.to_rfc3339(),
    ]
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

pub async fn run(cmd: StudiesCommand, client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        StudiesCommand::Create { spec, dataset, wait } => {
            let mut body = read_json(&spec)?;
            if let Some(dataset) = dataset {
                match body.get_mut("base").and_then(Value::as_object_mut) {
                    Some(base) => {
                        base.insert("dataset_id".to_owned(), json!(dataset));
                    }
                    None => {
                        bail!("{} has no `base` job spec to set the dataset of", spec.display())
                    }
                }
            }
            let created: Study = client.post("/v1/studies", &body).await?;
            if !wait {
                output::print(format, &created, &HEADERS, vec![row(&created)]);
                return Ok(());
            }
            eprintln!("study {} started", created.id);
            let done = follow(client, created.id, format == OutputFormat::Table).await?;
            match format {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&done)?),
                OutputFormat::Table => show(&done),
            }
            if done.state != StudyState::Succeeded {
                bail!(
                    "study {} ended {}: {}",
                    done.id,
                    done.state.as_str(),
                    opt(done.reason.as_deref())
                );
            }
            Ok(())
        }
        StudiesCommand::List { limit } => {
            let page: Page<Study> = client.get(&format!("/v1/studies?limit={limit}")).await?;
            let rows = page.items.iter().map(row).collect();
            output::print(format, &page.items, &HEADERS, rows);
            Ok(())
        }
        StudiesCommand::Show { id } => {
            let s: Study = client.get(&format!("/v1/studies/{id}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &s, &[], vec![]),
                OutputFormat::Table => show(&s),
            }
            Ok(())
        }
        StudiesCommand::Stop { id } => {
            let s: Study = client.post(&format!("/v1/studies/{id}/stop"), &json!({})).await?;
            output::print(format, &s, &HEADERS, vec![row(&s)]);
            Ok(())
        }
        StudiesCommand::Register { id, model } => {
            let v: ModelVersion = client
                .post(&format!("/v1/studies/{id}/register"), &json!({"model": model}))
                .await?;
            match format {
                OutputFormat::Json => output::print(format, &v, &[], vec![]),
                OutputFormat::Table => {
                    outln!(
                        "registered {} version {} from job {}",
                        v.model,
                        v.version,
                        opt(v.job_id)
                    )
                }
            }
            Ok(())
        }
    }
}

fn show(s: &Study) {
    let fields = [
        ("id", s.id.to_string()),
        ("name", s.name.clone()),
        ("state", s.state.as_str().to_owned()),
        ("reason", opt(s.reason.as_deref())),
        ("trials", trials_text(s)),
        ("best", best_text(s)),
    ];
    for (k, v) in fields {
        outln!("{k:<8} {v}");
    }
    let c = &s.counts;
    outln!(
        "counts   {} queued, {} running, {} succeeded, {} pruned, {} failed, {} cancelled",
        c.queued,
        c.running,
        c.succeeded,
        c.pruned,
        c.failed,
        c.cancelled
    );
    if s.trials.is_empty() {
        return;
    }
    let mut headers =
        vec!["#".to_owned(), "STATE".to_owned(), "OBJECTIVE".to_owned(), "EPOCHS".to_owned()];
    headers.extend(s.spec.parameters.keys().cloned());
    let rows: Vec<Vec<String>> = s
        .trials
        .iter()
        .map(|t| {
            let mut r = vec![
                t.number.to_string(),
                t.state.as_str().to_owned(),
                t.objective.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}")),
                if t.promotions > 0 {
                    format!("{} (promoted {}x)", t.epochs, t.promotions)
                } else {
                    t.epochs.to_string()
                },
            ];
            r.extend(
                s.spec
                    .parameters
                    .keys()
                    .map(|k| t.params.get(k).map_or_else(|| "-".to_owned(), compact)),
            );
            r
        })
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    out!("{}", output::table(&headers, &rows));
}

fn compact(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() => format!("{x:.6}"),
        _ => v.to_string(),
    }
}

/// Polls until the study ends, printing each change on a terminal.
async fn follow(client: &Client, id: Uuid, show: bool) -> anyhow::Result<Study> {
    let mut last = String::new();
    loop {
        let s: Study = client.get(&format!("/v1/studies/{id}")).await?;
        let c = &s.counts;
        let line = format!(
            "{}: trials {} ({} running, {} succeeded, {} pruned, {} failed); best {}",
            s.state.as_str(),
            trials_text(&s),
            c.running,
            c.succeeded,
            c.pruned,
            c.failed,
            best_text(&s)
        );
        if show && line != last {
            eprintln!("{line}");
            last = line;
        }
        if s.state != StudyState::Running {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

//! `kiln runs` (list, show, metrics, create, delete) and the metric tables `kiln jobs
//! metrics` shares.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use kiln_types::api::{CreateRun, MetricSeries, Page, Run};
use reqwest::Method;
use serde_json::{Value, json};

use crate::args::{OutputFormat, RunsCommand};
use crate::client::Client;
use crate::output::{self, opt};

const HEADERS: [&str; 6] = ["ID", "NAME", "STATUS", "JOB", "CREATED", "FINISHED"];

fn row(r: &Run) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.name.clone(),
        r.status.clone(),
        opt(r.job_id),
        r.created_at.to_rfc3339(),
        opt(r.finished_at.map(|t| t.to_rfc3339())),
    ]
}

/// Parses `KEY=VALUE` parameters; VALUE is JSON when it parses (`0.01`, `true`, `[64,32]`),
/// else a string.
fn parse_params(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut params = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| anyhow!("`{pair}` is not KEY=VALUE (for example lr=0.01)"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        if params.insert(key.trim().to_owned(), value).is_some() {
            anyhow::bail!("parameter `{}` is given twice", key.trim());
        }
    }
    Ok(params)
}

/// The path of a metrics query, with `?name=` when one series is asked for.
pub fn metrics_path(base: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{base}?name={}", urlencode(name)),
        None => base.to_owned(),
    }
}

/// Percent-encodes a query value.
pub fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A table per series (`STEP VALUE`), or the API's JSON as is.
pub fn print_series(series: &MetricSeries, step_name: &str, format: OutputFormat) {
    match format {
        OutputFormat::Json => output::print(format, series, &[], vec![]),
        OutputFormat::Table if series.series.is_empty() => outln!("no metrics yet"),
        OutputFormat::Table => {
            for (i, (name, points)) in series.series.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                outln!("{name} ({} points)", points.len());
                let rows: Vec<Vec<String>> = points
                    .iter()
                    .map(|(step, value)| vec![step.to_string(), format!("{value:.6}")])
                    .collect();
                out!("{}", output::table(&[step_name, "VALUE"], &rows));
            }
        }
    }
}

pub async fn run(cmd: RunsCommand, client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::List { limit } => {
            let page: Page<Run> = client.get(&format!("/v1/runs?limit={limit}")).await?;
            let rows = page.items.iter().map(row).collect();
            output::print(format, &page.items, &HEADERS, rows);
        }
        RunsCommand::Show { id } => {
            let run: Run = client.get(&format!("/v1/runs/{id}")).await?;
            match format {
                OutputFormat::Json => output::print(format, &run, &[], vec![]),
                OutputFormat::Table => {
                    let params = serde_json::to_string(&run.params)?;
                    let fields = [
                        ("id", run.id.to_string()),
                        ("name", run.name.clone()),
                        ("status", run.status.clone()),
                        ("job", opt(run.job_id)),
                        ("params", params),
                        ("created", run.created_at.to_rfc3339()),
                        ("finished", opt(run.finished_at.map(|t| t.to_rfc3339()))),
                    ];
                    for (k, v) in fields {
                        outln!("{k:<12}{v}");
                    }
                }
            }
        }
        RunsCommand::Metrics { id, name } => {
            let series: MetricSeries = client
                .get(&metrics_path(&format!("/v1/runs/{id}/metrics"), name.as_deref()))
                .await?;
            print_series(&series, "STEP", format);
        }
        RunsCommand::Create { name, params } => {
            let body = CreateRun { name, params: parse_params(&params)? };
            let run: Run = client.post("/v1/runs", &body).await?;
            output::print(format, &run, &HEADERS, vec![row(&run)]);
        }
        RunsCommand::Delete { id } => {
            let req = client.request(Method::DELETE, &format!("/v1/runs/{id}"))?;
            client.execute(req).await.with_context(|| format!("run {id} not deleted"))?;
            match format {
                OutputFormat::Json => outln!("{}", json!({ "deleted": id })),
                OutputFormat::Table => outln!("run {id} deleted"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_when_they_parse_and_strings_otherwise() {
        let params =
            parse_params(&["lr=0.01".into(), "opt=adam".into(), "hidden=[64,32]".into()]).unwrap();
        assert_eq!(params["lr"], json!(0.01));
        assert_eq!(params["opt"], json!("adam"));
        assert_eq!(params["hidden"], json!([64, 32]));
        assert!(parse_params(&["lr".into()]).unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(parse_params(&["=1".into()]).is_err());
        assert!(
            parse_params(&["a=1".into(), "a=2".into()]).unwrap_err().to_string().contains("twice")
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(metrics_path("/m", Some("val loss/x")), "/m?name=val%20loss%2Fx");
        assert_eq!(metrics_path("/m", None), "/m");
    }
}

//! `kiln doctor`: one line per check, non-zero exit when any fails.

use kiln_types::api::{Readiness, Worker};
use serde_json::json;

use crate::args::{DoctorArgs, OutputFormat};
use crate::client::Client;
use crate::config::Resolved;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub async fn run(
    args: DoctorArgs,
    resolved: &Resolved,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    match &args.database_url {
        Some(url) => {
            let db_args = kiln_db::DbArgs::new(url.clone(), 1);
            match kiln_db::connect(&db_args).await {
                Ok(db) => {
                    checks.push(Check {
                        name: "postgres",
                        ok: true,
                        detail: format!("connected to {}", kiln_db::redact_url(url.expose())),
                    });
                    match kiln_db::pending_migrations(&db).await {
                        Ok(p) if p.is_empty() => checks.push(Check {
                            name: "migrations",
                            ok: true,
                            detail: "up to date".into(),
                        }),
                        Ok(p) => checks.push(Check {
                            name: "migrations",
                            ok: false,
                            detail: format!("{} pending: run `kiln admin migrate`", p.len()),
                        }),
                        Err(e) => checks.push(Check {
                            name: "migrations",
                            ok: false,
                            detail: e.to_string(),
                        }),
                    }
                }
                Err(e) => {
                    checks.push(Check { name: "postgres", ok: false, detail: format!("{e}") })
                }
            }
        }
        None => checks.push(Check {
            name: "postgres",
            ok: true,
            detail: "skipped (no KILN_DATABASE_URL)".into(),
        }),
    }
    let client = Client::new(resolved)?;
    let http = reqwest::Client::new();
    match http.get(format!("{}/readyz", client.base())).send().await {
        Ok(res) => {
            let ready = res.status().is_success();
            let body: Option<Readiness> = res.json().await.ok();
            let detail = body.map(|b| format!("{:?}", b.checks)).unwrap_or_default();
            checks.push(Check {
                name: "api",
                ok: ready,
                detail: format!("{} {detail}", client.base()),
            });
        }
        Err(e) => checks.push(Check {
            name: "api",
            ok: false,
            detail: format!("cannot reach {}: {e}", client.base()),
        }),
    }
    if resolved.token.is_some() {
        match client.get::<Vec<Worker>>("/v1/admin/workers").await {
            Ok(workers) => {
                let live = workers
                    .iter()
                    .filter(|w| w.stopped_at.is_none() && w.heartbeat_age_seconds < 120.0)
                    .count();
                checks.push(Check {
                    name: "workers",
                    ok: live > 0,
                    detail: format!("{live} live worker(s)"),
                });
            }
            Err(e) => checks.push(Check { name: "workers", ok: false, detail: e.to_string() }),
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    match format {
        OutputFormat::Json => {
            let list: Vec<_> = checks
                .iter()
                .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail}))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&list)?);
        }
        OutputFormat::Table => {
            for c in &checks {
                outln!("{} {:<11} {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

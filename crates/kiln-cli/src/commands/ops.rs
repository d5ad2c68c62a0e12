//! `kiln queue stats` and `kiln workers list`.

use kiln_types::api::{QueueStats, Worker};

use crate::args::{OutputFormat, QueueCommand, WorkersCommand};
use crate::client::Client;
use crate::output::{self, opt};

pub async fn queue(cmd: QueueCommand, client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let QueueCommand::Stats = cmd;
    let stats: QueueStats = client.get("/v1/admin/queue").await?;
    match format {
        OutputFormat::Json => output::print(format, &stats, &[], vec![]),
        OutputFormat::Table => {
            let rows = stats
                .counts
                .iter()
                .map(|c| vec![c.team.clone(), c.state.clone(), c.count.to_string()])
                .collect::<Vec<_>>();
            out!("{}", output::table(&["TEAM", "STATE", "JOBS"], &rows));
            outln!(
                "\noldest queued job: {}",
                stats
                    .oldest_queued_age_seconds
                    .map(|s| format!("{s:.1} s ago"))
                    .unwrap_or_else(|| "none queued".to_owned())
            );
            if !stats.running.is_empty() {
                let rows = stats
                    .running
                    .iter()
                    .map(|r| {
                        vec![
                            r.job_id.to_string(),
                            r.team.clone(),
                            r.worker_id.to_string(),
                            r.attempt.to_string(),
                            r.lease_expires_at.to_rfc3339(),
                        ]
                    })
                    .collect::<Vec<_>>();
                outln!("\nrunning leases:");
                out!(
                    "{}",
                    output::table(&["JOB", "TEAM", "WORKER", "ATTEMPT", "LEASE_EXPIRES"], &rows)
                );
            }
        }
    }
    Ok(())
}

pub async fn workers(
    cmd: WorkersCommand,
    client: &Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let WorkersCommand::List = cmd;
    let workers: Vec<Worker> = client.get("/v1/admin/workers").await?;
    let rows = workers
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.host.clone(),
                w.device.clone(),
                format!("{:.0} s ago", w.heartbeat_age_seconds),
                opt(w.current_job_id),
                if w.lost {
                    "lost".to_owned()
                } else if w.stopped_at.is_some() {
                    "stopped".to_owned()
                } else {
                    "live".to_owned()
                },
            ]
        })
        .collect();
    output::print(
        format,
        &workers,
        &["ID", "HOST", "DEVICE", "LAST_HEARTBEAT", "CURRENT_JOB", "STATUS"],
        rows,
    );
    Ok(())
}

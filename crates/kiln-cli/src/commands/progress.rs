//! `kiln jobs submit --wait`: live epoch progress from the job's metric series.
//!
//! The worker writes each epoch's metrics as the epoch ends, while the job's `progress`
//! field is only refreshed by its heartbeat (every 10 s by default). So the follower polls
//! `GET /v1/jobs/{id}` (state) and `GET /v1/jobs/{id}/metrics` (epochs done, latest values)
//! about once a second. On a terminal it draws a progress bar with the latest metric values;
//! elsewhere (a CI log) it prints one plain line per epoch and per state change. The ETA
//! counts only the time the job has been running, from the epochs this attempt finished —
//! never the time it waited in the queue.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use kiln_types::api::{Job, MetricSeries};
use kiln_types::spec::JobSpec;

use crate::client::Client;

/// How often the follower asks.
const POLL: Duration = Duration::from_secs(1);

/// Epoch → the metric values written for it, by series name.
type Epochs = BTreeMap<i64, BTreeMap<String, f64>>;

fn by_epoch(series: &MetricSeries) -> Epochs {
    let mut epochs = Epochs::new();
    for (name, points) in &series.series {
        for (step, value) in points {
            epochs.entry(*step).or_default().insert(name.clone(), *value);
        }
    }
    epochs
}

/// `train_loss 0.4123, val_accuracy 0.9333`.
fn metrics_text(values: &BTreeMap<String, f64>) -> String {
    values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

fn ended(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "pruned")
}

/// How many epochs the job trains at most: the worker's report once there, else the spec.
fn total_epochs(job: &Job) -> Option<u64> {
    if let Some(n) = job.progress.epochs.filter(|n| *n > 0) {
        return Some(n as u64);
    }
    JobSpec::parse(&job.spec).ok().map(|spec| u64::from(spec.hyperparameters.epochs))
}

/// The running clock: when this attempt was first seen running, and at which epoch.
#[derive(Debug, Clone, Copy)]
struct Clock {
    since: Instant,
    from_epoch: i64,
    /// When the newest epoch was first seen.
    last_epoch_at: Instant,
}

impl Clock {
    /// Seconds left: the mean running time of the epochs finished in this attempt times the
    /// epochs left. None until one has finished.
    fn eta(&self, done: i64, total: u64) -> Option<f64> {
        let finished = done - self.from_epoch;
        if finished <= 0 {
            return None;
        }
        let per_epoch =
            self.last_epoch_at.duration_since(self.since).as_secs_f64() / finished as f64;
        let left = (total as i64 - done).max(0) as f64;
        Some(per_epoch * left)
    }
}

fn eta_text(eta: Option<f64>) -> String {
    match eta {
        Some(s) if s >= 90.0 => format!("ETA {:.0} min", s / 60.0),
        Some(s) => format!("ETA {s:.0} s"),
        None => "ETA -".to_owned(),
    }
}

/// Follows the job until it ends and returns its last state.
pub async fn follow(client: &Client, id: &str, show: bool) -> anyhow::Result<Job> {
    let tty = show && std::io::stderr().is_terminal();
    let bar = if tty { Some(new_bar()) } else { None };
    let mut state = String::new();
    let mut clock: Option<Clock> = None;
    let mut printed: i64 = 0;
    let mut newest: i64 = 0;
    loop {
        let job: Job = client.get(&format!("/v1/jobs/{id}")).await?;
        let epochs = if job.state == "queued" && newest == 0 {
            Epochs::new()
        } else {
            by_epoch(&client.get(&format!("/v1/jobs/{id}/metrics")).await?)
        };
        let done = epochs.keys().next_back().copied().unwrap_or(0);
        let now = Instant::now();
        match (job.state.as_str(), &mut clock) {
            ("running", None) => {
                clock = Some(Clock { since: now, from_epoch: done, last_epoch_at: now })
            }
            ("running", Some(c)) if done > newest => c.last_epoch_at = now,
            ("running", Some(_)) => {}
            // Back in the queue (a lost lease, a retry): a new attempt, a new clock.
            _ => clock = None,
        }
        newest = newest.max(done);
        let total = total_epochs(&job);
        let eta = match (clock, total) {
            (Some(c), Some(n)) => c.eta(done, n),
            _ => None,
        };
        let of = total.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        // A new state is told before this poll's epochs, an end after them.
        let changed = show && job.state != state;
        if changed {
            state.clone_from(&job.state);
            match &bar {
                Some(bar) => bar.set_prefix(state.clone()),
                None if !ended(&state) => eprintln!("job {id} {state}"),
                None => {}
            }
        }
        match &bar {
            Some(bar) => {
                if let Some(n) = total {
                    bar.set_length(n);
                }
                bar.set_position(done.max(0) as u64);
                let latest = epochs.values().next_back().map(metrics_text).unwrap_or_default();
                let message = if job.state == "queued" {
                    "waiting for a worker".to_owned()
                } else {
                    format!("{} {latest}", eta_text(eta))
                };
                bar.set_message(message);
            }
            None if show => {
                for (epoch, values) in epochs.range(printed + 1..) {
                    let eta = if *epoch == done && !ended(&job.state) {
                        format!(" ({})", eta_text(eta))
                    } else {
                        String::new()
                    };
                    eprintln!("epoch {epoch}/{of}: {}{eta}", metrics_text(values));
                }
            }
            None => {}
        }
        printed = printed.max(done);
        if changed && bar.is_none() && ended(&state) {
            eprintln!("job {id} {state}");
        }
        if ended(&job.state) {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
                if let Some(values) = epochs.values().next_back() {
                    eprintln!("epoch {done}/{of}: {}", metrics_text(values));
                }
                eprintln!("job {id} {}", job.state);
            }
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn new_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix:9} [{bar:30}] epoch {pos}/{len} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_regroup_by_epoch() {
        let series = MetricSeries {
            series: BTreeMap::from([
                ("train_loss".to_owned(), vec![(1, 0.9), (2, 0.5)]),
                ("val_accuracy".to_owned(), vec![(1, 0.6), (2, 0.8)]),
            ]),
        };
        let epochs = by_epoch(&series);
        assert_eq!(epochs.len(), 2);
        assert_eq!(metrics_text(&epochs[&2]), "train_loss 0.5000, val_accuracy 0.8000");
    }

    #[test]
    fn the_eta_counts_only_epochs_this_attempt_ran() {
        let since = Instant::now();
        // Resumed at epoch 4, epoch 6 seen 10 s after the attempt started: 5 s an epoch.
        let clock = Clock { since, from_epoch: 4, last_epoch_at: since + Duration::from_secs(10) };
        assert_eq!(clock.eta(6, 10), Some(20.0));
        assert_eq!(clock.eta(4, 10), None, "no epoch finished yet in this attempt");
        assert_eq!(clock.eta(10, 10), Some(0.0));
        assert_eq!(eta_text(Some(20.0)), "ETA 20 s");
        assert_eq!(eta_text(Some(600.0)), "ETA 10 min");
    }
}

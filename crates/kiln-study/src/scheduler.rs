//! The study scheduler: a loop in every API process that advances each running study under
//! its row lock (so with several replicas, each study is advanced by one at a time), from
//! what PostgreSQL holds and nothing else — a restarted process picks up where the last
//! one stopped.
//!
//! One pass over a study: end it if too many trials failed, the target was reached, or
//! every trial has run; otherwise fill the free trial slots (`parallel_trials` less those
//! queued or running), ASHA's promotions of paused trials first, then new proposals.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_queue::{NewJob, NewTrial, Queue, QueueError, StudyLock, TrialRow};
use kiln_types::JobState;
use kiln_types::spec::JobSpec;
use kiln_types::study::{EarlyStopping, StudySpec, StudyState, TrialInput, apply_params};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::pruner::{self, Paused};
use crate::sampler::{self, Observation};

/// How often the scheduler looks at running studies by default.
pub const DEFAULT_TICK: Duration = Duration::from_millis(500);

/// Starts the scheduler on the current tokio runtime; it runs until the runtime stops. A
/// pass runs as soon as a trial ends (PostgreSQL notifies `kiln_studies`), and every `tick`
/// anyway (new studies, lost notifications, a listener that cannot connect).
pub fn spawn(queue: Queue, tick: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut waiter = None;
        loop {
            if let Err(err) = tick_once(&queue).await {
                tracing::warn!(error = %err, "the study scheduler's pass failed; it tries again");
            }
            if waiter.is_none() {
                waiter = queue.study_waiter(tick).await.ok();
            }
            match &mut waiter {
                Some(w) => {
                    w.wait().await;
                }
                None => tokio::time::sleep(tick).await,
            }
        }
    })
}

/// One pass over every running study.
pub async fn tick_once(queue: &Queue) -> Result<(), QueueError> {
    for id in queue.running_studies().await? {
        let Some(mut lock) = queue.lock_study(id).await? else { continue };
        match advance(&mut lock).await {
            Ok(()) => lock.commit().await?,
            Err(err) => {
                tracing::warn!(study = %id, error = %err, "could not advance the study");
            }
        }
    }
    Ok(())
}

/// The objective of a trial: the finished model's value, else the last epoch's.
pub fn objective_of(spec: &StudySpec, trial: &TrialRow) -> Option<f64> {
    if trial.state == JobState::Succeeded
        && let Some(result) = &trial.result
    {
        let metric = &spec.objective.metric;
        if let Some((_, v)) = result.metrics.series().into_iter().find(|(n, _)| n == metric) {
            return Some(v);
        }
    }
    trial.last_value()
}

/// The best succeeded trial and its objective.
pub fn best_trial<'a>(spec: &StudySpec, trials: &'a [TrialRow]) -> Option<(&'a TrialRow, f64)> {
    let goal = spec.objective.goal;
    trials
        .iter()
        .filter(|t| t.state == JobState::Succeeded)
        .filter_map(|t| Some((t, objective_of(spec, t).filter(|v| v.is_finite())?)))
        .reduce(|a, b| if goal.better(b.1, a.1) { b } else { a })
}

async fn advance(lock: &mut StudyLock) -> Result<(), QueueError> {
    let spec = lock.study.spec.clone();
    let trials = lock.trials().await?;
    let count = |s: JobState| trials.iter().filter(|t| t.state == s).count() as u32;
    let failed = count(JobState::Failed);
    let mut active = count(JobState::Queued) + count(JobState::Running);

    if failed > spec.max_failed_trials {
        let reason = format!(
            "{failed} trials failed, more than max_failed_trials ({})",
            spec.max_failed_trials
        );
        return lock.finish(StudyState::Failed, &reason, true).await;
    }
    if let Some((best, value)) = best_trial(&spec, &trials)
        && spec.objective.reached(value)
    {
        let reason = format!(
            "trial {} reached the target: {} {value:.4}",
            best.number, spec.objective.metric
        );
        return lock.finish(StudyState::Succeeded, &reason, true).await;
    }

    let mut slots = spec.parallel_trials.saturating_sub(active);
    // ASHA first promotes paused trials that now rank high enough at their rung.
    if let Some(rule @ EarlyStopping::Asha { .. }) = spec.early_stopping
        && slots > 0
    {
        let paused: Vec<Paused> = trials
            .iter()
            .filter(|t| t.state == JobState::Pruned)
            .filter_map(|t| {
                let (rung_epoch, value) =
                    t.series.iter().rev().find(|(e, _)| rule.rung_of(*e).is_some())?;
                Some(Paused { job_id: t.job_id, rung_epoch: *rung_epoch, value: *value })
            })
            .collect();
        let at_rung = |epoch: u32| trials.iter().filter_map(|t| t.value_at(epoch)).collect();
        for job_id in pruner::promotable(&rule, spec.objective.goal, &paused, at_rung) {
            if slots == 0 {
                break;
            }
            if lock.promote(job_id).await? {
                tracing::info!(study = %lock.study.id, job = %job_id, "ASHA promoted a paused trial");
                slots -= 1;
                active += 1;
            }
        }
    }

    let budget = spec.trial_budget();
    let mut proposed = trials.len() as u32;
    let history: Vec<Observation> = trials
        .iter()
        .filter(|t| matches!(t.state, JobState::Succeeded | JobState::Pruned))
        .filter_map(|t| {
            Some(Observation {
                params: t.params.clone(),
                value: objective_of(&spec, t)?,
                pruned: t.state == JobState::Pruned,
            })
        })
        .collect();
    while slots > 0 && proposed < budget {
        let params = sampler::propose(&spec, proposed, &history);
        let trial = match new_trial(lock, &spec, proposed, params) {
            Ok(trial) => trial,
            Err(reason) => return lock.finish(StudyState::Failed, &reason, true).await,
        };
        let job_id = lock.add_trial(&trial).await?;
        tracing::info!(study = %lock.study.id, trial = proposed, job = %job_id, "trial queued");
        proposed += 1;
        slots -= 1;
        active += 1;
    }

    if active == 0 && proposed >= budget {
        let reason = match best_trial(&spec, &trials) {
            Some((best, value)) => format!(
                "all {proposed} trials ran; the best is trial {} with {} {value:.4}",
                best.number, spec.objective.metric
            ),
            None => format!("all {proposed} trials ran; none finished"),
        };
        lock.finish(StudyState::Succeeded, &reason, false).await?;
    }
    Ok(())
}

/// The job of trial `number`: the base spec with `params` put in, as canonical JSON.
fn new_trial(
    lock: &StudyLock,
    spec: &StudySpec,
    number: u32,
    params: BTreeMap<String, Value>,
) -> Result<NewTrial, String> {
    let study = &lock.study;
    let job_spec = JobSpec::parse(&apply_params(&spec.base, &params))
        .map_err(|e| format!("trial {number}'s parameters make an invalid job spec: {e}"))?;
    let canonical = job_spec.to_json();
    let mut inputs = study.inputs.clone();
    inputs.trial = Some(TrialInput {
        study_id: study.id,
        number,
        objective: spec.objective.clone(),
        early_stopping: spec.early_stopping,
    });
    let mut run_params: Map<String, Value> =
        canonical.get("hyperparameters").and_then(Value::as_object).cloned().unwrap_or_default();
    for (path, value) in &params {
        if !path.starts_with("hyperparameters.") {
            run_params.insert(path.clone(), value.clone());
        }
    }
    Ok(NewTrial {
        number,
        params,
        job: NewJob {
            team_id: study.team_id,
            kind: "train".to_owned(),
            spec: canonical,
            inputs,
            priority: job_spec.priority,
            max_attempts: i32::try_from(job_spec.max_attempts).unwrap_or(i32::MAX),
            device: job_spec.device,
            idempotency_key: None,
            trace_context: None,
            created_by: study.created_by,
        },
        run_name: format!("{} trial {number}", study.name),
        run_params: Value::Object(run_params),
    })
}

/// Asked by a trial's worker right after epoch `epoch`'s metrics are stored: whether the
/// trial stops here (`pruned`).
pub async fn should_prune(
    queue: &Queue,
    trial: &TrialInput,
    job_id: Uuid,
    epoch: u32,
) -> Result<bool, QueueError> {
    let Some(rule) = &trial.early_stopping else { return Ok(false) };
    let metric = &trial.objective.metric;
    let own = queue.series_until(job_id, metric, epoch).await?;
    let peers: Vec<pruner::Peer> = queue
        .trial_values_at(trial.study_id, metric, epoch)
        .await?
        .into_iter()
        .map(|(job_id, state, value)| pruner::Peer { job_id, state, value })
        .collect();
    Ok(pruner::should_stop(rule, trial.objective.goal, job_id, epoch, &own, &peers))
}

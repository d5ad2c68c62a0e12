//! The job's inputs into local bytes: kiln-types' [`JobInputs`] as the API resolved them at
//! submission, the dataset through the worker's cache (keyed by its sha256), the
//! TorchScript module read whole.

use std::path::PathBuf;
use std::time::Instant;

use kiln_store::{ErrorKind, StoreError};
use kiln_types::spec::{JobSpec, ModelSpec};
use kiln_types::{InputBlob, JobInputs};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::lease::JobCtx;
use super::store::Patience;
use super::{Event, Failure, WorkerEnv, info};
use crate::inputs::CacheOutcome;

/// The uploads a job reads, checked against its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Needed<'a> {
    pub(super) dataset: &'a InputBlob,
    /// The TorchScript module, for `{"type": "torchscript"}` models.
    pub(super) script: Option<&'a InputBlob>,
}

/// What the spec needs of the inputs: a dataset always, a script for a TorchScript model.
/// A job queued without the API can lack them; it fails at once saying so.
pub(super) fn needed<'a>(spec: &JobSpec, inputs: &'a JobInputs) -> Result<Needed<'a>, Failure> {
    let dataset = inputs.dataset.as_ref().ok_or_else(|| {
        Failure::User(
            "the job has no dataset in its inputs; submit it again through the API".to_owned(),
        )
    })?;
    let script = inputs.script.as_ref();
    if matches!(spec.model, ModelSpec::TorchScript { .. }) && script.is_none() {
        return Err(Failure::User(
            "the job trains a torchscript model but its inputs carry no script".to_owned(),
        ));
    }
    Ok(Needed { dataset, script })
}

/// A store failure while fetching one of the job's inputs. A missing or refused object
/// cannot appear by retrying; anything else may.
pub(super) fn input_failure(what: &str, err: StoreError) -> Failure {
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::InvalidKey => {
            Failure::User(format!("{what} is not in the artifact store (was it deleted?): {err}"))
        }
        _ => Failure::Infra(format!("{what}: {err}")),
    }
}

/// The inputs on this machine.
#[derive(Debug)]
pub(super) struct Fetched {
    /// The dataset's file in the cache.
    pub(super) dataset_path: PathBuf,
    /// The TorchScript module's bytes.
    pub(super) script: Option<Vec<u8>>,
}

/// Downloads what the job needs (the dataset only when the cache lacks it), logging where
/// the dataset came from.
pub(super) async fn fetch(
    env: &WorkerEnv,
    ctx: &JobCtx,
    needed: &Needed<'_>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Fetched, Failure> {
    let job_id = ctx.job_id();
    let dataset = needed.dataset;
    let started = Instant::now();
    let download = tracing::info_span!(
        "kiln.job.dataset.download",
        job.id = %job_id,
        dataset.sha256 = %dataset.sha256,
        size_bytes = dataset.size_bytes,
        cache.hit = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let fetched = ctx
        .with_store_retry("dataset download", Patience::Patient, || {
            env.cache.fetch(&*env.store, dataset)
        })
        .instrument(download.clone())
        .await;
    match &fetched {
        Ok((_, cached)) => download.record("cache.hit", *cached == CacheOutcome::Hit),
        Err(_) => download.record("otel.status_code", "error"),
    };
    drop(download);
    let (dataset_path, cached) =
        fetched.map_err(|err| input_failure(&format!("the dataset {}", dataset.key), err))?;
    let _ = events.send(Event::Log(info(cache_line(dataset, cached, started.elapsed()))));
    let script = match needed.script {
        Some(script) => Some(
            ctx.get_bytes(&script.key)
                .instrument(tracing::info_span!(
                    "kiln.job.script.download",
                    job.id = %job_id,
                    size_bytes = script.size_bytes,
                ))
                .await
                .map_err(|err| input_failure(&format!("the script {}", script.key), err))?,
        ),
        None => None,
    };
    Ok(Fetched { dataset_path, script })
}

/// The job log's line about where the dataset came from.
fn cache_line(dataset: &InputBlob, cached: CacheOutcome, took: std::time::Duration) -> String {
    let short = dataset.sha256.short(12);
    match cached {
        CacheOutcome::Hit => format!("dataset {short}: cache hit, nothing downloaded"),
        CacheOutcome::Downloaded => format!(
            "dataset {short}: cache miss, downloaded {} bytes in {:.2}s",
            dataset.size_bytes.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            took.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

    fn spec(model: serde_json::Value) -> JobSpec {
        JobSpec::parse(&json!({"dataset_id": "0190a5f2-0000-7000-8000-000000000000",
            "task": "classification", "target": "species", "model": model}))
        .unwrap()
    }

    fn inputs(script: bool) -> JobInputs {
        let blob = |format: &str| {
            json!({"id": "0190a5f2-0000-7000-8000-000000000000",
                   "key": format!("teams/t1/blobs/sha256/ab/{SHA}"), "sha256": SHA,
                   "format": format, "size_bytes": 4550})
        };
        let mut value = json!({"dataset": blob("csv")});
        if script {
            value["script"] = blob("torchscript");
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_inputs_the_spec_needs_are_found() {
        let inputs = inputs(false);
        let found = needed(&spec(json!({"type": "mlp"})), &inputs).unwrap();
        assert_eq!(found.dataset.size_bytes, Some(4550));
        assert_eq!(found.script, None);
        let with_script = self::inputs(true);
        let ts = spec(json!({"type": "torchscript",
                             "dataset_id": "0190a5f2-0000-7000-8000-000000000001"}));
        assert!(needed(&ts, &with_script).unwrap().script.is_some());
    }

    #[test]
    fn missing_inputs_fail_at_once_saying_what_is_missing() {
        let none = JobInputs::default();
        let err = needed(&spec(json!({"type": "linear"})), &none).unwrap_err();
        assert!(
            matches!(&err, Failure::User(m) if m.contains("no dataset in its inputs")),
            "{err:?}"
        );
        let ts = spec(json!({"type": "torchscript",
                             "dataset_id": "0190a5f2-0000-7000-8000-000000000001"}));
        let err = needed(&ts, &inputs(false)).unwrap_err();
        assert!(matches!(&err, Failure::User(m) if m.contains("carry no script")), "{err:?}");
    }

    #[test]
    fn a_missing_object_is_the_users_problem_an_outage_is_not() {
        let gone = input_failure("the dataset k", StoreError::new(ErrorKind::NotFound, "no"));
        assert!(matches!(gone, Failure::User(m) if m.contains("was it deleted?")));
        let down = input_failure("the dataset k", StoreError::new(ErrorKind::Unavailable, "503"));
        assert!(matches!(down, Failure::Infra(_)));
    }

    #[test]
    fn the_cache_line_says_where_the_dataset_came_from() {
        let inputs = inputs(false);
        let dataset = inputs.dataset.as_ref().unwrap();
        let hit = cache_line(dataset, CacheOutcome::Hit, std::time::Duration::ZERO);
        assert_eq!(hit, format!("dataset {}: cache hit, nothing downloaded", &SHA[..12]));
        let miss =
            cache_line(dataset, CacheOutcome::Downloaded, std::time::Duration::from_millis(1500));
        assert!(miss.ends_with("cache miss, downloaded 4550 bytes in 1.50s"), "{miss}");
    }
}

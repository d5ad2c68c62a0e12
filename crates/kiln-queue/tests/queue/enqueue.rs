//! Enqueue, idempotency keys and their conflicts.

use kiln_queue::{Enqueued, NewJob, QueueError};
use kiln_types::{DeviceRequirement, JobState};
use serde_json::json;

use crate::Harness;

fn keyed(team: uuid::Uuid, key: &str, spec: serde_json::Value) -> NewJob {
    NewJob { idempotency_key: Some(key.to_owned()), ..NewJob::new(team, spec) }
}

#[tokio::test]
async fn same_key_and_body_answer_the_same_job() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let first = h.queue.enqueue(keyed(team, "k1", json!({"a": 1, "b": 2}))).await.unwrap();
    let Enqueued::Created(job) = first else { panic!("first submission creates") };
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.idempotency_key.as_deref(), Some("k1"));
    // Same body with its fields in another order is the same request.
    let again = h.queue.enqueue(keyed(team, "k1", json!({"b": 2, "a": 1}))).await.unwrap();
    let Enqueued::Existing(same) = again else { panic!("repeat answers the existing job") };
    assert_eq!(same.id, job.id);
}

#[tokio::test]
async fn same_key_other_body_is_a_conflict_and_changes_nothing() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let job = h.queue.enqueue(keyed(team, "k1", json!({"a": 1}))).await.unwrap().job().clone();
    let err = h.queue.enqueue(keyed(team, "k1", json!({"a": 2}))).await.unwrap_err();
    match err {
        QueueError::IdempotencyConflict { key, job_id } => {
            assert_eq!(key, "k1");
            assert_eq!(job_id, job.id);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut other_priority = keyed(team, "k1", json!({"a": 1}));
    other_priority.priority = 5;
    assert!(matches!(
        h.queue.enqueue(other_priority).await,
        Err(QueueError::IdempotencyConflict { .. })
    ));
    assert_eq!(h.queue.get(job.id).await.unwrap().spec, json!({"a": 1}));
}

#[tokio::test]
async fn keys_are_scoped_per_team() {
    let h = Harness::new().await;
    let a = h.team("alpha", 4).await;
    let b = h.team("beta", 4).await;
    let ja = h.queue.enqueue(keyed(a, "same", json!({"x": 1}))).await.unwrap();
    let jb = h.queue.enqueue(keyed(b, "same", json!({"x": 2}))).await.unwrap();
    assert!(matches!(jb, Enqueued::Created(_)));
    assert_ne!(ja.job().id, jb.job().id);
}

#[tokio::test]
async fn enqueue_for_an_unknown_team_is_a_typed_error() {
    let h = Harness::new().await;
    let missing = uuid::Uuid::now_v7();
    match h.queue.enqueue(NewJob::new(missing, json!({}))).await {
        Err(QueueError::TeamNotFound { team_id }) => assert_eq!(team_id, missing),
        other => panic!("expected TeamNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn enqueue_stores_scheduling_fields_and_trace_context() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let new = NewJob {
        priority: 7,
        max_attempts: 5,
        device: DeviceRequirement::Cuda,
        trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        ..NewJob::new(team, json!({"task": "classification"}))
    };
    let job = h.queue.enqueue(new).await.unwrap().job().clone();
    let stored = h.queue.get(job.id).await.unwrap();
    assert_eq!(stored, job);
    assert_eq!((stored.priority, stored.max_attempts), (7, 5));
    assert_eq!(stored.device, DeviceRequirement::Cuda);
    assert!(stored.trace_context.unwrap().starts_with("00-4bf92f"));
    assert_eq!(stored.id.get_version_num(), 7, "ids are UUID v7");
}

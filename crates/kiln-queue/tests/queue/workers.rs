//! The worker fleet as listed: a killed worker (silent for longer than its lease) is
//! listed stopped at its last heartbeat, not live forever.

use std::time::Duration;

use kiln_queue::WorkerInfo;
use kiln_types::WorkerDevice;
use uuid::Uuid;

use crate::Harness;

fn info(lease_seconds: u64) -> WorkerInfo {
    WorkerInfo {
        id: Uuid::now_v7(),
        host: "test-host".to_owned(),
        pid: 4242,
        device: WorkerDevice::Cpu,
        version: "0.0.0".to_owned(),
        lease: Duration::from_secs(lease_seconds),
    }
}

#[tokio::test]
async fn killed_workers_are_listed_stopped_at_their_last_heartbeat() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job] = h.submit(team, 1).await[..] else { unreachable!() };
    let (live, killed, drained, gone) = (info(30), info(30), info(30), info(30));
    for w in [&live, &killed, &drained, &gone] {
        h.queue.register_worker(w).await.unwrap();
    }
    h.queue.worker_heartbeat(killed.id, Some(job)).await.unwrap();
    h.queue.worker_stopped(drained.id).await.unwrap();
    // `killed` went silent 31 s ago (longer than its 30 s lease), `gone` two hours ago.
    h.sql(&format!(
        "UPDATE workers SET last_heartbeat_at = now() - interval '31 seconds' WHERE id = '{}'",
        killed.id
    ))
    .await;
    h.sql(&format!(
        "UPDATE workers SET last_heartbeat_at = now() - interval '2 hours' WHERE id = '{}'",
        gone.id
    ))
    .await;

    let listed = h.queue.workers().await.unwrap();
    let row = |id: Uuid| listed.iter().find(|w| w.id == id).cloned();
    let live_row = row(live.id).expect("the live worker is listed");
    assert!(!live_row.lost && live_row.stopped_at.is_none(), "{live_row:?}");
    let killed_row = row(killed.id).expect("a worker lost within the hour is listed");
    assert!(killed_row.lost, "{killed_row:?}");
    assert_eq!(killed_row.stopped_at, Some(killed_row.last_heartbeat_at), "{killed_row:?}");
    assert_eq!(killed_row.current_job_id, None, "a lost worker runs nothing: {killed_row:?}");
    assert!(killed_row.heartbeat_age_seconds > 30.0, "{killed_row:?}");
    let drained_row = row(drained.id).expect("a worker stopped within the hour is listed");
    assert!(!drained_row.lost && drained_row.stopped_at.is_some(), "{drained_row:?}");
    assert!(row(gone.id).is_none(), "lost two hours ago: no longer listed");

    // A frozen worker that wakes up and heartbeats again is live again.
    h.queue.worker_heartbeat(killed.id, None).await.unwrap();
    let again = h.queue.workers().await.unwrap();
    let woke = again.iter().find(|w| w.id == killed.id).unwrap();
    assert!(!woke.lost && woke.stopped_at.is_none(), "{woke:?}");
}

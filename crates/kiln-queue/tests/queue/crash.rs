//! A claimer process killed with SIGKILL while holding a lease.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_types::JobState;
use uuid::Uuid;

use crate::{Harness, cpu};

#[tokio::test]
async fn killed_claimer_process_job_is_rescued_and_completed_by_another() {
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };

    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-queue-test-claimer"))
        .args([&h.test.url, "1.0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the claimer process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let claimed: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(claimed[..2], ["claimed", job_id.to_string().as_str()], "child said {line:?}");
    assert_eq!(h.queue.get(job_id).await.unwrap().state, JobState::Running);

    // SIGKILL: no chance to release the lease.
    child.kill().unwrap();
    child.wait().unwrap();

    // Nobody can take it while the lease lasts; the rescuer takes it back once it expires.
    assert!(h.queue.claim(cpu()).await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(15);
    let rescued = loop {
        let rescued = h.queue.rescue().await.unwrap();
        if !rescued.is_empty() {
            break rescued;
        }
        assert!(Instant::now() < deadline, "the dead claimer's lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rescued[0].job_id, job_id);
    assert_eq!(rescued[0].new_state, JobState::Queued);

    let lease = h.queue.claim(cpu()).await.unwrap().expect("another claimer takes it");
    assert_eq!(lease.job_id(), job_id);
    assert_eq!(lease.epoch, 2);
    h.queue.complete(&lease, &crate::result("cpu"), "cpu", None).await.unwrap();

    let job = h.queue.get(job_id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempt, 2, "the crash counted as an attempt");
    let attempts = h.queue.attempts(job_id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome.as_deref(), Some("lease_expired"));
    assert_eq!(attempts[1].outcome.as_deref(), Some("succeeded"));
    assert_ne!(attempts[0].worker_id, lease.worker_id);
    let _: Uuid = attempts[0].worker_id;
}

#[tokio::test]
async fn duplicate_metric_points_after_a_resume_leave_one_point_per_epoch() {
    use kiln_queue::MetricPoint;
    let h = Harness::new().await;
    let team = h.team("alpha", 4).await;
    let [job_id] = h.submit(team, 1).await[..] else { unreachable!() };
    let epochs = |attempt: f64, range: std::ops::RangeInclusive<i64>| -> Vec<MetricPoint> {
        range
            .map(|step| MetricPoint {
                name: "train_loss".into(),
                step,
                value: attempt * 100.0 + step as f64,
            })
            .collect()
    };

    // Attempt 1 reports epochs 1-5 (epoch 5 twice: a batch resent after a lost answer),
    // then dies; its checkpoint was epoch 3.
    let first = h.queue.claim(cpu()).await.unwrap().unwrap();
    h.queue.append_metrics(&first, &epochs(1.0, 1..=5)).await.unwrap();
    h.queue.append_metrics(&first, &epochs(1.0, 5..=5)).await.unwrap();
    h.expire_leases().await;
    assert_eq!(h.queue.rescue().await.unwrap().len(), 1);

    // Attempt 2 resumes after epoch 3 and reports epochs 4-8 again, then completes.
    let second = h.queue.claim(cpu()).await.unwrap().unwrap();
    h.queue.append_metrics(&second, &epochs(2.0, 4..=8)).await.unwrap();
    // The dead attempt's writes stay fenced out.
    assert!(h.queue.append_metrics(&first, &epochs(1.0, 9..=9)).await.is_err());
    let progress = crate::progress(8, 8);
    h.queue.complete(&second, &crate::result("cpu"), "cpu", Some(&progress)).await.unwrap();
    assert_eq!(h.queue.get(job_id).await.unwrap().progress, Some(progress));

    let series = kiln_db::repo::runs::series(&h.test.db, job_id, None).await.unwrap();
    let loss = &series["train_loss"];
    let steps: Vec<i64> = loss.iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>(), "exactly one point per epoch");
    let values: Vec<f64> = loss.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values,
        vec![101.0, 102.0, 103.0, 204.0, 205.0, 206.0, 207.0, 208.0],
        "re-run epochs keep the latest"
    );
}

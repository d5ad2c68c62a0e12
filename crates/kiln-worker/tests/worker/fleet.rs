//! Several workers on one queue.

use kiln_types::JobState;

use crate::support::{Bench, StoreKind, data_file, iris_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_ten_jobs_each_job_succeeds_exactly_once() {
    let bench = Bench::new(StoreKind::Local).await;
    let iris = bench.upload(&data_file("iris.csv"), "csv").await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(bench.submit(&iris, iris_spec(3, 16)).await);
    }
    let mut a = bench.spawn_worker("a", &[]);
    let mut b = bench.spawn_worker("b", &[]);
    let workers = [bench.worker_id(&a).await, bench.worker_id(&b).await];
    for &id in &ids {
        let job = bench.wait_for(id, "the job to end", |j| j.state.is_terminal()).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{}", bench.logs());
    }
    for &id in &ids {
        let attempts = bench.queue.attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1, "one attempt: {attempts:#?}");
        assert_eq!(attempts[0].outcome.as_deref(), Some("succeeded"));
        assert!(workers.contains(&attempts[0].worker_id));
        let log = bench.job_log(id).await;
        assert_eq!(log.iter().filter(|l| l.starts_with("completed:")).count(), 1, "{log:#?}");
        assert_eq!(log.iter().filter(|l| l.starts_with("claimed by worker")).count(), 1);
    }
    let succeeded = bench
        .count(&format!(
            "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE j.team_id = '{}' AND a.outcome = 'succeeded'",
            bench.team_id
        ))
        .await;
    assert_eq!(succeeded, 10);
    for worker in [&mut a, &mut b] {
        worker.signal("TERM");
        assert!(worker.wait_exit().await.success(), "{}", worker.log());
    }
}

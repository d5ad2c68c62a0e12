//! A claimer process for the queue's crash test: it claims one job, prints
//! `claimed <job id> <epoch>` and then holds the lease without heartbeating until it is
//! killed. Used by `tests/queue/crash.rs`; not part of any deployment.

use std::time::Duration;

use kiln_queue::{Claimer, Queue, QueueConfig};
use kiln_types::WorkerDevice;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::args().nth(1).ok_or("usage: kiln-queue-test-claimer DATABASE_URL LEASE_SECS")?;
    let lease_secs: f64 = std::env::args().nth(2).ok_or("missing LEASE_SECS")?.parse()?;
    let db = kiln_db::connect(&kiln_db::DbArgs::new(url, 2)).await?;
    let config =
        QueueConfig { lease: Duration::from_secs_f64(lease_secs), ..QueueConfig::default() };
    let queue = Queue::new(&db, config);
    let claimer = Claimer { worker_id: uuid::Uuid::now_v7(), device: WorkerDevice::Cpu };
    loop {
        if let Some(lease) = queue.claim(claimer).await? {
            println!("claimed {} {}", lease.job_id(), lease.epoch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Hold the lease, never renewing it, until SIGKILL.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

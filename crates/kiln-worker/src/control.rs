//! What the async side and the training thread share about one job: why to stop, how far
//! training got, and when the lease was last renewed.
//!
//! The training thread never blocks on the async side: it reads atomics between batches
//! ([`JobControl::stop_reason`]) and writes its progress into atomics after each one. The
//! heartbeat task and the writers set the stop reason; the signal handler sets the
//! process-wide [`Shutdown`].

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_ml::{StepProgress, StopReason};
use kiln_types::JobProgress;

use crate::shutdown::Shutdown;

const NONE: u8 = 0;
const SHUTDOWN: u8 = 1;
const PRUNED: u8 = 2;
const CANCELLED: u8 = 3;
const LEASE_LOST: u8 = 4;

/// One job's shared state.
#[derive(Debug)]
pub struct JobControl {
    /// The strongest stop reason asked for so far (lease lost > cancelled > pruned >
    /// shutdown).
    stop: AtomicU8,
    shutdown: Arc<Shutdown>,
    lease: Duration,
    /// When the lease was last known good, by this process's monotonic clock. Only a safety
    /// bound: the database decides leases.
    renewed_at: Mutex<Instant>,
    epoch: AtomicU32,
    epochs: AtomicU32,
    step: AtomicU64,
    steps: AtomicU64,
}

impl JobControl {
    pub fn new(shutdown: Arc<Shutdown>, lease: Duration) -> Self {
        Self {
            stop: AtomicU8::new(NONE),
            shutdown,
            lease,
            renewed_at: Mutex::new(Instant::now()),
            epoch: AtomicU32::new(0),
            epochs: AtomicU32::new(0),
            step: AtomicU64::new(0),
            steps: AtomicU64::new(0),
        }
    }

    /// Asks training to stop; a stronger reason replaces a weaker one, never the reverse.
    pub fn request_stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Shutdown => SHUTDOWN,
            StopReason::Pruned => PRUNED,
            StopReason::Cancelled => CANCELLED,
            StopReason::LeaseLost => LEASE_LOST,
        };
        self.stop.fetch_max(code, Ordering::SeqCst);
    }

    /// Why training should stop now, if it should.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.stop.load(Ordering::SeqCst) {
            LEASE_LOST => Some(StopReason::LeaseLost),
            CANCELLED => Some(StopReason::Cancelled),
            PRUNED => Some(StopReason::Pruned),
            SHUTDOWN => Some(StopReason::Shutdown),
            _ if self.shutdown.is_requested() => Some(StopReason::Shutdown),
            _ => None,
        }
    }

    /// True once another attempt owns the job: nothing more may be written about it.
    pub fn lease_lost(&self) -> bool {
        self.stop.load(Ordering::SeqCst) == LEASE_LOST
    }

    /// The database accepted a fenced write: the lease held then.
    pub fn renewed(&self) {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// True when, by this process's clock, the lease must have expired since the last
    /// successful renewal. A safety bound for outages: the database is the judge.
    pub fn lease_expired_locally(&self) -> bool {
        self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= self.lease
    }

    /// From the training thread, after every batch.
    pub fn set_progress(&self, progress: &StepProgress) {
        self.epoch.store(progress.epoch, Ordering::Relaxed);
        self.epochs.store(progress.epochs, Ordering::Relaxed);
        self.step.store(progress.step, Ordering::Relaxed);
        self.steps.store(progress.steps_per_epoch, Ordering::Relaxed);
    }

    /// The job's progress as the heartbeat reports it, once training has started.
    pub fn progress(&self) -> Option<JobProgress> {
        let epochs = self.epochs.load(Ordering::Relaxed);
        (epochs > 0).then(|| JobProgress {
            epoch: self.epoch.load(Ordering::Relaxed),
            epochs,
            step: Some(self.step.load(Ordering::Relaxed)),
            steps: Some(self.steps.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stronger_stop_reasons_win_and_are_never_downgraded() {
        let shutdown = Shutdown::new();
        let control = JobControl::new(shutdown.clone(), Duration::from_secs(60));
        assert_eq!(control.stop_reason(), None);
        shutdown.request();
        assert_eq!(control.stop_reason(), Some(StopReason::Shutdown));
        control.request_stop(StopReason::LeaseLost);
        control.request_stop(StopReason::Cancelled);
        assert_eq!(control.stop_reason(), Some(StopReason::LeaseLost));
        assert!(control.lease_lost());
    }

    #[test]
    fn progress_appears_once_training_reports_it() {
        let control = JobControl::new(Shutdown::new(), Duration::from_secs(60));
        assert_eq!(control.progress(), None);
        control.set_progress(&StepProgress {
            epoch: 2,
            step: 3,
            steps_per_epoch: 8,
            epochs: 10,
            loss: 0.5,
        });
        let progress = control.progress().unwrap();
        assert_eq!(progress, JobProgress { epoch: 2, epochs: 10, step: Some(3), steps: Some(8) });
        // The `jobs.progress` row the heartbeat writes, as it always was.
        assert_eq!(
            serde_json::to_value(progress).unwrap(),
            serde_json::json!({"epoch": 2, "epochs": 10, "step": 3, "steps": 8})
        );
    }
}

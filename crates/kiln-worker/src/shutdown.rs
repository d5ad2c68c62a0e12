//! Signals: the first SIGTERM/SIGINT asks for a graceful drain, a second one exits at once.
//!
//! Draining means: the training loop stops at the next batch with a checkpoint, the worker
//! stores it, releases the job back to the queue (not a failure, not an attempt), marks
//! itself stopped and exits 0. If that takes longer than the grace period the process exits
//! non-zero without releasing: the lease then expires and another worker rescues the job
//! from its last recorded checkpoint.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Exit status after a second signal (128 + SIGINT, as shells report it).
pub const EXIT_SECOND_SIGNAL: i32 = 130;
/// Exit status when the grace period ran out before the job was released.
pub const EXIT_GRACE_EXPIRED: i32 = 3;

/// The process-wide "please stop" flag.
#[derive(Debug)]
pub struct Shutdown {
    requested: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { requested: watch::Sender::new(false) })
    }

    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Returns once a shutdown was requested.
    pub async fn wait(&self) {
        let mut rx = self.requested.subscribe();
        // The sender lives as long as `self`, so this only returns on `true`.
        let _ = rx.wait_for(|requested| *requested).await;
    }
}

/// Installs the SIGTERM/SIGINT handlers. Must run inside the tokio runtime.
pub fn install_signal_handlers(shutdown: Arc<Shutdown>, grace: Duration) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            grace_seconds = grace.as_secs_f64(),
            "draining: finishing the current batch, checkpointing and releasing the job; \
             a second signal exits at once"
        );
        shutdown.request();
        tokio::select! {
            _ = term.recv() => second_signal("SIGTERM"),
            _ = int.recv() => second_signal("SIGINT"),
            _ = tokio::time::sleep(grace) => {
                tracing::error!(
                    grace_seconds = grace.as_secs_f64(),
                    "the shutdown grace period expired before the job was released; exiting \
                     without releasing it (its lease will expire and it will be rescued)"
                );
                exit_now(EXIT_GRACE_EXPIRED);
            }
        }
    });
    Ok(())
}

fn second_signal(name: &str) -> ! {
    tracing::warn!(signal = name, "second signal: exiting now");
    exit_now(EXIT_SECOND_SIGNAL);
}

/// Ends the process now, without atexit handlers or static destructors. `exit(3)` would
/// run libtorch's static destructors while the training thread still uses libtorch, and
/// the process would die of SIGSEGV instead of exiting with `code`.
#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit(2)` takes no pointers, touches no memory of this process and never
    // returns; it is async-signal-safe, so calling it from any thread at any time is sound.
    // Log lines are already written: tracing writes to unbuffered stderr.
    unsafe { libc::_exit(code) }
}

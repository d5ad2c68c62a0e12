//! The `kiln-worker` binary: parses its settings, sets up logging and the signal handlers,
//! and runs the worker loop of the `kiln_worker` library until it is told to stop.

use clap::Parser;
use kiln_worker::{Settings, shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    // Held to the end: dropping it flushes the spans and metrics not yet exported.
    let _telemetry = kiln_telemetry::init(&settings.telemetry, "kiln-worker")?;
    let stop = kiln_worker::Shutdown::new();
    shutdown::install_signal_handlers(stop.clone(), settings.shutdown_grace())?;
    kiln_worker::run(settings, stop).await.inspect_err(|err| {
        tracing::error!(error = format!("{err:#}"), "kiln-worker failed");
    })
}

//! `kiln-api`: the REST API server.

use clap::Parser;
use kiln_api::{ApiArgs, Application};

#[derive(Debug, Parser)]
#[command(name = "kiln-api", version, about = "Kiln's REST API (and prediction serving)")]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    telemetry: kiln_telemetry::TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the spans and metrics not yet exported.
    let _telemetry = kiln_telemetry::init(&cli.telemetry, "kiln-api")?;
    let app = Application::build(&cli.api).await?;
    tracing::info!(port = app.port(), "kiln-api listening");
    app.run_until_stopped().await?;
    Ok(())
}

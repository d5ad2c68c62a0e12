//! `kiln-api`: the REST API server.

use clap::Parser;
use kiln_api::{ApiArgs, Application};

#[derive(Debug, Parser)]
#[command(name = "kiln-api", version, about = "Kiln's REST API (and prediction serving)")]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    /// `text` or `json` log lines.
    #[arg(long = "log-format", env = "KILN_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format.as_str() {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("KILN_LOG_FORMAT must be `text` or `json`, not `{other}`"),
    }
    let app = Application::build(&cli.api).await?;
    tracing::info!(port = app.port(), "kiln-api listening");
    app.run_until_stopped().await?;
    Ok(())
}

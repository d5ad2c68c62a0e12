//! Kiln's observability set-up, shared by every binary: `tracing` with text or JSON log
//! lines (`KILN_LOG_FORMAT`) filtered by `RUST_LOG` (default `info`).
//!
//! OpenTelemetry export and W3C trace-context propagation across API → queue → worker are
//! the telemetry issue's work and will live here too, so no other crate sets up tracing.

use std::str::FromStr;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(TelemetryError::BadLogFormat(other.to_owned())),
        }
    }
}

/// Telemetry settings every binary flattens into its arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// `text` or `json` log lines.
    #[arg(long = "log-format", env = "KILN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("KILN_LOG_FORMAT must be `text` or `json`, not `{0}`")]
    BadLogFormat(String),
    #[error("tracing is already set up in this process")]
    AlreadySet,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(args: &TelemetryArgs) -> Result<(), TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse_and_reject_unknown_ones() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("`yaml`"));
    }
}

//! One module per command group; [`run`] dispatches.

mod account;
mod admin;
mod batch;
mod datasets;
mod doctor;
mod download;
mod jobs;
mod ops;
mod progress;
mod runs;
mod serving;
mod studies;

use clap::CommandFactory;

use crate::args::{Cli, Command};
use crate::client::Client;
use crate::config;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.global.format();
    let client = || -> anyhow::Result<Client> { Client::new(&config::resolve(&cli.global)?) };
    match cli.command {
        Command::Admin(cmd) => admin::run(cmd, client, format).await,
        Command::Queue(cmd) => ops::queue(cmd, &client()?, format).await,
        Command::Workers(cmd) => ops::workers(cmd, &client()?, format).await,
        Command::Datasets(cmd) => datasets::run(cmd, &client()?, format).await,
        Command::Jobs(cmd) => jobs::run(cmd, &client()?, format).await,
        Command::Runs(cmd) => runs::run(cmd, &client()?, format).await,
        Command::BatchPredictions(cmd) => batch::run(cmd, &client()?, format).await,
        Command::Studies(cmd) => studies::run(cmd, &client()?, format).await,
        Command::Models(cmd) => datasets::models(cmd, &client()?, format).await,
        Command::Deployments(cmd) => serving::deployments(cmd, &client()?, format).await,
        Command::Predict { deployment, instances } => {
            serving::predict(&deployment, &instances, &client()?, format).await
        }
        Command::Artifacts(cmd) => serving::artifacts(cmd, &client()?, format).await,
        Command::Whoami => account::whoami(&cli.global, format).await,
        Command::Audit { limit, cursor, all } => {
            account::audit(&client()?, limit, cursor, all, format).await
        }
        Command::Doctor(args) => doctor::run(args, &config::resolve(&cli.global)?, format).await,
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
    }
}

/// Prints the completion script for `shell` (rendered first, so a closed pipe ends it
/// quietly like any other output).
pub fn completions(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
}

//! `kiln`: the admin CLI for Kiln operators.
//!
//! `admin migrate` and `admin bootstrap` talk to PostgreSQL directly so a new install can
//! start; everything else goes through the REST API as the token given. Output is a table
//! for people or JSON for scripts (`--output json`). Every failure is one line on stderr
//! and a non-zero exit, never a panic or a debug dump.

#[macro_use]
mod output;
mod args;
mod client;
mod commands;
mod config;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: clap prints them to stdout.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // A usage error: its first line says what is wrong; `--help` says the rest.
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see `kiln --help`)");
            return ExitCode::from(2);
        }
    };
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, joined.
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

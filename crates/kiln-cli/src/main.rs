//! `kiln`: the admin CLI for Kiln operators.
//!
//! `admin migrate` and `admin bootstrap` talk to PostgreSQL directly so a new install can
//! start; everything else goes through the REST API as the token given. Output is a table
//! for people or JSON for scripts (`--output json` or `--json`). Every failure is one line
//! on stderr and a non-zero exit, never a panic or a debug dump.
//!
//! Start-up does only what the command needs: `--help`, `--version` and `completions`
//! read no config file and start no async runtime, and the binary links no libtorch (it
//! is an HTTP and PostgreSQL client only), so they answer in a few milliseconds
//! (docs/benchmarks.md, "CLI start-up").

#[macro_use]
mod output;
mod args;
mod client;
mod commands;
mod config;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: clap prints them to stdout.
            if let Err(e) = err.print() {
                return output::stdout_failed(&e);
            }
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
    if let args::Command::Completions { shell } = cli.command {
        commands::completions(shell);
        return ExitCode::SUCCESS;
    }
    // One thread is plenty for a client that waits on one request at a time.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, joined.
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

//! Parsed command-line arguments (clap). Flags override environment variables, which
//! override the profile file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Operate a Kiln MLOps platform",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where the Kiln API listens (default http://127.0.0.1:8080).
    #[arg(long, env = "KILN_API_URL", global = true)]
    pub api_url: Option<String>,
    /// API token (`kiln_...`).
    #[arg(long, env = "KILN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<kiln_types::Secret>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// Shorthand for `--output json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Profile in the config file to read defaults from.
    #[arg(long, env = "KILN_PROFILE", default_value = "default", global = true)]
    pub profile: String,
    /// Config file (default $XDG_CONFIG_HOME/kiln/config.toml).
    #[arg(long, env = "KILN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl Global {
    /// The output format after `--json` and `--output`.
    pub fn format(&self) -> OutputFormat {
        if self.json { OutputFormat::Json } else { self.output }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Installation and platform administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The job queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Training workers.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Datasets.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Training jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The model registry.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Serve models: create deployments, split traffic, show status and drift.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Tracked runs (training outside Kiln, and every Kiln job) and their metrics.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Score a whole dataset with a model version, as a queued job; download the CSV.
    #[command(subcommand, name = "batch-predictions")]
    BatchPredictions(BatchCommand),
    /// Hyperparameter searches: trials through the queue, with early stopping.
    #[command(subcommand)]
    Studies(StudiesCommand),
    /// Who the API takes this token for: URL, profile, token prefix and role.
    Whoami,
    /// The audit log, newest first: the caller's team (maintainer) or everyone (admin).
    Audit {
        /// Records per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Start after this cursor (printed on stderr after a full page).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow the cursor to the end instead of printing one page.
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
    },
    /// Send instances (a JSON file) to a deployment and print the predictions.
    Predict {
        deployment: String,
        /// `{"instances": [...]}` or a bare array of instances; `-` for stdin.
        #[arg(long)]
        instances: PathBuf,
    },
    /// The artifact store.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Check PostgreSQL, migrations, the API and the workers, one line each.
    Doctor(DoctorArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArg {
    /// PostgreSQL URL.
    #[arg(long = "database-url", env = "KILN_DATABASE_URL", hide_env_values = true)]
    pub database_url: kiln_types::Secret,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Apply database migrations (idempotent).
    Migrate(DatabaseArg),
    /// Create the first admin token and print it once.
    Bootstrap {
        #[command(flatten)]
        db: DatabaseArg,
        /// Name of the token.
        #[arg(long, default_value = "bootstrap")]
        name: String,
        /// Issue another admin token even if one exists.
        #[arg(long)]
        force: bool,
    },
    /// Teams.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team.
    Create {
        name: String,
        /// Cap on the team's concurrently running jobs.
        #[arg(long)]
        max_running_jobs: Option<i32>,
    },
    /// List teams.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a team token; the secret is printed once.
    Create {
        #[arg(long)]
        team: String,
        #[arg(long, value_parser = ["maintainer", "member", "viewer"])]
        role: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List a team's tokens.
    List {
        #[arg(long)]
        team: String,
    },
    /// Revoke a token by id.
    Revoke { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth per state and team, oldest queued age, running leases.
    Stats,
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Id, host, device, last heartbeat, current job.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Upload a CSV, NPZ or TorchScript file as the next version of NAME (streamed, with
    /// a progress bar).
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// `csv`, `npz` or `torchscript`; detected from the content when absent.
        #[arg(long)]
        format: Option<String>,
    },
    /// List datasets.
    List {
        /// Only versions of this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// One dataset version with its schema.
    Show { id: uuid::Uuid },
    /// Download a dataset version's bytes (streamed, checked against its sha256; nothing
    /// is left behind on failure).
    Download {
        id: uuid::Uuid,
        /// Where to write it [default: NAME-vVERSION.EXT in the current directory]; `-` for
        /// stdout.
        dest: Option<PathBuf>,
        /// Replace DEST if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Delete a dataset version (refused while a job or model uses it).
    Delete { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The team's runs, newest first (Kiln jobs included).
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One run.
    Show { id: uuid::Uuid },
    /// A run's metric series: a table per series.
    Metrics {
        id: uuid::Uuid,
        /// Only this series.
        #[arg(long)]
        name: Option<String>,
    },
    /// Start a tracked run for training that happens outside Kiln.
    Create {
        name: String,
        /// A parameter as KEY=VALUE (VALUE is JSON when it parses, else a string); repeat.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Delete a run and its metrics (refused while something refers to it).
    Delete { id: uuid::Uuid },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List models with their aliases.
    List,
    /// One model: latest version and aliases.
    Show { name: String },
    /// Delete one model version (refused while a deployment or alias uses it).
    Delete {
        name: String,
        #[arg(value_name = "VERSION")]
        model_version: i32,
    },
    /// A model's versions.
    Versions { name: String },
    /// Register a succeeded job as the model's next version.
    Register {
        name: String,
        #[arg(long)]
        job: uuid::Uuid,
    },
    /// Point an alias (production, staging, ...) at a version.
    Alias {
        name: String,
        alias: String,
        #[arg(value_name = "VERSION")]
        model_version: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Serve a model, following an alias or pinned to a version.
    // `--version` here is the model version, not kiln's own.
    #[command(disable_version_flag = true)]
    Create {
        name: String,
        #[arg(long)]
        model: String,
        /// Follow this alias (moving it rolls the deployment).
        #[arg(long, conflicts_with = "model_version", required_unless_present = "model_version")]
        alias: Option<String>,
        /// Serve exactly this version.
        #[arg(long = "version", value_name = "VERSION")]
        model_version: Option<i32>,
        /// Rows per forward pass, at most (1 turns batching off; default: the API's, 64).
        #[arg(long)]
        max_batch_size: Option<u32>,
        /// The longest a request may be held for others to batch with, in ms (default: the
        /// API's, 2). Batches run as soon as waiting cannot make them bigger; rarely needed.
        #[arg(long)]
        max_wait_ms: Option<u32>,
        /// Ignore instance fields the model does not take (by default they are refused).
        #[arg(long)]
        allow_extra_features: bool,
        /// If the deployment exists, change it instead (PATCH): the batching given, the
        /// version given (all traffic to it), and --allow-extra-features if given.
        #[arg(long)]
        update: bool,
    },
    /// Split traffic between versions in percent, summing to 100 (`1=90 2=10`); no pairs:
    /// everything to the alias or pinned version again.
    Traffic {
        name: String,
        #[arg(value_name = "VERSION=WEIGHT")]
        splits: Vec<String>,
    },
    /// Change a deployment: traffic split, batching, extra-feature handling.
    Update {
        name: String,
        /// Traffic as VERSION=PERCENT, summing to 100; repeat or separate by commas
        /// (`--traffic 1=90,2=10`).
        #[arg(
            long,
            value_name = "VERSION=WEIGHT",
            value_delimiter = ',',
            conflicts_with = "reset_traffic"
        )]
        traffic: Vec<String>,
        /// Send everything to the alias or pinned version again.
        #[arg(long)]
        reset_traffic: bool,
        /// Rows per forward pass (1 turns batching off).
        #[arg(long)]
        max_batch_size: Option<u32>,
        /// How long a request waits for others to batch with, in ms.
        #[arg(long)]
        max_wait_ms: Option<u32>,
        /// Ignore (true) or refuse (false) instance fields the model does not take.
        #[arg(long, value_name = "BOOL")]
        allow_extra_features: Option<bool>,
    },
    /// Status, traffic and the versions loaded.
    Show { name: String },
    /// List deployments.
    List,
    /// Stop serving a deployment.
    Delete { name: String },
    /// Per-feature drift (population stability index) of recent inputs.
    Drift {
        name: String,
        /// Recent sampled rows to compare.
        #[arg(long, default_value_t = 1000)]
        window: u64,
        /// PSI above which a feature is flagged.
        #[arg(long, default_value_t = 0.2)]
        threshold: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Delete blobs no dataset, checkpoint or model version refers to, older than the grace
    /// period. A dry run unless --apply.
    Gc {
        #[arg(long)]
        apply: bool,
        /// Never collect objects younger than this many hours.
        #[arg(long, default_value_t = 24.0)]
        grace_hours: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum StudiesCommand {
    /// Start a study from a JSON file (`-` for stdin): base job spec, parameters,
    /// objective, algorithm, budget, early stopping (docs/studies.md).
    Create {
        spec: PathBuf,
        /// Train every trial on this dataset (sets `base.dataset_id`).
        #[arg(long)]
        dataset: Option<uuid::Uuid>,
        /// Follow it until it ends, then print the trials; exit non-zero unless it
        /// succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List studies, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one: state, best trial, counts, and every trial with its parameters.
    Show { id: uuid::Uuid },
    /// Stop a study: no new trials; queued and running ones are cancelled.
    Stop { id: uuid::Uuid },
    /// Register the best finished trial's model as a version of `--model`.
    Register {
        id: uuid::Uuid,
        #[arg(long)]
        model: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Queue a batch prediction: `--model` with `--version` or `--alias`, and `--dataset`.
    // `--version` here is the model version, not kiln's own.
    #[command(disable_version_flag = true)]
    Create {
        #[arg(long)]
        model: String,
        /// Score with exactly this version.
        #[arg(
            long = "version",
            value_name = "VERSION",
            conflicts_with = "alias",
            required_unless_present = "alias"
        )]
        model_version: Option<i32>,
        /// Score with the version this alias points at now.
        #[arg(long)]
        alias: Option<String>,
        /// The dataset (CSV or NPZ) to score.
        #[arg(long)]
        dataset: uuid::Uuid,
        /// A CSV column copied beside each prediction (default: `id`, if there is one).
        #[arg(long)]
        id_column: Option<String>,
        /// Input rows per output part (default 100,000).
        #[arg(long)]
        rows_per_part: Option<u64>,
        /// Follow progress until it ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Once it succeeded, download the predictions here (implies --wait).
        #[arg(long)]
        download: Option<PathBuf>,
        /// Replace an existing --download file.
        #[arg(long, requires = "download")]
        force: bool,
    },
    /// List batch predictions, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one: state, progress, bad rows, output parts.
    Show { id: uuid::Uuid },
    /// Download the predictions as one CSV (`-` for stdout).
    Download {
        id: uuid::Uuid,
        /// Where to write (default `<id>.csv`).
        #[arg(long = "to")]
        dest: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job spec (JSON file, `-` for stdin).
    Submit {
        spec: PathBuf,
        /// Follow progress until the job ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// Idempotency key: submitting the same spec again returns the same job.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List jobs.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job.
    Show { id: uuid::Uuid },
    /// Cancel a job.
    Cancel { id: uuid::Uuid },
    /// Queue a failed or cancelled job again.
    Retry { id: uuid::Uuid },
    /// A job's metric series (one table per series).
    Metrics {
        id: uuid::Uuid,
        /// Only this series.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print a job's log lines.
    Logs {
        id: uuid::Uuid,
        /// Keep printing new lines until the job ends.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// PostgreSQL URL (checks the database and its migrations when given).
    #[arg(long = "database-url", env = "KILN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<kiln_types::Secret>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks names, conflicts and defaults of every subcommand here rather than
        // the first time a user reaches one.
        super::Cli::command().debug_assert();
    }
}

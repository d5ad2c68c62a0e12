//! Hyperparameter search: a study's request ([`StudySpec`], parsed field by field so one 422
//! lists every bad field), what a trial job carries so its worker can ask whether to stop
//! early ([`TrialInput`]), and the study as the API answers it ([`Study`]).
//!
//! A study is a base job spec, a search space over its fields (`hyperparameters.*`,
//! `model.*`), an objective (a validation series, minimised or maximised), an algorithm
//! proposing trials, and an optional early-stopping rule judged on the per-epoch metrics
//! the worker reports anyway. Each trial is an ordinary training job of the team.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::job::JobState;
use crate::spec::{JobSpec, Metric, Task, ValidationErrors};

/// Most trials a study may run.
pub const MAX_TRIALS: u32 = 1000;
/// Most trials a study may run at once.
pub const MAX_PARALLEL_TRIALS: u32 = 64;
/// Most values a categorical parameter may list.
pub const MAX_CATEGORICAL_VALUES: usize = 100;
/// Most parameters a search space may have.
pub const MAX_PARAMETERS: usize = 32;

/// One dimension of the search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamSpec {
    /// A real number in `[min, max]`; `log` samples log-uniformly (both bounds > 0);
    /// `step` makes it a grid (required by the `grid` algorithm).
    Float {
        min: f64,
        max: f64,
        #[serde(default)]
        log: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<f64>,
    },
    /// An integer in `[min, max]` in multiples of `step` from `min` (default 1).
    Int {
        min: i64,
        max: i64,
        #[serde(default = "one")]
        step: i64,
        #[serde(default)]
        log: bool,
    },
    /// One of `values` (any JSON: numbers, strings, arrays such as layer sizes).
    Categorical { values: Vec<Value> },
}

fn one() -> i64 {
    1
}

impl ParamSpec {
    /// The values a grid enumerates, in order; `None` for a float without `step`.
    pub fn grid(&self) -> Option<Vec<Value>> {
        match self {
            ParamSpec::Float { min, max, step, .. } => {
                let step = (*step)?;
                let n = ((max - min) / step + 1e-9).floor() as u64;
                Some((0..=n).map(|i| Value::from(min + step * i as f64)).collect())
            }
            ParamSpec::Int { min, max, step, .. } => {
                Some((*min..=*max).step_by(*step as usize).map(Value::from).collect())
            }
            ParamSpec::Categorical { values } => Some(values.clone()),
        }
    }

    /// The values validation tries in the base spec: the bounds, or every category.
    pub fn probes(&self) -> Vec<Value> {
        match self {
            ParamSpec::Float { min, max, .. } => vec![Value::from(*min), Value::from(*max)],
            ParamSpec::Int { min, max, .. } => vec![Value::from(*min), Value::from(*max)],
            ParamSpec::Categorical { values } => values.clone(),
        }
    }
}

/// Minimise or maximise the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Minimize,
    Maximize,
}

impl Goal {
    /// True when `a` is strictly better than `b` (NaN is never better).
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }
}

/// What the study optimises: a validation series of the trials, by its name in API.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Objective {
    /// `val_loss`, `val_accuracy`, `val_f1` (classification), `val_rmse`, `val_mae`,
    /// `val_r2` (regression).
    pub metric: String,
    pub goal: Goal,
    /// A value that ends the study as soon as a finished trial reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
}

impl Objective {
    /// True when `value` reaches the target.
    pub fn reached(&self, value: f64) -> bool {
        self.target.is_some_and(|t| match self.goal {
            Goal::Minimize => value <= t,
            Goal::Maximize => value >= t,
        })
    }
}

/// How trials are proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Independent draws, one seeded stream per trial number.
    Random,
    /// Every combination, in order (floats need `step`).
    Grid,
    /// Tree-structured Parzen estimator: random for the first trials, then the candidate
    /// most likely under the good trials' density relative to the bad ones'.
    Tpe,
}

/// Stopping unpromising trials early, from the per-epoch metrics their workers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EarlyStopping {
    /// From `start_epoch` on, a trial whose best value so far is worse than the median of
    /// the finished trials' values at the same epoch stops (once `min_trials` have
    /// finished).
    Median { min_trials: u32, start_epoch: u32 },
    /// Asynchronous successive halving: at the rungs `min_epochs × reduction_factor^k` a
    /// trial goes on only if it is in the top `1 / reduction_factor` of the trials that
    /// reached that rung; otherwise it pauses (`pruned`, with its checkpoint) and may be
    /// promoted later, resuming from the checkpoint, when enough worse trials arrive.
    Asha { min_epochs: u32, reduction_factor: u32 },
}

impl EarlyStopping {
    /// True when a trial's epoch `epoch` (of `epochs`) is a decision point.
    pub fn decides_at(&self, epoch: u32, epochs: u32) -> bool {
        match *self {
            EarlyStopping::Median { start_epoch, .. } => {
                epoch >= start_epoch.max(1) && epoch < epochs
            }
            EarlyStopping::Asha { .. } => self.rung_of(epoch).is_some() && epoch < epochs,
        }
    }

    /// For ASHA: the rung index `k` when `epoch = min_epochs × reduction_factor^k`.
    pub fn rung_of(&self, epoch: u32) -> Option<u32> {
        let EarlyStopping::Asha { min_epochs, reduction_factor } = *self else { return None };
        let mut rung_epoch = u64::from(min_epochs.max(1));
        let epoch = u64::from(epoch);
        let mut k = 0;
        while rung_epoch <= epoch {
            if rung_epoch == epoch {
                return Some(k);
            }
            rung_epoch *= u64::from(reduction_factor.max(2));
            k += 1;
        }
        None
    }

    /// For ASHA: the epochs of the rungs below `epochs`.
    pub fn rungs(&self, epochs: u32) -> Vec<u32> {
        (1..epochs).filter(|e| self.rung_of(*e).is_some()).collect()
    }
}

/// `POST /v1/studies`: the search, as accepted (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StudySpec {
    pub name: String,
    /// A job spec, as `POST /v1/jobs` takes it: what every trial trains, with the
    /// parameters' values put in.
    #[schema(value_type = Object)]
    pub base: Value,
    /// Dotted paths into the base spec (`hyperparameters.learning_rate`, `model.hidden`).
    pub parameters: BTreeMap<String, ParamSpec>,
    pub objective: Objective,
    /// Default `random`.
    pub algorithm: Algorithm,
    /// The same spec and seed propose the same trials (default 0).
    pub seed: u64,
    /// Default 10, at most 1,000 (a grid stops when it is enumerated).
    pub max_trials: u32,
    /// Default 1, at most 64; the team's running-job cap applies as to any job.
    pub parallel_trials: u32,
    /// The study fails once more trials than this have failed (default 3).
    pub max_failed_trials: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

const STUDY_FIELDS: &[&str] = &[
    "name",
    "base",
    "parameters",
    "objective",
    "algorithm",
    "seed",
    "max_trials",
    "parallel_trials",
    "max_failed_trials",
    "early_stopping",
];

/// Puts `value` at the dotted `path` of `spec` (creating objects on the way).
pub fn set_path(spec: &mut Value, path: &str, value: Value) {
    let mut node = spec;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("an object just made");
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map.entry(part.to_owned()).or_insert_with(|| Value::Object(Default::default()));
    }
}

/// The base spec with a trial's parameter values put in.
pub fn apply_params(base: &Value, params: &BTreeMap<String, Value>) -> Value {
    let mut spec = base.clone();
    for (path, value) in params {
        set_path(&mut spec, path, value.clone());
    }
    spec
}

impl StudySpec {
    /// Parses a request body, collecting every problem: the study's own fields, the base
    /// spec's (as `base.<field>`), and each parameter whose bounds or values would make an
    /// invalid job spec (as `parameters.<path>`).
    pub fn parse(value: &Value) -> Result<StudySpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(root) = value.as_object() else {
            errors.add("", "must be a JSON object");
            return Err(errors);
        };
        for key in root.keys() {
            if !STUDY_FIELDS.contains(&key.as_str()) {
                errors.add(key.clone(), "unknown field");
            }
        }
        let name = match root.get("name").map(|v| v.as_str()) {
            Some(Some(n)) if !n.trim().is_empty() && n.len() <= 200 => Some(n.trim().to_owned()),
            Some(_) => {
                errors.add("name", "must be text of 1 to 200 characters");
                None
            }
            None => {
                errors.add("name", "required");
                None
            }
        };
        let base = match root.get("base") {
            None => {
                errors.add("base", "required: a job spec, as POST /v1/jobs takes it");
                None
            }
            Some(base) => match JobSpec::parse(base) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    errors.merge_under("base.", &e);
                    None
                }
            },
        };
        let algorithm = match root.get("algorithm") {
            None => Some(Algorithm::Random),
            Some(v) => match serde_json::from_value::<Algorithm>(v.clone()) {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.add("algorithm", "must be one of: random, grid, tpe");
                    None
                }
            },
        };
        let parameters = parse_parameters(root.get("parameters"), algorithm, &mut errors);
        let objective = parse_objective(root.get("objective"), base.as_ref(), &mut errors);
        let seed = match root.get("seed") {
            None => Some(0),
            Some(v) => v.as_u64().or_else(|| {
                errors.add("seed", "must be a non-negative integer");
                None
            }),
        };
        let count =
            |field: &str, default: u32, min: u32, max: u32, errors: &mut ValidationErrors| {
                match root.get(field) {
                    None => Some(default),
                    Some(v) => match v.as_u64() {
                        Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Some(n as u32),
                        _ => {
                            errors.add(field, format!("must be an integer from {min} to {max}"));
                            None
                        }
                    },
                }
            };
        let max_trials = count("max_trials", 10, 1, MAX_TRIALS, &mut errors);
        let parallel_trials = count("parallel_trials", 1, 1, MAX_PARALLEL_TRIALS, &mut errors);
        let max_failed_trials = count("max_failed_trials", 3, 0, MAX_TRIALS, &mut errors);
        if let (Some(m), Some(p)) = (max_trials, parallel_trials)
            && p > m
        {
            errors.add("parallel_trials", format!("must not exceed max_trials ({m})"));
        }
        let epochs = base.as_ref().map(|b| b.hyperparameters.epochs);
        let early_stopping = parse_early_stopping(root.get("early_stopping"), epochs, &mut errors);

        // Every parameter must make a valid job spec at its bounds (and with each category).
        if let (Some(base_json), Some(params)) = (root.get("base"), &parameters)
            && base.is_some()
        {
            for (path, param) in params {
                for probe in param.probes() {
                    let mut spec = base_json.clone();
                    set_path(&mut spec, path, probe.clone());
                    if let Err(e) = JobSpec::parse(&spec) {
                        let detail: Vec<String> =
                            e.fields().iter().map(|(p, m)| format!("{p}: {m}")).collect();
                        errors.add(
                            format!("parameters.{path}"),
                            format!(
                                "the value {probe} makes an invalid job spec ({})",
                                detail.join("; ")
                            ),
                        );
                        break;
                    }
                }
            }
        }

        match (
            name,
            base,
            parameters,
            objective,
            algorithm,
            seed,
            max_trials,
            parallel_trials,
            max_failed_trials,
            early_stopping,
        ) {
            (
                Some(name),
                Some(base),
                Some(parameters),
                Some(objective),
                Some(algorithm),
                Some(seed),
                Some(max_trials),
                Some(parallel_trials),
                Some(max_failed_trials),
                Some(early_stopping),
            ) if errors.is_empty() => Ok(StudySpec {
                name,
                base: base.to_json(),
                parameters,
                objective,
                algorithm,
                seed,
                max_trials,
                parallel_trials,
                max_failed_trials,
                early_stopping,
            }),
            _ => Err(errors),
        }
    }

    /// The base job spec, parsed (it was valid when the study was accepted).
    pub fn base_spec(&self) -> Result<JobSpec, ValidationErrors> {
        JobSpec::parse(&self.base)
    }

    /// How many trials the study runs: `max_trials`, or fewer when a grid is smaller.
    pub fn trial_budget(&self) -> u32 {
        if self.algorithm != Algorithm::Grid {
            return self.max_trials;
        }
        let mut size: u64 = 1;
        for p in self.parameters.values() {
            size = size.saturating_mul(p.grid().map_or(1, |g| g.len() as u64));
        }
        self.max_trials.min(u32::try_from(size).unwrap_or(u32::MAX))
    }

    /// The canonical JSON form (what the study row stores).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a StudySpec always serialises")
    }
}

const ALLOWED_ROOTS: &[&str] = &["hyperparameters", "model"];
const FIXED_PATHS: &[&str] = &["model.type", "model.dataset_id"];

fn parse_parameters(
    value: Option<&Value>,
    algorithm: Option<Algorithm>,
    errors: &mut ValidationErrors,
) -> Option<BTreeMap<String, ParamSpec>> {
    let Some(value) = value else {
        errors.add("parameters", "required: at least one parameter to search");
        return None;
    };
    let Some(map) = value.as_object() else {
        errors.add("parameters", "must be an object of dotted paths to parameter specs");
        return None;
    };
    if map.is_empty() || map.len() > MAX_PARAMETERS {
        errors.add("parameters", format!("must have 1 to {MAX_PARAMETERS} parameters"));
        return None;
    }
    let mut out = BTreeMap::new();
    for (path, spec) in map {
        let field = format!("parameters.{path}");
        let root = path.split('.').next().unwrap_or("");
        if !ALLOWED_ROOTS.contains(&root)
            || !path.contains('.')
            || path.split('.').any(str::is_empty)
        {
            errors.add(field, "must be a dotted path under `hyperparameters.` or `model.`");
            continue;
        }
        if FIXED_PATHS.contains(&path.as_str()) {
            errors.add(field, "cannot be searched (the model type and inputs are fixed per study)");
            continue;
        }
        // The good ones are kept (and probed against the base spec) even when another is
        // bad, so one answer lists every problem.
        if let Some(p) = parse_param(spec, &field, algorithm, errors) {
            out.insert(path.clone(), p);
        }
    }
    Some(out)
}

fn parse_param(
    value: &Value,
    field: &str,
    algorithm: Option<Algorithm>,
    errors: &mut ValidationErrors,
) -> Option<ParamSpec> {
    let Some(obj) = value.as_object() else {
        errors.add(field, "must be an object with a `type`: float, int or categorical");
        return None;
    };
    let allowed: &[&str] = match obj.get("type").and_then(Value::as_str) {
        Some("float") => &["type", "min", "max", "log", "step"],
        Some("int") => &["type", "min", "max", "log", "step"],
        Some("categorical") => &["type", "values"],
        _ => {
            errors.add(format!("{field}.type"), "must be one of: float, int, categorical");
            return None;
        }
    };
    let mut ok = true;
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(format!("{field}.{key}"), "unknown field");
            ok = false;
        }
    }
    let log = match obj.get("log") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.add(format!("{field}.log"), "must be true or false");
            ok = false;
            false
        }
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("float") => {
            let num = |key: &str, errors: &mut ValidationErrors| match obj.get(key) {
                Some(v) if v.as_f64().is_some_and(f64::is_finite) => v.as_f64(),
                Some(_) => {
                    errors.add(format!("{field}.{key}"), "must be a finite number");
                    None
                }
                None => {
                    errors.add(format!("{field}.{key}"), "required");
                    None
                }
            };
            let min = num("min", errors);
            let max = num("max", errors);
            let step = match obj.get("step") {
                None => None,
                Some(v) => match v.as_f64() {
                    Some(s) if s > 0.0 && s.is_finite() => Some(s),
                    _ => {
                        errors.add(format!("{field}.step"), "must be a number > 0");
                        ok = false;
                        None
                    }
                },
            };
            let (Some(min), Some(max)) = (min, max) else { return None };
            if min >= max {
                errors.add(format!("{field}.max"), "must be greater than min");
                ok = false;
            }
            if log && min <= 0.0 {
                errors.add(format!("{field}.min"), "must be > 0 with log: true");
                ok = false;
            }
            if log && step.is_some() {
                errors.add(format!("{field}.step"), "cannot be combined with log: true");
                ok = false;
            }
            if step.is_none() && algorithm == Some(Algorithm::Grid) {
                errors.add(format!("{field}.step"), "required by the grid algorithm for a float");
                ok = false;
            }
            if let Some(s) = step
                && min < max
                && (max - min) / s > 100_000.0
            {
                errors.add(format!("{field}.step"), "makes more than 100,000 grid points");
                ok = false;
            }
            ok.then_some(ParamSpec::Float { min, max, log, step })
        }
        Some("int") => {
            let int = |key: &str, errors: &mut ValidationErrors| match obj.get(key) {
                Some(v) if v.as_i64().is_some() => v.as_i64(),
                Some(_) => {
                    errors.add(format!("{field}.{key}"), "must be an integer");
                    None
                }
                None => {
                    errors.add(format!("{field}.{key}"), "required");
                    None
                }
            };
            let min = int("min", errors);
            let max = int("max", errors);
            let step = match obj.get("step") {
                None => Some(1),
                Some(v) => match v.as_i64() {
                    Some(s) if s > 0 => Some(s),
                    _ => {
                        errors.add(format!("{field}.step"), "must be an integer > 0");
                        None
                    }
                },
            };
            let (Some(min), Some(max), Some(step)) = (min, max, step) else { return None };
            if min >= max {
                errors.add(format!("{field}.max"), "must be greater than min");
                ok = false;
            }
            if log && min <= 0 {
                errors.add(format!("{field}.min"), "must be > 0 with log: true");
                ok = false;
            }
            if max.saturating_sub(min) / step > 100_000 {
                errors.add(format!("{field}.step"), "makes more than 100,000 grid points");
                ok = false;
            }
            ok.then_some(ParamSpec::Int { min, max, step, log })
        }
        _ => {
            let values = match obj.get("values").and_then(Value::as_array) {
                Some(v) if !v.is_empty() && v.len() <= MAX_CATEGORICAL_VALUES => v.clone(),
                _ => {
                    errors.add(
                        format!("{field}.values"),
                        format!("must be an array of 1 to {MAX_CATEGORICAL_VALUES} values"),
                    );
                    return None;
                }
            };
            ok.then_some(ParamSpec::Categorical { values })
        }
    }
}

fn parse_objective(
    value: Option<&Value>,
    base: Option<&JobSpec>,
    errors: &mut ValidationErrors,
) -> Option<Objective> {
    let Some(obj) = value.and_then(Value::as_object) else {
        errors.add("objective", "required: {\"metric\": \"val_accuracy\", \"goal\": \"maximize\"}");
        return None;
    };
    for key in obj.keys() {
        if !["metric", "goal", "target"].contains(&key.as_str()) {
            errors.add(format!("objective.{key}"), "unknown field");
        }
    }
    let metric = match obj.get("metric").and_then(Value::as_str).and_then(metric_named) {
        Some(m) => {
            if let Some(base) = base
                && !m.applies_to(base.task)
            {
                let task = match base.task {
                    Task::Classification => "classification",
                    Task::Regression => "regression",
                };
                errors.add("objective.metric", format!("is not computed for {task}"));
            }
            Some(m)
        }
        None => {
            errors.add(
                "objective.metric",
                "must be one of: val_loss, val_accuracy, val_f1, val_rmse, val_mae, val_r2",
            );
            None
        }
    };
    let goal = match obj.get("goal") {
        Some(v) => serde_json::from_value::<Goal>(v.clone()).ok().or_else(|| {
            errors.add("objective.goal", "must be minimize or maximize");
            None
        }),
        None => metric.map(|m| if m.higher_is_better() { Goal::Maximize } else { Goal::Minimize }),
    };
    let target = match obj.get("target") {
        None | Some(Value::Null) => Some(None),
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() => Some(Some(t)),
            _ => {
                errors.add("objective.target", "must be a finite number");
                None
            }
        },
    };
    Some(Objective { metric: metric?.as_str().to_owned(), goal: goal?, target: target? })
}

/// The validation series a study may optimise, by name.
pub fn metric_named(name: &str) -> Option<Metric> {
    [
        Metric::ValLoss,
        Metric::ValAccuracy,
        Metric::ValF1,
        Metric::ValRmse,
        Metric::ValMae,
        Metric::ValR2,
    ]
    .into_iter()
    .find(|m| m.as_str() == name)
}

fn parse_early_stopping(
    value: Option<&Value>,
    epochs: Option<u32>,
    errors: &mut ValidationErrors,
) -> Option<Option<EarlyStopping>> {
    let value = match value {
        None | Some(Value::Null) => return Some(None),
        Some(v) => v,
    };
    let Some(obj) = value.as_object() else {
        errors.add("early_stopping", "must be {\"type\": \"median\" | \"asha\", ...} or null");
        return None;
    };
    let (kind, fields): (&str, &[&str]) = match obj.get("type").and_then(Value::as_str) {
        Some("median") => ("median", &["type", "min_trials", "start_epoch"]),
        Some("asha") => ("asha", &["type", "min_epochs", "reduction_factor"]),
        _ => {
            errors.add("early_stopping.type", "must be median or asha");
            return None;
        }
    };
    let mut ok = true;
    for key in obj.keys() {
        if !fields.contains(&key.as_str()) {
            errors.add(format!("early_stopping.{key}"), "unknown field");
            ok = false;
        }
    }
    let mut int = |key: &str, default: u32, min: u32| match obj.get(key) {
        None => Some(default),
        Some(v) => match v.as_u64() {
            Some(n) if n >= u64::from(min) && n <= 100_000 => Some(n as u32),
            _ => {
                errors.add(
                    format!("early_stopping.{key}"),
                    format!("must be an integer from {min} to 100000"),
                );
                ok = false;
                None
            }
        },
    };
    let (first_field, a, b) = if kind == "median" {
        ("start_epoch", int("min_trials", 3, 1), int("start_epoch", 1, 1))
    } else {
        ("min_epochs", int("min_epochs", 1, 1), int("reduction_factor", 3, 2))
    };
    let first = if kind == "median" { b } else { a };
    if let (Some(epochs), Some(first)) = (epochs, first)
        && first >= epochs
    {
        errors.add(
            format!("early_stopping.{first_field}"),
            format!(
                "must be less than the base spec's epochs ({epochs}), or nothing is ever stopped"
            ),
        );
        ok = false;
    }
    let (a, b) = (a?, b?);
    let rule = if kind == "median" {
        EarlyStopping::Median { min_trials: a, start_epoch: b }
    } else {
        EarlyStopping::Asha { min_epochs: a, reduction_factor: b }
    };
    ok.then_some(Some(rule))
}

/// `jobs.inputs.trial`: the study a training job is a trial of, and what its worker needs
/// to ask, after each deciding epoch, whether to stop early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrialInput {
    pub study_id: Uuid,
    pub number: u32,
    pub objective: Objective,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

/// Where a study is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Proposing and running trials.
    Running,
    /// Every trial ran (or the target was reached).
    Succeeded,
    /// Stopped by a member (`POST /v1/studies/{id}/stop`).
    Stopped,
    /// More trials failed than `max_failed_trials` allows.
    Failed,
}

impl StudyState {
    pub const fn as_str(self) -> &'static str {
        match self {
            StudyState::Running => "running",
            StudyState::Succeeded => "succeeded",
            StudyState::Stopped => "stopped",
            StudyState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<StudyState> {
        [StudyState::Running, StudyState::Succeeded, StudyState::Stopped, StudyState::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// One trial of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trial {
    /// 0-based, in proposal order.
    pub number: u32,
    /// The trial's training job (and run).
    pub job_id: Uuid,
    /// The parameters' values, by path.
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
    pub state: JobState,
    /// The objective: the finished model's value, or the last epoch's while it runs or
    /// after it was pruned.
    pub objective: Option<f64>,
    /// Epochs trained.
    pub epochs: u32,
    /// Times ASHA resumed it from its checkpoint after pausing it.
    pub promotions: u32,
}

/// The best finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BestTrial {
    pub number: u32,
    pub job_id: Uuid,
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
    pub objective: f64,
}

/// Trials by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrialCounts {
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub pruned: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl TrialCounts {
    pub fn of<'a>(states: impl IntoIterator<Item = &'a JobState>) -> Self {
        let mut c = TrialCounts::default();
        for s in states {
            match s {
                JobState::Queued => c.queued += 1,
                JobState::Running => c.running += 1,
                JobState::Succeeded => c.succeeded += 1,
                JobState::Pruned => c.pruned += 1,
                JobState::Failed => c.failed += 1,
                JobState::Cancelled => c.cancelled += 1,
            }
        }
        c
    }
}

/// A study as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Study {
    pub id: Uuid,
    pub name: String,
    pub state: StudyState,
    /// Why it ended, when it has.
    pub reason: Option<String>,
    pub spec: StudySpec,
    pub best_trial: Option<BestTrial>,
    pub counts: TrialCounts,
    /// Every trial, in proposal order (empty in lists).
    pub trials: Vec<Trial>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `POST /v1/studies/{id}/register`: registers the best trial's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBest {
    /// The registered model to add a version to (created if new).
    pub model: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> Value {
        json!({"dataset_id": "0191b0a0-0000-7000-8000-000000000001", "task": "classification",
               "target": "label", "model": {"type": "mlp", "hidden": [32]},
               "hyperparameters": {"epochs": 9}})
    }

    #[test]
    fn a_full_spec_parses_with_defaults_filled_in() {
        let spec = StudySpec::parse(&json!({
            "name": "lr", "base": base(),
            "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 1e-4, "max": 0.3, "log": true},
                           "hyperparameters.batch_size": {"type": "int", "min": 8, "max": 64, "step": 8},
                           "model.hidden": {"type": "categorical", "values": [[32], [64, 32]]}},
            "objective": {"metric": "val_accuracy"},
            "early_stopping": {"type": "asha", "min_epochs": 1, "reduction_factor": 3}
        }))
        .unwrap();
        assert_eq!(spec.objective.goal, Goal::Maximize);
        assert_eq!((spec.max_trials, spec.parallel_trials, spec.max_failed_trials), (10, 1, 3));
        assert_eq!(spec.algorithm, Algorithm::Random);
        assert_eq!(spec.base["hyperparameters"]["epochs"], 9);
        // Stored and read back unchanged.
        assert_eq!(serde_json::from_value::<StudySpec>(spec.to_json()).unwrap(), spec);
        assert_eq!(spec.early_stopping.unwrap().rungs(9), vec![1, 3]);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let errors = StudySpec::parse(&json!({
            "name": "", "base": {"task": "classification", "model": {"type": "mlp"}},
            "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.5, "max": 0.1},
                           "dataset_id": {"type": "categorical", "values": []},
                           "model.hidden": {"type": "categorical", "values": []}},
            "objective": {"metric": "accuracy", "goal": "up"},
            "algorithm": "bayes", "max_trials": 0, "parallel_trials": 100,
            "early_stopping": {"type": "hyperband"}, "colour": 1
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.fields().keys().map(String::as_str).collect();
        for f in [
            "name",
            "base.dataset_id",
            "parameters.hyperparameters.learning_rate.max",
            "parameters.dataset_id",
            "parameters.model.hidden.values",
            "objective.metric",
            "objective.goal",
            "algorithm",
            "max_trials",
            "parallel_trials",
            "early_stopping.type",
            "colour",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn a_parameter_that_makes_an_invalid_job_spec_is_refused() {
        let errors = StudySpec::parse(&json!({
            "name": "x", "base": base(),
            "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.1, "max": 50},
                           "hyperparameters.learnin_rate": {"type": "float", "min": 0.1, "max": 0.5}},
            "objective": {"metric": "val_rmse"}
        }))
        .unwrap_err();
        let f = errors.fields();
        assert!(f["parameters.hyperparameters.learning_rate"].contains("50"), "{f:?}");
        assert!(f["parameters.hyperparameters.learnin_rate"].contains("unknown"), "{f:?}");
        assert!(f["objective.metric"].contains("classification"), "{f:?}");
    }

    #[test]
    fn grids_enumerate_exactly_and_bound_the_budget() {
        let p = ParamSpec::Int { min: 8, max: 64, step: 8, log: false };
        assert_eq!(p.grid().unwrap(), (1..=8).map(|i| json!(i * 8)).collect::<Vec<_>>());
        let f = ParamSpec::Float { min: 0.1, max: 0.3, log: false, step: Some(0.1) };
        let g: Vec<f64> = f.grid().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(g.len(), 3);
        assert!((g[2] - 0.3).abs() < 1e-12);
        let spec = StudySpec::parse(&json!({
            "name": "g", "base": base(), "algorithm": "grid", "max_trials": 100,
            "parameters": {"hyperparameters.batch_size": {"type": "int", "min": 8, "max": 64, "step": 8},
                           "model.hidden": {"type": "categorical", "values": [[8], [16]]}},
            "objective": {"metric": "val_loss"}
        }))
        .unwrap();
        assert_eq!(spec.trial_budget(), 16);
        assert_eq!(spec.objective.goal, Goal::Minimize);
        let errors = StudySpec::parse(&json!({
            "name": "g", "base": base(), "algorithm": "grid",
            "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.1, "max": 0.5}},
            "objective": {"metric": "val_loss"}
        }))
        .unwrap_err();
        assert!(errors.fields()["parameters.hyperparameters.learning_rate.step"].contains("grid"));
    }

    #[test]
    fn asha_rungs_and_median_decision_points() {
        let asha = EarlyStopping::Asha { min_epochs: 2, reduction_factor: 3 };
        assert_eq!(asha.rungs(30), vec![2, 6, 18]);
        assert_eq!(asha.rung_of(6), Some(1));
        assert!(!asha.decides_at(18, 18), "the last epoch is never a decision point");
        let median = EarlyStopping::Median { min_trials: 3, start_epoch: 2 };
        assert!(
            !median.decides_at(1, 10) && median.decides_at(2, 10) && !median.decides_at(10, 10)
        );
    }

    #[test]
    fn paths_are_set_creating_objects() {
        let mut v = json!({"model": {"type": "mlp"}});
        set_path(&mut v, "model.hidden", json!([64]));
        set_path(&mut v, "hyperparameters.learning_rate", json!(0.1));
        assert_eq!(
            v,
            json!({"model": {"type": "mlp", "hidden": [64]}, "hyperparameters": {"learning_rate": 0.1}})
        );
    }
}

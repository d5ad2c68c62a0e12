//! The training job specification (`POST /v1/jobs`), parsed once and valid from then on.
//!
//! [`JobSpec::parse`] takes the request body as a `serde_json::Value` and either returns a
//! spec whose every field is in range, with defaults filled in, or a [`ValidationErrors`]
//! map that names *every* offending field at once (`{"hyperparameters.learning_rate": "must
//! be > 0"}`), which the API answers as a 422. Unknown fields are refused rather than
//! ignored: a typo such as `"learning_rte"` must not silently train with the default.
//! A field given as `null` counts as absent (its default applies).
//!
//! [`JobSpec::to_json`] writes the canonical form: every field present, defaults spelled
//! out, schedules and models as tagged objects. Parsing the canonical form gives the same
//! spec back, so it is what the queue stores and what a model bundle records as lineage.
//!
//! The OpenAPI schema of the request (`JobSpec` and its parts derive `utoipa::ToSchema`)
//! describes what `parse` accepts: the required fields (`dataset_id`, `task`, `model`) and
//! every optional one with its default and range; the canonical form validates against it.
//!
//! Checks that need the dataset (does the target column exist, does a CNN get images) are
//! not made here; kiln-ml makes them and reports them as user errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::job::DeviceRequirement;

/// A fully validated training job: the body of `POST /v1/jobs`. Only `dataset_id`,
/// `task` and `model` are required; every other field has a default, and unknown fields
/// are refused (422 naming them).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobSpec {
    /// The uploaded dataset (CSV or NPZ) to train on.
    pub dataset_id: Uuid,
    pub task: Task,
    /// The CSV column to predict (required for CSV datasets). NPZ datasets use their `y`
    /// array, so it may be absent.
    pub target: Option<String>,
    /// The CSV columns to use as inputs; absent means every column but the target.
    #[schema(min_items = 1)]
    pub features: Option<Vec<String>>,
    pub model: ModelSpec,
    #[schema(required = false)]
    pub hyperparameters: Hyperparameters,
    #[schema(required = false)]
    pub preprocessing: Preprocessing,
    /// Higher runs first, -1000 to 1000.
    #[schema(required = false, default = 0, minimum = -1000, maximum = 1000)]
    pub priority: i32,
    /// Attempts before the job fails for good, 1 to 100.
    #[schema(required = false, default = 3, minimum = 1, maximum = 100)]
    pub max_attempts: u32,
    /// The device the job must run on.
    #[schema(required = false, schema_with = device_requirement_schema)]
    pub device: DeviceRequirement,
}

/// `any`, `cuda` or `cpu` (default `any`), as the OpenAPI document shows the job's device.
fn device_requirement_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["any", "cuda", "cpu"]))
        .default(Some(Value::from("any")))
        .description(Some("The device the job must run on (default `any`)."))
        .build()
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A label out of a fixed set; metrics are accuracy and macro-F1.
    Classification,
    /// A real number; metrics are RMSE, MAE and R².
    Regression,
}

/// The model architecture, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Logistic regression (classification) or linear regression.
    #[schema(title = "LinearModel")]
    Linear,
    /// A multi-layer perceptron.
    #[schema(title = "MlpModel")]
    Mlp {
        /// Hidden layer widths, input side first; 1 to 32 layers of 1 to 65,536.
        #[schema(required = false, default = json!([64, 32]), min_items = 1, max_items = 32)]
        hidden: Vec<u32>,
        /// Dropout probability after each hidden activation, in `[0, 1)`.
        #[schema(required = false, default = 0.0, minimum = 0.0, exclusive_maximum = 1.0)]
        dropout: f64,
        #[schema(required = false)]
        activation: Activation,
    },
    /// A small convolutional net for N×C×H×W inputs: per entry of `channels`, a same-padded
    /// convolution, the activation and a 2×2 max-pool; then a linear head.
    #[schema(title = "CnnModel")]
    Cnn {
        /// Output channels per convolution; 1 to 8 of 1 to 4096.
        #[schema(required = false, default = json!([16, 32]), min_items = 1, max_items = 8)]
        channels: Vec<u32>,
        /// Odd convolution kernel size, 1 to 15.
        #[schema(required = false, default = 3, minimum = 1, maximum = 15)]
        kernel_size: u32,
        /// Dropout probability before the head, in `[0, 1)`.
        #[schema(required = false, default = 0.0, minimum = 0.0, exclusive_maximum = 1.0)]
        dropout: f64,
    },
    /// A user's own module saved with `torch.jit.script(model).save(...)`, uploaded as a
    /// dataset, trained from Rust.
    #[serde(rename = "torchscript")]
    #[schema(title = "TorchScriptModel")]
    TorchScript {
        /// The upload (`?format=torchscript`) holding the scripted module.
        dataset_id: Uuid,
    },
}

impl ModelSpec {
    /// The `type` tag as spelled on the wire.
    pub const fn type_name(&self) -> &'static str {
        match self {
            ModelSpec::Linear => "linear",
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Cnn { .. } => "cnn",
            ModelSpec::TorchScript { .. } => "torchscript",
        }
    }
}

/// A hidden-layer non-linearity (default `relu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Gelu,
    Sigmoid,
}

/// The optimiser (default `adam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent, with optional (heavy-ball) momentum.
    Sgd,
    /// Adam; weight decay is added to the gradient (L2), as in PyTorch's `Adam`.
    Adam,
    /// Adam with decoupled weight decay, as in PyTorch's `AdamW`.
    Adamw,
}

/// How the learning rate changes over epochs, chosen by `type` (default `constant`; the
/// bare string `"constant"`, `"step"` or `"cosine"` is accepted too, with its defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The learning rate throughout.
    #[schema(title = "ConstantSchedule")]
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    #[schema(title = "StepSchedule")]
    Step {
        /// 1 to 100,000 (default 10).
        #[schema(required = false, default = 10, minimum = 1, maximum = 100_000)]
        step_size: u32,
        /// In `(0, 1]` (default 0.1).
        #[schema(required = false, default = 0.1, exclusive_minimum = 0.0, maximum = 1.0)]
        gamma: f64,
    },
    /// Cosine annealing from the learning rate down to `min_lr` over all epochs.
    #[schema(title = "CosineSchedule")]
    Cosine {
        /// At least 0 and below the learning rate (default 0).
        #[schema(required = false, default = 0.0, minimum = 0.0)]
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The learning rate for the 0-based `epoch` of `epochs`.
    pub fn learning_rate(&self, base: f64, epoch: u32, epochs: u32) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi(i32::try_from(epoch / step_size).unwrap_or(i32::MAX))
            }
            LrSchedule::Cosine { min_lr } => {
                let progress = f64::from(epoch) / f64::from(epochs.max(1));
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// The validation metric early stopping watches (default `val_loss`); it must be one the
/// task computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ValLoss,
    ValAccuracy,
    ValF1,
    ValRmse,
    ValMae,
    ValR2,
}

impl Metric {
    /// The metric series name (API.md).
    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::ValLoss => "val_loss",
            Metric::ValAccuracy => "val_accuracy",
            Metric::ValF1 => "val_f1",
            Metric::ValRmse => "val_rmse",
            Metric::ValMae => "val_mae",
            Metric::ValR2 => "val_r2",
        }
    }

    /// True when a larger value is better.
    pub const fn higher_is_better(self) -> bool {
        matches!(self, Metric::ValAccuracy | Metric::ValF1 | Metric::ValR2)
    }

    /// True when the metric exists for `task`.
    pub const fn applies_to(self, task: Task) -> bool {
        match self {
            Metric::ValLoss => true,
            Metric::ValAccuracy | Metric::ValF1 => matches!(task, Task::Classification),
            Metric::ValRmse | Metric::ValMae | Metric::ValR2 => matches!(task, Task::Regression),
        }
    }
}

/// Optimisation settings. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Hyperparameters {
    /// 1 to 100,000.
    #[schema(required = false, default = 30, minimum = 1, maximum = 100_000)]
    pub epochs: u32,
    /// 1 to 1,048,576.
    #[schema(required = false, default = 32, minimum = 1, maximum = 1_048_576)]
    pub batch_size: u32,
    /// In `(0, 10]`.
    #[schema(required = false, default = 0.01, exclusive_minimum = 0.0, maximum = 10.0)]
    pub learning_rate: f64,
    #[schema(required = false)]
    pub optimizer: Optimizer,
    #[schema(required = false, default = 0.0, minimum = 0.0)]
    pub weight_decay: f64,
    /// SGD momentum in `[0, 1)` (only with `sgd`).
    #[schema(required = false, default = 0.0, minimum = 0.0, exclusive_maximum = 1.0)]
    pub momentum: f64,
    /// Adam's `[beta1, beta2]`, each in `[0, 1)` (only with `adam`/`adamw`).
    #[schema(required = false, value_type = Vec<f64>, default = json!([0.9, 0.999]), min_items = 2, max_items = 2)]
    pub betas: [f64; 2],
    /// In `(0, 1]`.
    #[schema(required = false, default = 1e-8, exclusive_minimum = 0.0, maximum = 1.0)]
    pub eps: f64,
    #[schema(required = false, default = 42, minimum = 0)]
    pub seed: u64,
    /// Fraction of rows held out for validation, in `(0, 1)`.
    #[schema(required = false, default = 0.2, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub validation_split: f64,
    /// Stop after this many epochs without improvement of `early_stopping_metric`, 1 to
    /// 100,000; absent or null: never stop early.
    #[schema(minimum = 1, maximum = 100_000)]
    pub early_stopping_patience: Option<u32>,
    #[schema(required = false)]
    pub early_stopping_metric: Metric,
    #[schema(required = false)]
    pub lr_schedule: LrSchedule,
    /// Clip the gradients' global L2 norm to this value (> 0); absent or null: no clipping.
    #[schema(exclusive_minimum = 0.0)]
    pub grad_clip: Option<f64>,
    /// Checkpoint cadence in epochs, 1 to 100,000.
    #[schema(required = false, default = 1, minimum = 1, maximum = 100_000)]
    pub checkpoint_every_epochs: u32,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Hyperparameters {
            epochs: 30,
            batch_size: 32,
            learning_rate: 0.01,
            optimizer: Optimizer::Adam,
            weight_decay: 0.0,
            momentum: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            seed: 42,
            validation_split: 0.2,
            early_stopping_patience: None,
            early_stopping_metric: Metric::ValLoss,
            lr_schedule: LrSchedule::Constant,
            grad_clip: None,
            checkpoint_every_epochs: 1,
        }
    }
}

/// How raw input values become model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Preprocessing {
    /// Standardise numeric features with the training split's mean and standard deviation.
    #[schema(required = false, default = true)]
    pub standardize: bool,
    #[schema(required = false)]
    pub missing: MissingValues,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing { standardize: true, missing: MissingValues::Error }
    }
}

/// What to do with an empty or unparsable feature value (default `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingValues {
    /// Refuse the dataset with an error naming the row and column.
    Error,
    /// Numeric: the training mean; categorical: no category (all zeros).
    Impute,
}

/// Every offending field of a spec, as `{"path": "message"}` (API.md's `details.fields`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(BTreeMap<String, String>);

impl ValidationErrors {
    /// The offending fields, by path.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records a problem at `path`; the first message for a path wins.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.entry(path.into()).or_insert_with(|| message.into());
    }

    /// Records every problem of `other`, each path under `prefix` (`"base."`; `""` keeps
    /// them as they are).
    pub fn merge_under(&mut self, prefix: &str, other: &ValidationErrors) {
        for (path, message) in other.fields() {
            self.add(format!("{prefix}{path}"), message.clone());
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid job spec: ")?;
        for (i, (path, message)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{path}: {message}")?;
        }
        Ok(())
    }
}

const TOP_FIELDS: &[&str] = &[
    "dataset_id",
    "task",
    "target",
    "features",
    "model",
    "hyperparameters",
    "preprocessing",
    "priority",
    "max_attempts",
    "device",
];
const HYPER_FIELDS: &[&str] = &[
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "weight_decay",
    "momentum",
    "betas",
    "eps",
    "seed",
    "validation_split",
    "early_stopping_patience",
    "early_stopping_metric",
    "lr_schedule",
    "grad_clip",
    "checkpoint_every_epochs",
];

impl JobSpec {
    /// Parses a request body, collecting every problem (see the module docs).
    pub fn parse(value: &Value) -> Result<JobSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(root) = Obj::new(value, "", TOP_FIELDS, &mut errors) else {
            return Err(errors);
        };
        let dataset_id = root.uuid("dataset_id", true, &mut errors);
        let task = root.choice(
            "task",
            &[("classification", Task::Classification), ("regression", Task::Regression)],
            None,
            &mut errors,
        );
        let target = root.string("target", &mut errors);
        let features = parse_features(&root, target.as_deref(), &mut errors);
        let model = match root.get("model") {
            None => {
                errors.add("model", "required");
                None
            }
            Some(value) => parse_model(value, &mut errors),
        };
        let hyperparameters = match root.get("hyperparameters") {
            None => Some(Hyperparameters::default()),
            Some(value) => parse_hyperparameters(value, task, &mut errors),
        };
        let preprocessing = match root.get("preprocessing") {
            None => Some(Preprocessing::default()),
            Some(value) => parse_preprocessing(value, &mut errors),
        };
        let priority = root.int("priority", 0, -1000, 1000, &mut errors);
        let max_attempts = root.int("max_attempts", 3, 1, 100, &mut errors);
        let device = root.choice(
            "device",
            &[
                ("any", DeviceRequirement::Any),
                ("cuda", DeviceRequirement::Cuda),
                ("cpu", DeviceRequirement::Cpu),
            ],
            Some(DeviceRequirement::Any),
            &mut errors,
        );
        match (
            dataset_id,
            task,
            model,
            hyperparameters,
            preprocessing,
            priority,
            max_attempts,
            device,
        ) {
            (
                Some(dataset_id),
                Some(task),
                Some(model),
                Some(hyperparameters),
                Some(preprocessing),
                Some(priority),
                Some(max_attempts),
                Some(device),
            ) if errors.is_empty() => Ok(JobSpec {
                dataset_id,
                task,
                target,
                features,
                model,
                hyperparameters,
                preprocessing,
                priority: priority as i32,
                max_attempts: max_attempts as u32,
                device,
            }),
            _ => Err(errors),
        }
    }

    /// The canonical JSON form: every field spelled out; `parse` reads it back unchanged.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a JobSpec always serialises")
    }
}

fn parse_features(
    root: &Obj<'_>,
    target: Option<&str>,
    errors: &mut ValidationErrors,
) -> Option<Vec<String>> {
    let value = root.get("features")?;
    let path = root.path("features");
    let Some(items) = value.as_array() else {
        errors.add(path, "must be an array of column names");
        return None;
    };
    if items.is_empty() {
        errors.add(path, "must name at least one column (omit it to use every column)");
        return None;
    }
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(name) if !name.is_empty() => {
                if names.iter().any(|n| n == name) {
                    errors.add(format!("{path}[{i}]"), format!("column `{name}` is listed twice"));
                } else if Some(name) == target {
                    errors.add(
                        format!("{path}[{i}]"),
                        format!("`{name}` is the target; it cannot also be a feature"),
                    );
                }
                names.push(name.to_owned());
            }
            _ => errors.add(format!("{path}[{i}]"), "must be a non-empty string"),
        }
    }
    Some(names)
}

fn parse_model(value: &Value, errors: &mut ValidationErrors) -> Option<ModelSpec> {
    const TYPES: &str = "linear, mlp, cnn, torchscript";
    let Some(map) = value.as_object() else {
        errors.add("model", "must be an object with a `type`");
        return None;
    };
    let type_name = match map.get("type") {
        None | Some(Value::Null) => {
            errors.add("model.type", format!("required; one of {TYPES}"));
            return None;
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            errors.add("model.type", format!("must be a string, one of {TYPES}"));
            return None;
        }
    };
    let fields: &[&str] = match type_name {
        "linear" => &["type"],
        "mlp" => &["type", "hidden", "dropout", "activation"],
        "cnn" => &["type", "channels", "kernel_size", "dropout"],
        "torchscript" => &["type", "dataset_id"],
        other => {
            errors.add(
                "model.type",
                format!("unknown model type `{other}`; expected one of {TYPES}"),
            );
            return None;
        }
    };
    let obj = Obj::new(value, "model", fields, errors)?;
    match type_name {
        "linear" => Some(ModelSpec::Linear),
        "mlp" => {
            let hidden = obj.sizes("hidden", &[64, 32], 1, 65_536, 32, errors);
            if let Some(hidden) = &hidden {
                let weights = hidden.windows(2).map(|w| u64::from(w[0]) * u64::from(w[1])).sum();
                check_layer_weights("model.hidden", "hidden layers", weights, errors);
            }
            let dropout = obj.probability("dropout", errors);
            let activation = obj.choice(
                "activation",
                &[
                    ("relu", Activation::Relu),
                    ("tanh", Activation::Tanh),
                    ("gelu", Activation::Gelu),
                    ("sigmoid", Activation::Sigmoid),
                ],
                Some(Activation::Relu),
                errors,
            );
            Some(ModelSpec::Mlp { hidden: hidden?, dropout: dropout?, activation: activation? })
        }
        "cnn" => {
            let channels = obj.sizes("channels", &[16, 32], 1, 4096, 8, errors);
            let kernel_size = obj.int("kernel_size", 3, 1, 15, errors);
            if kernel_size.is_some_and(|k| k % 2 == 0) {
                errors.add("model.kernel_size", "must be odd (the convolution is same-padded)");
            }
            if let (Some(channels), Some(k)) = (&channels, kernel_size) {
                let weights = channels
                    .windows(2)
                    .map(|w| u64::from(w[0]) * u64::from(w[1]) * (k * k) as u64)
                    .sum();
                check_layer_weights("model.channels", "convolutions", weights, errors);
            }
            let dropout = obj.probability("dropout", errors);
            Some(ModelSpec::Cnn {
                channels: channels?,
                kernel_size: kernel_size? as u32,
                dropout: dropout?,
            })
        }
        _ => Some(ModelSpec::TorchScript { dataset_id: obj.uuid("dataset_id", true, errors)? }),
    }
}

/// Most weights the layers of a model may hold between them, whatever the data (4 GiB of
/// 32-bit floats); the API also checks a whole model's estimated memory against its limit
/// once the data's shape is known ([`crate::memory`]).
pub const MAX_LAYER_WEIGHTS: u64 = 1 << 30;

/// Refuses layers (hidden-to-hidden, or convolution-to-convolution) holding more than
/// [`MAX_LAYER_WEIGHTS`] weights between them.
fn check_layer_weights(path: &str, what: &str, weights: u64, errors: &mut ValidationErrors) {
    if weights > MAX_LAYER_WEIGHTS {
        errors.add(
            path,
            format!(
                "the {what} hold {weights} weights between them ({} as 32-bit floats, before \
                 gradients and optimizer state); at most {MAX_LAYER_WEIGHTS}",
                crate::memory::format_bytes(weights.saturating_mul(4)),
            ),
        );
    }
}

fn parse_hyperparameters(
    value: &Value,
    task: Option<Task>,
    errors: &mut ValidationErrors,
) -> Option<Hyperparameters> {
    let d = Hyperparameters::default();
    let obj = Obj::new(value, "hyperparameters", HYPER_FIELDS, errors)?;
    let epochs = obj.int("epochs", d.epochs.into(), 1, 100_000, errors);
    let batch_size = obj.int("batch_size", d.batch_size.into(), 1, 1 << 20, errors);
    let learning_rate =
        obj.number("learning_rate", d.learning_rate, errors, |x| check_positive(x, 10.0));
    let optimizer = obj.choice(
        "optimizer",
        &[("adam", Optimizer::Adam), ("adamw", Optimizer::Adamw), ("sgd", Optimizer::Sgd)],
        Some(d.optimizer),
        errors,
    );
    let weight_decay = obj.number("weight_decay", d.weight_decay, errors, |x| {
        if x < 0.0 { Err("must be >= 0".into()) } else { Ok(()) }
    });
    let momentum = obj.number("momentum", d.momentum, errors, |x| {
        if (0.0..1.0).contains(&x) { Ok(()) } else { Err("must be >= 0 and < 1".into()) }
    });
    // Settings of another optimiser are refused unless they hold the default (which the
    // canonical form spells out for every optimiser).
    if optimizer.is_some_and(|o| o != Optimizer::Sgd) && momentum.is_some_and(|m| m != d.momentum) {
        errors.add(obj.path("momentum"), "applies only to optimizer `sgd`");
    }
    let betas = parse_betas(&obj, d.betas, errors);
    if optimizer == Some(Optimizer::Sgd) && betas.is_some_and(|b| b != d.betas) {
        errors.add(obj.path("betas"), "applies only to optimizers `adam` and `adamw`");
    }
    let eps = obj.number("eps", d.eps, errors, |x| check_positive(x, 1.0));
    let seed = obj.int("seed", 42, 0, i128::from(u64::MAX), errors);
    let validation_split = obj.number("validation_split", d.validation_split, errors, |x| {
        if x > 0.0 && x < 1.0 { Ok(()) } else { Err("must be > 0 and < 1".into()) }
    });
    let patience = if obj.has("early_stopping_patience") {
        obj.int("early_stopping_patience", 0, 1, 100_000, errors).map(|p| Some(p as u32))
    } else {
        Some(None)
    };
    let metric = obj.choice(
        "early_stopping_metric",
        &[
            ("val_loss", Metric::ValLoss),
            ("val_accuracy", Metric::ValAccuracy),
            ("val_f1", Metric::ValF1),
            ("val_rmse", Metric::ValRmse),
            ("val_mae", Metric::ValMae),
            ("val_r2", Metric::ValR2),
        ],
        Some(d.early_stopping_metric),
        errors,
    );
    if let (Some(metric), Some(task)) = (metric, task)
        && !metric.applies_to(task)
    {
        errors.add(
            obj.path("early_stopping_metric"),
            format!("`{}` is not computed for {} tasks", metric.as_str(), task_name(task)),
        );
    }
    let lr_schedule = match obj.get("lr_schedule") {
        None => Some(LrSchedule::Constant),
        Some(v) => parse_schedule(v, learning_rate, errors),
    };
    let grad_clip = if obj.has("grad_clip") {
        obj.number("grad_clip", 0.0, errors, |x| check_positive(x, f64::MAX)).map(Some)
    } else {
        Some(None)
    };
    let checkpoint_every_epochs = obj.int("checkpoint_every_epochs", 1, 1, 100_000, errors);
    Some(Hyperparameters {
        epochs: epochs? as u32,
        batch_size: batch_size? as u32,
        learning_rate: learning_rate?,
        optimizer: optimizer?,
        weight_decay: weight_decay?,
        momentum: momentum?,
        betas: betas?,
        eps: eps?,
        seed: seed? as u64,
        validation_split: validation_split?,
        early_stopping_patience: patience?,
        early_stopping_metric: metric?,
        lr_schedule: lr_schedule?,
        grad_clip: grad_clip?,
        checkpoint_every_epochs: checkpoint_every_epochs? as u32,
    })
}

fn task_name(task: Task) -> &'static str {
    match task {
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}

fn check_positive(x: f64, max: f64) -> Result<(), String> {
    if x <= 0.0 {
        Err("must be > 0".into())
    } else if x > max {
        Err(format!("must be <= {max}"))
    } else {
        Ok(())
    }
}

fn parse_betas(
    obj: &Obj<'_>,
    default: [f64; 2],
    errors: &mut ValidationErrors,
) -> Option<[f64; 2]> {
    let Some(value) = obj.get("betas") else { return Some(default) };
    let path = obj.path("betas");
    match value.as_array().map(|a| a.as_slice()) {
        Some([b1, b2]) => {
            let mut out = [0.0; 2];
            let mut ok = true;
            for (i, b) in [b1, b2].into_iter().enumerate() {
                match b.as_f64() {
                    Some(x) if (0.0..1.0).contains(&x) => out[i] = x,
                    _ => {
                        errors.add(format!("{path}[{i}]"), "must be a number >= 0 and < 1");
                        ok = false;
                    }
                }
            }
            ok.then_some(out)
        }
        _ => {
            errors.add(path, "must be an array of two numbers, e.g. [0.9, 0.999]");
            None
        }
    }
}

fn parse_schedule(
    value: &Value,
    learning_rate: Option<f64>,
    errors: &mut ValidationErrors,
) -> Option<LrSchedule> {
    const PATH: &str = "hyperparameters.lr_schedule";
    const TYPES: &str = "constant, step, cosine";
    let (type_name, obj) = match value {
        Value::String(s) => (s.as_str(), None),
        Value::Object(map) => match map.get("type") {
            Some(Value::String(s)) => (s.as_str(), Some(value)),
            _ => {
                errors.add(format!("{PATH}.type"), format!("required; one of {TYPES}"));
                return None;
            }
        },
        _ => {
            errors.add(PATH, format!("must be one of {TYPES}, or an object with a `type`"));
            return None;
        }
    };
    let fields: &[&str] = match type_name {
        "constant" => &["type"],
        "step" => &["type", "step_size", "gamma"],
        "cosine" => &["type", "min_lr"],
        other => {
            let path = if obj.is_some() { format!("{PATH}.type") } else { PATH.to_owned() };
            errors.add(path, format!("unknown schedule `{other}`; expected one of {TYPES}"));
            return None;
        }
    };
    let empty = Value::Object(Map::new());
    let obj = Obj::new(obj.unwrap_or(&empty), PATH, fields, errors)?;
    match type_name {
        "constant" => Some(LrSchedule::Constant),
        "step" => {
            let step_size = obj.int("step_size", 10, 1, 100_000, errors);
            let gamma = obj.number("gamma", 0.1, errors, |x| {
                if x > 0.0 && x <= 1.0 { Ok(()) } else { Err("must be > 0 and <= 1".into()) }
            });
            Some(LrSchedule::Step { step_size: step_size? as u32, gamma: gamma? })
        }
        _ => {
            let min_lr = obj.number("min_lr", 0.0, errors, |x| match learning_rate {
                _ if x < 0.0 => Err("must be >= 0".into()),
                Some(lr) if x >= lr => Err(format!("must be < the learning rate ({lr})")),
                _ => Ok(()),
            });
            Some(LrSchedule::Cosine { min_lr: min_lr? })
        }
    }
}

fn parse_preprocessing(value: &Value, errors: &mut ValidationErrors) -> Option<Preprocessing> {
    let obj = Obj::new(value, "preprocessing", &["standardize", "missing"], errors)?;
    let standardize = match obj.get("standardize") {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.add(obj.path("standardize"), "must be true or false");
            None
        }
    };
    let missing = obj.choice(
        "missing",
        &[("error", MissingValues::Error), ("impute", MissingValues::Impute)],
        Some(MissingValues::Error),
        errors,
    );
    Some(Preprocessing { standardize: standardize?, missing: missing? })
}

/// A JSON object being parsed: knows its path and refuses unknown fields up front.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Obj<'a> {
    fn new(
        value: &'a Value,
        prefix: &'a str,
        allowed: &[&str],
        errors: &mut ValidationErrors,
    ) -> Option<Obj<'a>> {
        let Some(map) = value.as_object() else {
            errors.add(if prefix.is_empty() { "$" } else { prefix }, "must be a JSON object");
            return None;
        };
        let obj = Obj { map, prefix };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.add(
                    obj.path(key),
                    format!("unknown field; expected one of {}", allowed.join(", ")),
                );
            }
        }
        Some(obj)
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) }
    }

    /// The value of `key`, with `null` read as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn uuid(&self, key: &str, required: bool, errors: &mut ValidationErrors) -> Option<Uuid> {
        match self.get(key) {
            None => {
                if required {
                    errors.add(self.path(key), "required");
                }
                None
            }
            Some(v) => match v.as_str().map(Uuid::parse_str) {
                Some(Ok(id)) => Some(id),
                _ => {
                    errors.add(self.path(key), "must be a UUID string");
                    None
                }
            },
        }
    }

    fn string(&self, key: &str, errors: &mut ValidationErrors) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => {
                errors.add(self.path(key), "must be a non-empty string");
                None
            }
        }
    }

    /// One of `options`; `default` `None` makes the field required.
    fn choice<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
        default: Option<T>,
        errors: &mut ValidationErrors,
    ) -> Option<T> {
        let names = || options.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        match self.get(key) {
            None => {
                if default.is_none() {
                    errors.add(self.path(key), format!("required; one of {}", names()));
                }
                default
            }
            Some(Value::String(s)) => match options.iter().find(|(n, _)| n == s) {
                Some((_, v)) => Some(*v),
                None => {
                    errors.add(self.path(key), format!("`{s}` is not one of {}", names()));
                    None
                }
            },
            Some(_) => {
                errors.add(self.path(key), format!("must be a string, one of {}", names()));
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    fn int(
        &self,
        key: &str,
        default: i128,
        min: i128,
        max: i128,
        errors: &mut ValidationErrors,
    ) -> Option<i128> {
        let Some(value) = self.get(key) else { return Some(default) };
        let n = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .filter(|n| (min..=max).contains(n));
        if n.is_none() {
            let message = if !value.is_number() {
                "must be a whole number".to_owned()
            } else if max == i128::from(u64::MAX) {
                format!("must be a whole number >= {min}")
            } else {
                format!("must be a whole number from {min} to {max}")
            };
            errors.add(self.path(key), message);
        }
        n
    }

    /// A finite number that passes `check`.
    fn number(
        &self,
        key: &str,
        default: f64,
        errors: &mut ValidationErrors,
        check: impl FnOnce(f64) -> Result<(), String>,
    ) -> Option<f64> {
        let Some(value) = self.get(key) else { return Some(default) };
        let Some(x) = value.as_f64().filter(|x| x.is_finite()) else {
            errors.add(self.path(key), "must be a number");
            return None;
        };
        match check(x) {
            Ok(()) => Some(x),
            Err(message) => {
                errors.add(self.path(key), message);
                None
            }
        }
    }

    fn probability(&self, key: &str, errors: &mut ValidationErrors) -> Option<f64> {
        self.number(key, 0.0, errors, |x| {
            if (0.0..1.0).contains(&x) { Ok(()) } else { Err("must be >= 0 and < 1".into()) }
        })
    }

    /// A non-empty list of sizes, each in `min..=max`.
    fn sizes(
        &self,
        key: &str,
        default: &[u32],
        min: u32,
        max: u32,
        max_len: usize,
        errors: &mut ValidationErrors,
    ) -> Option<Vec<u32>> {
        let Some(value) = self.get(key) else { return Some(default.to_vec()) };
        let path = self.path(key);
        let Some(items) = value.as_array() else {
            errors.add(path, "must be an array of whole numbers");
            return None;
        };
        if items.is_empty() || items.len() > max_len {
            errors.add(path, format!("must list 1 to {max_len} sizes"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_u64().filter(|n| (u64::from(min)..=u64::from(max)).contains(n)) {
                Some(n) => out.push(n as u32),
                None => errors.add(
                    format!("{path}[{i}]"),
                    format!("must be a whole number from {min} to {max}"),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DATASET: &str = "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d";

    fn minimal() -> Value {
        json!({"dataset_id": DATASET, "task": "classification", "target": "species",
               "model": {"type": "linear"}})
    }

    /// Parses `body` expecting failure, and compares the error map to `expected`.
    fn check_errors(body: Value, expected: &[(&str, &str)]) {
        let errors = JobSpec::parse(&body).expect_err("the spec should be refused");
        let expected: BTreeMap<String, String> =
            expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(errors.fields(), &expected, "{body}");
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        body[key] = value;
        body
    }

    #[test]
    fn minimal_spec_gets_every_default() {
        let spec = JobSpec::parse(&minimal()).unwrap();
        assert_eq!(spec.dataset_id.to_string(), DATASET);
        assert_eq!(spec.task, Task::Classification);
        assert_eq!(spec.target.as_deref(), Some("species"));
        assert_eq!(spec.features, None);
        assert_eq!(spec.model, ModelSpec::Linear);
        assert_eq!(spec.hyperparameters, Hyperparameters::default());
        assert_eq!(spec.preprocessing, Preprocessing::default());
        assert_eq!((spec.priority, spec.max_attempts), (0, 3));
        assert_eq!(spec.device, DeviceRequirement::Any);
    }

    #[test]
    fn full_spec_parses_and_round_trips_through_canonical_json() {
        let body = json!({
            "dataset_id": DATASET, "task": "regression", "target": "price",
            "features": ["area", "rooms"],
            "model": {"type": "mlp", "hidden": [64, 32], "dropout": 0.1, "activation": "tanh"},
            "hyperparameters": {"epochs": 5, "batch_size": 16, "learning_rate": 0.001,
                "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "seed": 7,
                "validation_split": 0.25, "early_stopping_patience": 3,
                "early_stopping_metric": "val_r2",
                "lr_schedule": {"type": "step", "step_size": 2, "gamma": 0.5},
                "grad_clip": 1.0, "checkpoint_every_epochs": 2},
            "preprocessing": {"standardize": false, "missing": "impute"},
            "priority": -5, "max_attempts": 1, "device": "cpu"
        });
        let spec = JobSpec::parse(&body).unwrap();
        assert_eq!(
            spec.model,
            ModelSpec::Mlp { hidden: vec![64, 32], dropout: 0.1, activation: Activation::Tanh }
        );
        let hp = &spec.hyperparameters;
        assert_eq!(hp.optimizer, Optimizer::Sgd);
        assert_eq!(hp.momentum, 0.9);
        assert_eq!(hp.early_stopping_patience, Some(3));
        assert_eq!(hp.early_stopping_metric, Metric::ValR2);
        assert_eq!(hp.lr_schedule, LrSchedule::Step { step_size: 2, gamma: 0.5 });
        assert_eq!(hp.grad_clip, Some(1.0));
        assert_eq!(spec.preprocessing.missing, MissingValues::Impute);
        assert_eq!(spec.device, DeviceRequirement::Cpu);

        let canonical = spec.to_json();
        assert_eq!(JobSpec::parse(&canonical).unwrap(), spec);
        assert_eq!(canonical["model"]["type"], "mlp");
        assert_eq!(canonical["hyperparameters"]["lr_schedule"]["type"], "step");
    }

    #[test]
    fn canonical_json_spells_out_defaults() {
        let canonical = JobSpec::parse(&minimal()).unwrap().to_json();
        assert_eq!(canonical["hyperparameters"]["epochs"], 30);
        assert_eq!(canonical["hyperparameters"]["optimizer"], "adam");
        assert_eq!(canonical["hyperparameters"]["lr_schedule"], json!({"type": "constant"}));
        assert_eq!(canonical["hyperparameters"]["early_stopping_patience"], Value::Null);
        assert_eq!(canonical["device"], "any");
        assert_eq!(canonical["model"], json!({"type": "linear"}));
        let cnn = with(minimal(), "model", json!({"type": "cnn"}));
        assert_eq!(
            JobSpec::parse(&cnn).unwrap().to_json()["model"],
            json!({"type": "cnn", "channels": [16, 32], "kernel_size": 3, "dropout": 0.0})
        );
        let ts = with(minimal(), "model", json!({"type": "torchscript", "dataset_id": DATASET}));
        assert_eq!(
            JobSpec::parse(&ts).unwrap().to_json()["model"],
            json!({"type": "torchscript", "dataset_id": DATASET})
        );
    }

    #[test]
    fn every_offending_field_is_reported_at_once() {
        check_errors(
            json!({"task": "clustering", "model": {"type": "xgb"}, "learning_rte": 1,
                   "hyperparameters": {"learning_rate": 0, "epochs": 0, "batch_size": "32",
                                       "optimizer": "lbfgs", "validation_split": 1.0},
                   "device": "tpu", "max_attempts": 0}),
            &[
                ("dataset_id", "required"),
                ("task", "`clustering` is not one of classification, regression"),
                (
                    "model.type",
                    "unknown model type `xgb`; expected one of linear, mlp, cnn, torchscript",
                ),
                (
                    "learning_rte",
                    "unknown field; expected one of dataset_id, task, target, features, model, \
                     hyperparameters, preprocessing, priority, max_attempts, device",
                ),
                ("hyperparameters.learning_rate", "must be > 0"),
                ("hyperparameters.epochs", "must be a whole number from 1 to 100000"),
                ("hyperparameters.batch_size", "must be a whole number"),
                ("hyperparameters.optimizer", "`lbfgs` is not one of adam, adamw, sgd"),
                ("hyperparameters.validation_split", "must be > 0 and < 1"),
                ("device", "`tpu` is not one of any, cuda, cpu"),
                ("max_attempts", "must be a whole number from 1 to 100"),
            ],
        );
    }

    #[test]
    fn model_fields_are_checked_per_type() {
        let body = |model: Value| with(minimal(), "model", model);
        check_errors(
            body(json!({"type": "mlp", "hidden": [64, 0], "dropout": 1.0, "activation": "swish",
                        "channels": [3]})),
            &[
                ("model.hidden[1]", "must be a whole number from 1 to 65536"),
                ("model.dropout", "must be >= 0 and < 1"),
                ("model.activation", "`swish` is not one of relu, tanh, gelu, sigmoid"),
                (
                    "model.channels",
                    "unknown field; expected one of type, hidden, dropout, activation",
                ),
            ],
        );
        check_errors(
            body(json!({"type": "mlp", "hidden": [65536, 65536]})),
            &[(
                "model.hidden",
                "the hidden layers hold 4294967296 weights between them (16.0 GiB as 32-bit \
                 floats, before gradients and optimizer state); at most 1073741824",
            )],
        );
        assert!(
            JobSpec::parse(&body(json!({"type": "mlp", "hidden": [65536, 16384]}))).is_ok(),
            "exactly at the ceiling"
        );
        check_errors(
            body(json!({"type": "cnn", "channels": [4096, 4096], "kernel_size": 15})),
            &[(
                "model.channels",
                "the convolutions hold 3774873600 weights between them (14.1 GiB as 32-bit \
                 floats, before gradients and optimizer state); at most 1073741824",
            )],
        );
        check_errors(
            body(json!({"type": "mlp", "hidden": []})),
            &[("model.hidden", "must list 1 to 32 sizes")],
        );
        check_errors(
            body(json!({"type": "cnn", "kernel_size": 4})),
            &[("model.kernel_size", "must be odd (the convolution is same-padded)")],
        );
        check_errors(body(json!({"type": "torchscript"})), &[("model.dataset_id", "required")]);
        check_errors(
            body(json!({"type": "torchscript", "dataset_id": "nope"})),
            &[("model.dataset_id", "must be a UUID string")],
        );
        check_errors(body(json!("mlp")), &[("model", "must be an object with a `type`")]);
        check_errors(
            body(json!({})),
            &[("model.type", "required; one of linear, mlp, cnn, torchscript")],
        );
        check_errors(
            body(json!({"type": "linear", "hidden": [3]})),
            &[("model.hidden", "unknown field; expected one of type")],
        );
    }

    #[test]
    fn hyperparameters_that_do_not_fit_the_optimizer_or_task_are_refused() {
        let hp = |h: Value| with(minimal(), "hyperparameters", h);
        check_errors(
            hp(json!({"optimizer": "adam", "momentum": 0.9})),
            &[("hyperparameters.momentum", "applies only to optimizer `sgd`")],
        );
        check_errors(
            hp(json!({"optimizer": "sgd", "betas": [0.9, 0.99]})),
            &[("hyperparameters.betas", "applies only to optimizers `adam` and `adamw`")],
        );
        check_errors(
            hp(json!({"betas": [0.9, 1.5]})),
            &[("hyperparameters.betas[1]", "must be a number >= 0 and < 1")],
        );
        check_errors(
            hp(json!({"early_stopping_metric": "val_rmse"})),
            &[(
                "hyperparameters.early_stopping_metric",
                "`val_rmse` is not computed for classification tasks",
            )],
        );
        check_errors(
            hp(json!({"early_stopping_patience": 0, "grad_clip": -1})),
            &[
                (
                    "hyperparameters.early_stopping_patience",
                    "must be a whole number from 1 to 100000",
                ),
                ("hyperparameters.grad_clip", "must be > 0"),
            ],
        );
        check_errors(
            hp(json!({"seed": -1, "weight_decay": -0.1})),
            &[
                ("hyperparameters.seed", "must be a whole number >= 0"),
                ("hyperparameters.weight_decay", "must be >= 0"),
            ],
        );
    }

    #[test]
    fn schedules_accept_a_name_or_an_object() {
        let hp = |s: Value| with(minimal(), "hyperparameters", json!({"lr_schedule": s}));
        let parse = |s: Value| JobSpec::parse(&hp(s)).unwrap().hyperparameters.lr_schedule;
        assert_eq!(parse(json!("cosine")), LrSchedule::Cosine { min_lr: 0.0 });
        assert_eq!(parse(json!("step")), LrSchedule::Step { step_size: 10, gamma: 0.1 });
        assert_eq!(
            parse(json!({"type": "cosine", "min_lr": 0.001})),
            LrSchedule::Cosine { min_lr: 0.001 }
        );
        check_errors(
            hp(json!("linear")),
            &[(
                "hyperparameters.lr_schedule",
                "unknown schedule `linear`; expected one of constant, step, cosine",
            )],
        );
        check_errors(
            hp(json!({"type": "cosine", "min_lr": 0.5})),
            &[("hyperparameters.lr_schedule.min_lr", "must be < the learning rate (0.01)")],
        );
        check_errors(
            hp(json!({"type": "step", "gamma": 2, "period": 3})),
            &[
                ("hyperparameters.lr_schedule.gamma", "must be > 0 and <= 1"),
                (
                    "hyperparameters.lr_schedule.period",
                    "unknown field; expected one of type, step_size, gamma",
                ),
            ],
        );
    }

    #[test]
    fn schedules_compute_the_learning_rate_per_epoch() {
        let step = LrSchedule::Step { step_size: 2, gamma: 0.5 };
        let lrs: Vec<f64> = (0..5).map(|e| step.learning_rate(1.0, e, 5)).collect();
        assert_eq!(lrs, [1.0, 1.0, 0.5, 0.5, 0.25]);
        let cosine = LrSchedule::Cosine { min_lr: 0.0 };
        assert_eq!(cosine.learning_rate(1.0, 0, 4), 1.0);
        assert!((cosine.learning_rate(1.0, 2, 4) - 0.5).abs() < 1e-12);
        assert!(cosine.learning_rate(1.0, 3, 4) < 0.2);
        assert_eq!(LrSchedule::Constant.learning_rate(0.3, 9, 10), 0.3);
    }

    #[test]
    fn features_must_be_distinct_columns_other_than_the_target() {
        check_errors(
            with(minimal(), "features", json!(["a", "a", "species", 3])),
            &[
                ("features[1]", "column `a` is listed twice"),
                ("features[2]", "`species` is the target; it cannot also be a feature"),
                ("features[3]", "must be a non-empty string"),
            ],
        );
        check_errors(
            with(minimal(), "features", json!([])),
            &[("features", "must name at least one column (omit it to use every column)")],
        );
    }

    #[test]
    fn null_means_default_and_non_objects_are_refused() {
        let body = with(with(minimal(), "hyperparameters", Value::Null), "device", Value::Null);
        let spec = JobSpec::parse(&body).unwrap();
        assert_eq!(spec.hyperparameters, Hyperparameters::default());
        check_errors(json!([1, 2]), &[("$", "must be a JSON object")]);
        check_errors(
            with(minimal(), "preprocessing", json!({"standardize": "yes"})),
            &[("preprocessing.standardize", "must be true or false")],
        );
    }

    #[test]
    fn validation_errors_serialise_as_a_flat_map() {
        let errors = JobSpec::parse(&json!({"task": "regression"})).unwrap_err();
        assert_eq!(
            serde_json::to_value(&errors).unwrap(),
            json!({"dataset_id": "required", "model": "required"})
        );
        assert_eq!(errors.to_string(), "invalid job spec: dataset_id: required; model: required");
    }
}

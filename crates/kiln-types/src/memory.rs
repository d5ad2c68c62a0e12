//! How much memory training a model takes, estimated from its spec and the shape of its
//! data before anything is allocated.
//!
//! The API checks the estimate at submission against its limit (a 422 naming the field at
//! fault), and kiln-ml quotes it when a worker cannot allocate a model after all. It counts
//! what training holds in libtorch at its peak, in 32-bit floats:
//!
//! - the weights (one value per parameter) and their gradients (as many again);
//! - the optimiser's state: Adam and AdamW keep two moments per parameter, SGD with momentum
//!   one, plain SGD none;
//! - early stopping's copy of the best weights, when `early_stopping_patience` is set;
//! - the activations: a training batch (`batch_size` rows, at most the training split)
//!   keeps every layer's output for the backward pass, and about as much again in
//!   gradients; an evaluation pass (no gradients, [`EVAL_ROWS_PER_PASS`] rows at most)
//!   needs a layer's input and output at once. The larger of the two counts.
//!
//! Not counted: the dataset's own tensors (they grow with the data, not the model) and the
//! serialised copy a checkpoint or bundle briefly holds while it is encoded. A user's
//! TorchScript module has no estimate: its size is not known before it is loaded.

use serde::Serialize;

use crate::spec::{JobSpec, ModelSpec, Optimizer};

/// Rows per evaluation forward pass (kiln-ml evaluates the validation split in chunks of
/// this many rows).
pub const EVAL_ROWS_PER_PASS: u64 = 8192;

/// Bytes per value: parameters, gradients, moments and activations are `f32`.
const VALUE_BYTES: u64 = 4;

/// The shape of the data a model is trained on, as far as it is known before training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataShape {
    /// Rows of the training split (a batch holds at most this many).
    pub train_rows: u64,
    /// Rows of the validation split.
    pub val_rows: u64,
    /// One sample: `[features]` for a table or a flat array, `[C, H, W]` for images.
    pub sample_shape: Vec<u64>,
    /// Model outputs: the number of classes, or 1 for regression.
    pub outputs: u64,
}

impl DataShape {
    /// A dataset of `rows` rows split by `validation_split` (about as kiln-ml splits it).
    pub fn split(rows: u64, validation_split: f64, sample_shape: Vec<u64>, outputs: u64) -> Self {
        let val_rows = ((rows as f64 * validation_split).round() as u64).min(rows);
        DataShape { train_rows: rows - val_rows, val_rows, sample_shape, outputs }
    }

    fn flat_inputs(&self) -> u64 {
        self.sample_shape.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// What training a model needs in memory, in bytes (see the module docs for what counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Trainable parameters.
    pub parameters: u64,
    pub weight_bytes: u64,
    pub gradient_bytes: u64,
    pub optimizer_bytes: u64,
    /// Early stopping's copy of the best weights (0 without early stopping).
    pub best_weights_bytes: u64,
    /// The larger of a training batch's and an evaluation pass's activations.
    pub activation_bytes: u64,
    /// A training batch's activations and their gradients.
    pub train_activation_bytes: u64,
    /// An evaluation pass's activations.
    pub eval_activation_bytes: u64,
    /// Everything above, at once.
    pub total_bytes: u64,
}

impl MemoryEstimate {
    /// The spec field to change to make the model smaller: `hyperparameters.batch_size` when
    /// a training batch's activations are most of it, else the model's own size field.
    pub fn field(&self, spec: &JobSpec) -> &'static str {
        let parameter_bytes = self
            .weight_bytes
            .saturating_add(self.gradient_bytes)
            .saturating_add(self.optimizer_bytes)
            .saturating_add(self.best_weights_bytes);
        if self.train_activation_bytes > parameter_bytes
            && self.train_activation_bytes >= self.eval_activation_bytes
        {
            return "hyperparameters.batch_size";
        }
        match spec.model {
            ModelSpec::Mlp { .. } => "model.hidden",
            ModelSpec::Cnn { .. } => "model.channels",
            ModelSpec::Linear | ModelSpec::TorchScript { .. } => "model",
        }
    }

    /// One line: the total and what it is made of.
    pub fn describe(&self, batch_size: u32) -> String {
        format!(
            "about {} ({} parameters: weights {}, gradients {}, optimizer state {}{}; \
             activations {} at batch_size {batch_size})",
            format_bytes(self.total_bytes),
            self.parameters,
            format_bytes(self.weight_bytes),
            format_bytes(self.gradient_bytes),
            format_bytes(self.optimizer_bytes),
            if self.best_weights_bytes > 0 {
                format!(", best weights {}", format_bytes(self.best_weights_bytes))
            } else {
                String::new()
            },
            format_bytes(self.activation_bytes),
        )
    }
}

/// A byte count for people: `512 B`, `3.0 KiB`, `17.2 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Per-sample value counts of one architecture.
struct Counts {
    parameters: u64,
    /// Values one training sample keeps for the backward pass.
    saved: u64,
    /// The largest layer input plus output of one sample (an evaluation pass's peak).
    eval_peak: u64,
}

/// `a * b + c`, saturating.
fn mul_add(a: u64, b: u64, c: u64) -> u64 {
    a.saturating_mul(b).saturating_add(c)
}

fn linear_counts(inputs: u64, outputs: u64) -> Counts {
    Counts {
        parameters: mul_add(inputs, outputs, outputs),
        saved: inputs.saturating_add(outputs.saturating_mul(2)),
        eval_peak: inputs.saturating_add(outputs),
    }
}

fn mlp_counts(inputs: u64, outputs: u64, hidden: &[u32], dropout: bool) -> Counts {
    let (mut parameters, mut saved, mut eval_peak) = (0u64, inputs, 0u64);
    let mut width = inputs;
    for &h in hidden {
        let h = u64::from(h);
        parameters = parameters.saturating_add(mul_add(width, h, h));
        // The linear layer's output and the activation's (and dropout's mask).
        saved = saved.saturating_add(h.saturating_mul(2 + u64::from(dropout)));
        eval_peak = eval_peak.max(width.saturating_add(h));
        width = h;
    }
    parameters = parameters.saturating_add(mul_add(width, outputs, outputs));
    saved = saved.saturating_add(outputs.saturating_mul(2));
    eval_peak = eval_peak.max(width.saturating_add(outputs));
    Counts { parameters, saved, eval_peak }
}

fn cnn_counts(
    shape: &[u64],
    outputs: u64,
    channels: &[u32],
    kernel_size: u32,
    dropout: bool,
) -> Counts {
    let (mut c, mut h, mut w) = (shape[0], shape[1], shape[2]);
    let k2 = u64::from(kernel_size).pow(2);
    let mut parameters = 0u64;
    let mut saved = c.saturating_mul(h).saturating_mul(w);
    let mut eval_peak = 0u64;
    for &out in channels {
        let out = u64::from(out);
        parameters = parameters.saturating_add(mul_add(c.saturating_mul(k2), out, out));
        let input = c.saturating_mul(h).saturating_mul(w);
        let map = out.saturating_mul(h).saturating_mul(w);
        // The convolution's output and the ReLU's.
        saved = saved.saturating_add(map.saturating_mul(2));
        eval_peak = eval_peak.max(input.saturating_add(map));
        if h >= 2 && w >= 2 {
            h /= 2;
            w /= 2;
            // The pooled map and its int64 indices (two values' worth).
            saved = saved.saturating_add(out.saturating_mul(h).saturating_mul(w).saturating_mul(3));
        }
        c = out;
    }
    let features = c.saturating_mul(h).saturating_mul(w);
    parameters = parameters.saturating_add(mul_add(features, outputs, outputs));
    saved = saved
        .saturating_add(if dropout { features } else { 0 })
        .saturating_add(outputs.saturating_mul(2));
    eval_peak = eval_peak.max(features.saturating_add(outputs));
    Counts { parameters, saved, eval_peak }
}

impl JobSpec {
    /// The memory training this spec's model on data of `shape` needs (see the module
    /// docs); `None` for a TorchScript module, or a CNN given data that are not images.
    pub fn memory_estimate(&self, shape: &DataShape) -> Option<MemoryEstimate> {
        let outputs = shape.outputs.max(1);
        let counts = match &self.model {
            ModelSpec::Linear => linear_counts(shape.flat_inputs(), outputs),
            ModelSpec::Mlp { hidden, dropout, .. } => {
                mlp_counts(shape.flat_inputs(), outputs, hidden, *dropout > 0.0)
            }
            ModelSpec::Cnn { channels, kernel_size, dropout } => {
                if shape.sample_shape.len() != 3 {
                    return None;
                }
                cnn_counts(&shape.sample_shape, outputs, channels, *kernel_size, *dropout > 0.0)
            }
            ModelSpec::TorchScript { .. } => return None,
        };
        let hp = &self.hyperparameters;
        let bytes = |values: u64| values.saturating_mul(VALUE_BYTES);
        let moments = match hp.optimizer {
            Optimizer::Adam | Optimizer::Adamw => 2,
            Optimizer::Sgd if hp.momentum > 0.0 => 1,
            Optimizer::Sgd => 0,
        };
        let weight_bytes = bytes(counts.parameters);
        let optimizer_bytes = weight_bytes.saturating_mul(moments);
        let best_weights_bytes =
            if hp.early_stopping_patience.is_some() { weight_bytes } else { 0 };
        let batch = u64::from(hp.batch_size).min(shape.train_rows.max(1));
        // Saved activations, and about as much again in their gradients.
        let train_activation_bytes = bytes(counts.saved).saturating_mul(batch).saturating_mul(2);
        let eval_rows = shape.val_rows.clamp(1, EVAL_ROWS_PER_PASS);
        let eval_activation_bytes = bytes(counts.eval_peak).saturating_mul(eval_rows);
        let activation_bytes = train_activation_bytes.max(eval_activation_bytes);
        let total_bytes = weight_bytes
            .saturating_mul(2)
            .saturating_add(optimizer_bytes)
            .saturating_add(best_weights_bytes)
            .saturating_add(activation_bytes);
        Some(MemoryEstimate {
            parameters: counts.parameters,
            weight_bytes,
            gradient_bytes: weight_bytes,
            optimizer_bytes,
            best_weights_bytes,
            activation_bytes,
            train_activation_bytes,
            eval_activation_bytes,
            total_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GIB: u64 = 1 << 30;

    fn spec(model: serde_json::Value, hyperparameters: serde_json::Value) -> JobSpec {
        JobSpec::parse(&json!({
            "dataset_id": "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d", "task": "classification",
            "target": "y", "model": model, "hyperparameters": hyperparameters,
        }))
        .expect("a valid spec")
    }

    fn iris() -> DataShape {
        DataShape::split(150, 0.2, vec![4], 3)
    }

    #[test]
    fn a_linear_model_counts_weights_biases_and_adam_moments() {
        let s = spec(json!({"type": "linear"}), json!({"batch_size": 16}));
        let e = s.memory_estimate(&iris()).unwrap();
        assert_eq!(e.parameters, 4 * 3 + 3);
        assert_eq!(e.weight_bytes, 15 * 4);
        assert_eq!(e.gradient_bytes, 15 * 4);
        assert_eq!(e.optimizer_bytes, 2 * 15 * 4, "Adam keeps two moments");
        assert_eq!(e.best_weights_bytes, 0);
        // A batch keeps the input and two output-sized tensors, doubled for gradients.
        assert_eq!(e.train_activation_bytes, 16 * (4 + 2 * 3) * 4 * 2);
        // An evaluation pass over the 30 validation rows holds input and output.
        assert_eq!(e.eval_activation_bytes, 30 * (4 + 3) * 4);
        assert_eq!(e.total_bytes, 4 * 15 * 4 + e.train_activation_bytes);
    }

    #[test]
    fn the_optimizer_and_early_stopping_change_the_state_kept_per_parameter() {
        let model = json!({"type": "mlp", "hidden": [64, 32]});
        let parameters = (4 * 64 + 64) + (64 * 32 + 32) + (32 * 3 + 3);
        let sgd = spec(model.clone(), json!({"optimizer": "sgd"})).memory_estimate(&iris());
        let momentum = spec(model.clone(), json!({"optimizer": "sgd", "momentum": 0.9}))
            .memory_estimate(&iris());
        let adamw = spec(model.clone(), json!({"optimizer": "adamw"})).memory_estimate(&iris());
        let early = spec(model, json!({"early_stopping_patience": 3})).memory_estimate(&iris());
        assert_eq!(sgd.unwrap().parameters, parameters);
        assert_eq!(sgd.unwrap().optimizer_bytes, 0);
        assert_eq!(momentum.unwrap().optimizer_bytes, parameters * 4);
        assert_eq!(adamw.unwrap().optimizer_bytes, parameters * 8);
        assert_eq!(early.unwrap().best_weights_bytes, parameters * 4);
        assert_eq!(
            early.unwrap().total_bytes - adamw.unwrap().total_bytes,
            parameters * 4,
            "the best weights' copy is the only difference"
        );
    }

    #[test]
    fn a_wide_mlp_is_dominated_by_its_weight_matrices() {
        // Two hidden layers of 16384 on Iris with Adam: one 1 GiB weight matrix, four times.
        let s = spec(json!({"type": "mlp", "hidden": [16384, 16384]}), json!({}));
        let e = s.memory_estimate(&iris()).unwrap();
        assert_eq!(e.parameters, (4 * 16384 + 16384) + (16384 * 16384 + 16384) + (16384 * 3 + 3));
        assert!(e.total_bytes > 4 * GIB && e.total_bytes < 5 * GIB, "{e:?}");
        assert_eq!(e.field(&s), "model.hidden");
        let text = e.describe(32);
        assert!(text.starts_with("about 4.0 GiB ("), "{text}");
        assert!(text.contains("optimizer state 2.0 GiB"), "{text}");
    }

    #[test]
    fn batches_count_only_up_to_the_training_split_and_can_be_the_field_at_fault() {
        let model = json!({"type": "mlp", "hidden": [4096]});
        let huge_batch = spec(model.clone(), json!({"batch_size": 1 << 20}));
        let small = huge_batch.memory_estimate(&iris()).unwrap();
        let capped = spec(model.clone(), json!({"batch_size": 120})).memory_estimate(&iris());
        assert_eq!(small, capped.unwrap(), "Iris has 120 training rows whatever the batch_size");

        let many_rows = DataShape::split(10_000_000, 0.2, vec![4], 3);
        let big = huge_batch.memory_estimate(&many_rows).unwrap();
        assert_eq!(big.train_activation_bytes, (4 + 4096 * 2 + 6) * 4 * (1 << 20) * 2);
        assert_eq!(big.field(&huge_batch), "hyperparameters.batch_size");
    }

    #[test]
    fn a_cnn_follows_the_convolutions_and_pooling() {
        let s = spec(
            json!({"type": "cnn", "channels": [8, 16], "kernel_size": 3}),
            json!({"optimizer": "sgd", "batch_size": 2}),
        );
        let shape = DataShape::split(100, 0.2, vec![1, 8, 8], 10);
        let e = s.memory_estimate(&shape).unwrap();
        // conv0 1→8 (3×3), conv1 8→16, then 16×2×2 features into 10 outputs.
        let parameters = (9 + 1) * 8 + (8 * 9 * 16 + 16) + (16 * 2 * 2 * 10 + 10);
        assert_eq!(e.parameters, parameters);
        let saved = 64 + (8 * 64 * 2 + 8 * 16 * 3) + (16 * 16 * 2 + 16 * 4 * 3) + 10 * 2;
        assert_eq!(e.train_activation_bytes, saved * 4 * 2 * 2);
        assert_eq!(e.field(&s), "model.channels");
        assert_eq!(s.memory_estimate(&iris()), None, "a CNN on a table has no estimate");
    }

    #[test]
    fn torchscript_has_no_estimate_and_nothing_overflows() {
        let s = spec(
            json!({"type": "torchscript", "dataset_id": "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6e"}),
            json!({}),
        );
        assert_eq!(s.memory_estimate(&iris()), None);
        let wide = DataShape::split(u64::MAX / 2, 0.5, vec![u64::MAX, 3], u64::MAX);
        let e = spec(json!({"type": "linear"}), json!({})).memory_estimate(&wide).unwrap();
        assert_eq!(e.total_bytes, u64::MAX);
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(4096 << 20), "4.0 GiB");
        assert_eq!(format_bytes(17 * GIB + GIB / 5), "17.2 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }
}

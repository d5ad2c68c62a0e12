//! Model bundles: one self-describing artifact per trained model, and inference from it.
//!
//! A bundle is a zip archive of `model.json` (architecture, fitted preprocessing, input
//! schema, labels, metrics, lineage), `model.safetensors` (the weights) and, for TorchScript
//! models, `model.pt` (the user's scripted module, whose weights the safetensors file
//! overrides). [`LoadedModel::predict`] takes raw JSON rows and applies the bundle's own
//! preprocessing, so serving applies exactly what training fitted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiln_types::spec::Task;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::{Kind, Tensor};
use uuid::Uuid;

use crate::archive;
use crate::device::{ComputeDevice, DeviceChoice};
use crate::drift::TrainingStats;
use crate::error::{MlError, Result};
use crate::metrics::EpochMetrics;
use crate::model::{Architecture, Network};
use crate::prepare::{Preprocessor, TargetEncoding};
use crate::tensors;

pub(crate) const FORMAT: &str = "kiln-model/1";

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub dataset_id: Uuid,
    pub dataset_sha256: String,
    pub job_id: Option<Uuid>,
    /// The canonical job spec.
    pub job_spec: Value,
    pub kiln_version: String,
    pub git_commit: String,
    /// The device training ran on (`cpu`, `cuda:0`).
    pub device: String,
    pub trained_at: DateTime<Utc>,
}

/// A model's final metrics, measured on the validation split with the weights it ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub epochs_run: u32,
    /// The epoch whose weights the model has (the best one under early stopping).
    pub best_epoch: u32,
    pub stopped_early: bool,
    pub validation: EpochMetrics,
    /// `confusion_matrix[true][predicted]`, in label order (classification).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: String,
    pub task: Task,
    pub architecture: Architecture,
    pub preprocessing: Preprocessor,
    pub input_schema: Value,
    /// Class labels in output order (classification).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub labels: Option<Vec<String>>,
    pub metrics: FinalMetrics,
    pub lineage: Lineage,
    /// Number of scalar weights.
    pub parameters: u64,
    /// The training split's distribution of each named input, for drift monitoring (absent
    /// for tensor inputs and for bundles written before Kiln recorded it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub training_stats: Option<TrainingStats>,
}

/// A trained model as bytes and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBundle {
    pub meta: ModelMeta,
    weights: Vec<u8>,
    script: Option<Vec<u8>>,
}

impl ModelBundle {
    pub(crate) fn new(meta: ModelMeta, network: &Network, script: Option<Vec<u8>>) -> Result<Self> {
        Ok(ModelBundle {
            meta,
            weights: tensors::to_safetensors(&network.named_parameters())?,
            script,
        })
    }

    /// The weights as a safetensors file (what `model.safetensors` holds).
    pub fn weights_safetensors(&self) -> &[u8] {
        &self.weights
    }

    /// The zip archive the artifact store keeps.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta = serde_json::to_vec_pretty(&self.meta)
            .map_err(|e| MlError::corrupt("model bundle", e))?;
        let mut files: Vec<(&str, &[u8])> =
            vec![("model.json", &meta), ("model.safetensors", &self.weights)];
        if let Some(script) = &self.script {
            files.push(("model.pt", script));
        }
        archive::write(&files)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ModelBundle> {
        const WHAT: &str = "model bundle";
        let mut files = archive::read(bytes, WHAT)?;
        let meta: ModelMeta =
            serde_json::from_slice(&archive::take(&mut files, "model.json", WHAT)?)
                .map_err(|e| MlError::corrupt(WHAT, e))?;
        if meta.format != FORMAT {
            return Err(MlError::corrupt(WHAT, format!("unknown format `{}`", meta.format)));
        }
        let weights = archive::take(&mut files, "model.safetensors", WHAT)?;
        let script = files.remove("model.pt");
        if matches!(meta.architecture, Architecture::TorchScript { .. }) && script.is_none() {
            return Err(MlError::corrupt(WHAT, "a torchscript model without `model.pt`"));
        }
        Ok(ModelBundle { meta, weights, script })
    }

    /// Builds the network on a device and loads the weights, ready to predict.
    pub fn load(&self, device: DeviceChoice) -> Result<LoadedModel> {
        let device = device.resolve()?;
        let mut network = Network::build(
            &self.meta.architecture,
            self.meta.task,
            device.0,
            self.script.as_deref(),
        )?;
        let weights = tensors::from_safetensors(&self.weights, "model bundle")?;
        network.load_weights(&weights).map_err(|m| MlError::corrupt("model bundle", m))?;
        Ok(LoadedModel::new(network, self.meta.clone(), device))
    }
}

/// One prediction, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prediction {
    Class { label: String, probabilities: BTreeMap<String, f64> },
    Value { value: f64 },
}

/// A model on a device, ready for inference. `Send` but not `Sync`: serving keeps one per
/// inference thread (or behind a mutex) and batches requests into [`LoadedModel::predict_each`].
#[derive(Debug)]
pub struct LoadedModel {
    network: Network,
    meta: ModelMeta,
    device: ComputeDevice,
}

/// Rows per forward pass, so that a huge request cannot allocate without bound.
const CHUNK: usize = 4096;

impl LoadedModel {
    pub(crate) fn new(mut network: Network, meta: ModelMeta, device: ComputeDevice) -> Self {
        network.set_training(false);
        LoadedModel { network, meta, device }
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn device(&self) -> ComputeDevice {
        self.device
    }

    /// Predicts every row in one batch; the first bad row fails the call with an error that
    /// names its index and field.
    pub fn predict(&self, rows: &[Map<String, Value>]) -> Result<Vec<Prediction>> {
        let width = self.meta.preprocessing.input.width();
        let mut features = vec![0f32; rows.len() * width];
        for (i, row) in rows.iter().enumerate() {
            self.encode(row, i, &mut features[i * width..(i + 1) * width])?;
        }
        self.forward(&features, rows.len())
    }

    /// Predicts many independent rows in one forward pass, isolating bad rows: each gets its
    /// own result. This is serving's batched path (one request's bad input must not fail the
    /// others batched with it).
    pub fn predict_each(&self, rows: &[Map<String, Value>]) -> Vec<Result<Prediction>> {
        let width = self.meta.preprocessing.input.width();
        let mut features = Vec::with_capacity(rows.len() * width);
        let mut results: Vec<Option<Result<Prediction>>> = Vec::with_capacity(rows.len());
        let mut good = Vec::with_capacity(rows.len());
        let mut row_buf = vec![0f32; width];
        for (i, row) in rows.iter().enumerate() {
            match self.encode(row, i, &mut row_buf) {
                Ok(()) => {
                    features.extend_from_slice(&row_buf);
                    good.push(i);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        match self.forward(&features, good.len()) {
            Ok(predictions) => {
                for (i, p) in good.into_iter().zip(predictions) {
                    results[i] = Some(Ok(p));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for i in good {
                    results[i] = Some(Err(MlError::Inference(message.clone())));
                }
            }
        }
        results.into_iter().map(|r| r.expect("every row has a result")).collect()
    }

    /// Runs rows already encoded by [`Preprocessor::encode_rows`] (row-major, `rows ×
    /// width`) through the network: serving validates and encodes on its request threads and
    /// batches only the forward pass.
    ///
    /// [`Preprocessor::encode_rows`]: crate::Preprocessor::encode_rows
    pub fn predict_features(&self, features: &[f32], rows: usize) -> Result<Vec<Prediction>> {
        let width = self.meta.preprocessing.input.width();
        if features.len() != rows * width {
            return Err(MlError::Inference(format!(
                "{} features for {rows} rows of width {width}",
                features.len()
            )));
        }
        self.forward(features, rows)
    }

    /// Runs forward passes of 1 and `batch` rows of zeros, so that the first real request
    /// does not pay for libtorch's lazy initialisation.
    pub fn warm_up(&self, batch: usize) -> Result<()> {
        let width = self.meta.preprocessing.input.width();
        for rows in [1, batch.max(1)] {
            self.forward(&vec![0f32; rows * width], rows)?;
        }
        Ok(())
    }

    fn encode(&self, row: &Map<String, Value>, index: usize, out: &mut [f32]) -> Result<()> {
        let p = &self.meta.preprocessing;
        p.input.encode_json(row, index, p.impute_missing, out)
    }

    /// Runs encoded rows through the network and decodes the outputs.
    pub(crate) fn forward(&self, features: &[f32], rows: usize) -> Result<Vec<Prediction>> {
        let mut out = Vec::with_capacity(rows);
        if rows == 0 {
            return Ok(out);
        }
        let width = features.len() / rows;
        let sample = self.meta.preprocessing.input.sample_shape();
        let _guard = tch::no_grad_guard();
        for start in (0..rows).step_by(CHUNK) {
            let n = CHUNK.min(rows - start);
            let mut shape = vec![n as i64];
            shape.extend_from_slice(&sample);
            let xs = Tensor::f_from_slice(&features[start * width..(start + n) * width])?
                .f_reshape(&shape)?
                .f_to_device(self.device.0)?;
            let ys = self.network.forward(&xs)?;
            match &self.meta.preprocessing.target {
                TargetEncoding::Classes { labels, .. } => {
                    let probs = ys.f_softmax(-1, Kind::Float)?.f_to_device(tch::Device::Cpu)?;
                    let probs = Vec::<f32>::try_from(probs.f_flatten(0, -1)?)?;
                    for row in probs.chunks_exact(labels.len()) {
                        let best = row
                            .iter()
                            .enumerate()
                            .fold(0, |best, (i, p)| if *p > row[best] { i } else { best });
                        out.push(Prediction::Class {
                            label: labels[best].clone(),
                            probabilities: labels
                                .iter()
                                .cloned()
                                .zip(row.iter().map(|&p| f64::from(p)))
                                .collect(),
                        });
                    }
                }
                TargetEncoding::Value { mean, std, .. } => {
                    let values =
                        Vec::<f32>::try_from(ys.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
                    out.extend(
                        values
                            .iter()
                            .map(|&v| Prediction::Value { value: f64::from(v) * std + mean }),
                    );
                }
            }
        }
        Ok(out)
    }
}

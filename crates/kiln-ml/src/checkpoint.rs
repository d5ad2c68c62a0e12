//! Checkpoints: everything needed to continue a job exactly where it stopped.
//!
//! A checkpoint holds the weights, the optimiser's moments and step count, the position in
//! training (epoch and step within it), the partial loss of that epoch, the metric history
//! and early-stopping state (with the best weights so far), plus the architecture, fitted
//! preprocessing and dataset hash it belongs to. Random state needs no snapshot: every
//! shuffle and every dropout mask is drawn from a generator seeded by (seed, epoch, step),
//! so resuming at a position replays the same numbers an uninterrupted run would draw.
//! On the CPU, a resumed run ends with bit-identical weights (tested).

use serde::{Deserialize, Serialize};

use crate::archive;
use crate::error::{MlError, Result};
use crate::metrics::EpochMetrics;
use crate::model::Architecture;
use crate::prepare::Preprocessor;

pub(crate) const FORMAT: &str = "kiln-checkpoint/1";

/// Early-stopping bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EarlyStopping {
    pub(crate) best_value: Option<f64>,
    pub(crate) best_epoch: u32,
    pub(crate) epochs_without_improvement: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointMeta {
    pub(crate) format: String,
    /// Epochs fully completed.
    pub(crate) epoch: u32,
    /// Batches already taken in epoch `epoch` (0 at an epoch boundary).
    pub(crate) step: u64,
    pub(crate) optimizer_steps: u64,
    pub(crate) seed: u64,
    pub(crate) partial_loss_sum: f64,
    pub(crate) partial_count: u64,
    pub(crate) history: Vec<EpochMetrics>,
    pub(crate) early_stopping: EarlyStopping,
    pub(crate) architecture: Architecture,
    pub(crate) preprocessor: Preprocessor,
    pub(crate) dataset_sha256: String,
}

/// A resumable training state, already encoded (cheap to clone and to send).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub(crate) meta: CheckpointMeta,
    pub(crate) weights: Vec<u8>,
    pub(crate) optimizer: Vec<u8>,
    pub(crate) best: Option<Vec<u8>>,
}

impl Checkpoint {
    /// Epochs fully completed when it was taken.
    pub fn epoch(&self) -> u32 {
        self.meta.epoch
    }

    /// Batches already taken in the epoch in progress (0 at an epoch boundary).
    pub fn step(&self) -> u64 {
        self.meta.step
    }

    /// A zip archive: `checkpoint.json`, `weights.safetensors`, `optimizer.safetensors` and,
    /// with early stopping, `best.safetensors`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta =
            serde_json::to_vec_pretty(&self.meta).map_err(|e| MlError::corrupt("checkpoint", e))?;
        let mut files: Vec<(&str, &[u8])> = vec![
            ("checkpoint.json", &meta),
            ("weights.safetensors", &self.weights),
            ("optimizer.safetensors", &self.optimizer),
        ];
        if let Some(best) = &self.best {
            files.push(("best.safetensors", best));
        }
        archive::write(&files)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        const WHAT: &str = "checkpoint";
        let mut files = archive::read(bytes, WHAT)?;
        let meta: CheckpointMeta =
            serde_json::from_slice(&archive::take(&mut files, "checkpoint.json", WHAT)?)
                .map_err(|e| MlError::corrupt(WHAT, e))?;
        if meta.format != FORMAT {
            return Err(MlError::corrupt(WHAT, format!("unknown format `{}`", meta.format)));
        }
        Ok(Checkpoint {
            meta,
            weights: archive::take(&mut files, "weights.safetensors", WHAT)?,
            optimizer: archive::take(&mut files, "optimizer.safetensors", WHAT)?,
            best: files.remove("best.safetensors"),
        })
    }
}

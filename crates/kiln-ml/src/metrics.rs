//! Metrics under the series names of API.md: `train_loss`, `val_loss`; `val_accuracy`,
//! `val_f1` (macro) for classification; `val_rmse`, `val_mae`, `val_r2` for regression.

use kiln_types::spec::Metric;
use serde::{Deserialize, Serialize};

/// One epoch's metrics. Fields that do not apply to the task are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub learning_rate: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_r2: Option<f64>,
}

impl EpochMetrics {
    /// `(series name, value)` for every metric present, as the worker appends them.
    pub fn series(&self) -> Vec<(&'static str, f64)> {
        kiln_types::job::metric_series(
            self.train_loss,
            self.val_loss,
            [self.val_accuracy, self.val_f1, self.val_rmse, self.val_mae, self.val_r2],
        )
    }

    /// The value of a validation metric (for early stopping).
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::ValLoss => Some(self.val_loss),
            Metric::ValAccuracy => self.val_accuracy,
            Metric::ValF1 => self.val_f1,
            Metric::ValRmse => self.val_rmse,
            Metric::ValMae => self.val_mae,
            Metric::ValR2 => self.val_r2,
        }
    }
}

/// Accuracy, macro-F1 and the confusion matrix (`matrix[true][predicted]`).
pub(crate) fn classification(
    truth: &[i64],
    predicted: &[i64],
    classes: usize,
) -> (f64, f64, Vec<Vec<u64>>) {
    let mut matrix = vec![vec![0u64; classes]; classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        matrix[t as usize][p as usize] += 1;
    }
    let correct: u64 = (0..classes).map(|c| matrix[c][c]).sum();
    let accuracy = correct as f64 / truth.len().max(1) as f64;
    // Macro-F1 over the classes present in the truth or the predictions (scikit-learn's
    // default averages over labels seen in either).
    let mut f1_sum = 0.0;
    let mut counted = 0usize;
    for (c, row) in matrix.iter().enumerate() {
        let tp = row[c] as f64;
        let actual: u64 = row.iter().sum();
        let predicted: u64 = (0..classes).map(|t| matrix[t][c]).sum();
        if actual == 0 && predicted == 0 {
            continue;
        }
        counted += 1;
        let denominator = (actual + predicted) as f64;
        f1_sum += if denominator > 0.0 { 2.0 * tp / denominator } else { 0.0 };
    }
    (accuracy, f1_sum / counted.max(1) as f64, matrix)
}

/// RMSE, MAE and R² in the target's own units.
pub(crate) fn regression(truth: &[f64], predicted: &[f64]) -> (f64, f64, f64) {
    let n = truth.len().max(1) as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (&t, &p) in truth.iter().zip(predicted) {
        se += (t - p) * (t - p);
        ae += (t - p).abs();
        tot += (t - mean) * (t - mean);
    }
    let r2 = if tot > 0.0 { 1.0 - se / tot } else { 0.0 };
    ((se / n).sqrt(), ae / n, r2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_match_hand_computed_values() {
        // truth 0 0 1 1 2, predicted 0 1 1 1 0
        let (acc, f1, m) = classification(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], 3);
        assert_eq!(acc, 0.6);
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        // F1: class 0: 2*1/(2+2)=0.5; class 1: 2*2/(2+3)=0.8; class 2: 0.
        assert!((f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_match_hand_computed_values() {
        let (rmse, mae, r2) = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((rmse - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((mae - 2.0 / 3.0).abs() < 1e-12);
        assert!((r2 - (1.0 - 4.0 / 2.0)).abs() < 1e-12);
    }
}

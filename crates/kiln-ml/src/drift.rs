//! Training statistics kept in a model bundle, and the population stability index (PSI) of
//! live inputs against them: serving's drift monitor.
//!
//! At the end of training, every named input column of the training split is summarised:
//! numeric columns by ten quantile bins (cut points and the share of training rows in each),
//! categorical columns by the share of each category (plus one bucket for missing or unseen
//! values). Live rows are binned the same way, and for each feature
//! `PSI = Σ (live − train) · ln(live / train)` over the bins, with shares floored at
//! [`PSI_FLOOR`] so an empty bin does not make it infinite. The usual reading: below 0.1
//! stable, 0.1–0.25 a moderate shift, above 0.25 a major one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::prepare::{ColumnEncoding, InputEncoding, Raw, parse_number};

/// Quantile bins per numeric feature.
pub const NUMERIC_BINS: usize = 10;
/// The smallest share a bin counts with, in both distributions.
pub const PSI_FLOOR: f64 = 1e-4;

/// The training split's distribution of every named input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStats {
    /// Training rows summarised.
    pub rows: u64,
    pub features: Vec<FeatureStats>,
}

/// One feature's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureStats {
    /// `edges` are the strictly increasing interior cut points (`edges.len() + 1` bins; a
    /// value equal to an edge falls in the bin above it); `shares[i]` is the share of
    /// training rows in bin `i`. Training values went through the model's standardisation
    /// (`(x - shift) / scale` as f32) and back, so live values are binned after the same
    /// round trip: a value equal to an edge lands in the same bin in both.
    Number {
        name: String,
        edges: Vec<f64>,
        shares: Vec<f64>,
        mean: f64,
        std: f64,
        shift: f64,
        scale: f64,
    },
    /// `shares[i]` for `categories[i]`, then one last share for missing or unseen values.
    Category { name: String, categories: Vec<String>, shares: Vec<f64> },
}

impl FeatureStats {
    pub fn name(&self) -> &str {
        match self {
            FeatureStats::Number { name, .. } | FeatureStats::Category { name, .. } => name,
        }
    }

    fn bins(&self) -> usize {
        match self {
            FeatureStats::Number { shares, .. } | FeatureStats::Category { shares, .. } => {
                shares.len()
            }
        }
    }

    fn shares(&self) -> &[f64] {
        match self {
            FeatureStats::Number { shares, .. } | FeatureStats::Category { shares, .. } => shares,
        }
    }

    /// The bin of one raw JSON value, or `None` when it is missing or unreadable (a numeric
    /// feature's missing values are counted apart, not binned).
    fn bin_of(&self, value: Option<&Value>) -> Option<usize> {
        let raw = Raw::from_json(value).ok()?;
        match self {
            FeatureStats::Number { edges, shift, scale, .. } => {
                let x = match raw {
                    Raw::Number(x) if x.is_finite() => x,
                    Raw::Text(s) => parse_number(s)?,
                    _ => return None,
                };
                let x = round_trip(x, *shift, *scale);
                Some(edges.partition_point(|&e| e <= x))
            }
            FeatureStats::Category { categories, .. } => {
                let Some(s) = raw.category() else { return Some(categories.len()) };
                Some(
                    categories.binary_search_by(|c| c.as_str().cmp(&s)).unwrap_or(categories.len()),
                )
            }
        }
    }
}

/// The drift of one feature over a window of live rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub name: String,
    /// Population stability index against the training split.
    pub psi: f64,
    /// Live rows that had a usable value for this feature.
    pub rows: u64,
    /// Live rows where a numeric feature was missing (not binned).
    pub missing: u64,
}

impl TrainingStats {
    /// Summarises the training split from its encoded feature matrix (row-major,
    /// `rows × input.width()`), mapping standardised numbers back to raw units. `None` for
    /// tensor inputs (images, raw arrays), where per-feature drift means little.
    pub fn from_encoded(input: &InputEncoding, features: &[f32], rows: usize) -> Option<Self> {
        let InputEncoding::Columns { columns } = input else { return None };
        let width = input.width();
        if rows == 0 || features.len() != rows * width {
            return None;
        }
        let mut stats = Vec::with_capacity(columns.len());
        let mut at = 0;
        for column in columns {
            match column {
                ColumnEncoding::Number { name, shift, scale, .. } => {
                    let mut values: Vec<f64> = features
                        .chunks_exact(width)
                        .map(|row| decode(row[at], *shift, *scale))
                        .collect();
                    values.sort_by(f64::total_cmp);
                    let mut edges: Vec<f64> = (1..NUMERIC_BINS)
                        .map(|i| values[(i * values.len() / NUMERIC_BINS).min(values.len() - 1)])
                        .collect();
                    edges.dedup_by(|a, b| a <= b);
                    let mut counts = vec![0u64; edges.len() + 1];
                    for v in &values {
                        counts[edges.partition_point(|&e| e <= *v)] += 1;
                    }
                    let n = values.len() as f64;
                    let mean = values.iter().sum::<f64>() / n;
                    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    stats.push(FeatureStats::Number {
                        name: name.clone(),
                        edges,
                        shares: counts.iter().map(|&c| c as f64 / n).collect(),
                        mean,
                        std: var.sqrt(),
                        shift: *shift,
                        scale: *scale,
                    });
                }
                ColumnEncoding::Category { name, categories } => {
                    let mut counts = vec![0u64; categories.len() + 1];
                    for row in features.chunks_exact(width) {
                        let hot = row[at..at + categories.len()].iter().position(|&v| v > 0.5);
                        counts[hot.unwrap_or(categories.len())] += 1;
                    }
                    stats.push(FeatureStats::Category {
                        name: name.clone(),
                        categories: categories.clone(),
                        shares: counts.iter().map(|&c| c as f64 / rows as f64).collect(),
                    });
                }
            }
            at += column.width();
        }
        Some(TrainingStats { rows: rows as u64, features: stats })
    }

    /// The PSI of every feature over `rows` (raw JSON instances, as clients sent them).
    pub fn drift<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a Map<String, Value>>,
    ) -> Vec<FeatureDrift> {
        let mut counts: Vec<Vec<u64>> = self.features.iter().map(|f| vec![0; f.bins()]).collect();
        let mut missing = vec![0u64; self.features.len()];
        for row in rows {
            for (i, feature) in self.features.iter().enumerate() {
                match feature.bin_of(row.get(feature.name())) {
                    Some(bin) => counts[i][bin] += 1,
                    None => missing[i] += 1,
                }
            }
        }
        self.features
            .iter()
            .zip(counts)
            .zip(missing)
            .map(|((feature, counts), missing)| {
                let total: u64 = counts.iter().sum();
                FeatureDrift {
                    name: feature.name().to_owned(),
                    psi: if total == 0 { 0.0 } else { psi(feature.shares(), &counts, total) },
                    rows: total,
                    missing,
                }
            })
            .collect()
    }
}

/// A standardised training feature back in raw units.
fn decode(encoded: f32, shift: f64, scale: f64) -> f64 {
    f64::from(encoded) * scale + shift
}

/// A raw value after the same f32 standardisation round trip training values took.
fn round_trip(x: f64, shift: f64, scale: f64) -> f64 {
    decode(((x - shift) / scale) as f32, shift, scale)
}

/// `Σ (a − e) · ln(a / e)` with both shares floored at [`PSI_FLOOR`].
fn psi(expected: &[f64], counts: &[u64], total: u64) -> f64 {
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let e = e.max(PSI_FLOOR);
            let a = (c as f64 / total as f64).max(PSI_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns() -> InputEncoding {
        InputEncoding::Columns {
            columns: vec![
                ColumnEncoding::Number { name: "x".into(), shift: 0.0, scale: 1.0, fill: 0.0 },
                ColumnEncoding::Category {
                    name: "colour".into(),
                    categories: vec!["blue".into(), "red".into()],
                },
            ],
        }
    }

    /// 1,000 training rows: x uniform over 0..1000, colour half blue, half red.
    fn stats() -> TrainingStats {
        let features: Vec<f32> = (0..1000)
            .flat_map(|i| {
                let blue = i % 2 == 0;
                [i as f32, if blue { 1.0 } else { 0.0 }, if blue { 0.0 } else { 1.0 }]
            })
            .collect();
        TrainingStats::from_encoded(&columns(), &features, 1000).unwrap()
    }

    fn row(x: f64, colour: &str) -> Map<String, Value> {
        json!({"x": x, "colour": colour}).as_object().unwrap().clone()
    }

    #[test]
    fn training_bins_are_deciles() {
        let stats = stats();
        let FeatureStats::Number { edges, shares, .. } = &stats.features[0] else { panic!() };
        assert_eq!(edges.len(), 9);
        assert_eq!(edges[0], 100.0);
        assert!(shares.iter().all(|s| (s - 0.1).abs() < 1e-9), "{shares:?}");
        let FeatureStats::Category { shares, .. } = &stats.features[1] else { panic!() };
        assert_eq!(shares, &vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn the_same_distribution_is_stable_and_a_shifted_one_is_not() {
        let stats = stats();
        let same: Vec<_> = (0..500)
            .map(|i| row(f64::from(i) * 2.0, if i % 2 == 0 { "blue" } else { "red" }))
            .collect();
        let drift = stats.drift(&same);
        assert!(drift[0].psi < 0.05, "{drift:?}");
        assert!(drift[1].psi < 0.05, "{drift:?}");

        // x moved up by half its range; colour unchanged.
        let shifted: Vec<_> = (0..500)
            .map(|i| row(500.0 + f64::from(i) * 2.0, if i % 2 == 0 { "blue" } else { "red" }))
            .collect();
        let drift = stats.drift(&shifted);
        assert!(drift[0].psi > 1.0, "{drift:?}");
        assert!(drift[1].psi < 0.05, "{drift:?}");
        assert_eq!(drift[0].rows, 500);
    }

    #[test]
    fn unseen_categories_and_missing_numbers_are_counted() {
        let stats = stats();
        let rows = vec![
            json!({"colour": "green"}).as_object().unwrap().clone(),
            json!({"x": "12.5", "colour": "blue"}).as_object().unwrap().clone(),
        ];
        let drift = stats.drift(&rows);
        assert_eq!((drift[0].rows, drift[0].missing), (1, 1));
        assert_eq!((drift[1].rows, drift[1].missing), (2, 0));
        // Half the live rows are in a bucket that training never saw.
        assert!(drift[1].psi > 1.0, "{drift:?}");
    }

    #[test]
    fn discrete_values_on_the_edges_bin_as_in_training() {
        // Iris-like: one decimal, many ties, standardised with awkward constants.
        let (shift, scale) = (5.843_333_333, 0.828_066_127_977_863);
        let input = InputEncoding::Columns {
            columns: vec![ColumnEncoding::Number { name: "x".into(), shift, scale, fill: shift }],
        };
        let raw: Vec<f64> = (0..300).map(|i| 4.3 + f64::from(i % 36) / 10.0).collect();
        let encoded: Vec<f32> = raw.iter().map(|x| ((x - shift) / scale) as f32).collect();
        let stats = TrainingStats::from_encoded(&input, &encoded, raw.len()).unwrap();
        let rows: Vec<_> =
            raw.iter().map(|&x| json!({"x": x}).as_object().unwrap().clone()).collect();
        let drift = stats.drift(&rows);
        assert!(drift[0].psi < 1e-12, "{drift:?}");
    }

    #[test]
    fn tensor_inputs_have_no_stats() {
        let input = InputEncoding::Tensor {
            field: "x".into(),
            shape: vec![2],
            shift: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
        };
        assert!(TrainingStats::from_encoded(&input, &[0.0; 4], 2).is_none());
    }
}

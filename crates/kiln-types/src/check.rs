//! The one set of rules a job spec must meet against its data, known from the dataset's
//! [`DatasetSchema`] alone: does the target column exist, do the features, does the task
//! fit the target's type, does a CNN get images, do NPZ specs leave the columns alone.
//!
//! The API applies them at submission (a 422 whose `details.fields` names each offending
//! field) and kiln-ml applies the same ones before training, against the schema of the
//! bytes it actually reads; so a spec the API accepted never fails on them later. What
//! needs the values themselves (a label that is missing, a number that does not parse, a
//! single class) stays in kiln-ml.

use crate::dataset::{ColumnType, CsvSchema, DatasetSchema, NpzSchema};
use crate::memory::DataShape;
use crate::spec::{JobSpec, ModelSpec, Task, ValidationErrors};

/// Distinct values a schema counts before it says "more than 100" (`distinct: null`): an
/// uncounted categorical column is taken to be one-hot encoded this wide, so the estimate
/// of such a model is a lower bound.
const UNCOUNTED_DISTINCT: u64 = 101;

impl JobSpec {
    /// Checks the spec against the schema of its dataset (`dataset_id`), reporting every
    /// offending field at once by its path in the spec.
    pub fn check_against(&self, data: &DatasetSchema) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        match data {
            DatasetSchema::Csv(csv) => self.check_csv(csv, &mut errors),
            DatasetSchema::Npz(npz) => self.check_npz(npz, &mut errors),
            DatasetSchema::TorchScript => errors.add(
                "dataset_id",
                "this upload is a TorchScript module, not training data; name it in \
                 model.dataset_id",
            ),
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Checks the upload a `{"type": "torchscript"}` model names (`model.dataset_id`).
    pub fn check_script(&self, script: &DatasetSchema) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !matches!(script, DatasetSchema::TorchScript) {
            errors.add(
                "model.dataset_id",
                format!(
                    "this upload is a {} dataset, not a TorchScript module (upload one with \
                     ?format=torchscript)",
                    script.format()
                ),
            );
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn check_csv(&self, csv: &CsvSchema, errors: &mut ValidationErrors) {
        if matches!(self.model, ModelSpec::Cnn { .. }) {
            errors.add(
                "model.type",
                "a CNN needs images: upload an NPZ dataset with `x` of shape N×C×H×W (this \
                 dataset is a CSV table; use mlp or linear)",
            );
        }
        match self.target.as_deref() {
            None => errors.add(
                "target",
                format!(
                    "required for CSV datasets: the column to predict; its columns are {}",
                    csv.describe_columns()
                ),
            ),
            Some(target) => match csv.column(target) {
                None => errors.add(
                    "target",
                    format!(
                        "the dataset has no column `{target}`; its columns are {}",
                        csv.describe_columns()
                    ),
                ),
                Some(column)
                    if self.task == Task::Regression && column.kind == ColumnType::Category =>
                {
                    errors.add(
                        "target",
                        format!("regression needs a numeric target; `{target}` holds categories"),
                    );
                }
                Some(_) => {}
            },
        }
        match &self.features {
            Some(features) => {
                for (i, feature) in features.iter().enumerate() {
                    if csv.column(feature).is_none() {
                        errors.add(
                            format!("features[{i}]"),
                            format!(
                                "the dataset has no column `{feature}`; its columns are {}",
                                csv.describe_columns()
                            ),
                        );
                    }
                }
            }
            None => {
                let target = self.target.as_deref();
                if !csv.columns.iter().any(|c| Some(c.name.as_str()) != target) {
                    errors.add("features", "the dataset has no column besides the target");
                }
            }
        }
    }

    fn check_npz(&self, npz: &NpzSchema, errors: &mut ValidationErrors) {
        if self.features.is_some() {
            errors.add("features", "NPZ datasets have no named columns; omit `features`");
        }
        if let Some(target) = self.target.as_deref().filter(|t| *t != "y") {
            errors.add(
                "target",
                format!("NPZ datasets use their `y` array, not `{target}`; omit `target`"),
            );
        }
        let rank = npz.x.shape.len();
        if matches!(self.model, ModelSpec::Cnn { .. }) && rank != 4 {
            errors.add(
                "model.type",
                format!(
                    "a CNN needs images (an NPZ `x` of shape N×C×H×W); this dataset's `x` has \
                     shape {:?}; use mlp or linear",
                    npz.x.shape
                ),
            );
        }
    }

    /// The shape of the data as this spec's model would see it, from the dataset's schema:
    /// a sample's width (a number column is one feature, a category as many as its distinct
    /// values) or shape, and the number of outputs (classes; at least 2 where the schema
    /// does not count them). `None` for a TorchScript upload.
    pub fn data_shape(&self, data: &DatasetSchema) -> Option<DataShape> {
        let split = self.hyperparameters.validation_split;
        match data {
            DatasetSchema::TorchScript => None,
            DatasetSchema::Npz(npz) => {
                let outputs = if self.task == Task::Classification { 2 } else { 1 };
                let sample = npz.x.shape.get(1..)?.to_vec();
                Some(DataShape::split(npz.rows, split, sample, outputs))
            }
            DatasetSchema::Csv(csv) => {
                let target = self.target.as_deref();
                let mut features = 0u64;
                let mut outputs = 1u64;
                for c in &csv.columns {
                    if Some(c.name.as_str()) == target {
                        if self.task == Task::Classification {
                            outputs = c.distinct.unwrap_or(UNCOUNTED_DISTINCT);
                        }
                    } else if self.features.as_ref().is_none_or(|f| f.contains(&c.name)) {
                        let width = match c.kind {
                            ColumnType::Category => c.distinct.unwrap_or(UNCOUNTED_DISTINCT),
                            ColumnType::Number => 1,
                        };
                        features = features.saturating_add(width);
                    }
                }
                Some(DataShape::split(csv.rows, split, vec![features], outputs))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;

    const DATASET: &str = "0190a9c1-8f6e-7b3a-9c2d-1e2f3a4b5c6d";

    /// The schema today's kiln-ml infers for `data/iris.csv` (tests/fixtures).
    fn iris() -> DatasetSchema {
        serde_json::from_str(include_str!("../tests/fixtures/schema_iris_csv.json")).unwrap()
    }

    /// The schema today's kiln-ml infers for `data/digits.npz`: `x` is 1797×1×8×8.
    fn digits() -> DatasetSchema {
        serde_json::from_str(include_str!("../tests/fixtures/schema_digits_npz.json")).unwrap()
    }

    fn flat_npz() -> DatasetSchema {
        serde_json::from_value(json!({"format": "npz", "rows": 10, "x": {"shape": [10, 4]},
                                      "y": {"shape": [10], "integer": false}}))
        .unwrap()
    }

    fn spec(extra: Value) -> JobSpec {
        let mut body = json!({"dataset_id": DATASET, "task": "classification",
                              "target": "species", "model": {"type": "mlp"}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        if body["target"].is_null() {
            body.as_object_mut().unwrap().remove("target");
        }
        JobSpec::parse(&body).unwrap()
    }

    /// The fields and the start of each message.
    fn refused(spec: &JobSpec, data: &DatasetSchema, expected: &[(&str, &str)]) {
        let errors = spec.check_against(data).expect_err("the spec should not fit the data");
        let got: Vec<&String> = errors.fields().keys().collect();
        let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
        assert_eq!(got, want, "{errors}");
        let fields: &BTreeMap<String, String> = errors.fields();
        for (path, start) in expected {
            assert!(
                fields[*path].starts_with(start),
                "{path}: {:?} should start {start:?}",
                fields[*path]
            );
        }
    }

    #[test]
    fn a_spec_that_fits_passes() {
        assert_eq!(spec(json!({})).check_against(&iris()), Ok(()));
        let features = spec(json!({"features": ["sepal_length", "petal_width"]}));
        assert_eq!(features.check_against(&iris()), Ok(()));
        let regression = spec(json!({"task": "regression", "target": "petal_width"}));
        assert_eq!(regression.check_against(&iris()), Ok(()));
        let cnn = spec(json!({"model": {"type": "cnn"}, "target": null}));
        assert_eq!(cnn.check_against(&digits()), Ok(()));
        let y = spec(json!({"target": "y"}));
        assert_eq!(y.check_against(&flat_npz()), Ok(()));
    }

    #[test]
    fn the_target_must_be_a_column() {
        refused(
            &spec(json!({"target": "colour"})),
            &iris(),
            &[(
                "target",
                "the dataset has no column `colour`; its columns are sepal_length, \
                 sepal_width, petal_length, petal_width, species",
            )],
        );
        refused(
            &spec(json!({"target": null})),
            &iris(),
            &[("target", "required for CSV datasets: the column to predict; its columns are")],
        );
    }

    #[test]
    fn features_must_be_columns() {
        refused(
            &spec(json!({"features": ["sepal_length", "petal_size", "colour"]})),
            &iris(),
            &[
                ("features[1]", "the dataset has no column `petal_size`"),
                ("features[2]", "the dataset has no column `colour`"),
            ],
        );
        let only_target: DatasetSchema = serde_json::from_value(json!({
            "format": "csv", "rows": 3, "label_candidates": [],
            "columns": [{"name": "species", "type": "category", "missing": 0, "distinct": 3,
                         "label_candidate": true}]}))
        .unwrap();
        refused(
            &spec(json!({})),
            &only_target,
            &[("features", "the dataset has no column besides the target")],
        );
    }

    #[test]
    fn regression_needs_a_numeric_target() {
        refused(
            &spec(
                json!({"task": "regression", "hyperparameters": {"early_stopping_metric": "val_r2"}}),
            ),
            &iris(),
            &[("target", "regression needs a numeric target; `species` holds categories")],
        );
    }

    #[test]
    fn a_cnn_needs_images() {
        refused(
            &spec(json!({"model": {"type": "cnn"}})),
            &iris(),
            &[("model.type", "a CNN needs images: upload an NPZ dataset")],
        );
        refused(
            &spec(json!({"model": {"type": "cnn"}, "target": null})),
            &flat_npz(),
            &[(
                "model.type",
                "a CNN needs images (an NPZ `x` of shape N×C×H×W); this dataset's `x` has \
                 shape [10, 4]",
            )],
        );
    }

    #[test]
    fn npz_specs_leave_columns_alone() {
        refused(
            &spec(json!({"features": ["a"], "target": "label"})),
            &digits(),
            &[
                ("features", "NPZ datasets have no named columns; omit `features`"),
                ("target", "NPZ datasets use their `y` array, not `label`"),
            ],
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        refused(
            &spec(json!({"model": {"type": "cnn"}, "target": "colour", "features": ["x"]})),
            &iris(),
            &[
                ("features[0]", "the dataset has no column `x`"),
                ("model.type", "a CNN needs images"),
                ("target", "the dataset has no column `colour`"),
            ],
        );
    }

    #[test]
    fn torchscript_uploads_are_models_not_data() {
        refused(
            &spec(json!({})),
            &DatasetSchema::TorchScript,
            &[("dataset_id", "this upload is a TorchScript module, not training data")],
        );
        let ts = spec(json!({"model": {"type": "torchscript", "dataset_id": DATASET}}));
        assert_eq!(ts.check_script(&DatasetSchema::TorchScript), Ok(()));
        let errors = ts.check_script(&iris()).unwrap_err();
        assert_eq!(
            errors.fields()["model.dataset_id"],
            "this upload is a csv dataset, not a TorchScript module (upload one with \
             ?format=torchscript)"
        );
    }

    #[test]
    fn the_data_shape_counts_one_hot_widths_and_classes() {
        let shape = spec(json!({})).data_shape(&iris()).unwrap();
        assert_eq!(shape.sample_shape, [4]);
        assert_eq!(shape.outputs, 3);
        assert_eq!((shape.train_rows, shape.val_rows), (120, 30));
        let cnn = spec(json!({"model": {"type": "cnn"}, "target": null}));
        assert_eq!(cnn.data_shape(&digits()).unwrap().sample_shape, [1, 8, 8]);
        assert_eq!(spec(json!({})).data_shape(&DatasetSchema::TorchScript), None);
    }
}

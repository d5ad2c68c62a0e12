//! From a raw dataset and a job spec to tensors: column typing, a seeded (stratified) split,
//! and preprocessing fitted on the training split only.
//!
//! The fitted [`Preprocessor`] is data, not code: it is serialised into checkpoints and model
//! bundles, and prediction runs raw rows through exactly the same [`ColumnEncoding::encode`]
//! that encoded the training rows, so serving applies what training fitted.

use std::collections::{BTreeMap, BTreeSet};

use kiln_types::spec::{JobSpec, MissingValues, Task};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::{Kind, Tensor};

use crate::dataset::{Arrays, Data, Dataset, Table};
use crate::error::{MlError, Result};
use crate::rng::{SplitMix64, stream};

/// Fitted preprocessing: how raw inputs become the model's input tensor, and how its outputs
/// become labels or values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    pub task: Task,
    pub input: InputEncoding,
    pub target: TargetEncoding,
    /// Fill missing inputs (numeric: the training mean; categorical: no category).
    pub impute_missing: bool,
}

/// How one raw input row becomes a feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputEncoding {
    /// CSV-style named fields, each encoded to one or more features, in order.
    Columns { columns: Vec<ColumnEncoding> },
    /// One numeric array per row (`{"x": [...]}`) of the given per-sample shape, standardised
    /// per feature (`[F]`) or per channel (`[C, H, W]`).
    Tensor { field: String, shape: Vec<usize>, shift: Vec<f64>, scale: Vec<f64> },
}

/// One named input field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// `(x - shift) / scale`; `fill` (the training mean) replaces a missing value when
    /// imputing.
    Number { name: String, shift: f64, scale: f64, fill: f64 },
    /// One-hot over the training split's categories, sorted.
    Category { name: String, categories: Vec<String> },
}

/// What the model's outputs mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetEncoding {
    /// Output `i` is the logit of `labels[i]`.
    Classes { name: String, labels: Vec<String> },
    /// The output is `(y - mean) / std`; predictions are mapped back.
    Value { name: String, mean: f64, std: f64 },
}

/// A raw value before encoding, from a CSV cell, a JSON field or a serving tensor's element
/// ([`ColumnEncoding::encode_raw`]).
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Missing,
    Number(f64),
    Text(&'a str),
}

/// Spellings of "no value" in CSV files.
pub(crate) fn is_missing_token(s: &str) -> bool {
    matches!(s, "" | "NA" | "N/A" | "na" | "n/a" | "NaN" | "nan" | "null" | "NULL" | "None" | "?")
}

impl<'a> Raw<'a> {
    /// A text value as a CSV cell or a JSON string is read: trimmed, and the spellings of
    /// "no value" (`NA`, `null`, ...) are missing.
    pub fn from_cell(cell: &'a str) -> Raw<'a> {
        let cell = cell.trim();
        if is_missing_token(cell) { Raw::Missing } else { Raw::Text(cell) }
    }

    /// The category a value names (a number by its shortest spelling: `3`, not `3.0`), or
    /// `None` when missing.
    pub(crate) fn category(self) -> Option<std::borrow::Cow<'a, str>> {
        match self {
            Raw::Text(s) => Some(std::borrow::Cow::Borrowed(s)),
            Raw::Number(x) => Some(std::borrow::Cow::Owned(format_number(x))),
            Raw::Missing => None,
        }
    }

    pub(crate) fn from_json(value: Option<&'a Value>) -> Result<Raw<'a>, String> {
        match value {
            None | Some(Value::Null) => Ok(Raw::Missing),
            Some(Value::Number(n)) => Ok(n.as_f64().map_or(Raw::Missing, Raw::Number)),
            Some(Value::String(s)) => Ok(Raw::from_cell(s)),
            Some(Value::Bool(true)) => Ok(Raw::Text("true")),
            Some(Value::Bool(false)) => Ok(Raw::Text("false")),
            Some(_) => Err("must be a number or a string".into()),
        }
    }
}

pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

impl ColumnEncoding {
    pub fn name(&self) -> &str {
        match self {
            ColumnEncoding::Number { name, .. } | ColumnEncoding::Category { name, .. } => name,
        }
    }

    /// How many features this field becomes.
    pub fn width(&self) -> usize {
        match self {
            ColumnEncoding::Number { .. } => 1,
            ColumnEncoding::Category { categories, .. } => categories.len(),
        }
    }

    /// Writes one raw value of this field into `out` (`width()` long) exactly as the field
    /// of a predict instance is encoded, for callers that hold values outside JSON rows
    /// (serving's Open Inference Protocol tensors).
    pub fn encode_raw(&self, raw: Raw<'_>, impute: bool, out: &mut [f32]) -> Result<(), String> {
        self.encode(raw, impute, false, out)
    }

    /// Writes this field's features into `out` (`width()` long). `lenient` encodes an unknown
    /// category as all zeros instead of failing (validation rows during training).
    pub(crate) fn encode(
        &self,
        raw: Raw<'_>,
        impute: bool,
        lenient: bool,
        out: &mut [f32],
    ) -> Result<(), String> {
        match self {
            ColumnEncoding::Number { shift, scale, fill, .. } => {
                let x = match raw {
                    Raw::Number(x) if x.is_finite() => x,
                    Raw::Number(_) => return Err("must be a finite number".into()),
                    Raw::Text(s) => {
                        parse_number(s).ok_or_else(|| format!("`{s}` is not a number"))?
                    }
                    Raw::Missing if impute => *fill,
                    Raw::Missing => return Err(missing_message()),
                };
                out[0] = ((x - shift) / scale) as f32;
            }
            ColumnEncoding::Category { categories, .. } => {
                out.fill(0.0);
                let s = match raw.category() {
                    Some(s) => s,
                    None if impute => return Ok(()),
                    None => return Err(missing_message()),
                };
                match categories.binary_search_by(|c| c.as_str().cmp(&s)) {
                    Ok(i) => out[i] = 1.0,
                    Err(_) if lenient => {}
                    Err(_) => {
                        return Err(format!(
                            "unknown category `{s}`; the model knows: {}",
                            categories.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn missing_message() -> String {
    "missing value (set \"preprocessing\": {\"missing\": \"impute\"} to fill it)".into()
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

impl InputEncoding {
    /// The number of features per row (the product of the shape for tensors).
    pub fn width(&self) -> usize {
        match self {
            InputEncoding::Columns { columns } => columns.iter().map(ColumnEncoding::width).sum(),
            InputEncoding::Tensor { shape, .. } => shape.iter().product(),
        }
    }

    /// The model's per-sample input shape.
    pub fn sample_shape(&self) -> Vec<i64> {
        match self {
            InputEncoding::Columns { .. } => vec![self.width() as i64],
            InputEncoding::Tensor { shape, .. } => shape.iter().map(|&d| d as i64).collect(),
        }
    }

    /// The input schema recorded in a model bundle.
    pub fn schema(&self) -> Value {
        match self {
            InputEncoding::Columns { columns } => {
                let fields: Vec<Value> = columns
                    .iter()
                    .map(|c| match c {
                        ColumnEncoding::Number { name, .. } => {
                            serde_json::json!({"name": name, "type": "number"})
                        }
                        ColumnEncoding::Category { name, categories } => {
                            serde_json::json!({"name": name, "type": "category", "values": categories})
                        }
                    })
                    .collect();
                serde_json::json!({"fields": fields})
            }
            InputEncoding::Tensor { field, shape, .. } => serde_json::json!({
                "fields": [{"name": field, "type": "array", "shape": shape}]
            }),
        }
    }

    /// Standardises one tensor sample in place (its raw values, `width()` long) exactly as
    /// a predict instance's array is; fields (`Columns`) are left as they are.
    pub fn standardise_sample(&self, sample: &mut [f32]) {
        if let InputEncoding::Tensor { shape, shift, scale, .. } = self {
            standardise(sample, shape, shift, scale);
        }
    }

    /// Encodes one JSON row (an instance) into `out` (`width()` long); the error names the
    /// instance and its first bad field.
    pub(crate) fn encode_json(
        &self,
        row: &Map<String, Value>,
        index: usize,
        impute: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let mut first = None;
        self.encode_json_each(row, impute, out, &mut |field, message| {
            if first.is_none() {
                first = Some(MlError::Input { index, field: field.to_owned(), message });
            }
        });
        first.map_or(Ok(()), Err)
    }

    /// True when `name` is one of the fields a row is read from.
    fn takes(&self, name: &str) -> bool {
        match self {
            InputEncoding::Columns { columns } => columns.iter().any(|c| c.name() == name),
            InputEncoding::Tensor { field, .. } => field == name,
        }
    }

    /// The fields a row is read from, for messages: `a, b, c` (the first 20, then a count).
    fn describe_fields(&self) -> String {
        const SHOWN: usize = 20;
        let names: Vec<String> = match self {
            InputEncoding::Columns { columns } => {
                columns.iter().map(|c| format!("`{}`", c.name())).collect()
            }
            InputEncoding::Tensor { field, .. } => vec![format!("`{field}`")],
        };
        let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > SHOWN {
            text.push_str(&format!(" and {} more", names.len() - SHOWN));
        }
        text
    }

    /// Encodes one JSON row, reporting every bad field (not only the first) to `bad`.
    fn encode_json_each(
        &self,
        row: &Map<String, Value>,
        impute: bool,
        out: &mut [f32],
        bad: &mut dyn FnMut(&str, String),
    ) {
        match self {
            InputEncoding::Columns { columns } => {
                let mut at = 0;
                for column in columns {
                    let width = column.width();
                    let encoded = Raw::from_json(row.get(column.name())).and_then(|raw| {
                        column.encode(raw, impute, false, &mut out[at..at + width])
                    });
                    if let Err(message) = encoded {
                        bad(column.name(), message);
                    }
                    at += width;
                }
            }
            InputEncoding::Tensor { field, shape, shift, scale } => {
                let Some(value) = row.get(field) else {
                    bad(field, format!("missing; expected an array of shape {shape:?}"));
                    return;
                };
                let mut at = 0;
                if let Err(message) = flatten_numbers(value, out, &mut at) {
                    bad(field, message);
                } else if at != out.len() {
                    bad(
                        field,
                        format!("has {at} numbers; expected {} (shape {shape:?})", out.len()),
                    );
                } else {
                    standardise(out, shape, shift, scale);
                }
            }
        }
    }
}

/// What [`Preprocessor::encode_rows`] does with an instance's fields that the model does
/// not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraFields {
    /// Each one is a problem: a misspelt feature is reported, not silently dropped.
    Refuse,
    /// They are ignored.
    Ignore,
}

/// One bad field of one instance, found by [`Preprocessor::encode_rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// The instance's position in the request.
    pub index: usize,
    pub field: String,
    pub message: String,
}

impl Preprocessor {
    /// Encodes raw JSON rows into one row-major feature matrix (`rows.len() * width`), the
    /// model's input, exactly as training encoded its rows. On bad input it answers every
    /// offending field of every instance (up to `max_problems`), so a client can fix a
    /// request in one round trip. Fields the model does not take are problems too, unless
    /// `extra` is [`ExtraFields::Ignore`].
    pub fn encode_rows(
        &self,
        rows: &[Map<String, Value>],
        extra: ExtraFields,
        max_problems: usize,
    ) -> std::result::Result<Vec<f32>, Vec<InputProblem>> {
        let width = self.input.width();
        let mut features = vec![0f32; rows.len() * width];
        let mut problems = Vec::new();
        for (index, (row, out)) in
            rows.iter().zip(features.chunks_exact_mut(width.max(1))).enumerate()
        {
            self.input.encode_json_each(row, self.impute_missing, out, &mut |field, message| {
                if problems.len() < max_problems {
                    problems.push(InputProblem { index, field: field.to_owned(), message });
                }
            });
            if extra == ExtraFields::Refuse {
                for field in row.keys().filter(|name| !self.input.takes(name)) {
                    if problems.len() < max_problems {
                        problems.push(InputProblem {
                            index,
                            field: field.clone(),
                            message: format!(
                                "is not an input of this model (it takes {})",
                                self.input.describe_fields()
                            ),
                        });
                    }
                }
            }
        }
        if problems.is_empty() { Ok(features) } else { Err(problems) }
    }
}

/// Copies a nested JSON array of numbers into `out` in row-major order.
fn flatten_numbers(value: &Value, out: &mut [f32], at: &mut usize) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten_numbers(v, out, at)),
        Value::Number(n) => {
            let x = n.as_f64().filter(|x| x.is_finite()).ok_or("holds a non-finite number")?;
            if *at < out.len() {
                out[*at] = x as f32;
            }
            *at += 1;
            Ok(())
        }
        _ => Err("must be a (nested) array of numbers".into()),
    }
}

/// Applies per-feature or per-channel standardisation to one sample, in place.
fn standardise(sample: &mut [f32], shape: &[usize], shift: &[f64], scale: &[f64]) {
    let group = if shape.len() == 1 { 1 } else { shape[1..].iter().product() };
    for (i, v) in sample.iter_mut().enumerate() {
        let g = i / group;
        *v = ((f64::from(*v) - shift[g]) / scale[g]) as f32;
    }
}

/// One side of the split, as tensors on the CPU.
#[derive(Debug)]
pub(crate) struct Split {
    /// `[n, ...sample_shape]`, float.
    pub(crate) x: Tensor,
    /// `[n]`: class indices (int64) or standardised targets (float).
    pub(crate) y: Tensor,
    /// Class indices, or targets in original units, for metrics.
    pub(crate) targets: Vec<f64>,
}

impl Split {
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }
}

/// A dataset ready to train on: split, encoded, with its fitted preprocessing.
#[derive(Debug)]
pub struct Prepared {
    pub preprocessor: Preprocessor,
    pub(crate) train: Split,
    pub(crate) val: Split,
    dataset_sha256: String,
}

impl Prepared {
    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    pub fn val_len(&self) -> usize {
        self.val.len()
    }

    pub fn dataset_sha256(&self) -> &str {
        &self.dataset_sha256
    }

    /// The number of model outputs: classes, or 1 for regression.
    pub fn outputs(&self) -> usize {
        match &self.preprocessor.target {
            TargetEncoding::Classes { labels, .. } => labels.len(),
            TargetEncoding::Value { .. } => 1,
        }
    }
}

/// The type a CSV column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Numeric,
    Categorical,
}

/// A column is numeric when at least half of its non-missing values are numbers (the others
/// are then reported as errors, since they are most likely typos); otherwise categorical.
pub(crate) fn infer_column(table: &Table, column: usize) -> ColumnKind {
    let (mut present, mut numbers) = (0usize, 0usize);
    for record in &table.records {
        if let Raw::Text(s) = Raw::from_cell(&record[column]) {
            present += 1;
            numbers += usize::from(parse_number(s).is_some());
        }
    }
    ColumnKind::from_counts(present, numbers)
}

impl ColumnKind {
    /// Numeric when at least half of the `present` (not missing) cells are `numbers`.
    pub(crate) fn from_counts(present: usize, numbers: usize) -> ColumnKind {
        if numbers > 0 && numbers * 2 >= present {
            ColumnKind::Numeric
        } else {
            ColumnKind::Categorical
        }
    }
}

/// Splits, fits preprocessing on the training split, and encodes both splits.
///
/// First the spec is checked against the dataset's schema with
/// [`JobSpec::check_against`], the rules the API applied at submission
/// ([`MlError::Unfit`]); what is checked here after that needs the values themselves (a
/// missing label, a number that does not parse, a single class).
pub fn prepare(spec: &JobSpec, dataset: &Dataset) -> Result<Prepared> {
    spec.check_against(&dataset.schema()).map_err(MlError::Unfit)?;
    let (preprocessor, train, val) = match &dataset.data {
        Data::Table(table) => prepare_table(spec, table)?,
        Data::Arrays(arrays) => prepare_arrays(spec, arrays)?,
    };
    Ok(Prepared { preprocessor, train, val, dataset_sha256: dataset.sha256().to_owned() })
}

/// The index of a column the spec names. [`prepare`] checked the spec against the schema
/// first, so every column it names exists.
fn column_index(table: &Table, name: &str) -> usize {
    table.columns.iter().position(|c| c == name).expect("JobSpec::check_against found it")
}

fn prepare_table(spec: &JobSpec, table: &Table) -> Result<(Preprocessor, Split, Split)> {
    let target_name = spec.target.as_deref().expect("JobSpec::check_against: CSV has a target");
    let target = column_index(table, target_name);
    let features: Vec<usize> = match &spec.features {
        Some(names) => names.iter().map(|n| column_index(table, n)).collect(),
        None => (0..table.columns.len()).filter(|&c| c != target).collect(),
    };
    let n = table.records.len();
    let value_error = |row: usize, column: usize, problem: String| MlError::DatasetValue {
        row: row + 1,
        line: table.line(row),
        column: table.columns[column].clone(),
        problem,
    };

    // The target: class indices over every label in the file, or numbers.
    let (targets, target_encoding_labels): (Vec<f64>, Option<Vec<String>>) = match spec.task {
        Task::Classification => {
            let mut raw = Vec::with_capacity(n);
            for (row, record) in table.records.iter().enumerate() {
                match Raw::from_cell(&record[target]) {
                    Raw::Text(s) => raw.push(s),
                    _ => return Err(value_error(row, target, "missing label".into())),
                }
            }
            let labels = sort_labels(raw.iter().copied().collect());
            if labels.len() < 2 {
                return Err(MlError::spec(
                    "target",
                    format!(
                        "column `{target_name}` has only one class; classification needs two or more"
                    ),
                ));
            }
            let index: BTreeMap<&str, usize> =
                labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
            (raw.iter().map(|l| index[l] as f64).collect(), Some(labels))
        }
        Task::Regression => {
            let mut values = Vec::with_capacity(n);
            for (row, record) in table.records.iter().enumerate() {
                match Raw::from_cell(&record[target]) {
                    Raw::Text(s) => values.push(parse_number(s).ok_or_else(|| {
                        value_error(row, target, format!("target `{s}` is not a number"))
                    })?),
                    _ => return Err(value_error(row, target, "missing target value".into())),
                }
            }
            (values, None)
        }
    };

    let (train_rows, val_rows) = split_rows(spec, &targets)?;
    let impute = spec.preprocessing.missing == MissingValues::Impute;

    // Fit each feature's encoding on the training rows only.
    let mut columns = Vec::with_capacity(features.len());
    for &c in &features {
        let name = table.columns[c].clone();
        match infer_column(table, c) {
            ColumnKind::Numeric => {
                let mut values = Vec::with_capacity(train_rows.len());
                for &row in &train_rows {
                    match Raw::from_cell(&table.records[row][c]) {
                        Raw::Text(s) => values.push(parse_number(s).ok_or_else(|| {
                            value_error(
                                row,
                                c,
                                format!("`{s}` is not a number (the column is numeric)"),
                            )
                        })?),
                        _ if impute => {}
                        _ => return Err(value_error(row, c, missing_message())),
                    }
                }
                if values.is_empty() {
                    return Err(value_error(train_rows[0], c, "the column has no values".into()));
                }
                let (mean, std) = mean_std(&values);
                let (shift, scale) =
                    if spec.preprocessing.standardize { (mean, std) } else { (0.0, 1.0) };
                columns.push(ColumnEncoding::Number { name, shift, scale, fill: mean });
            }
            ColumnKind::Categorical => {
                let mut categories = BTreeSet::new();
                for &row in &train_rows {
                    if let Raw::Text(s) = Raw::from_cell(&table.records[row][c]) {
                        categories.insert(s.to_owned());
                    }
                }
                columns.push(ColumnEncoding::Category {
                    name,
                    categories: categories.into_iter().collect(),
                });
            }
        }
    }
    let input = InputEncoding::Columns { columns };
    let width = input.width();
    let InputEncoding::Columns { columns } = &input else { unreachable!("built above") };

    let encode = |rows: &[usize], lenient: bool| -> Result<Vec<f32>> {
        let mut out = vec![0f32; rows.len() * width];
        for (i, &row) in rows.iter().enumerate() {
            let mut at = i * width;
            for (column, &c) in columns.iter().zip(&features) {
                let w = column.width();
                column
                    .encode(
                        Raw::from_cell(&table.records[row][c]),
                        impute,
                        lenient,
                        &mut out[at..at + w],
                    )
                    .map_err(|m| value_error(row, c, m))?;
                at += w;
            }
        }
        Ok(out)
    };
    let x_train = encode(&train_rows, false)?;
    let x_val = encode(&val_rows, true)?;
    let target = match target_encoding_labels {
        Some(labels) => TargetEncoding::Classes { name: target_name.to_owned(), labels },
        None => {
            let train_targets: Vec<f64> = train_rows.iter().map(|&r| targets[r]).collect();
            let (mean, std) = mean_std(&train_targets);
            TargetEncoding::Value { name: target_name.to_owned(), mean, std }
        }
    };
    let preprocessor = Preprocessor { task: spec.task, input, target, impute_missing: impute };
    let sample = [width as i64];
    let train = make_split(&preprocessor, x_train, &sample, &train_rows, &targets);
    let val = make_split(&preprocessor, x_val, &sample, &val_rows, &targets);
    Ok((preprocessor, train, val))
}

fn prepare_arrays(spec: &JobSpec, arrays: &Arrays) -> Result<(Preprocessor, Split, Split)> {
    let n = arrays.shape[0];
    let sample_shape: Vec<usize> = arrays.shape[1..].to_vec();
    let width: usize = sample_shape.iter().product();
    let (targets, labels) = match spec.task {
        Task::Classification => {
            if let Some(i) = arrays.y.iter().position(|v| v.fract() != 0.0) {
                return Err(MlError::Dataset(format!(
                    "`y[{i}]` is {}; classification labels must be integers",
                    arrays.y[i]
                )));
            }
            let distinct: BTreeSet<i64> = arrays.y.iter().map(|&v| v as i64).collect();
            if distinct.len() < 2 {
                return Err(MlError::Dataset("`y` has only one class".into()));
            }
            let index: BTreeMap<i64, usize> =
                distinct.iter().enumerate().map(|(i, &l)| (l, i)).collect();
            let targets = arrays.y.iter().map(|&v| index[&(v as i64)] as f64).collect();
            (targets, Some(distinct.iter().map(i64::to_string).collect::<Vec<_>>()))
        }
        Task::Regression => (arrays.y.clone(), None),
    };
    let (train_rows, val_rows) = split_rows(spec, &targets)?;

    // Per-feature ([F]) or per-channel ([C, H, W]) statistics over the training samples.
    let groups = sample_shape[0];
    let group_len = width / groups;
    let (shift, scale) = if spec.preprocessing.standardize {
        let mut sum = vec![0f64; groups];
        let mut sum_sq = vec![0f64; groups];
        for &row in &train_rows {
            for (i, &v) in arrays.x[row * width..(row + 1) * width].iter().enumerate() {
                let v = f64::from(v);
                sum[i / group_len] += v;
                sum_sq[i / group_len] += v * v;
            }
        }
        let count = (train_rows.len() * group_len) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| safe_std((sq / count - m * m).max(0.0).sqrt()))
            .collect();
        (mean, std)
    } else {
        (vec![0.0; groups], vec![1.0; groups])
    };
    let encode = |rows: &[usize]| {
        let mut out = Vec::with_capacity(rows.len() * width);
        for &row in rows {
            let start = out.len();
            out.extend_from_slice(&arrays.x[row * width..(row + 1) * width]);
            standardise(&mut out[start..], &sample_shape, &shift, &scale);
        }
        out
    };
    let (x_train, x_val) = (encode(&train_rows), encode(&val_rows));
    let target = match labels {
        Some(labels) => TargetEncoding::Classes { name: "y".into(), labels },
        None => {
            let train_targets: Vec<f64> = train_rows.iter().map(|&r| targets[r]).collect();
            let (mean, std) = mean_std(&train_targets);
            TargetEncoding::Value { name: "y".into(), mean, std }
        }
    };
    let input =
        InputEncoding::Tensor { field: "x".into(), shape: sample_shape.clone(), shift, scale };
    debug_assert_eq!(n, targets.len());
    let preprocessor = Preprocessor { task: spec.task, input, target, impute_missing: false };
    let sample: Vec<i64> = sample_shape.iter().map(|&d| d as i64).collect();
    let train = make_split(&preprocessor, x_train, &sample, &train_rows, &targets);
    let val = make_split(&preprocessor, x_val, &sample, &val_rows, &targets);
    Ok((preprocessor, train, val))
}

fn make_split(
    preprocessor: &Preprocessor,
    x: Vec<f32>,
    sample_shape: &[i64],
    rows: &[usize],
    targets: &[f64],
) -> Split {
    let mut shape = vec![rows.len() as i64];
    shape.extend_from_slice(sample_shape);
    let x = Tensor::from_slice(&x).reshape(&shape);
    let split_targets: Vec<f64> = rows.iter().map(|&r| targets[r]).collect();
    let y = match &preprocessor.target {
        TargetEncoding::Classes { .. } => {
            let classes: Vec<i64> = split_targets.iter().map(|&t| t as i64).collect();
            Tensor::from_slice(&classes)
        }
        TargetEncoding::Value { mean, std, .. } => {
            let scaled: Vec<f32> =
                split_targets.iter().map(|&t| ((t - mean) / std) as f32).collect();
            Tensor::from_slice(&scaled).to_kind(Kind::Float)
        }
    };
    Split { x, y, targets: split_targets }
}

/// Labels in a natural order: numerically when they are all numbers, else as text.
fn sort_labels(labels: BTreeSet<&str>) -> Vec<String> {
    let mut labels: Vec<String> = labels.into_iter().map(str::to_owned).collect();
    if labels.iter().all(|l| parse_number(l).is_some()) {
        labels.sort_by(|a, b| {
            parse_number(a).partial_cmp(&parse_number(b)).unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    labels
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, safe_std(var.sqrt()))
}

/// A constant feature has no spread; dividing by 1 leaves it at zero after centring.
fn safe_std(std: f64) -> f64 {
    if std.is_finite() && std > 1e-12 { std } else { 1.0 }
}

/// A seeded split of row indices into (train, validation); stratified by class for
/// classification, so every class with two or more rows appears on both sides.
fn split_rows(spec: &JobSpec, targets: &[f64]) -> Result<(Vec<usize>, Vec<usize>)> {
    let fraction = spec.hyperparameters.validation_split;
    let mut rng = SplitMix64::new(spec.hyperparameters.seed, &[stream::SPLIT]);
    let groups: Vec<Vec<usize>> = match spec.task {
        Task::Classification => {
            let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            for (row, &t) in targets.iter().enumerate() {
                by_class.entry(t as i64).or_default().push(row);
            }
            by_class.into_values().collect()
        }
        Task::Regression => vec![(0..targets.len()).collect()],
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut group in groups {
        rng.shuffle(&mut group);
        let mut take = (group.len() as f64 * fraction).round() as usize;
        if group.len() >= 2 {
            take = take.clamp(1, group.len() - 1);
        } else {
            take = 0;
        }
        val.extend_from_slice(&group[..take]);
        train.extend_from_slice(&group[take..]);
    }
    if train.is_empty() || val.is_empty() {
        return Err(MlError::Dataset(format!(
            "{} rows are too few to hold out a validation split of {fraction}",
            targets.len()
        )));
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

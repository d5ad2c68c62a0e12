//! Between OIP tensors and a model's rows, by the model's own schema (its bundle's fitted
//! preprocessing), so serving applies exactly what the native predict route applies.
//!
//! Inputs of a model trained on named fields (CSV columns), in either form:
//! - one numeric (or BYTES) tensor of shape `[N, F]`, the `F` features in the bundle's order,
//!   under any name (KServe's examples call it `input-0`);
//! - one tensor per feature, named after it, of shape `[N]` or `[N, 1]`: numeric for a number,
//!   BYTES (or numeric, read by its spelling) for a categorical feature.
//!
//! A model trained on arrays (NPZ) takes one numeric tensor `[N, ...sample shape]` (or
//! `[N, width]`). Each element goes through [`ColumnEncoding::encode_raw`], straight into the
//! feature matrix the engine runs: no per-row JSON object is built (only the rows the drift
//! sample keeps become instances).
//!
//! Outputs: `label` (BYTES `[N]`) and `probabilities` (FP32 `[N, classes]`, classes in the
//! model's label order) for a classifier; `value` (FP64 `[N]`) for a regressor.
//! `parameters.classification: k` on `probabilities` answers Triton's classification
//! extension instead: BYTES `[N, k]` of `score:index:label`, most likely first.

use std::sync::OnceLock;

use kiln_ml::{ColumnEncoding, ExtraFields, InputEncoding, Preprocessor, Raw, TargetEncoding};
use kiln_types::api::Prediction;
use serde::Serialize;
use serde_json::{Map, Value};

use super::codec::{DataType, Element, Output, OutputData, OutputRequest, Request};
use crate::error::ApiError;
use crate::predict::{MAX_PROBLEMS, Rows};

/// A classifier's outputs.
pub const LABEL: &str = "label";
pub const PROBABILITIES: &str = "probabilities";
/// A regressor's output.
pub const VALUE: &str = "value";

/// Which tensors carry a request's rows.
#[derive(Debug)]
enum Layout {
    /// One `[N, F]` tensor (index into the inputs).
    Matrix { input: usize, features: usize },
    /// One tensor per field, by field (`None`: not given; imputed).
    Fields { inputs: Vec<Option<usize>> },
    /// One array per row (a model of array inputs).
    Array { input: usize, width: usize },
}

/// An inference request's tensors as rows of a deployment's model.
#[derive(Debug)]
pub struct TensorRows<'r, 'a> {
    request: &'r Request<'a>,
    layout: OnceLock<Layout>,
}

impl<'r, 'a> TensorRows<'r, 'a> {
    pub fn new(request: &'r Request<'a>) -> Self {
        TensorRows { request, layout: OnceLock::new() }
    }
}

/// `a, b, c` (the first 20 names, then a count).
fn list(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut text =
        names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn bad(problems: Vec<String>) -> ApiError {
    ApiError::bad_request(problems.join("; "))
}

/// The outputs a model answers.
pub fn output_names(target: &TargetEncoding) -> &'static [&'static str] {
    match target {
        TargetEncoding::Classes { .. } => &[LABEL, PROBABILITIES],
        TargetEncoding::Value { .. } => &[VALUE],
    }
}

fn check_outputs(request: &Request<'_>, target: &TargetEncoding) -> Result<(), ApiError> {
    let names = output_names(target);
    let mut problems = Vec::new();
    for output in request.outputs.iter().flatten() {
        if !names.contains(&output.name.as_str()) {
            problems.push(format!(
                "unknown output `{}`: this model's outputs are {}",
                output.name,
                list(names)
            ));
        } else if output.classification > 0 && output.name != PROBABILITIES {
            problems.push(format!(
                "output `{}`: `classification` applies to output `{PROBABILITIES}` only",
                output.name
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(bad(problems)) }
}

impl TensorRows<'_, '_> {
    fn resolve(
        &self,
        preprocessing: &Preprocessor,
        extra: ExtraFields,
    ) -> Result<Layout, ApiError> {
        let inputs = &self.request.inputs;
        match &preprocessing.input {
            InputEncoding::Columns { columns } => {
                let names: Vec<&str> = columns.iter().map(ColumnEncoding::name).collect();
                let f = names.len();
                if inputs.len() == 1 && !names.contains(&inputs[0].name.as_str()) {
                    let t = &inputs[0];
                    if t.shape.len() == 2 && t.shape[1] == f {
                        return Ok(Layout::Matrix { input: 0, features: f });
                    }
                    return Err(ApiError::bad_request(format!(
                        "input `{}` of shape {} is neither a feature of this model nor an [N, {f}] matrix of its features; \
                         send one [N, {f}] tensor of the features in this order: {}, or one [N] tensor per feature named after it",
                        t.name,
                        t.shape_text(),
                        list(&names)
                    )));
                }
                let mut by_field = vec![None; f];
                let mut given = vec![false; f];
                let mut problems = Vec::new();
                for (k, t) in inputs.iter().enumerate() {
                    match names.iter().position(|n| *n == t.name) {
                        Some(j) => {
                            given[j] = true;
                            if t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1) {
                                by_field[j] = Some(k);
                            } else {
                                problems.push(format!(
                                    "input `{}` has shape {}; a feature's tensor has shape [N] or [N, 1]",
                                    t.name,
                                    t.shape_text()
                                ));
                            }
                        }
                        None if extra == ExtraFields::Ignore => {}
                        None => problems.push(format!(
                            "unknown input `{}`: this model's features are {}",
                            t.name,
                            list(&names)
                        )),
                    }
                }
                if !preprocessing.impute_missing {
                    let missing: Vec<&str> =
                        names.iter().zip(&given).filter(|(_, g)| !**g).map(|(n, _)| *n).collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "missing input for feature {} (send every feature, or train with \
                             \"preprocessing\": {{\"missing\": \"impute\"}} to fill missing ones)",
                            list(&missing)
                        ));
                    }
                }
                if problems.is_empty() {
                    Ok(Layout::Fields { inputs: by_field })
                } else {
                    Err(bad(problems))
                }
            }
            InputEncoding::Tensor { field, shape, .. } => {
                let width: usize = shape.iter().product();
                let wanted = format!(
                    "[N, {}]",
                    shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                );
                let [t] = inputs.as_slice() else {
                    return Err(ApiError::bad_request(format!(
                        "this model takes one input, `{field}` of shape {wanted}; the request has {}",
                        inputs.len()
                    )));
                };
                if t.datatype == DataType::Bytes {
                    return Err(ApiError::bad_request(format!(
                        "input `{}`: this model takes numbers, not BYTES",
                        t.name
                    )));
                }
                let sample = &t.shape[1..];
                if sample != shape.as_slice() && sample != [width] {
                    return Err(ApiError::bad_request(format!(
                        "input `{}` has shape {}; this model takes {wanted} (or [N, {width}])",
                        t.name,
                        t.shape_text()
                    )));
                }
                Ok(Layout::Array { input: 0, width })
            }
        }
    }

    /// Row `i`'s element of field `j`, `None` when the field is not given.
    #[inline]
    fn field(&self, layout: &Layout, i: usize, j: usize) -> Option<Element<'_>> {
        let inputs = &self.request.inputs;
        match layout {
            Layout::Matrix { input, features } => Some(inputs[*input].values.get(i * features + j)),
            Layout::Fields { inputs: by_field } => by_field[j].map(|k| inputs[k].values.get(i)),
            Layout::Array { .. } => None,
        }
    }
}

fn raw(element: Option<Element<'_>>) -> Result<Raw<'_>, String> {
    match element {
        None => Ok(Raw::Missing),
        Some(Element::Number(x)) => Ok(Raw::Number(x)),
        Some(Element::Text(s)) => Ok(Raw::from_cell(s)),
        Some(Element::Bool(b)) => Ok(Raw::Text(if b { "true" } else { "false" })),
        Some(Element::NotText) => Err("is not UTF-8 text".to_owned()),
    }
}

fn json_number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

impl Rows for TensorRows<'_, '_> {
    fn len(&self) -> usize {
        self.request.rows
    }

    fn count_error(&self, max: usize) -> ApiError {
        ApiError::bad_request(format!(
            "the batch (the inputs' first dimension) must hold 1 to {max} rows, got {}",
            self.request.rows
        ))
    }

    fn encode(
        &self,
        preprocessing: &Preprocessor,
        extra: ExtraFields,
    ) -> Result<Vec<f32>, ApiError> {
        check_outputs(self.request, &preprocessing.target)?;
        let layout = self.resolve(preprocessing, extra)?;
        let rows = self.request.rows;
        let width = preprocessing.input.width();
        let mut features = vec![0f32; rows * width];
        let mut problems = Vec::new();
        match (&preprocessing.input, &layout) {
            (InputEncoding::Columns { columns }, _) => {
                let impute = preprocessing.impute_missing;
                let mut offsets = Vec::with_capacity(columns.len());
                let mut at = 0;
                for column in columns {
                    offsets.push(at);
                    at += column.width();
                }
                for (i, row) in features.chunks_exact_mut(width.max(1)).enumerate() {
                    for (j, column) in columns.iter().enumerate() {
                        let out = &mut row[offsets[j]..offsets[j] + column.width()];
                        let encoded = raw(self.field(&layout, i, j))
                            .and_then(|raw| column.encode_raw(raw, impute, out));
                        if let Err(message) = encoded
                            && problems.len() < MAX_PROBLEMS
                        {
                            problems
                                .push(format!("row {i}, feature `{}`: {message}", column.name()));
                        }
                    }
                }
            }
            (InputEncoding::Tensor { .. }, Layout::Array { input, width }) => {
                let values = &self.request.inputs[*input].values;
                for (i, row) in features.chunks_exact_mut((*width).max(1)).enumerate() {
                    for (k, out) in row.iter_mut().enumerate() {
                        match values.get(i * width + k) {
                            Element::Number(x) if x.is_finite() => *out = x as f32,
                            Element::Bool(b) => *out = f32::from(u8::from(b)),
                            _ if problems.len() < MAX_PROBLEMS => {
                                problems.push(format!("row {i}, element {k}: not a finite number"));
                            }
                            _ => {}
                        }
                    }
                    preprocessing.input.standardise_sample(row);
                }
            }
            (InputEncoding::Tensor { .. }, _) => {
                unreachable!("array models resolve to Layout::Array")
            }
        }
        if !problems.is_empty() {
            return Err(bad(problems));
        }
        let _ = self.layout.set(layout);
        Ok(features)
    }

    fn instance(&self, preprocessing: &Preprocessor, index: usize) -> Map<String, Value> {
        let mut row = Map::new();
        let Some(layout) = self.layout.get() else { return row };
        match (&preprocessing.input, layout) {
            (_, Layout::Array { input, width }) => {
                let values = &self.request.inputs[*input].values;
                let array = (0..*width)
                    .map(|k| match values.get(index * width + k) {
                        Element::Number(x) => json_number(x),
                        Element::Bool(b) => json_number(f64::from(u8::from(b))),
                        _ => Value::Null,
                    })
                    .collect();
                let field = match &preprocessing.input {
                    InputEncoding::Tensor { field, .. } => field.clone(),
                    InputEncoding::Columns { .. } => self.request.inputs[*input].name.clone(),
                };
                row.insert(field, Value::Array(array));
            }
            (InputEncoding::Columns { columns }, _) => {
                for (j, column) in columns.iter().enumerate() {
                    let value = match self.field(layout, index, j) {
                        None | Some(Element::NotText) => continue,
                        Some(Element::Number(x)) => json_number(x),
                        Some(Element::Bool(b)) => Value::Bool(b),
                        Some(Element::Text(s)) => Value::String(s.to_owned()),
                    };
                    row.insert(column.name().to_owned(), value);
                }
            }
            (InputEncoding::Tensor { .. }, _) => {}
        }
        row
    }
}

/// The response's outputs for `predictions`, as the request asked for them.
pub fn outputs(
    request: &Request<'_>,
    target: &TargetEncoding,
    predictions: &[Prediction],
) -> Vec<Output> {
    let n = predictions.len();
    let wanted: Vec<(&str, Option<&OutputRequest>)> = match &request.outputs {
        Some(list) => list.iter().map(|o| (o.name.as_str(), Some(o))).collect(),
        None => output_names(target).iter().map(|name| (*name, None)).collect(),
    };
    let labels: &[String] = match target {
        TargetEncoding::Classes { labels, .. } => labels,
        TargetEncoding::Value { .. } => &[],
    };
    let mut outputs = Vec::with_capacity(wanted.len());
    for (name, asked) in wanted {
        let binary = request.binary(asked);
        let output = match name {
            LABEL => Output {
                name: LABEL,
                shape: vec![n],
                data: OutputData::Bytes(
                    predictions
                        .iter()
                        .map(|p| match p {
                            Prediction::Class { label, .. } => label.clone(),
                            Prediction::Value { .. } => String::new(),
                        })
                        .collect(),
                ),
                binary,
            },
            PROBABILITIES => {
                let rows = predictions.iter().map(|p| -> Vec<f32> {
                    match p {
                        Prediction::Class { probabilities, .. } => labels
                            .iter()
                            .map(|l| probabilities.get(l).copied().unwrap_or(0.0) as f32)
                            .collect(),
                        Prediction::Value { .. } => vec![f32::NAN; labels.len()],
                    }
                });
                match asked.map_or(0, |o| o.classification) {
                    0 => Output {
                        name: PROBABILITIES,
                        shape: vec![n, labels.len()],
                        data: OutputData::F32(rows.flatten().collect()),
                        binary,
                    },
                    k => {
                        let k = k.min(labels.len());
                        let mut top = Vec::with_capacity(n * k);
                        for row in rows {
                            let mut order: Vec<usize> = (0..row.len()).collect();
                            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                            top.extend(
                                order
                                    .into_iter()
                                    .take(k)
                                    .map(|c| format!("{}:{c}:{}", row[c], labels[c])),
                            );
                        }
                        Output {
                            name: PROBABILITIES,
                            shape: vec![n, k],
                            data: OutputData::Bytes(top),
                            binary,
                        }
                    }
                }
            }
            _ => Output {
                name: VALUE,
                shape: vec![n],
                data: OutputData::F64(
                    predictions
                        .iter()
                        .map(|p| match p {
                            Prediction::Value { value } => *value,
                            Prediction::Class { .. } => f64::NAN,
                        })
                        .collect(),
                ),
                binary,
            },
        };
        outputs.push(output);
    }
    outputs
}

/// A tensor in model metadata.
#[derive(Debug, Serialize, PartialEq)]
pub struct MetadataTensor {
    pub name: String,
    pub datatype: &'static str,
    /// `-1`: any size (the batch).
    pub shape: Vec<i64>,
    /// Kiln's additions: a categorical input's `categories`, `probabilities`' `classes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// The inputs and outputs a model's metadata lists.
pub fn metadata(preprocessing: &Preprocessor) -> (Vec<MetadataTensor>, Vec<MetadataTensor>) {
    let inputs = match &preprocessing.input {
        InputEncoding::Columns { columns } => columns
            .iter()
            .map(|c| match c {
                ColumnEncoding::Number { name, .. } => MetadataTensor {
                    name: name.clone(),
                    datatype: DataType::F32.name(),
                    shape: vec![-1],
                    parameters: None,
                },
                ColumnEncoding::Category { name, categories } => MetadataTensor {
                    name: name.clone(),
                    datatype: DataType::Bytes.name(),
                    shape: vec![-1],
                    parameters: Some(serde_json::json!({ "categories": categories })),
                },
            })
            .collect(),
        InputEncoding::Tensor { field, shape, .. } => vec![MetadataTensor {
            name: field.clone(),
            datatype: DataType::F32.name(),
            shape: std::iter::once(-1).chain(shape.iter().map(|&d| d as i64)).collect(),
            parameters: None,
        }],
    };
    let outputs = match &preprocessing.target {
        TargetEncoding::Classes { labels, .. } => vec![
            MetadataTensor {
                name: LABEL.to_owned(),
                datatype: DataType::Bytes.name(),
                shape: vec![-1],
                parameters: None,
            },
            MetadataTensor {
                name: PROBABILITIES.to_owned(),
                datatype: DataType::F32.name(),
                shape: vec![-1, labels.len() as i64],
                parameters: Some(serde_json::json!({ "classes": labels })),
            },
        ],
        TargetEncoding::Value { .. } => vec![MetadataTensor {
            name: VALUE.to_owned(),
            datatype: DataType::F64.name(),
            shape: vec![-1],
            parameters: None,
        }],
    };
    (inputs, outputs)
}

//! [`DatasetSchema`]: what an upload learned about its bytes, as the `datasets.schema`
//! column stores it and `GET /v1/datasets/{id}` shows it.
//!
//! kiln-ml infers it (one streaming pass at upload, or from a dataset in memory); the API
//! checks job specs against it ([`crate::JobSpec::check_against`]) and estimates a model's
//! memory from it. The JSON form is the one these schemas have always had:
//!
//! ```json
//! {"format": "csv", "rows": 150, "label_candidates": ["species"],
//!  "columns": [{"name": "sepal_length", "type": "number", "missing": 0, "distinct": 35,
//!               "label_candidate": true}, ...]}
//! {"format": "npz", "rows": 1797, "x": {"shape": [1797, 1, 8, 8]},
//!  "y": {"shape": [1797], "integer": true}}
//! {"format": "torchscript"}
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The schema of an uploaded dataset (or TorchScript module), tagged by its `format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum DatasetSchema {
    /// A CSV table with a header.
    Csv(CsvSchema),
    /// An NPZ archive with `x` and `y`.
    Npz(NpzSchema),
    /// A TorchScript module (`torch.jit.save`); it has no rows.
    #[serde(rename = "torchscript")]
    TorchScript,
}

/// A CSV table's columns, with their inferred types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CsvSchema {
    /// Data rows (the header not counted).
    pub rows: u64,
    pub columns: Vec<ColumnSchema>,
    /// The columns that look like classification labels, in column order.
    pub label_candidates: Vec<String>,
}

/// One CSV column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnSchema {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Empty cells.
    pub missing: u64,
    /// Distinct non-empty values; `null` when there are more than 100.
    pub distinct: Option<u64>,
    /// A category, or a number column of 2 to 100 distinct integers: a likely label.
    pub label_candidate: bool,
}

/// How a CSV column's values are read: at least half of its present cells are numbers, or
/// not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Number,
    Category,
}

impl ColumnType {
    pub const fn as_str(self) -> &'static str {
        match self {
            ColumnType::Number => "number",
            ColumnType::Category => "category",
        }
    }
}

/// An NPZ archive's arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NpzSchema {
    /// Samples (`x`'s first dimension).
    pub rows: u64,
    pub x: ArraySchema,
    pub y: LabelsSchema,
}

/// `x`: N×F or N×C×H×W.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArraySchema {
    /// N first.
    pub shape: Vec<u64>,
}

/// `y`: N labels or values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LabelsSchema {
    pub shape: Vec<u64>,
    /// True when its dtype is an integer or boolean type.
    pub integer: bool,
}

impl DatasetSchema {
    /// The format's name as the `datasets.format` column spells it.
    pub const fn format(&self) -> &'static str {
        match self {
            DatasetSchema::Csv(_) => "csv",
            DatasetSchema::Npz(_) => "npz",
            DatasetSchema::TorchScript => "torchscript",
        }
    }

    /// Rows (CSV) or samples (NPZ); `None` for a TorchScript module.
    pub fn rows(&self) -> Option<u64> {
        match self {
            DatasetSchema::Csv(csv) => Some(csv.rows),
            DatasetSchema::Npz(npz) => Some(npz.rows),
            DatasetSchema::TorchScript => None,
        }
    }
}

impl CsvSchema {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column names for messages: `a, b, c` (the first 20, then how many more).
    pub fn describe_columns(&self) -> String {
        const SHOWN: usize = 20;
        let mut text =
            self.columns.iter().take(SHOWN).map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        if self.columns.len() > SHOWN {
            text.push_str(&format!(" and {} more", self.columns.len() - SHOWN));
        }
        text
    }
}

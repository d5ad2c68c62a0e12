//! Raw datasets as uploaded: a CSV table with a header, or an NPZ archive with `x` and `y`.
//!
//! Reading checks the container (UTF-8, a header, equal-length rows; NPZ arrays of the right
//! ranks) and nothing else: what the columns mean depends on the job, so typing, encoding
//! and splitting happen in [`crate::prepare`]. Every dataset remembers the SHA-256 of the
//! bytes it came from, for model lineage.

use std::io::{Cursor, Read};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{MlError, Result};
use crate::npy;

/// The file formats kiln-ml reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    Csv,
    Npz,
}

impl DatasetFormat {
    /// NPZ files are zip archives (`PK\x03\x04`); everything else is read as CSV.
    pub fn sniff(bytes: &[u8]) -> DatasetFormat {
        if bytes.starts_with(b"PK\x03\x04") { DatasetFormat::Npz } else { DatasetFormat::Csv }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            DatasetFormat::Csv => "csv",
            DatasetFormat::Npz => "npz",
        }
    }
}

/// Most distinct values a column may have to be suggested as a classification target.
const LABEL_CANDIDATE_MAX_CLASSES: usize = 100;

/// A dataset as read from its bytes.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub(crate) data: Data,
    sha256: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Data {
    Table(Table),
    Arrays(Arrays),
}

/// A CSV file: its header and its records, as text.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) columns: Vec<String>,
    pub(crate) records: Vec<csv::StringRecord>,
}

impl Table {
    /// The 1-based line of a record, for error messages.
    pub(crate) fn line(&self, row: usize) -> u64 {
        self.records[row].position().map_or(row as u64 + 2, |p| p.line())
    }
}

/// An NPZ file: `x` (N×F or N×C×H×W) and `y` (N).
#[derive(Debug, Clone)]
pub(crate) struct Arrays {
    /// `x`, row-major.
    pub(crate) x: Vec<f32>,
    /// `x`'s shape, N first.
    pub(crate) shape: Vec<usize>,
    pub(crate) y: Vec<f64>,
    /// True when `y` holds integers (its dtype is an integer or boolean type).
    pub(crate) y_is_integer: bool,
}

impl Dataset {
    /// Reads `bytes` in the format they look like (see [`DatasetFormat::sniff`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Dataset> {
        match DatasetFormat::sniff(bytes) {
            DatasetFormat::Csv => Dataset::from_csv_bytes(bytes),
            DatasetFormat::Npz => Dataset::from_npz_bytes(bytes),
        }
    }

    /// Reads a file, sniffing its format.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Dataset> {
        Dataset::from_bytes(&std::fs::read(path)?)
    }

    /// A CSV file with a header line.
    pub fn from_csv_bytes(bytes: &[u8]) -> Result<Dataset> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| MlError::Dataset(format!("cannot read the CSV header: {e}")))?
            .iter()
            .map(|c| c.trim().to_owned())
            .collect();
        if columns.is_empty() || columns.iter().all(String::is_empty) {
            return Err(MlError::Dataset("the CSV file has no header line".into()));
        }
        for (i, name) in columns.iter().enumerate() {
            if name.is_empty() {
                return Err(MlError::Dataset(format!("CSV column {} has an empty name", i + 1)));
            }
            if columns[..i].contains(name) {
                return Err(MlError::Dataset(format!("CSV column `{name}` appears twice")));
            }
        }
        let mut records = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let record = record.map_err(|e| match e.kind() {
                csv::ErrorKind::UnequalLengths { pos, expected_len, len } => {
                    MlError::Dataset(format!(
                        "row {} (line {}) has {len} fields but the header has {expected_len}",
                        row + 1,
                        pos.as_ref().map_or(row as u64 + 2, |p| p.line()),
                    ))
                }
                csv::ErrorKind::Utf8 { .. } => {
                    MlError::Dataset(format!("row {} is not valid UTF-8", row + 1))
                }
                _ => MlError::Dataset(format!("row {}: {e}", row + 1)),
            })?;
            records.push(record);
        }
        if records.is_empty() {
            return Err(MlError::Dataset("the CSV file has a header but no rows".into()));
        }
        Ok(Dataset { data: Data::Table(Table { columns, records }), sha256: sha256_hex(bytes) })
    }

    /// An NPZ archive (`numpy.savez` or `savez_compressed`) holding `x` and `y`.
    pub fn from_npz_bytes(bytes: &[u8]) -> Result<Dataset> {
        let bad = |message: String| MlError::Dataset(message);
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("not an NPZ (zip) archive: {e}")))?;
        let mut read_array = |name: &str| -> Result<npy::Array> {
            let mut file = archive.by_name(&format!("{name}.npy")).map_err(|_| {
                bad(format!("the NPZ archive has no `{name}` array (it needs `x` and `y`)"))
            })?;
            let mut buf = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
            file.read_to_end(&mut buf)
                .map_err(|e| bad(format!("cannot decompress `{name}`: {e}")))?;
            npy::Array::parse(&buf).map_err(|e| bad(format!("array `{name}`: {e}")))
        };
        let x = read_array("x")?;
        let y = read_array("y")?;
        if !matches!(x.shape.len(), 2 | 4) {
            return Err(bad(format!("`x` must be N×F or N×C×H×W, but its shape is {:?}", x.shape)));
        }
        let n = x.shape[0];
        if n == 0 || x.shape.contains(&0) {
            return Err(bad(format!("`x` is empty (shape {:?})", x.shape)));
        }
        let y_len = match y.shape.as_slice() {
            [len] | [len, 1] => *len,
            other => return Err(bad(format!("`y` must be a vector of N labels, not {other:?}"))),
        };
        if y_len != n {
            return Err(bad(format!("`x` has {n} samples but `y` has {y_len} labels")));
        }
        if let Some(i) = x.values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "`x` holds a non-finite value in sample {}",
                i / (x.len() / n)
            )));
        }
        if let Some(i) = y.values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("`y` holds a non-finite value at index {i}")));
        }
        let arrays = Arrays {
            x: x.values.iter().map(|&v| v as f32).collect(),
            shape: x.shape,
            y: y.values,
            y_is_integer: y.is_integer,
        };
        Ok(Dataset { data: Data::Arrays(arrays), sha256: sha256_hex(bytes) })
    }

    pub fn format(&self) -> DatasetFormat {
        match self.data {
            Data::Table(_) => DatasetFormat::Csv,
            Data::Arrays(_) => DatasetFormat::Npz,
        }
    }

    /// SHA-256 of the bytes the dataset was read from, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The number of rows (samples).
    pub fn len(&self) -> usize {
        match &self.data {
            Data::Table(t) => t.records.len(),
            Data::Arrays(a) => a.shape[0],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A description of the columns (CSV: name and inferred type; NPZ: array shapes), as the
    /// API shows for an uploaded dataset.
    pub fn schema(&self) -> Value {
        match &self.data {
            Data::Table(t) => {
                let columns: Vec<Value> = (0..t.columns.len())
                    .map(|c| {
                        let kind = match crate::prepare::infer_column(t, c) {
                            crate::prepare::ColumnKind::Numeric => "number",
                            crate::prepare::ColumnKind::Categorical => "category",
                        };
                        // Distinct values (counted up to a cap): a category, or a number
                        // column with few distinct integers, is a likely label column.
                        let mut distinct = std::collections::HashSet::new();
                        let mut integers = true;
                        let mut missing = 0usize;
                        for record in &t.records {
                            let cell = record[c].trim();
                            if cell.is_empty() {
                                missing += 1;
                                continue;
                            }
                            integers &= cell.parse::<i64>().is_ok();
                            if distinct.len() <= LABEL_CANDIDATE_MAX_CLASSES {
                                distinct.insert(cell.to_owned());
                            }
                        }
                        let candidate = (2..=LABEL_CANDIDATE_MAX_CLASSES).contains(&distinct.len())
                            && (kind == "category" || integers);
                        json!({
                            "name": t.columns[c], "type": kind, "missing": missing,
                            "distinct": (distinct.len() <= LABEL_CANDIDATE_MAX_CLASSES).then_some(distinct.len()),
                            "label_candidate": candidate,
                        })
                    })
                    .collect();
                let candidates: Vec<&Value> = columns
                    .iter()
                    .filter(|c| c["label_candidate"] == true)
                    .map(|c| &c["name"])
                    .collect();
                json!({"format": "csv", "rows": t.records.len(), "columns": columns, "label_candidates": candidates})
            }
            Data::Arrays(a) => json!({
                "format": "npz", "rows": a.shape[0],
                "x": {"shape": a.shape}, "y": {"shape": [a.y.len()], "integer": a.y_is_integer},
            }),
        }
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

//! Raw datasets as uploaded: a CSV table with a header, or an NPZ archive with `x` and `y`.
//!
//! Reading checks the container (UTF-8, a header, equal-length rows; NPZ arrays of the right
//! ranks) and nothing else: what the columns mean depends on the job, so typing, encoding
//! and splitting happen in [`crate::prepare`]. Every dataset remembers the SHA-256 of the
//! bytes it came from, for model lineage.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use kiln_types::dataset::{
    ArraySchema, ColumnSchema, ColumnType, CsvSchema as CsvSchemaOut, DatasetSchema, LabelsSchema,
    NpzSchema,
};
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
        let columns = read_csv_header(&mut reader)?;
        let mut records = Vec::new();
        for (row, record) in reader.records().enumerate() {
            records.push(record.map_err(|e| csv_record_error(row, e))?);
        }
        if records.is_empty() {
            return Err(no_csv_rows());
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
        let first_non_finite = |values: &[f64]| values.iter().position(|v| !v.is_finite());
        check_npz(
            ArrayFacts {
                shape: &x.shape,
                count: x.len(),
                first_non_finite: first_non_finite(&x.values),
            },
            ArrayFacts {
                shape: &y.shape,
                count: y.len(),
                first_non_finite: first_non_finite(&y.values),
            },
        )?;
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
    /// API shows for an uploaded dataset. [`schema_of_file`] gives the same for a file
    /// without reading it into memory.
    pub fn schema(&self) -> DatasetSchema {
        match &self.data {
            Data::Table(t) => {
                let mut schema = CsvSchema::new(t.columns.clone());
                for record in &t.records {
                    schema.add(record);
                }
                schema.finish()
            }
            Data::Arrays(a) => npz_schema(&a.shape, a.y.len(), a.y_is_integer),
        }
    }
}

/// Reads the CSV header and checks its names (present, non-empty, distinct).
fn read_csv_header<R: Read>(reader: &mut csv::Reader<R>) -> Result<Vec<String>> {
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
    Ok(columns)
}

/// The error for the 0-based data `row` that could not be read.
fn csv_record_error(row: usize, e: csv::Error) -> MlError {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => MlError::Dataset(format!(
            "row {} (line {}) has {len} fields but the header has {expected_len}",
            row + 1,
            pos.as_ref().map_or(row as u64 + 2, |p| p.line()),
        )),
        csv::ErrorKind::Utf8 { .. } => {
            MlError::Dataset(format!("row {} is not valid UTF-8", row + 1))
        }
        _ => MlError::Dataset(format!("row {}: {e}", row + 1)),
    }
}

fn no_csv_rows() -> MlError {
    MlError::Dataset("the CSV file has a header but no rows".into())
}

/// What the NPZ checks need to know of one array.
struct ArrayFacts<'a> {
    shape: &'a [usize],
    count: usize,
    /// The index of the first NaN or infinity.
    first_non_finite: Option<usize>,
}

/// The checks of an NPZ's `x` and `y` beyond their own encoding, in the order reported.
fn check_npz(x: ArrayFacts<'_>, y: ArrayFacts<'_>) -> Result<()> {
    let bad = |message: String| MlError::Dataset(message);
    if !matches!(x.shape.len(), 2 | 4) {
        return Err(bad(format!("`x` must be N×F or N×C×H×W, but its shape is {:?}", x.shape)));
    }
    let n = x.shape[0];
    if n == 0 || x.shape.contains(&0) {
        return Err(bad(format!("`x` is empty (shape {:?})", x.shape)));
    }
    let y_len = match y.shape {
        [len] | [len, 1] => *len,
        other => return Err(bad(format!("`y` must be a vector of N labels, not {other:?}"))),
    };
    if y_len != n {
        return Err(bad(format!("`x` has {n} samples but `y` has {y_len} labels")));
    }
    if let Some(i) = x.first_non_finite {
        return Err(bad(format!("`x` holds a non-finite value in sample {}", i / (x.count / n))));
    }
    if let Some(i) = y.first_non_finite {
        return Err(bad(format!("`y` holds a non-finite value at index {i}")));
    }
    Ok(())
}

fn npz_schema(x_shape: &[usize], y_len: usize, y_is_integer: bool) -> DatasetSchema {
    DatasetSchema::Npz(NpzSchema {
        rows: x_shape[0] as u64,
        x: ArraySchema { shape: x_shape.iter().map(|&d| d as u64).collect() },
        y: LabelsSchema { shape: vec![y_len as u64], integer: y_is_integer },
    })
}

/// The schema of a dataset file and its format (sniffed), exactly as
/// [`Dataset::schema`] of the same bytes would give it, with the same errors for a malformed
/// file, but read in one streaming pass: memory stays bounded whatever the file's size (a
/// CSV record at a time and at most 101 distinct values per column, kept as 128-bit hashes;
/// an NPZ array is decompressed through a small buffer).
pub fn schema_of_file(path: impl AsRef<Path>) -> Result<(DatasetFormat, DatasetSchema)> {
    let mut file = std::fs::File::open(path)?;
    let mut head = Vec::with_capacity(4);
    (&mut file).take(4).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    let format = DatasetFormat::sniff(&head);
    let schema = match format {
        DatasetFormat::Csv => csv_schema_of(file)?,
        DatasetFormat::Npz => npz_schema_of(file)?,
    };
    Ok((format, schema))
}

fn csv_schema_of(file: std::fs::File) -> Result<DatasetSchema> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
    let mut schema = CsvSchema::new(read_csv_header(&mut reader)?);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => schema.add(&record),
            Ok(false) => break,
            Err(e) => return Err(csv_record_error(schema.rows, e)),
        }
    }
    if schema.rows == 0 {
        return Err(no_csv_rows());
    }
    Ok(schema.finish())
}

fn npz_schema_of(file: std::fs::File) -> Result<DatasetSchema> {
    let bad = |message: String| MlError::Dataset(message);
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not an NPZ (zip) archive: {e}")))?;
    let mut scan_array = |name: &str| -> Result<(npy::Header, Option<usize>)> {
        let mut file = archive.by_name(&format!("{name}.npy")).map_err(|_| {
            bad(format!("the NPZ archive has no `{name}` array (it needs `x` and `y`)"))
        })?;
        let mut first_non_finite = None;
        let header = npy::scan(&mut file, |i, v| {
            if first_non_finite.is_none() && !v.is_finite() {
                first_non_finite = Some(i);
            }
        })
        .map_err(|e| match e {
            npy::ScanError::Io(e) => bad(format!("cannot decompress `{name}`: {e}")),
            npy::ScanError::Format(e) => bad(format!("array `{name}`: {e}")),
        })?;
        Ok((header, first_non_finite))
    };
    let (x, x_non_finite) = scan_array("x")?;
    let (y, y_non_finite) = scan_array("y")?;
    check_npz(
        ArrayFacts { shape: &x.shape, count: x.count, first_non_finite: x_non_finite },
        ArrayFacts { shape: &y.shape, count: y.count, first_non_finite: y_non_finite },
    )?;
    Ok(npz_schema(&x.shape, y.count, y.is_integer))
}

/// Distinct values counted per column: up to one more than this, so "more than 100" is known.
const DISTINCT_TRACKED: usize = LABEL_CANDIDATE_MAX_CLASSES + 1;

/// A CSV schema built one record at a time, in memory bounded by the number of columns.
struct CsvSchema {
    columns: Vec<String>,
    stats: Vec<ColumnStats>,
    rows: usize,
}

#[derive(Default)]
struct ColumnStats {
    /// Cells that are not a missing-value token (see `prepare`), and how many are numbers:
    /// the column's type.
    present: usize,
    numbers: usize,
    /// Empty cells.
    missing: usize,
    /// True while every non-empty cell is an integer.
    not_integers: bool,
    /// Hashes of the distinct non-empty cells, up to [`DISTINCT_TRACKED`].
    distinct: HashSet<u128>,
}

/// A 128-bit hash of a cell, so a distinct value costs 16 bytes however long it is (two
/// different cells collide with a probability of about 2^-128).
fn cell_key(cell: &str) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        cell.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

impl CsvSchema {
    fn new(columns: Vec<String>) -> Self {
        let stats = columns.iter().map(|_| ColumnStats::default()).collect();
        CsvSchema { columns, stats, rows: 0 }
    }

    fn add(&mut self, record: &csv::StringRecord) {
        self.rows += 1;
        for (stats, cell) in self.stats.iter_mut().zip(record.iter()) {
            let cell = cell.trim();
            if !crate::prepare::is_missing_token(cell) {
                stats.present += 1;
                stats.numbers += usize::from(crate::prepare::parse_number(cell).is_some());
            }
            if cell.is_empty() {
                stats.missing += 1;
                continue;
            }
            if !stats.not_integers && cell.parse::<i64>().is_err() {
                stats.not_integers = true;
            }
            if stats.distinct.len() < DISTINCT_TRACKED {
                stats.distinct.insert(cell_key(cell));
            }
        }
    }

    fn finish(self) -> DatasetSchema {
        let columns: Vec<ColumnSchema> = self
            .columns
            .into_iter()
            .zip(&self.stats)
            .map(|(name, stats)| {
                let kind =
                    match crate::prepare::ColumnKind::from_counts(stats.present, stats.numbers) {
                        crate::prepare::ColumnKind::Numeric => ColumnType::Number,
                        crate::prepare::ColumnKind::Categorical => ColumnType::Category,
                    };
                // A category, or a number column with few distinct integers, is a likely
                // label column.
                let distinct = stats.distinct.len();
                let label_candidate = (2..=LABEL_CANDIDATE_MAX_CLASSES).contains(&distinct)
                    && (kind == ColumnType::Category || !stats.not_integers);
                ColumnSchema {
                    name,
                    kind,
                    missing: stats.missing as u64,
                    distinct: (distinct <= LABEL_CANDIDATE_MAX_CLASSES).then_some(distinct as u64),
                    label_candidate,
                }
            })
            .collect();
        let label_candidates =
            columns.iter().filter(|c| c.label_candidate).map(|c| c.name.clone()).collect();
        DatasetSchema::Csv(CsvSchemaOut { rows: self.rows as u64, columns, label_candidates })
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

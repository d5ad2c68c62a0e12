//! Offline scoring of a whole dataset (batch predictions): the input read row by row in
//! parts, each row encoded by the bundle's own preprocessing exactly as a predict instance
//! is, scored in large forward passes, and written as CSV.
//!
//! A row that cannot be encoded (a missing or unparsable value, an unknown category, a row
//! of the wrong length) is left out of the output and reported with its index and error;
//! it never fails the job. What does fail it is an input that does not fit the model at all
//! (a feature column missing from the header, a tensor model given a table), which
//! [`ScoringInput::open`] reports before any row is scored.
//!
//! Output columns: `row` (the 0-based input row, the header not counted), the id column
//! when there is one, then `label` and one `p_<label>` per class (classification) or
//! `value` (regression). Each part starts with that header line.

use std::io::Cursor;

use kiln_types::{BadRow, DatasetSchema};

use crate::bundle::{LoadedModel, ModelMeta, Prediction};
use crate::error::{MlError, Result};
use crate::npy;
use crate::prepare::{ColumnEncoding, InputEncoding, Raw, TargetEncoding};

/// Why a dataset (by its schema, before any byte is read) cannot be scored by a model:
/// `(field, message)` with `field` `dataset_id` or `id_column`, the API's 422 at
/// submission. [`ScoringInput::open`] makes the same checks on the bytes.
pub fn schema_problem(
    meta: &ModelMeta,
    schema: &DatasetSchema,
    id_column: Option<&str>,
) -> Option<(&'static str, String)> {
    match (&meta.preprocessing.input, schema) {
        (InputEncoding::Columns { columns }, DatasetSchema::Csv(csv)) => {
            let has = |name: &str| csv.columns.iter().any(|c| c.name == name);
            let missing: Vec<&str> =
                columns.iter().map(ColumnEncoding::name).filter(|n| !has(n)).collect();
            if !missing.is_empty() {
                return Some((
                    "dataset_id",
                    format!(
                        "the dataset lacks the model's feature column(s): {}",
                        missing.join(", ")
                    ),
                ));
            }
            match id_column {
                Some(name) if !has(name) => {
                    Some(("id_column", format!("the dataset has no column `{name}`")))
                }
                _ => None,
            }
        }
        (InputEncoding::Columns { .. }, _) => Some((
            "dataset_id",
            "this model takes named columns (it was trained on a CSV dataset): score a CSV file"
                .to_owned(),
        )),
        (InputEncoding::Tensor { shape, .. }, DatasetSchema::Npz(npz)) => {
            if id_column.is_some() {
                return Some(("id_column", "applies to CSV inputs only".to_owned()));
            }
            let sample: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            (npz.x.shape.len() < 2 || npz.x.shape[1..] != sample[..]).then(|| {
                (
                    "dataset_id",
                    format!(
                        "`x` has shape {:?}; this model takes samples of shape {:?}",
                        npz.x.shape, shape
                    ),
                )
            })
        }
        (InputEncoding::Tensor { .. }, _) => Some((
            "dataset_id",
            "this model takes arrays (it was trained on an NPZ dataset): score an NPZ archive \
             holding `x`"
                .to_owned(),
        )),
    }
}

/// Rows per forward pass while scoring.
const FORWARD_ROWS: usize = 4096;

/// A dataset opened for scoring by one model.
#[derive(Debug)]
pub struct ScoringInput {
    rows: u64,
    header: String,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Csv {
        bytes: Vec<u8>,
        /// The input column of each of the model's fields, in the model's order.
        field_columns: Vec<usize>,
        /// The input column copied to the output.
        id_column: Option<usize>,
        width: usize,
    },
    Npz {
        /// `x`, row-major, as read.
        x: Vec<f64>,
        width: usize,
    },
}

/// One scored part: CSV bytes with the header line, and the rows left out.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPart {
    pub csv: Vec<u8>,
    /// Input rows this part covers (bad ones included).
    pub rows: u64,
    /// Prediction lines written.
    pub predictions: u64,
    /// Every bad row of the part, in row order.
    pub bad: Vec<BadRow>,
}

impl ScoringInput {
    /// Opens `bytes` (CSV with a header, or an NPZ archive holding `x`) for scoring with a
    /// model. `id_column` names the CSV column copied to the output (by default `id`, when
    /// the header has it). Fails with a user error when the input cannot fit the model.
    pub fn open(meta: &ModelMeta, bytes: Vec<u8>, id_column: Option<&str>) -> Result<ScoringInput> {
        let prediction_columns = prediction_columns(meta);
        if bytes.starts_with(b"PK\x03\x04") {
            return open_npz(meta, &bytes, id_column, &prediction_columns);
        }
        let InputEncoding::Columns { columns } = &meta.preprocessing.input else {
            return Err(MlError::Dataset(
                "this model takes arrays (it was trained on an NPZ dataset): score an NPZ \
                 archive holding `x`"
                    .into(),
            ));
        };
        let mut reader = csv_reader(&bytes);
        let header = reader
            .headers()
            .map_err(|e| MlError::Dataset(format!("cannot read the CSV header: {e}")))?
            .clone();
        let position = |name: &str| header.iter().position(|h| h.trim() == name);
        let missing: Vec<&str> =
            columns.iter().map(ColumnEncoding::name).filter(|n| position(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(MlError::Dataset(format!(
                "the input lacks the model's feature column(s): {}",
                missing.join(", ")
            )));
        }
        let field_columns = columns.iter().map(|c| position(c.name()).expect("checked")).collect();
        let id = match id_column {
            Some(name) => Some((
                name,
                position(name).ok_or_else(|| {
                    MlError::Dataset(format!("the input has no id column `{name}`"))
                })?,
            )),
            None => position("id").map(|i| ("id", i)),
        };
        let mut out_header = vec!["row".to_owned()];
        if let Some((name, _)) = id {
            out_header.push(name.to_owned());
        }
        out_header.extend(prediction_columns);
        let mut rows = 0u64;
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => rows += 1,
                Ok(false) => break,
                // A malformed line still counts as a row (it is reported bad when scored).
                Err(e) if e.is_io_error() => {
                    return Err(MlError::Dataset(format!("cannot read the CSV: {e}")));
                }
                Err(_) => rows += 1,
            }
        }
        Ok(ScoringInput {
            rows,
            header: csv_line(&out_header),
            source: Source::Csv {
                bytes,
                field_columns,
                id_column: id.map(|(_, i)| i),
                width: meta.preprocessing.input.width(),
            },
        })
    }

    /// Input rows (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The output's header line, without its newline.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// A scorer positioned at input row `start` (a resumed attempt skips the rows the
    /// stored parts cover, once).
    pub fn from_row(&self, start: u64) -> PartScorer<'_> {
        let mut reader = match &self.source {
            Source::Csv { bytes, .. } => Some(csv_reader(bytes)),
            Source::Npz { .. } => None,
        };
        let mut row = 0u64;
        if let Some(reader) = &mut reader {
            let mut record = csv::ByteRecord::new();
            while row < start.min(self.rows) {
                match reader.read_byte_record(&mut record) {
                    Ok(true) | Err(_) => row += 1,
                    Ok(false) => break,
                }
            }
        } else {
            row = start.min(self.rows);
        }
        PartScorer { input: self, reader, row, record: csv::ByteRecord::new() }
    }
}

/// Scores an input part after part, in row order.
pub struct PartScorer<'a> {
    input: &'a ScoringInput,
    /// The CSV reader, positioned at `row` (`None` for NPZ).
    reader: Option<csv::Reader<Cursor<&'a [u8]>>>,
    row: u64,
    record: csv::ByteRecord,
}

impl std::fmt::Debug for PartScorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartScorer").field("row", &self.row).finish_non_exhaustive()
    }
}

impl PartScorer<'_> {
    /// The next input row to score.
    pub fn row(&self) -> u64 {
        self.row
    }

    /// Scores the next `count` input rows (fewer at the end) with `model`; `None` once
    /// every row is scored.
    pub fn next_part(&mut self, model: &LoadedModel, count: u64) -> Result<Option<ScoredPart>> {
        let start = self.row;
        let end = (start + count.max(1)).min(self.input.rows);
        if start >= end {
            return Ok(None);
        }
        let mut part = Part::new(&self.input.header);
        match &self.input.source {
            Source::Csv { field_columns, id_column, width, .. } => {
                let impute = model.meta().preprocessing.impute_missing;
                let InputEncoding::Columns { columns } = &model.meta().preprocessing.input else {
                    return Err(MlError::Inference("the model is not a column model".into()));
                };
                let reader = self.reader.as_mut().expect("a CSV input has a reader");
                let record = &mut self.record;
                let mut row_buf = vec![0f32; *width];
                let mut row = start;
                while row < end {
                    match reader.read_byte_record(record) {
                        Ok(false) => break,
                        Err(e) => part.bad(row, None, format!("unreadable CSV line: {e}")),
                        Ok(true) => {
                            match encode_record(
                                record,
                                columns,
                                field_columns,
                                impute,
                                &mut row_buf,
                            ) {
                                Ok(()) => {
                                    let id = id_column.map(|i| {
                                        String::from_utf8_lossy(record.get(i).unwrap_or_default())
                                            .trim()
                                            .to_owned()
                                    });
                                    part.push(row, id, &row_buf);
                                }
                                Err((field, error)) => part.bad(row, field, error),
                            }
                        }
                    }
                    row += 1;
                    if part.pending_rows() >= FORWARD_ROWS {
                        part.flush(model)?;
                    }
                }
            }
            Source::Npz { x, width } => {
                let encoding = &model.meta().preprocessing.input;
                let mut sample = vec![0f32; *width];
                for row in start..end {
                    let raw = &x[row as usize * width..(row as usize + 1) * width];
                    if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
                        part.bad(row, Some("x".into()), format!("element {i} is not finite"));
                        continue;
                    }
                    for (s, v) in sample.iter_mut().zip(raw) {
                        *s = *v as f32;
                    }
                    encoding.standardise_sample(&mut sample);
                    part.push(row, None, &sample);
                    if part.pending_rows() >= FORWARD_ROWS {
                        part.flush(model)?;
                    }
                }
            }
        }
        part.flush(model)?;
        self.row = end;
        Ok(Some(ScoredPart {
            rows: end - start,
            predictions: part.predictions,
            bad: part.bad_rows,
            csv: part.csv,
        }))
    }
}

fn csv_reader(bytes: &[u8]) -> csv::Reader<Cursor<&[u8]>> {
    csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(Cursor::new(bytes))
}

fn open_npz(
    meta: &ModelMeta,
    bytes: &[u8],
    id_column: Option<&str>,
    prediction_columns: &[String],
) -> Result<ScoringInput> {
    use std::io::Read as _;
    let InputEncoding::Tensor { shape, .. } = &meta.preprocessing.input else {
        return Err(MlError::Dataset(
            "this model takes named columns (it was trained on a CSV dataset): score a CSV file"
                .into(),
        ));
    };
    if id_column.is_some() {
        return Err(MlError::Dataset("`id_column` applies to CSV inputs only".into()));
    }
    let bad = |message: String| MlError::Dataset(message);
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad(format!("not an NPZ (zip) archive: {e}")))?;
    let mut file = archive
        .by_name("x.npy")
        .map_err(|_| bad("the NPZ archive has no `x` array to score".into()))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(|e| bad(format!("cannot decompress `x`: {e}")))?;
    let x = npy::Array::parse(&buf).map_err(|e| bad(format!("array `x`: {e}")))?;
    if x.shape.len() < 2 || x.shape[1..] != shape[..] {
        return Err(bad(format!(
            "`x` has shape {:?}; this model takes samples of shape {:?} (N × {})",
            x.shape,
            shape,
            shape.iter().map(usize::to_string).collect::<Vec<_>>().join(" × ")
        )));
    }
    let width = shape.iter().product();
    let mut header = vec!["row".to_owned()];
    header.extend(prediction_columns.iter().cloned());
    Ok(ScoringInput {
        rows: x.shape[0] as u64,
        header: csv_line(&header),
        source: Source::Npz { x: x.values, width },
    })
}

/// `label, p_<label>...` or `value`.
fn prediction_columns(meta: &ModelMeta) -> Vec<String> {
    match &meta.preprocessing.target {
        TargetEncoding::Classes { labels, .. } => std::iter::once("label".to_owned())
            .chain(labels.iter().map(|l| format!("p_{l}")))
            .collect(),
        TargetEncoding::Value { .. } => vec!["value".to_owned()],
    }
}

fn encode_record(
    record: &csv::ByteRecord,
    columns: &[ColumnEncoding],
    field_columns: &[usize],
    impute: bool,
    out: &mut [f32],
) -> std::result::Result<(), (Option<String>, String)> {
    let mut offset = 0;
    for (column, &at) in columns.iter().zip(field_columns) {
        let w = column.width();
        let cell = match record.get(at) {
            Some(bytes) => std::str::from_utf8(bytes).map_err(|_| {
                (Some(column.name().to_owned()), "the value is not UTF-8 text".to_owned())
            })?,
            None => {
                return Err((
                    None,
                    format!("the line has {} fields, fewer than the header", record.len()),
                ));
            }
        };
        column
            .encode_raw(Raw::from_cell(cell), impute, &mut out[offset..offset + w])
            .map_err(|e| (Some(column.name().to_owned()), e))?;
        offset += w;
    }
    Ok(())
}

/// One CSV line of plain fields (quoted where needed), without its newline.
fn csv_line(fields: &[String]) -> String {
    let mut writer =
        csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    writer.write_record(fields).expect("writing to memory");
    let mut bytes = writer.into_inner().expect("writing to memory");
    bytes.pop();
    String::from_utf8(bytes).expect("fields are text")
}

/// A part being written: rows encoded and waiting for a forward pass, then CSV lines.
struct Part {
    csv: Vec<u8>,
    features: Vec<f32>,
    pending: Vec<(u64, Option<String>)>,
    predictions: u64,
    bad_rows: Vec<BadRow>,
}

impl Part {
    fn new(header: &str) -> Part {
        let mut csv = Vec::with_capacity(1 << 20);
        csv.extend_from_slice(header.as_bytes());
        csv.push(b'\n');
        Part {
            csv,
            features: Vec::new(),
            pending: Vec::new(),
            predictions: 0,
            bad_rows: Vec::new(),
        }
    }

    fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    fn push(&mut self, row: u64, id: Option<String>, features: &[f32]) {
        self.features.extend_from_slice(features);
        self.pending.push((row, id));
    }

    fn bad(&mut self, row: u64, field: Option<String>, error: String) {
        self.bad_rows.push(BadRow { row, field, error });
    }

    fn flush(&mut self, model: &LoadedModel) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let predictions = model.predict_features(&self.features, self.pending.len())?;
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(&mut self.csv);
        let mut fields: Vec<String> = Vec::new();
        for ((row, id), prediction) in self.pending.drain(..).zip(predictions) {
            fields.clear();
            fields.push(row.to_string());
            if let Some(id) = id {
                fields.push(id);
            }
            match prediction {
                Prediction::Class { label, probabilities } => {
                    fields.push(label);
                    // In the model's label order (the header's), not the map's.
                    if let TargetEncoding::Classes { labels, .. } =
                        &model.meta().preprocessing.target
                    {
                        for l in labels {
                            let p = probabilities.get(l).copied().unwrap_or(f64::NAN);
                            // The network's output is f32: print it at that precision.
                            fields.push((p as f32).to_string());
                        }
                    }
                }
                Prediction::Value { value } => fields.push(value.to_string()),
            }
            writer
                .write_record(&fields)
                .map_err(|e| MlError::Inference(format!("writing the output: {e}")))?;
            self.predictions += 1;
        }
        writer.flush().map_err(|e| MlError::Inference(format!("writing the output: {e}")))?;
        drop(writer);
        self.features.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_quoted_only_where_needed() {
        assert_eq!(
            csv_line(&["row".into(), "p_a,b".into(), "label".into()]),
            "row,\"p_a,b\",label"
        );
    }

    #[test]
    fn a_short_line_names_its_length_and_a_bad_value_its_field() {
        let columns = vec![
            ColumnEncoding::Number { name: "a".into(), shift: 0.0, scale: 1.0, fill: 0.0 },
            ColumnEncoding::Category { name: "c".into(), categories: vec!["x".into(), "y".into()] },
        ];
        let mut out = vec![0f32; 3];
        let short = csv::ByteRecord::from(vec!["1"]);
        let (field, error) = encode_record(&short, &columns, &[0, 1], false, &mut out).unwrap_err();
        assert_eq!(field, None);
        assert!(error.contains("1 fields"), "{error}");
        let unknown = csv::ByteRecord::from(vec!["1", "z"]);
        let (field, error) =
            encode_record(&unknown, &columns, &[0, 1], false, &mut out).unwrap_err();
        assert_eq!(field.as_deref(), Some("c"));
        assert!(error.contains("unknown category `z`"), "{error}");
        let good = csv::ByteRecord::from(vec!["2.5", "y"]);
        encode_record(&good, &columns, &[0, 1], false, &mut out).unwrap();
        assert_eq!(out, [2.5, 0.0, 1.0]);
    }
}

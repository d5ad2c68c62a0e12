//! The container of checkpoints and model bundles: a zip archive of named files, stored
//! uncompressed (weights barely compress; the artifact store may compress the whole).
//! Any unzip tool can open one.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use zip::write::FileOptions;

use crate::error::{MlError, Result};

pub(crate) fn write(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = FileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(files.iter().any(|(_, b)| b.len() >= u32::MAX as usize / 2));
    for (name, bytes) in files {
        zip.start_file(*name, options).map_err(|e| MlError::corrupt("archive", e))?;
        zip.write_all(bytes)?;
    }
    let cursor = zip.finish().map_err(|e| MlError::corrupt("archive", e))?;
    Ok(cursor.into_inner())
}

pub(crate) fn read(bytes: &[u8], what: &'static str) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| MlError::corrupt(what, format!("not a zip archive: {e}")))?;
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| MlError::corrupt(what, e))?;
        let mut buf = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
        file.read_to_end(&mut buf).map_err(|e| MlError::corrupt(what, e))?;
        files.insert(file.name().to_owned(), buf);
    }
    Ok(files)
}

pub(crate) fn take(
    files: &mut BTreeMap<String, Vec<u8>>,
    name: &str,
    what: &'static str,
) -> Result<Vec<u8>> {
    files.remove(name).ok_or_else(|| MlError::corrupt(what, format!("`{name}` is missing")))
}

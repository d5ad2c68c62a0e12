//! A reader for NumPy's `.npy` format (versions 1–3), the members of an NPZ archive.
//!
//! Only what datasets need: little-endian (or byte-sized) booleans, integers and floats in C
//! order, read as `f64`. <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>

use std::io::Read;

/// Decodes one little-endian element.
type ReadFn = fn(&[u8]) -> f64;

/// A parsed array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Array {
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Vec<f64>,
    /// True for integer and boolean dtypes.
    pub(crate) is_integer: bool,
}

impl Array {
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Array, String> {
        let mut data = bytes;
        let header = Header::read(&mut data).map_err(ScanError::into_message)?;
        let needed = header.count * header.size;
        if data.len() < needed {
            return Err(truncated(data.len(), header.count));
        }
        let values = data[..needed].chunks_exact(header.size).map(header.read).collect();
        Ok(Array { shape: header.shape, values, is_integer: header.is_integer })
    }
}

/// An array's header: what its data holds.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) shape: Vec<usize>,
    /// The number of values (the product of `shape`).
    pub(crate) count: usize,
    /// True for integer and boolean dtypes.
    pub(crate) is_integer: bool,
    /// Bytes per value.
    size: usize,
    read: ReadFn,
}

/// Why an array could not be read: its reader failed, or it is not a valid array.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(std::io::Error),
    Format(String),
}

impl ScanError {
    fn into_message(self) -> String {
        match self {
            ScanError::Io(e) => e.to_string(),
            ScanError::Format(m) => m,
        }
    }
}

impl From<&str> for ScanError {
    fn from(message: &str) -> Self {
        ScanError::Format(message.to_owned())
    }
}

impl From<String> for ScanError {
    fn from(message: String) -> Self {
        ScanError::Format(message)
    }
}

fn truncated(available: usize, count: usize) -> String {
    format!("truncated data: {available} bytes for {count} values")
}

/// The longest header read: NumPy writes a few hundred bytes.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Reads exactly `buf.len()` bytes; an early end of the data is a truncated header.
fn read_header_bytes(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), ScanError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "truncated header".into(),
        _ => ScanError::Io(e),
    })
}

impl Header {
    /// Reads the magic string, the version and the header, leaving `reader` at the data.
    pub(crate) fn read(reader: &mut impl Read) -> Result<Header, ScanError> {
        let mut magic = Vec::with_capacity(6);
        reader.by_ref().take(6).read_to_end(&mut magic).map_err(ScanError::Io)?;
        if magic != b"\x93NUMPY" {
            return Err("not a .npy array (bad magic)".into());
        }
        let mut version = [0u8; 2];
        read_header_bytes(reader, &mut version)?;
        let header_len = match version[0] {
            1 => {
                let mut len = [0u8; 2];
                read_header_bytes(reader, &mut len)?;
                u64::from(u16::from_le_bytes(len))
            }
            2 | 3 => {
                let mut len = [0u8; 4];
                read_header_bytes(reader, &mut len)?;
                u64::from(u32::from_le_bytes(len))
            }
            v => return Err(format!("unsupported .npy version {v}").into()),
        };
        if header_len > MAX_HEADER_BYTES {
            return Err(format!("a header of {header_len} bytes is too long").into());
        }
        let mut header = Vec::new();
        reader.by_ref().take(header_len).read_to_end(&mut header).map_err(ScanError::Io)?;
        if header.len() as u64 != header_len {
            return Err("truncated header".into());
        }
        let header = std::str::from_utf8(&header).map_err(|_| "header is not text")?;

        let descr = dict_value(header, "descr").ok_or("header has no `descr`")?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let fortran = dict_value(header, "fortran_order").ok_or("header has no `fortran_order`")?;
        if fortran.starts_with("True") {
            return Err("Fortran-ordered arrays are not supported; save a C-ordered array".into());
        }
        let shape_text = dict_value(header, "shape").ok_or("header has no `shape`")?;
        let shape_text = shape_text
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or("malformed `shape`")?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| format!("malformed shape `{shape_text}`")))
            .collect::<Result<Vec<_>, _>>()?;
        let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or("too big")?;

        let (endian, code) = descr.split_at(descr.len().min(1));
        if endian == ">" {
            return Err(format!("big-endian dtype `{descr}` is not supported").into());
        }
        let (is_integer, size, read): (bool, usize, ReadFn) = match code {
            "b1" | "u1" => (true, 1, |b| f64::from(b[0])),
            "i1" => (true, 1, |b| f64::from(b[0] as i8)),
            "i2" => (true, 2, |b| f64::from(i16::from_le_bytes([b[0], b[1]]))),
            "u2" => (true, 2, |b| f64::from(u16::from_le_bytes([b[0], b[1]]))),
            "i4" => (true, 4, |b| f64::from(i32::from_le_bytes(b.try_into().unwrap_or([0; 4])))),
            "u4" => (true, 4, |b| f64::from(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))),
            "i8" => (true, 8, |b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64),
            "u8" => (true, 8, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64),
            "f4" => (false, 4, |b| f64::from(f32::from_le_bytes(b.try_into().unwrap_or([0; 4])))),
            "f8" => (false, 8, |b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
            _ => return Err(format!("unsupported dtype `{descr}`; use integers or floats").into()),
        };
        count.checked_mul(size).ok_or("too big")?;
        Ok(Header { shape, count, is_integer, size, read })
    }
}

/// Reads one array from `reader` to its end, handing `visit` each value with its index,
/// through a 64 KiB buffer: the same checks and messages as [`Array::parse`], in bounded
/// memory. Bytes past the last value are read and ignored (a zip member's checksum is
/// verified at its end).
pub(crate) fn scan(
    reader: &mut impl Read,
    mut visit: impl FnMut(usize, f64),
) -> Result<Header, ScanError> {
    let header = Header::read(reader)?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut filled, mut index, mut total) = (0usize, 0usize, 0usize);
    loop {
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ScanError::Io(e)),
        };
        total += n;
        filled += n;
        let whole = filled - filled % header.size;
        for chunk in buf[..whole].chunks_exact(header.size) {
            if index < header.count {
                visit(index, (header.read)(chunk));
                index += 1;
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
    }
    if index < header.count {
        return Err(truncated(total, header.count).into());
    }
    Ok(header)
}

/// The text after `'key':` in a Python dict literal, up to the end of the header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let after = &header[start + key.len() + 2..];
    let colon = after.find(':')?;
    let value = after[colon + 1..].trim_start();
    // The value ends at the next top-level comma; a shape tuple holds commas of its own.
    if value.starts_with('(') {
        return Some(&value[..=value.find(')')?]);
    }
    Some(value.split(',').next()?.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_floats_and_integers() {
        let data: Vec<u8> =
            [1.5f32, -2.0, 3.25, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = Array::parse(&npy("<f4", "(2, 2)", &data)).unwrap();
        assert_eq!(
            (a.shape.clone(), a.values.clone(), a.is_integer),
            (vec![2, 2], vec![1.5, -2.0, 3.25, 4.0], false)
        );
        let data: Vec<u8> = [7i64, -1, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = Array::parse(&npy("<i8", "(3,)", &data)).unwrap();
        assert_eq!((a.shape, a.values, a.is_integer), (vec![3], vec![7.0, -1.0, 0.0], true));
    }

    #[test]
    fn scanning_gives_the_values_parsing_gives() {
        let data: Vec<u8> = (0..50_000).flat_map(|v| f64::from(v).to_le_bytes()).collect();
        let bytes = npy("<f8", "(25000, 2)", &data);
        let parsed = Array::parse(&bytes).unwrap();
        // A reader that hands out 7 bytes at a time splits values across reads.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut values = Vec::new();
        let header = scan(&mut Dribble(&bytes), |i, v| {
            assert_eq!(i, values.len());
            values.push(v);
        })
        .unwrap();
        assert_eq!(
            (header.shape, header.count, header.is_integer),
            (vec![25000, 2], 50_000, false)
        );
        assert_eq!(values, parsed.values);
        let err = scan(&mut &bytes[..bytes.len() - 1], |_, _| {}).unwrap_err();
        assert_eq!(err.into_message(), Array::parse(&bytes[..bytes.len() - 1]).unwrap_err());
        for bad in [&b"hello"[..], &npy("<c16", "(1,)", &[0; 16]), &npy("<f8", "(2,)", &[0; 8])] {
            let streamed = scan(&mut &bad[..], |_, _| {}).unwrap_err().into_message();
            assert_eq!(streamed, Array::parse(bad).unwrap_err());
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(Array::parse(b"hello").unwrap_err().contains("magic"));
        assert!(Array::parse(&npy("<c16", "(1,)", &[0; 16])).unwrap_err().contains("dtype"));
        assert!(Array::parse(&npy(">f8", "(1,)", &[0; 8])).unwrap_err().contains("big-endian"));
        assert!(Array::parse(&npy("<f8", "(2,)", &[0; 8])).unwrap_err().contains("truncated"));
    }
}

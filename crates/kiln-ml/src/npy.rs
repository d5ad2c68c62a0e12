//! A reader for NumPy's `.npy` format (versions 1–3), the members of an NPZ archive.
//!
//! Only what datasets need: little-endian (or byte-sized) booleans, integers and floats in C
//! order, read as `f64`. <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>

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
        let rest = bytes.strip_prefix(b"\x93NUMPY").ok_or("not a .npy array (bad magic)")?;
        let (major, rest) = rest.split_first().ok_or("truncated header")?;
        let rest = rest.get(1..).ok_or("truncated header")?;
        let (header_len, rest) = match major {
            1 => {
                let len = rest.get(..2).ok_or("truncated header")?;
                (u16::from_le_bytes([len[0], len[1]]) as usize, &rest[2..])
            }
            2 | 3 => {
                let len = rest.get(..4).ok_or("truncated header")?;
                (u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize, &rest[4..])
            }
            v => return Err(format!("unsupported .npy version {v}")),
        };
        let header = rest.get(..header_len).ok_or("truncated header")?;
        let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
        let data = &rest[header_len..];

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
            return Err(format!("big-endian dtype `{descr}` is not supported"));
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
            _ => return Err(format!("unsupported dtype `{descr}`; use integers or floats")),
        };
        let needed = count.checked_mul(size).ok_or("too big")?;
        if data.len() < needed {
            return Err(format!("truncated data: {} bytes for {count} values", data.len()));
        }
        let values = data[..needed].chunks_exact(size).map(read).collect();
        Ok(Array { shape, values, is_integer })
    }
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
    fn refuses_what_it_cannot_read() {
        assert!(Array::parse(b"hello").unwrap_err().contains("magic"));
        assert!(Array::parse(&npy("<c16", "(1,)", &[0; 16])).unwrap_err().contains("dtype"));
        assert!(Array::parse(&npy(">f8", "(1,)", &[0; 8])).unwrap_err().contains("big-endian"));
        assert!(Array::parse(&npy("<f8", "(2,)", &[0; 8])).unwrap_err().contains("truncated"));
    }
}

//! A small reader of NumPy `.npy` files: format versions 1.0 and 2.0, little-endian,
//! C (row-major) order, element types float32 (`<f4`), int32 (`<i4`) and int64 (`<i8`).
//!
//! A `.npy` file is laid out as
//!
//! ```text
//! \x93NUMPY  major minor  header_len  header                          data
//! 6 bytes    1 + 1 byte   u16 (v1),   {'descr': '<f4',                numel × element size
//!                         u32 (v2)     'fortran_order': False,        bytes, row-major
//!                                      'shape': (3, 4), }  (padded)
//! ```
//!
//! The header is a Python dict literal; only its three keys matter. Every problem with a
//! file comes back as [`Error::Format`] naming the file and what is wrong: nothing here
//! panics on bad input.
//!
//! Why not the `npyz` crate (measured with 0.9.1, `default-features = false`, on 2 cores): it
//! reads every file of `tests/data`, but it brings 18 more crates (a Python-literal parser on
//! pest, num-bigint, and stacker/psm, which compile C), 28 s to build on their own and
//! 3 min 47 s added to `cargo test --release --test onnx_conformance`, since their features
//! unify with naga's and wgpu's dependencies and rebuild them; and it accepts trailing bytes
//! and format version 3 without a word, and words a truncated file as "failed to fill whole
//! buffer".

use std::path::Path;

use shadergrad::error::{Error, Result};

/// The first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The elements of an array, in their file type.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Data {
    /// The NumPy type string of the elements (`<f4`, `<i4`, `<i8`).
    pub fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "<f4",
            Data::I32(_) => "<i4",
            Data::I64(_) => "<i8",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Data::F32(values) => values.len(),
            Data::I32(values) => values.len(),
            Data::I64(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One array read from a `.npy` file. `shape` is empty for a 0-d scalar (one element).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Reads the `.npy` file at `path`.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// Parses the contents of a `.npy` file; `path` only names the file in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Array> {
    let bad = |message: String| Error::format(path, message);
    if !bytes.starts_with(MAGIC) {
        let start = &bytes[..bytes.len().min(MAGIC.len())];
        return Err(bad(format!(
            "bad magic \"{}\": a .npy file starts with \"{}\"",
            start.escape_ascii(),
            MAGIC.escape_ascii()
        )));
    }
    // Version 1 stores the header length in 2 bytes; version 2 (for headers over 64 KiB) in 4.
    let major = *bytes.get(6).ok_or_else(|| bad(truncated("version")))?;
    let length_bytes = match major {
        1 => 2,
        2 => 4,
        _ => {
            return Err(bad(format!(
                "format version {major}.x is not supported (only 1.0 and 2.0)"
            )))
        }
    };
    let header_start = 8 + length_bytes;
    let length_field = bytes
        .get(8..header_start)
        .ok_or_else(|| bad(truncated("header length")))?;
    // Little-endian: the last byte is the most significant.
    let header_len = length_field
        .iter()
        .rev()
        .fold(0usize, |n, &byte| (n << 8) | usize::from(byte));
    // Saturating, so that a huge length on a 32-bit target reads as truncated, not overflow.
    let header_end = header_start.saturating_add(header_len);
    let header_bytes = bytes.get(header_start..header_end).ok_or_else(|| {
        bad(format!(
            "truncated header: it should be {header_len} bytes, the file has {} after \
             the length field",
            bytes.len() - header_start
        ))
    })?;
    let header = std::str::from_utf8(header_bytes)
        .map_err(|_| bad("the header is not text (invalid UTF-8)".into()))?;
    let Header {
        dtype,
        fortran_order,
        shape,
    } = parse_header(header.trim_end()).map_err(bad)?;
    if fortran_order {
        return Err(bad(
            "the array is in Fortran (column-major) order; only C order is supported".into(),
        ));
    }
    let element_type = ElementType::from_descr(&dtype).ok_or_else(|| {
        bad(format!(
            "unsupported dtype {dtype:?}: expected '<f4', '<i4' or '<i8' \
             (little-endian float32, int32, int64)"
        ))
    })?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} has too many elements")))?;
    let expected_len = numel
        .checked_mul(element_type.size())
        .ok_or_else(|| bad(format!("shape {shape:?} has too many bytes")))?;
    let data = &bytes[header_end..];
    if data.len() != expected_len {
        let problem = if data.len() < expected_len {
            "truncated data"
        } else {
            "trailing bytes after the data"
        };
        return Err(bad(format!(
            "{problem}: shape {shape:?} of {dtype} needs {expected_len} bytes, the file has {} \
             after the header",
            data.len()
        )));
    }
    let data = match element_type {
        ElementType::F32 => Data::F32(decode(data, f32::from_le_bytes)),
        ElementType::I32 => Data::I32(decode(data, i32::from_le_bytes)),
        ElementType::I64 => Data::I64(decode(data, i64::from_le_bytes)),
    };
    Ok(Array { shape, data })
}

/// The element types this reader knows.
#[derive(Clone, Copy)]
enum ElementType {
    F32,
    I32,
    I64,
}

impl ElementType {
    fn from_descr(descr: &str) -> Option<Self> {
        match descr {
            "<f4" => Some(ElementType::F32),
            "<i4" => Some(ElementType::I32),
            "<i8" => Some(ElementType::I64),
            _ => None,
        }
    }

    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::I64 => 8,
        }
    }
}

/// Splits `bytes` (a multiple of N long) into N-byte elements decoded by `from_le_bytes`.
fn decode<const N: usize, T>(bytes: &[u8], from_le_bytes: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| from_le_bytes(chunk.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

fn truncated(what: &str) -> String {
    format!("truncated file: it ends before the {what}")
}

/// The three entries of a header dict.
struct Header {
    dtype: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses a header such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(header: &str) -> Result<Header, String> {
    let descr = value_of(header, "descr")?;
    let dtype = descr
        .strip_prefix('\'')
        .and_then(|rest| rest.split_once('\''))
        .map(|(dtype, _)| dtype.to_string())
        .ok_or_else(|| format!("'descr' is not a quoted type string in header {header:?}"))?;
    let order = value_of(header, "fortran_order")?;
    let fortran_order = if order.starts_with("False") {
        false
    } else if order.starts_with("True") {
        true
    } else {
        return Err(format!(
            "'fortran_order' is neither True nor False in header {header:?}"
        ));
    };
    let shape_text = value_of(header, "shape")?
        .strip_prefix('(')
        .and_then(|rest| rest.split_once(')'))
        .map(|(inside, _)| inside)
        .ok_or_else(|| format!("'shape' is not a tuple in header {header:?}"))?;
    // `(3, 4)`, `(5,)` and `()` (a 0-d scalar): the pieces between commas, empty ones dropped.
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            piece.parse::<usize>().map_err(|_| {
                format!("shape entry {piece:?} is not a dimension (in {shape_text:?})")
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    Ok(Header {
        dtype,
        fortran_order,
        shape,
    })
}

/// The text after `'key':` in the header, with leading spaces trimmed.
fn value_of<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let quoted = format!("'{key}':");
    header
        .find(&quoted)
        .map(|at| header[at + quoted.len()..].trim_start())
        .ok_or_else(|| format!("the header has no {key:?} entry: {header:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file of `version` with the header dict `dict` and raw `data`, padded as
    /// NumPy pads it (header ends in a newline at a multiple of 64 bytes).
    fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let length_bytes = if version == 1 { 2 } else { 4 };
        let unpadded = 8 + length_bytes + dict.len() + 1;
        let padding = unpadded.next_multiple_of(64) - unpadded;
        let header = format!("{dict}{}\n", " ".repeat(padding));
        let mut bytes = MAGIC.to_vec();
        bytes.extend([version, 0]);
        let len = header.len() as u32;
        bytes.extend(&len.to_le_bytes()[..length_bytes]);
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn parse_ok(bytes: &[u8]) -> Array {
        parse(bytes, Path::new("x.npy")).unwrap()
    }

    fn parse_err(bytes: &[u8]) -> String {
        let err = parse(bytes, Path::new("bad.npy")).unwrap_err().to_string();
        assert!(
            err.starts_with("bad.npy: "),
            "the error names the file: {err}"
        );
        err
    }

    #[test]
    fn reads_float32_version_1() {
        let values = [1.5, -2.0, f32::NEG_INFINITY, 0.25, 7.0, 8.0];
        let bytes = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &f32_bytes(&values),
        );
        let array = parse_ok(&bytes);
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(array.data, Data::F32(values.to_vec()));
    }

    #[test]
    fn reads_int64_version_2_and_int32() {
        let values: Vec<u8> = [-1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = npy_bytes(
            2,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
            &values,
        );
        assert_eq!(parse_ok(&bytes).data, Data::I64(vec![-1, 3]));

        let values: Vec<u8> = [5i32, -6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }",
            &values,
        );
        assert_eq!(parse_ok(&bytes).data, Data::I32(vec![5, -6]));
    }

    #[test]
    fn reads_a_0d_scalar_and_a_zero_length_dimension() {
        let scalar = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
            &f32_bytes(&[3.0]),
        );
        let array = parse_ok(&scalar);
        assert_eq!(array.shape, Vec::<usize>::new());
        assert_eq!(array.data, Data::F32(vec![3.0]));

        let empty = npy_bytes(
            1,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 0, 4), }",
            &[],
        );
        let array = parse_ok(&empty);
        assert_eq!(array.shape, vec![2, 0, 4]);
        assert!(array.data.is_empty());
    }

    #[test]
    fn rejects_a_bad_magic() {
        let mut bytes = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &f32_bytes(&[1.0]),
        );
        bytes[1] = b'X';
        assert!(parse_err(&bytes).contains("bad magic"));
        assert!(parse_err(b"").contains("bad magic"));
    }

    #[test]
    fn rejects_truncated_files() {
        let bytes = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &f32_bytes(&[1.0; 6]),
        );
        let err = parse_err(&bytes[..bytes.len() - 1]);
        assert!(
            err.contains("truncated data") && err.contains("24 bytes") && err.contains("23"),
            "{err}"
        );
        assert!(parse_err(&bytes[..40]).contains("truncated header"));
        assert!(parse_err(&bytes[..9]).contains("header length"));
        assert!(parse_err(&bytes[..6]).contains("version"));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let bytes = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &f32_bytes(&[1.0, 2.0]),
        );
        assert!(parse_err(&bytes).contains("trailing bytes"));
    }

    #[test]
    fn rejects_what_it_does_not_read() {
        let fortran = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
            &f32_bytes(&[1.0]),
        );
        assert!(parse_err(&fortran).contains("Fortran"));

        let float64 = npy_bytes(
            1,
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert!(parse_err(&float64).contains("unsupported dtype \"<f8\""));

        let big_endian = npy_bytes(
            1,
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(parse_err(&big_endian).contains("unsupported dtype \">f4\""));

        let mut version_3 = npy_bytes(
            2,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        version_3[6] = 3;
        assert!(parse_err(&version_3).contains("version 3.x"));
    }

    #[test]
    fn rejects_malformed_headers() {
        let no_shape = npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, }", &[]);
        assert!(parse_err(&no_shape).contains("no \"shape\" entry"));

        let negative = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            &[],
        );
        assert!(parse_err(&negative).contains("\"-1\""));

        let huge = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, \
             'shape': (18446744073709551615, 2), }",
            &[],
        );
        assert!(parse_err(&huge).contains("too many elements"));
    }
}

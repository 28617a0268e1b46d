//! Checkpoints: a model's tensors and its JSON config in one safetensors file.
//!
//! A checkpoint saved at `run/model.safetensors` is that one file, in the [safetensors]
//! format, which PyTorch's `safetensors` library reads (`safetensors.torch.load_file`):
//!
//! ```text
//! header length N   header: JSON, padded with spaces            data: each tensor's
//! u64 little-endian to a multiple of 8 bytes                    elements, little-endian,
//!                   {"__metadata__": {                          row-major, one tensor
//!                      "format": "pt",                          after the other
//!                      "shadergrad": "<the record, JSON text>",
//!                      "shadergrad_fnv1a64": "<16 hex digits>"},
//!                    "name": {"dtype": "F32", "shape": [2, 3],
//!                             "data_offsets": [begin, end]}, …}
//! ```
//!
//! `data_offsets` count bytes from the start of the data area. This writer lays the tensors
//! out sorted by name, with no gaps; element types are F32, I32, I64 and U32.
//!
//! The header's `__metadata__` holds only strings. `"format": "pt"` is what PyTorch's
//! loader expects. `shadergrad` is the record, JSON written as a string: the caller's own
//! config value (the architecture, the vocabulary, the training state to resume from) with
//! the format's name and version:
//!
//! ```json
//! {
//!   "config": {
//!     "architecture": {"hidden": 256, "kind": "gru-seq2seq"},
//!     "training": {"best_validation": 0.91, "epoch": 3, "optimizer": "adam",
//!                  "seed": 42, "step": 1200},
//!     "vocabulary": ["<pad>", "a", "b"]
//!   },
//!   "format": "shadergrad checkpoint",
//!   "version": 2
//! }
//! ```
//!
//! The `config` shown is only a suggestion: this module stores whatever value it is given
//! (object keys come back sorted, as `serde_json` keeps them).
//!
//! `shadergrad_fnv1a64` is the checksum: the 64-bit FNV-1a hash, in lowercase hex, of the
//! whole file as it is with these 16 digits written as `0`s. The writer fills them in last
//! (the same length, so nothing moves); the reader puts the zeros back to check. A changed
//! byte anywhere (tensor data, the tensor table, the record) is detected, which a checksum
//! of the data alone would miss. The checksum cannot sit inside the record it covers, so it
//! has a key of its own, found in the header's text exactly as this writer writes it.
//!
//! # On a crash
//!
//! [`save`] writes the whole file to a temporary file beside it, flushes that to disk and
//! renames it over the checkpoint ([`write_atomically`]): one rename, which the file system
//! makes entirely or not at all. A kill at any instant therefore leaves either the previous
//! complete checkpoint or the new one, never a mix. A killed save leaves its temporary file
//! (`.model.safetensors.PID-N.tmp`); the next save to the same name removes it.
//!
//! # The legacy two-file form
//!
//! Checkpoints of earlier versions are two files: the tensors in `model.safetensors`
//! (metadata `"format": "pt"` only) and `model.json` beside it, the record with version 1,
//! pretty-printed, tying itself to the tensors file by its size and checksum:
//!
//! ```json
//! {"config": {…}, "format": "shadergrad checkpoint", "version": 1,
//!  "tensors_bytes": 1264, "tensors_fnv1a64": "…16 hex digits of the whole file…"}
//! ```
//!
//! [`load`] reads that form when the header has no `shadergrad` record. [`save`] always
//! writes the single file, then removes such a `model.json` beside it (one that parses as a
//! shadergrad config, nothing else).
//!
//! [`load`] refuses F32 tensors that hold NaN or an infinity, naming the tensor and the
//! first bad element, and [`save`] refuses to write them: a diverged model never replaces a
//! good checkpoint. Every problem with a file comes back as an error naming the file and
//! what is wrong; nothing here panics on bad input.
//!
//! ```no_run
//! use std::path::Path;
//! use shadergrad::checkpoint::{self, NamedTensor};
//! use serde_json::json;
//!
//! let path = Path::new("model.safetensors");
//! let tensors = [NamedTensor::new("linear.weight", &[2, 2], vec![1.0f32, 0.0, 0.0, 1.0])];
//! checkpoint::save(path, &tensors, &json!({"training": {"epoch": 1}}))?;
//!
//! let mut loaded = checkpoint::load(path)?;
//! loaded.check_against(&[("linear.weight", &[2, 2])])?;
//! let weight = loaded.take("linear.weight")?.into_f32()?;
//! # Ok::<(), shadergrad::Error>(())
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::gpu::Gpu;
use crate::hash::fnv1a64_extend;
use crate::tensor::{numel, Indices, Tensor};

/// The hash whose 16 lowercase hex digits are a checkpoint's checksum.
pub use crate::hash::fnv1a64;

/// The `format` field of every checkpoint record, in either form.
pub const CONFIG_FORMAT: &str = "shadergrad checkpoint";

/// The version of the record that [`save`] writes into the file's metadata.
pub const CONFIG_VERSION: u64 = 2;

/// The version of the config file of the legacy two-file form, which [`load`] still reads.
pub const LEGACY_CONFIG_VERSION: u64 = 1;

/// The metadata key of the record (format, version, the caller's config).
pub const RECORD_KEY: &str = "shadergrad";

/// The metadata key of the checksum of the whole file.
pub const CHECKSUM_KEY: &str = "shadergrad_fnv1a64";

/// The checksum's 16 digits while the file is hashed.
const UNSEALED_CHECKSUM: &str = "0000000000000000";

/// The key of the safetensors header that holds string metadata instead of a tensor.
const METADATA_KEY: &str = "__metadata__";

/// The largest header this reader accepts, as the reference implementation does: a bound
/// on what a corrupt length field can make it parse.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The element types a checkpoint stores, named as safetensors names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit IEEE float: every [`Tensor`]'s type.
    F32,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer (PyTorch's usual type for ids and counters).
    I64,
    /// 32-bit unsigned integer: the type of [`Indices`].
    U32,
    /// 16-bit IEEE half float (PyTorch's `float16`): read, converted exactly to F32.
    F16,
    /// 16-bit brain float (PyTorch's `bfloat16`, an F32 with 16 mantissa bits dropped):
    /// read, converted exactly to F32.
    BF16,
}

impl Dtype {
    const ALL: [Dtype; 6] = [
        Dtype::F32,
        Dtype::I32,
        Dtype::I64,
        Dtype::U32,
        Dtype::F16,
        Dtype::BF16,
    ];

    /// The safetensors name: `F32`, `I32`, `I64`, `U32`, `F16`, `BF16`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::U32 => "U32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::I64 => 8,
        }
    }

    fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|dtype| dtype.name() == name)
    }
}

/// The elements of one tensor, row-major, in their stored type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 32-bit signed integers.
    I32(Vec<i32>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
    /// 32-bit unsigned integers.
    U32(Vec<u32>),
}

impl TensorData {
    /// The element type the data is stored as.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::I32(_) => Dtype::I32,
            TensorData::I64(_) => Dtype::I64,
            TensorData::U32(_) => Dtype::U32,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(values) => values.len(),
            TensorData::I32(values) => values.len(),
            TensorData::I64(values) => values.len(),
            TensorData::U32(values) => values.len(),
        }
    }

    /// Whether there are no elements (a shape with a 0 in it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the elements as little-endian bytes (whatever the host's byte order).
    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::F32(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            TensorData::I32(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            TensorData::I64(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            TensorData::U32(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        }
    }

    /// Reads little-endian elements of `dtype`; `bytes.len()` is a multiple of its size.
    /// Half floats (F16, BF16) become F32, which holds each of their values exactly.
    fn read_le(dtype: Dtype, bytes: &[u8]) -> TensorData {
        fn elements<const N: usize, T>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|chunk| from_le(chunk.try_into().expect("chunks_exact yields N bytes")))
                .collect()
        }
        match dtype {
            Dtype::F32 => TensorData::F32(elements(bytes, f32::from_le_bytes)),
            Dtype::I32 => TensorData::I32(elements(bytes, i32::from_le_bytes)),
            Dtype::I64 => TensorData::I64(elements(bytes, i64::from_le_bytes)),
            Dtype::U32 => TensorData::U32(elements(bytes, u32::from_le_bytes)),
            Dtype::F16 => TensorData::F32(
                elements(bytes, u16::from_le_bytes)
                    .into_iter()
                    .map(f16_to_f32)
                    .collect(),
            ),
            Dtype::BF16 => TensorData::F32(
                elements(bytes, u16::from_le_bytes)
                    .into_iter()
                    .map(|bits| f32::from_bits(u32::from(bits) << 16))
                    .collect(),
            ),
        }
    }
}

/// The F32 of an IEEE half float's bits: sign, 5 exponent bits (bias 15), 10 mantissa
/// bits; subnormals, infinities and NaN kept.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        // Subnormal: mantissa·2⁻²⁴, normal in F32.
        (0, _) => (mantissa as f32 * 2f32.powi(-24)).to_bits(),
        (0x1f, _) => 0x7f80_0000 | (mantissa << 13),
        _ => ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

impl From<Vec<f32>> for TensorData {
    fn from(values: Vec<f32>) -> Self {
        TensorData::F32(values)
    }
}

impl From<Vec<i32>> for TensorData {
    fn from(values: Vec<i32>) -> Self {
        TensorData::I32(values)
    }
}

impl From<Vec<i64>> for TensorData {
    fn from(values: Vec<i64>) -> Self {
        TensorData::I64(values)
    }
}

impl From<Vec<u32>> for TensorData {
    fn from(values: Vec<u32>) -> Self {
        TensorData::U32(values)
    }
}

/// One tensor of a checkpoint, on the host. `shape` is empty for a scalar (one element).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The tensor's key in the file, e.g. `encoder.embed.weight`; unique within a checkpoint.
    pub name: String,
    /// The size of each dimension, outermost first; its product is the number of elements.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: TensorData,
}

impl NamedTensor {
    /// A tensor of `shape` holding `data` (checked against the shape when saved).
    pub fn new(name: impl Into<String>, shape: &[usize], data: impl Into<TensorData>) -> Self {
        NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: data.into(),
        }
    }

    /// Downloads a GPU tensor (waits for the GPU work that produces it).
    pub fn download(name: impl Into<String>, tensor: &Tensor) -> Result<Self> {
        Ok(NamedTensor::new(name, tensor.shape(), tensor.to_vec()?))
    }

    /// Downloads GPU indices, stored as U32.
    pub fn download_indices(name: impl Into<String>, indices: &Indices) -> Result<Self> {
        Ok(NamedTensor::new(name, indices.shape(), indices.to_vec()?))
    }

    /// The element type the data is stored as.
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// The elements, if they are F32.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.data {
            TensorData::F32(values) => Ok(values),
            other => Err(self.wrong_dtype(Dtype::F32, other.dtype())),
        }
    }

    /// The elements, if they are F32.
    pub fn into_f32(self) -> Result<Vec<f32>> {
        match self.data {
            TensorData::F32(values) => Ok(values),
            ref other => Err(self.wrong_dtype(Dtype::F32, other.dtype())),
        }
    }

    /// The matrix transposed: `[rows, columns]` F32 data as `[columns, rows]` (a weight
    /// stored `[in, out]` in PyTorch's `[out, in]`); an error for any other tensor.
    pub fn transposed(&self) -> Result<NamedTensor> {
        let (&[rows, columns], TensorData::F32(values)) = (&self.shape[..], &self.data) else {
            return Err(Error::invalid(
                "checkpoint",
                format!(
                    "tensor {:?} is {} of shape {:?}: only an F32 matrix transposes",
                    self.name,
                    self.dtype().name(),
                    self.shape
                ),
            ));
        };
        let transposed: Vec<f32> = (0..rows * columns)
            .map(|i| values[(i % rows) * columns + i / rows])
            .collect();
        Ok(NamedTensor::new(
            self.name.clone(),
            &[columns, rows],
            transposed,
        ))
    }

    /// Uploads an F32 tensor to the GPU.
    pub fn upload(&self, gpu: &Gpu) -> Result<Tensor> {
        Tensor::from_slice(gpu, self.as_f32()?, &self.shape)
    }

    /// Uploads a U32 tensor to the GPU as indices.
    pub fn upload_indices(&self, gpu: &Gpu) -> Result<Indices> {
        match &self.data {
            TensorData::U32(values) => Indices::from_slice(gpu, values, &self.shape),
            other => Err(self.wrong_dtype(Dtype::U32, other.dtype())),
        }
    }

    fn wrong_dtype(&self, wanted: Dtype, found: Dtype) -> Error {
        Error::invalid(
            "checkpoint",
            format!(
                "tensor {:?} holds {} elements, expected {}",
                self.name,
                found.name(),
                wanted.name()
            ),
        )
    }
}

/// The contents of a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct Safetensors {
    /// Sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// The header's `__metadata__` (empty when it has none).
    pub metadata: BTreeMap<String, String>,
}

/// The safetensors bytes of `tensors` (laid out sorted by name) with `metadata`.
/// Errors if two tensors share a name, a name is `__metadata__`, or a tensor's data does
/// not fill its shape.
pub fn encode_safetensors(
    tensors: &[NamedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&NamedTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, tensor) in sorted.iter().enumerate() {
        if tensor.name == METADATA_KEY {
            return Err(Error::invalid(
                "checkpoint",
                format!("{METADATA_KEY:?} is reserved for metadata and cannot name a tensor"),
            ));
        }
        if i > 0 && sorted[i - 1].name == tensor.name {
            return Err(Error::invalid(
                "checkpoint",
                format!("two tensors are named {:?}", tensor.name),
            ));
        }
        let expected = numel(&tensor.shape)?;
        if tensor.data.len() != expected {
            return Err(Error::ShapeMismatch {
                op: "checkpoint",
                lhs: vec![tensor.data.len()],
                rhs: tensor.shape.clone(),
                expected: format!(
                    "tensor {:?} has {} values, its shape holds {expected}",
                    tensor.name,
                    tensor.data.len()
                ),
            });
        }
    }

    // The header is written by hand, not through a serde map, to keep the conventional
    // order of the reference writer: metadata first, then dtype, shape, data_offsets.
    let mut entries = Vec::with_capacity(sorted.len() + 1);
    if !metadata.is_empty() {
        let metadata: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
            .collect();
        entries.push(format!("\"{METADATA_KEY}\":{}", Value::Object(metadata)));
    }
    let mut offset = 0usize;
    for tensor in &sorted {
        let end = offset + tensor.data.len() * tensor.dtype().size();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            Value::from(tensor.name.as_str()),
            tensor.dtype().name(),
            Value::from(tensor.shape.clone()),
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    // Padding the header to a multiple of 8 puts the data area at an 8-byte boundary of
    // the file, so a reader that maps the file can view every tensor in place.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }

    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend((header.len() as u64).to_le_bytes());
    bytes.extend(header.as_bytes());
    for tensor in &sorted {
        tensor.data.write_le(&mut bytes);
    }
    Ok(bytes)
}

/// Parses the bytes of a safetensors file; `path` only names the file in errors.
///
/// Checks what the reference reader checks: the header length lies within the file, the
/// header is a JSON object, every dtype is known, each tensor's byte range matches its
/// shape, and the ranges tile the data area exactly (no overlap, no gap, nothing after).
pub fn decode_safetensors(bytes: &[u8], path: &Path) -> Result<Safetensors> {
    let bad = |message: String| Error::format(path, message);
    let Some((length_field, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(bad(format!(
            "the file is {} bytes long, too short for the 8-byte header length that starts \
             a safetensors file",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*length_field);
    if header_len > rest.len() as u64 {
        return Err(bad(format!(
            "the header length field says {header_len} bytes, beyond the end of the file \
             ({} bytes follow it): the file is truncated or not a safetensors file",
            rest.len()
        )));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the header length field says {header_len} bytes, more than the \
             {MAX_HEADER_BYTES} a safetensors header may have"
        )));
    }
    let (header, data) = rest.split_at(header_len as usize);
    let header: Value = serde_json::from_slice(header)
        .map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
    let Value::Object(entries) = header else {
        return Err(bad(format!(
            "the header is a JSON {}, expected an object of tensors",
            json_kind(&header)
        )));
    };

    let mut metadata = BTreeMap::new();
    let mut layout = Vec::new();
    for (name, entry) in &entries {
        if name == METADATA_KEY {
            metadata = parse_metadata(entry).map_err(bad)?;
        } else {
            let entry = parse_entry(name, entry, data.len())
                .map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
            layout.push(entry);
        }
    }

    let mut by_offset: Vec<&HeaderEntry> = layout.iter().collect();
    by_offset.sort_by_key(|entry| (entry.range.start, entry.range.end));
    let mut covered = 0..0;
    let mut previous_name = "";
    for HeaderEntry { name, range, .. } in by_offset {
        if range.start < covered.end {
            return Err(bad(format!(
                "tensor {name:?} (data bytes {range:?}) overlaps tensor {previous_name:?} \
                 (data bytes {covered:?})"
            )));
        }
        if range.start > covered.end {
            return Err(bad(format!(
                "data bytes {}..{} belong to no tensor",
                covered.end, range.start
            )));
        }
        covered = range.clone();
        previous_name = name;
    }
    if covered.end != data.len() {
        return Err(bad(format!(
            "the data area is {} bytes but the tensors end at byte {}: {} bytes belong to no \
             tensor",
            data.len(),
            covered.end,
            data.len() - covered.end
        )));
    }

    layout.sort_by(|a, b| a.name.cmp(&b.name));
    let tensors = layout
        .into_iter()
        .map(|entry| NamedTensor {
            name: entry.name,
            shape: entry.shape,
            data: TensorData::read_le(entry.dtype, &data[entry.range]),
        })
        .collect();
    Ok(Safetensors { tensors, metadata })
}

/// The `__metadata__` entry: an object of strings.
fn parse_metadata(entry: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Object(pairs) = entry else {
        return Err(format!(
            "{METADATA_KEY:?} is a JSON {}, expected an object of strings",
            json_kind(entry)
        ));
    };
    pairs
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            other => Err(format!(
                "{METADATA_KEY:?} key {key:?} holds a JSON {}, expected a string",
                json_kind(other)
            )),
        })
        .collect()
}

/// One tensor as the header describes it.
struct HeaderEntry {
    name: String,
    shape: Vec<usize>,
    dtype: Dtype,
    /// Its bytes within the data area.
    range: Range<usize>,
}

/// The header entry of the tensor `name`, in a file whose data area is `data_len` bytes.
fn parse_entry(
    name: &str,
    entry: &Value,
    data_len: usize,
) -> std::result::Result<HeaderEntry, String> {
    let field = |key: &str| {
        entry
            .get(key)
            .ok_or_else(|| format!("the entry has no {key:?} (it is {entry})"))
    };
    let dtype_name = field("dtype")?;
    let dtype = dtype_name
        .as_str()
        .and_then(Dtype::from_name)
        .ok_or_else(|| {
            let known: Vec<&str> = Dtype::ALL.iter().map(|dtype| dtype.name()).collect();
            format!(
                "dtype {dtype_name} is not one this reader knows ({})",
                known.join(", ")
            )
        })?;
    let shape = field("shape")?;
    let shape = usizes(shape)
        .ok_or_else(|| format!("shape {shape} is not a list of non-negative integers"))?;
    let offsets = field("data_offsets")?;
    let [start, end] = usizes(offsets)
        .and_then(|pair| <[usize; 2]>::try_from(pair).ok())
        .ok_or_else(|| format!("data_offsets {offsets} is not a pair of non-negative integers"))?;
    if start > end {
        return Err(format!(
            "data_offsets [{start}, {end}] end before they begin"
        ));
    }
    if end > data_len {
        return Err(format!(
            "data_offsets [{start}, {end}] reach beyond the data area, which is {data_len} \
             bytes: the file is truncated or the offsets are wrong"
        ));
    }
    let needed = numel(&shape)
        .ok()
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))?;
    if end - start != needed {
        return Err(format!(
            "shape {shape:?} of {} needs {needed} bytes, but data_offsets [{start}, {end}] \
             hold {}",
            dtype.name(),
            end - start
        ));
    }
    Ok(HeaderEntry {
        name: name.to_string(),
        shape,
        dtype,
        range: start..end,
    })
}

/// A JSON list of non-negative integers, as `usize`s.
fn usizes(value: &Value) -> Option<Vec<usize>> {
    value
        .as_array()?
        .iter()
        .map(|item| usize::try_from(item.as_u64()?).ok())
        .collect()
}

/// What kind of JSON value `value` is, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads a safetensors file on its own, such as one written by PyTorch (no config needed).
pub fn read_safetensors(path: &Path) -> Result<Safetensors> {
    decode_safetensors(&read_file(path)?, path)
}

/// Errors unless `path` ends in `.safetensors`, the name a checkpoint has.
fn check_extension(path: &Path) -> Result<()> {
    if path.extension().is_some_and(|ext| ext == "safetensors") {
        Ok(())
    } else {
        Err(Error::invalid(
            "checkpoint",
            format!(
                "{} does not end in .safetensors; a checkpoint is named like \
                 model.safetensors",
                path.display()
            ),
        ))
    }
}

/// The config file of a checkpoint of the legacy two-file form whose tensors file is
/// `tensors_path`: the same path with the extension `.json`. Errors unless `tensors_path`
/// ends in `.safetensors`.
pub fn config_path(tensors_path: &Path) -> Result<PathBuf> {
    check_extension(tensors_path)?;
    Ok(tensors_path.with_extension("json"))
}

/// `config` (a JSON object) with the entries of `extra` (another, or anything else: then
/// nothing) added at its top level: a command's own fields beside the model's.
pub fn with_extra(mut config: Value, extra: Value) -> Value {
    if let (Some(map), Value::Object(extra)) = (config.as_object_mut(), extra) {
        map.extend(extra);
    }
    config
}

/// Saves `tensors` with `config` as one file at `path` (which ends in `.safetensors`); see
/// the module documentation for the layout and what a crash leaves. Everything is checked
/// before the file is touched. Afterwards a config file of the legacy two-file form beside
/// it is removed, as it no longer describes the checkpoint.
pub fn save(path: &Path, tensors: &[NamedTensor], config: &Value) -> Result<()> {
    check_extension(path)?;
    if let Some(problem) = first_non_finite(tensors) {
        return Err(Error::invalid(
            "checkpoint",
            format!(
                "{problem}: a checkpoint holding it could not be loaded, so {} is left as it \
                 was",
                path.display()
            ),
        ));
    }
    let bytes = encode_checkpoint(tensors, config)?;
    write_atomically(path, &bytes)?;
    remove_legacy_config(path);
    Ok(())
}

/// The bytes of a checkpoint: the safetensors file of `tensors` with the record of
/// `config` and the checksum in its metadata.
fn encode_checkpoint(tensors: &[NamedTensor], config: &Value) -> Result<Vec<u8>> {
    let record = json!({
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "config": config,
    });
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (RECORD_KEY.to_string(), record.to_string()),
        (CHECKSUM_KEY.to_string(), UNSEALED_CHECKSUM.to_string()),
    ]);
    let mut bytes = encode_safetensors(tensors, &metadata)?;
    let digits = checksum_digits(&bytes).map_err(|message| {
        Error::invalid(
            "checkpoint",
            format!("the file just encoded cannot be sealed: {message}"),
        )
    })?;
    let checksum = format!("{:016x}", unsealed_checksum(&bytes, digits.clone()));
    bytes[digits].copy_from_slice(checksum.as_bytes());
    Ok(bytes)
}

/// Where the 16 digits of the checksum lie in the bytes of a checkpoint: after the one
/// `"shadergrad_fnv1a64":"` in the header's text. Every quote inside a JSON string is
/// escaped, so that text can only be the metadata key itself; two of them mean a header
/// this writer did not write.
fn checksum_digits(bytes: &[u8]) -> std::result::Result<Range<usize>, String> {
    let header_len = bytes
        .first_chunk::<8>()
        .map_or(0, |field| u64::from_le_bytes(*field));
    let header_end = usize::try_from(header_len)
        .ok()
        .and_then(|len| len.checked_add(8))
        .map_or(bytes.len(), |end| end.min(bytes.len()));
    let header = &bytes[..header_end];
    let key = format!("\"{CHECKSUM_KEY}\":\"");
    let found: Vec<usize> = header
        .windows(key.len())
        .enumerate()
        .filter(|(_, window)| *window == key.as_bytes())
        .map(|(start, _)| start + key.len())
        .collect();
    let [start] = found[..] else {
        return Err(format!(
            "the header's text holds {key} {} times, expected once, as this writer writes it",
            found.len()
        ));
    };
    let digits = start..start + UNSEALED_CHECKSUM.len();
    let is_hex_digit = |byte: &u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte);
    match (header.get(digits.clone()), header.get(digits.end)) {
        (Some(hex), Some(b'"')) if hex.iter().all(is_hex_digit) => Ok(digits),
        _ => Err(format!(
            "the checksum {CHECKSUM_KEY:?} is not 16 lowercase hex digits"
        )),
    }
}

/// The FNV-1a hash of `bytes` with the checksum's `digits` written as zeros, hashed in
/// place rather than on a copy of a file that may be large.
fn unsealed_checksum(bytes: &[u8], digits: Range<usize>) -> u64 {
    let hash = fnv1a64(&bytes[..digits.start]);
    let hash = fnv1a64_extend(hash, UNSEALED_CHECKSUM.as_bytes());
    fnv1a64_extend(hash, &bytes[digits.end..])
}

/// Removes `model.json` beside the checkpoint `path` just saved, if it is the config of the
/// legacy two-file form (another file of that name is left alone). Best effort: the new
/// checkpoint is complete without this, and `load` ignores the file once the record is in
/// the header.
fn remove_legacy_config(path: &Path) {
    let Ok(legacy) = config_path(path) else {
        return;
    };
    let Ok(text) = fs::read(&legacy) else {
        return;
    };
    let is_checkpoint_config = serde_json::from_slice::<Value>(&text)
        .is_ok_and(|record| record.get("format").and_then(Value::as_str) == Some(CONFIG_FORMAT));
    if is_checkpoint_config {
        let _ = fs::remove_file(&legacy);
    }
}

/// Downloads GPU tensors and saves them with `config`, as [`save`] does.
pub fn save_tensors(path: &Path, tensors: &[(&str, &Tensor)], config: &Value) -> Result<()> {
    let named = tensors
        .iter()
        .map(|&(name, tensor)| NamedTensor::download(name, tensor))
        .collect::<Result<Vec<_>>>()?;
    save(path, &named, config)
}

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The file it was loaded from (errors name it).
    pub path: PathBuf,
    /// Sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// The value given to [`save`] as `config`.
    pub config: Value,
}

/// Loads the checkpoint at `path` (ending in `.safetensors`): the single file [`save`]
/// writes, or the legacy two-file form with its config beside it. Checks the checksum and
/// refuses NaN or infinite F32 elements.
pub fn load(path: &Path) -> Result<Checkpoint> {
    check_extension(path)?;
    read_checkpoint(path, |bytes| load_legacy_config(path, bytes))
}

/// The checkpoint in the file at `path`: its config from the record in its metadata (the
/// checksum checked), or `without_record(bytes)` when it has none; NaN or infinite F32
/// elements are refused.
fn read_checkpoint(
    path: &Path,
    without_record: impl FnOnce(&[u8]) -> Result<Value>,
) -> Result<Checkpoint> {
    let bytes = read_file(path)?;
    let file = decode_safetensors(&bytes, path)?;
    let config = match file.metadata.get(RECORD_KEY) {
        Some(record) => {
            parse_record(record, &bytes).map_err(|message| Error::format(path, message))?
        }
        None => without_record(&bytes)?,
    };
    if let Some(problem) = first_non_finite(&file.tensors) {
        return Err(Error::format(path, problem));
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors: file.tensors,
        config,
    })
}

/// The tensors of any safetensors file as a [`Checkpoint`] to load parameters from: a
/// checkpoint of [`save`] (its checksum checked, its config kept) or a plain file such as
/// PyTorch's `safetensors.torch.save_file(model.state_dict(), path)` writes (no config:
/// `Value::Null`). F16 and BF16 tensors become F32; NaN or infinite F32 elements are
/// refused, as by [`load`]. Rename its tensors to the model's names with
/// [`Checkpoint::rename_tensors`].
pub fn load_weights(path: &Path) -> Result<Checkpoint> {
    read_checkpoint(path, |_| Ok(Value::Null))
}

/// The caller's value inside the record of a single-file checkpoint whose bytes are
/// `bytes`, once the checksum shows the file is as it was saved.
fn parse_record(record_text: &str, bytes: &[u8]) -> std::result::Result<Value, String> {
    let digits = checksum_digits(bytes)?;
    let recorded = String::from_utf8_lossy(&bytes[digits.clone()]);
    let actual = format!("{:016x}", unsealed_checksum(bytes, digits));
    if recorded != actual {
        return Err(format!(
            "the checksum does not match: the header records FNV-1a {recorded}, the file \
             hashes to {actual} (it was damaged or changed after it was saved)"
        ));
    }
    let record: Value = serde_json::from_str(record_text)
        .map_err(|e| format!("the {RECORD_KEY:?} record in the metadata is not valid JSON: {e}"))?;
    if record.get("format").and_then(Value::as_str) != Some(CONFIG_FORMAT) {
        return Err(format!(
            "the {RECORD_KEY:?} record in the metadata is not a checkpoint record: it needs \
             \"format\": {CONFIG_FORMAT:?}"
        ));
    }
    let version = record.get("version");
    if version.and_then(Value::as_u64) != Some(CONFIG_VERSION) {
        return Err(format!(
            "checkpoint version {} is not {CONFIG_VERSION}, the one this build reads",
            version.unwrap_or(&Value::Null)
        ));
    }
    record
        .get("config")
        .cloned()
        .ok_or_else(|| format!("the {RECORD_KEY:?} record has no \"config\" field"))
}

/// The caller's value in the config file beside `path`, a checkpoint of the legacy
/// two-file form whose tensors file holds `tensor_bytes`.
fn load_legacy_config(path: &Path, tensor_bytes: &[u8]) -> Result<Value> {
    let config_path = config_path(path)?;
    let config_text = match fs::read(&config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::format(
                path,
                format!(
                    "the header's metadata has no {RECORD_KEY:?} record, and there is no \
                     config file {} beside it as a checkpoint of the two-file form has: this \
                     is a plain safetensors file (load_weights and read_safetensors read \
                     it), not a checkpoint",
                    config_path.display()
                ),
            ))
        }
        Err(source) => {
            return Err(Error::Io {
                path: config_path,
                source,
            })
        }
    };
    parse_legacy_config(&config_text, tensor_bytes, path)
        .map_err(|message| Error::format(&config_path, message))
}

/// The caller's value inside a config file of the legacy two-file form, once the file is
/// known to describe `tensor_bytes` (the contents of `tensors_path`).
fn parse_legacy_config(
    text: &[u8],
    tensor_bytes: &[u8],
    tensors_path: &Path,
) -> std::result::Result<Value, String> {
    let record: Value =
        serde_json::from_slice(text).map_err(|e| format!("the config is not valid JSON: {e}"))?;
    if record.get("format").and_then(Value::as_str) != Some(CONFIG_FORMAT) {
        return Err(format!(
            "not a checkpoint config: it needs \"format\": {CONFIG_FORMAT:?}"
        ));
    }
    let version = record.get("version");
    if version.and_then(Value::as_u64) != Some(LEGACY_CONFIG_VERSION) {
        return Err(format!(
            "config version {} is not {LEGACY_CONFIG_VERSION}, the one a config file beside \
             its tensors file has",
            version.unwrap_or(&Value::Null)
        ));
    }
    let recorded_bytes = record.get("tensors_bytes").and_then(Value::as_u64);
    let recorded_hash = record.get("tensors_fnv1a64").and_then(Value::as_str);
    let actual_hash = format!("{:016x}", fnv1a64(tensor_bytes));
    if recorded_bytes != Some(tensor_bytes.len() as u64) || recorded_hash != Some(&actual_hash) {
        return Err(format!(
            "this config does not belong to {}: it records a tensors file of {} bytes with \
             FNV-1a {}, the file has {} bytes with FNV-1a {actual_hash} (one of the two was \
             replaced or damaged, or a save was interrupted between its two files)",
            tensors_path.display(),
            recorded_bytes.map_or("?".to_string(), |n| n.to_string()),
            recorded_hash.unwrap_or("?"),
            tensor_bytes.len()
        ));
    }
    record
        .get("config")
        .cloned()
        .ok_or_else(|| "the config has no \"config\" field".to_string())
}

/// The first NaN or infinite element of an F32 tensor among `tensors`, described with the
/// tensor's name and the element's index, or `None` if every element is finite.
fn first_non_finite(tensors: &[NamedTensor]) -> Option<String> {
    tensors.iter().find_map(|tensor| {
        let TensorData::F32(values) = &tensor.data else {
            return None;
        };
        let index = values.iter().position(|value| !value.is_finite())?;
        Some(format!(
            "tensor {:?} holds {} at index {index}",
            tensor.name, values[index]
        ))
    })
}

impl Checkpoint {
    /// Checks that the checkpoint holds exactly the tensors `expected` names, with these
    /// shapes (not their dtypes). The error names the first difference: the first expected
    /// tensor that is missing or of another shape (with both shapes), else the first
    /// checkpoint tensor that is not expected, and counts the others.
    pub fn check_against(&self, expected: &[(&str, &[usize])]) -> Result<()> {
        let mut differences = Vec::new();
        for &(name, shape) in expected {
            match self.tensors.iter().find(|tensor| tensor.name == name) {
                None => differences.push(format!(
                    "tensor {name:?} of shape {shape:?} is missing from the checkpoint"
                )),
                Some(tensor) if tensor.shape != shape => differences.push(format!(
                    "tensor {name:?} has shape {:?} in the checkpoint, expected {shape:?}",
                    tensor.shape
                )),
                Some(_) => {}
            }
        }
        let expected_names: BTreeSet<&str> = expected.iter().map(|&(name, _)| name).collect();
        for tensor in &self.tensors {
            if !expected_names.contains(tensor.name.as_str()) {
                differences.push(format!(
                    "tensor {:?} of shape {:?} is in the checkpoint but not expected",
                    tensor.name, tensor.shape
                ));
            }
        }
        let Some(first) = differences.first() else {
            return Ok(());
        };
        let others = match differences.len() - 1 {
            0 => String::new(),
            1 => " (and 1 other difference)".to_string(),
            n => format!(" (and {n} other differences)"),
        };
        Err(Error::format(
            &self.path,
            format!("{first}{others}: was it saved for another architecture?"),
        ))
    }

    /// Renames every tensor as `rename` says: `Some(new name)`, or `None` to drop it (a
    /// buffer such as `num_batches_tracked` the model has no parameter for). Errors, naming
    /// both tensors, when two would take the same name; the checkpoint is then unchanged.
    pub fn rename_tensors(&mut self, rename: impl Fn(&str) -> Option<String>) -> Result<()> {
        let mut renamed: Vec<(String, usize)> = self
            .tensors
            .iter()
            .enumerate()
            .filter_map(|(index, tensor)| rename(&tensor.name).map(|name| (name, index)))
            .collect();
        renamed.sort();
        if let Some(pair) = renamed.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(Error::invalid(
                "checkpoint",
                format!(
                    "tensors {:?} and {:?} would both be named {:?}",
                    self.tensors[pair[0].1].name, self.tensors[pair[1].1].name, pair[0].0
                ),
            ));
        }
        let mut tensors: Vec<Option<NamedTensor>> = std::mem::take(&mut self.tensors)
            .into_iter()
            .map(Some)
            .collect();
        self.tensors = renamed
            .into_iter()
            .filter_map(|(name, index)| {
                tensors[index]
                    .take()
                    .map(|tensor| NamedTensor { name, ..tensor })
            })
            .collect();
        Ok(())
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Result<&NamedTensor> {
        self.tensors
            .iter()
            .find(|tensor| tensor.name == name)
            .ok_or_else(|| self.no_such_tensor(name))
    }

    /// Removes the tensor named `name` and returns it, without copying its data.
    pub fn take(&mut self, name: &str) -> Result<NamedTensor> {
        match self.tensors.iter().position(|tensor| tensor.name == name) {
            Some(index) => Ok(self.tensors.remove(index)),
            None => Err(self.no_such_tensor(name)),
        }
    }

    /// Uploads the F32 tensor named `name` to the GPU.
    pub fn upload(&self, gpu: &Gpu, name: &str) -> Result<Tensor> {
        self.get(name)?.upload(gpu)
    }

    /// Uploads the U32 tensor named `name` to the GPU as indices.
    pub fn upload_indices(&self, gpu: &Gpu, name: &str) -> Result<Indices> {
        self.get(name)?.upload_indices(gpu)
    }

    fn no_such_tensor(&self, name: &str) -> Error {
        const LISTED: usize = 10;
        let names: Vec<&str> = self
            .tensors
            .iter()
            .take(LISTED)
            .map(|tensor| tensor.name.as_str())
            .collect();
        let more = self.tensors.len().saturating_sub(LISTED);
        let list = match (names.is_empty(), more) {
            (true, _) => "it holds no tensors".to_string(),
            (false, 0) => format!("it holds {}", names.join(", ")),
            (false, more) => format!("it holds {} and {more} more", names.join(", ")),
        };
        Error::format(
            &self.path,
            format!("no tensor {name:?} in the checkpoint; {list}"),
        )
    }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

//! Checkpoints: a model's tensors in a safetensors file, with a JSON config beside it.
//!
//! A checkpoint saved at `run/model.safetensors` is two files:
//!
//! - `run/model.safetensors`, the tensors in the [safetensors] format, which PyTorch's
//!   `safetensors` library reads (`safetensors.torch.load_file`):
//!
//!   ```text
//!   header length N   header: JSON, padded with spaces          data: each tensor's
//!   u64 little-endian to a multiple of 8 bytes                  elements, little-endian,
//!                     {"__metadata__": {"format": "pt"},        row-major, one tensor
//!                      "name": {"dtype": "F32", "shape": [2, 3], after the other
//!                               "data_offsets": [begin, end]}, …}
//!   ```
//!
//!   `data_offsets` count bytes from the start of the data area. This writer lays the
//!   tensors out sorted by name, with no gaps; element types are F32, I32, I64 and U32.
//!
//! - `run/model.json`, the config: the caller's own JSON value (the architecture, the
//!   vocabulary, the training state to resume from), wrapped with what ties it to the
//!   tensors file, which `load` checks:
//!
//!   ```json
//!   {
//!     "config": {
//!       "architecture": {"hidden": 256, "kind": "gru-seq2seq"},
//!       "training": {"best_validation": 0.91, "epoch": 3, "optimizer": "adam",
//!                    "seed": 42, "step": 1200},
//!       "vocabulary": ["<pad>", "a", "b"]
//!     },
//!     "format": "shadergrad checkpoint",
//!     "tensors_bytes": 1264,
//!     "tensors_fnv1a64": "…16 hex digits…",
//!     "version": 1
//!   }
//!   ```
//!
//!   The `config` shown is only a suggestion: this module stores whatever value it is
//!   given (object keys come back sorted, as `serde_json` keeps them).
//!
//! Each file is written atomically (a temporary file in the same folder, flushed to disk,
//! then renamed over the target), so neither is ever half-written. The tensors file is
//! written first and the config second. A crash between the two renames (or a failure to
//! write the config, such as a full disk) leaves the new tensors beside the old config;
//! the size and FNV-1a checksum the config records then no longer match, and `load` says
//! so rather than mixing two checkpoints.
//!
//! Every problem with a file comes back as [`Error::Format`] naming the file and what is
//! wrong; nothing here panics on bad input.
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
use crate::tensor::{numel, Indices, Tensor};

/// The `format` field of every checkpoint config.
pub const CONFIG_FORMAT: &str = "shadergrad checkpoint";

/// The version of the config layout; `load` refuses any other.
pub const CONFIG_VERSION: u64 = 1;

/// The key of the safetensors header that holds string metadata instead of a tensor.
const METADATA_KEY: &str = "__metadata__";

/// The largest header this reader accepts, as the reference implementation does: a bound
/// on what a corrupt length field can make it parse.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The element types a checkpoint stores, named as safetensors names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I32,
    I64,
    U32,
}

impl Dtype {
    const ALL: [Dtype; 4] = [Dtype::F32, Dtype::I32, Dtype::I64, Dtype::U32];

    /// The safetensors name: `F32`, `I32`, `I64`, `U32`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::U32 => "U32",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
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
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
}

impl TensorData {
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
        }
    }
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
    pub name: String,
    pub shape: Vec<usize>,
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

/// The 64-bit FNV-1a hash of `bytes`: the checksum that ties a config to its tensors file.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The config file of the checkpoint whose tensors file is `tensors_path`: the same path
/// with the extension `.json`. Errors unless `tensors_path` ends in `.safetensors`.
pub fn config_path(tensors_path: &Path) -> Result<PathBuf> {
    if tensors_path
        .extension()
        .is_some_and(|ext| ext == "safetensors")
    {
        Ok(tensors_path.with_extension("json"))
    } else {
        Err(Error::invalid(
            "checkpoint",
            format!(
                "{} does not end in .safetensors; a checkpoint is named like \
                 model.safetensors, and its config model.json is found by that name",
                tensors_path.display()
            ),
        ))
    }
}

/// `config` (a JSON object) with the entries of `extra` (another, or anything else: then
/// nothing) added at its top level: a command's own fields beside the model's.
pub fn with_extra(mut config: Value, extra: Value) -> Value {
    if let (Some(map), Value::Object(extra)) = (config.as_object_mut(), extra) {
        map.extend(extra);
    }
    config
}

/// Saves `tensors` at `path` (which ends in `.safetensors`) and `config` beside it in the
/// `.json` file of the same stem; see the module documentation for the layout and the
/// order of the writes. Everything is checked before either file is touched.
pub fn save(path: &Path, tensors: &[NamedTensor], config: &Value) -> Result<()> {
    let config_path = config_path(path)?;
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let tensor_bytes = encode_safetensors(tensors, &metadata)?;
    let record = json!({
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "tensors_bytes": tensor_bytes.len(),
        "tensors_fnv1a64": format!("{:016x}", fnv1a64(&tensor_bytes)),
        "config": config,
    });
    let config_text = format!("{record:#}\n");
    write_atomically(path, &tensor_bytes)?;
    write_atomically(&config_path, config_text.as_bytes())
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
    /// The tensors file it was loaded from (errors name it).
    pub path: PathBuf,
    /// Sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// The value given to [`save`] as `config`.
    pub config: Value,
}

/// Loads the checkpoint whose tensors file is `path` (ending in `.safetensors`) and whose
/// config is the `.json` file of the same stem, checking that the two belong together.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let config_path = config_path(path)?;
    let tensor_bytes = read_file(path)?;
    let tensors = decode_safetensors(&tensor_bytes, path)?.tensors;
    let config_text = match fs::read(&config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::format(
                &config_path,
                format!(
                    "the config file is missing: every checkpoint has one beside its tensors \
                     file {}",
                    path.display()
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
    let config = parse_config(&config_text, &tensor_bytes, path)
        .map_err(|message| Error::format(&config_path, message))?;
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        config,
    })
}

/// The caller's value inside a config file, once the file is known to describe
/// `tensor_bytes` (the contents of `tensors_path`).
fn parse_config(
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
    if version.and_then(Value::as_u64) != Some(CONFIG_VERSION) {
        return Err(format!(
            "config version {} is not {CONFIG_VERSION}, the one this build reads",
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

//! Checkpoints (`src/checkpoint.rs`): the safetensors writer against hand-written bytes,
//! the reader against a file written by Python's `safetensors`, round trips, atomic
//! writes, every kind of corrupt file, and the errors of a checkpoint saved for another
//! architecture.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use shadergrad::checkpoint::{
    self, config_path, decode_safetensors, fnv1a64, read_safetensors, save, save_tensors,
    Checkpoint, Dtype, NamedTensor, TensorData,
};
use shadergrad::{Error, Indices, Tensor};

/// A fresh folder under the system's temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let folder = std::env::temp_dir().join(format!(
            "shadergrad-checkpoint-{test}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        Scratch(folder)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the folder, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The message of an `Error::Format`, after checking that it names `path`.
fn format_message(result: Result<impl std::fmt::Debug, Error>, path: &Path) -> String {
    match result {
        Err(Error::Format {
            path: named,
            message,
        }) => {
            assert_eq!(named, path, "the error names another file: {message}");
            message
        }
        other => panic!(
            "expected a format error naming {}, got {other:?}",
            path.display()
        ),
    }
}

/// Asserts that `message` contains `needle`.
fn assert_says(message: &str, needle: &str) {
    assert!(
        message.contains(needle),
        "{message:?} does not say {needle:?}"
    );
}

/// Several tensors of every dtype, with a scalar, an empty tensor and awkward floats.
fn sample_tensors() -> Vec<NamedTensor> {
    vec![
        NamedTensor::new(
            "encoder.weight",
            &[2, 3],
            vec![
                1.5f32,
                -0.0,
                f32::MIN_POSITIVE / 8.0,
                f32::MAX,
                -f32::INFINITY,
                1e-7,
            ],
        ),
        NamedTensor::new("encoder.bias", &[3], vec![0.25f32, -0.5, 3.0]),
        NamedTensor::new("loss_scale", &[], vec![1024.0f32]),
        NamedTensor::new("unused", &[0, 4], Vec::<f32>::new()),
        NamedTensor::new("token_ids", &[2, 2], vec![0u32, 7, u32::MAX, 1 << 31]),
        NamedTensor::new("offsets", &[2], vec![i32::MIN, -1]),
        NamedTensor::new("optimizer.step", &[], vec![i64::MAX - 3]),
    ]
}

fn sample_config() -> Value {
    json!({
        "architecture": {"kind": "gru-seq2seq", "hidden": 3, "layers": 1},
        "vocabulary": ["<pad>", "a", "é", "\"quoted\""],
        "training": {"epoch": 4, "step": 1200, "optimizer": "adam", "seed": 42,
                     "best_validation": 0.875}
    })
}

/// The bit patterns of f32 tensors, so that -0.0 and 0.0 differ (and NaN would equal itself).
fn bits(tensor: &NamedTensor) -> Vec<u64> {
    match &tensor.data {
        TensorData::F32(values) => values.iter().map(|v| u64::from(v.to_bits())).collect(),
        TensorData::I32(values) => values.iter().map(|&v| v as u32 as u64).collect(),
        TensorData::I64(values) => values.iter().map(|&v| v as u64).collect(),
        TensorData::U32(values) => values.iter().map(|&v| u64::from(v)).collect(),
    }
}

#[test]
fn round_trip_keeps_every_tensor_and_the_config() {
    let scratch = Scratch::new("round-trip");
    let path = scratch.path("model.safetensors");
    let tensors = sample_tensors();
    save(&path, &tensors, &sample_config()).unwrap();

    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.config, sample_config());
    let mut expected = tensors.clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = loaded.tensors.iter().map(|t| t.name.as_str()).collect();
    let expected_names: Vec<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, expected_names, "tensors come back sorted by name");
    for (got, want) in loaded.tensors.iter().zip(&expected) {
        assert_eq!(got.shape, want.shape, "{}", want.name);
        assert_eq!(got.dtype(), want.dtype(), "{}", want.name);
        assert_eq!(bits(got), bits(want), "{}", want.name);
    }
    assert_eq!(scratch.listing(), ["model.json", "model.safetensors"]);
}

#[test]
fn a_small_file_has_exactly_the_safetensors_bytes() {
    let scratch = Scratch::new("exact-bytes");
    let path = scratch.path("tiny.safetensors");
    let tensors = [
        NamedTensor::new("weight", &[2], vec![1.0f32, -2.0]),
        NamedTensor::new("step", &[], vec![5i64]),
    ];
    save(&path, &tensors, &json!({"epoch": 1})).unwrap();

    // Written out by hand from the format description: the header is 146 bytes of JSON
    // plus 6 spaces of padding (152 = 0x98); the data area holds step (I64 5), then
    // weight (F32 1.0 = 0x3f800000, -2.0 = 0xc0000000), little-endian, sorted by name.
    let header = br#"{"__metadata__":{"format":"pt"},"step":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}      "#;
    let mut expected = vec![0x98, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(header);
    expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
    assert_eq!(header.len(), 152);
    let written = fs::read(&path).unwrap();
    assert_eq!(
        written,
        expected,
        "written:  {}\nexpected: {}",
        written.escape_ascii(),
        expected.escape_ascii()
    );

    // The config ties itself to those bytes: their length and their FNV-1a hash (computed
    // for this file by an independent Python implementation).
    let config: Value =
        serde_json::from_slice(&fs::read(config_path(&path).unwrap()).unwrap()).unwrap();
    assert_eq!(
        config,
        json!({
            "format": "shadergrad checkpoint",
            "version": 1,
            "tensors_bytes": 176,
            "tensors_fnv1a64": "c7b636a1a9c513ee",
            "config": {"epoch": 1}
        })
    );
}

#[test]
fn fnv1a64_matches_the_published_test_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
}

/// `tests/data/checkpoint/python_written.safetensors` was written by Python's
/// `safetensors` 0.8.0, which orders the data by alignment before name:
///
/// ```python
/// save_file({"weight": np.array([[1.5, -2.25, 0.0], [-0.0, 3.4028235e38, 1e-45]], np.float32),
///            "step": np.array(1234567890123, np.int64), "ids": np.array([-7, 2**31 - 1], np.int32),
///            "empty": np.zeros((0, 3), np.float32), "u": np.array([4000000000], np.uint32)},
///           path, metadata={"format": "pt", "note": "written by Python safetensors"})
/// ```
#[test]
fn a_file_written_by_python_safetensors_is_read() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/checkpoint/python_written.safetensors");
    let file = read_safetensors(&path).unwrap();
    assert_eq!(
        file.metadata,
        [("format", "pt"), ("note", "written by Python safetensors")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into()
    );
    let expected = [
        NamedTensor::new("empty", &[0, 3], Vec::<f32>::new()),
        NamedTensor::new("ids", &[2], vec![-7i32, i32::MAX]),
        NamedTensor::new("step", &[], vec![1_234_567_890_123i64]),
        NamedTensor::new("u", &[1], vec![4_000_000_000u32]),
        NamedTensor::new(
            "weight",
            &[2, 3],
            vec![1.5f32, -2.25, 0.0, -0.0, f32::MAX, f32::from_bits(1)],
        ),
    ];
    assert_eq!(file.tensors.len(), expected.len());
    for (got, want) in file.tensors.iter().zip(&expected) {
        assert_eq!((&got.name, &got.shape), (&want.name, &want.shape));
        assert_eq!(bits(got), bits(want), "{}", want.name);
    }
}

#[test]
fn a_path_without_the_safetensors_extension_is_refused() {
    let scratch = Scratch::new("extension");
    let path = scratch.path("model.bin");
    let error = save(&path, &sample_tensors(), &json!({})).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
    assert_says(&error.to_string(), ".safetensors");
    assert!(scratch.listing().is_empty());
    assert_eq!(
        config_path(Path::new("runs/best.safetensors")).unwrap(),
        Path::new("runs/best.json")
    );
}

#[test]
fn invalid_tensors_are_refused_before_anything_is_written() {
    let scratch = Scratch::new("invalid-input");
    let path = scratch.path("model.safetensors");
    save(&path, &sample_tensors(), &sample_config()).unwrap();
    let before = (
        fs::read(&path).unwrap(),
        fs::read(config_path(&path).unwrap()).unwrap(),
    );

    let duplicate = [
        NamedTensor::new("w", &[1], vec![1.0f32]),
        NamedTensor::new("w", &[1], vec![2.0f32]),
    ];
    let short = [NamedTensor::new("w", &[2, 2], vec![1.0f32, 2.0, 3.0])];
    let reserved = [NamedTensor::new("__metadata__", &[1], vec![1.0f32])];
    for (case, tensors, needle) in [
        ("duplicate", &duplicate[..], "two tensors are named \"w\""),
        ("short", &short[..], "3 values, its shape holds 4"),
        ("reserved", &reserved[..], "reserved"),
    ] {
        let error = save(&path, tensors, &json!({"new": true})).unwrap_err();
        assert_says(&error.to_string(), needle);
        let after = (
            fs::read(&path).unwrap(),
            fs::read(config_path(&path).unwrap()).unwrap(),
        );
        assert!(after == before, "{case}: the old checkpoint was changed");
    }
    assert_eq!(scratch.listing(), ["model.json", "model.safetensors"]);
}

#[test]
fn a_failed_write_leaves_the_target_untouched_and_no_temporary_file() {
    let scratch = Scratch::new("atomic");

    // Into a folder that does not exist: an I/O error naming the target, nothing created.
    let missing = scratch.path("no-such-folder/model.safetensors");
    match save(&missing, &sample_tensors(), &json!({})) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(scratch.listing().is_empty());

    // Over a target that cannot be replaced (a folder): the temporary file is fully
    // written, the rename fails, and the temporary file is removed again.
    let blocked = scratch.path("blocked.safetensors");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("inside"), b"kept").unwrap();
    assert!(save(&blocked, &sample_tensors(), &json!({})).is_err());
    assert_eq!(scratch.listing(), ["blocked.safetensors"]);
    assert_eq!(fs::read(blocked.join("inside")).unwrap(), b"kept");

    // Saving over an existing checkpoint replaces both files and leaves nothing else.
    let path = scratch.path("model.safetensors");
    save(&path, &sample_tensors(), &json!({"epoch": 1})).unwrap();
    let newer = [NamedTensor::new("w", &[1], vec![9.0f32])];
    save(&path, &newer, &json!({"epoch": 2})).unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.tensors, newer);
    assert_eq!(loaded.config, json!({"epoch": 2}));
    assert_eq!(
        scratch.listing(),
        ["blocked.safetensors", "model.json", "model.safetensors"]
    );
}

/// A valid checkpoint in `scratch`: its tensors file path and its bytes.
fn saved_checkpoint(scratch: &Scratch) -> (PathBuf, Vec<u8>) {
    let path = scratch.path("model.safetensors");
    save(&path, &sample_tensors(), &sample_config()).unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, bytes)
}

/// The header length of a safetensors file.
fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn a_truncated_file_is_a_format_error_at_every_length() {
    let scratch = Scratch::new("truncated");
    let (path, bytes) = saved_checkpoint(&scratch);
    let data_start = 8 + header_len(&bytes);
    for length in 0..bytes.len() {
        fs::write(&path, &bytes[..length]).unwrap();
        let message = format_message(checkpoint::load(&path), &path);
        let expected = if length < 8 {
            "too short for the 8-byte header length"
        } else if length < data_start {
            "beyond the end of the file"
        } else {
            "reach beyond the data area"
        };
        assert_says(&message, expected);
    }
}

#[test]
fn every_flipped_header_byte_is_caught() {
    let scratch = Scratch::new("flipped");
    let (path, bytes) = saved_checkpoint(&scratch);
    // Any change to the file also changes its checksum, so every flip must fail to load,
    // either while parsing or when the config's checksum is compared.
    for position in 0..8 + header_len(&bytes) {
        let mut corrupt = bytes.clone();
        corrupt[position] ^= 0x01;
        fs::write(&path, &corrupt).unwrap();
        match checkpoint::load(&path) {
            Err(Error::Format { .. }) => {}
            other => panic!("byte {position} flipped: expected a format error, got {other:?}"),
        }
    }
    // Flipping the top byte of the length field claims a header far beyond the file.
    let mut corrupt = bytes.clone();
    corrupt[7] = 0x80;
    fs::write(&path, &corrupt).unwrap();
    assert_says(
        &format_message(checkpoint::load(&path), &path),
        "beyond the end of the file",
    );
    // A flipped bit in the data area passes the parser and is caught by the checksum.
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x10;
    fs::write(&path, &corrupt).unwrap();
    let message = format_message(checkpoint::load(&path), &config_path(&path).unwrap());
    assert_says(&message, "does not belong to");
}

/// A safetensors file with this header (padded to 8 bytes) and `data_len` zero bytes.
fn file_with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut header = header.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

#[test]
fn every_malformed_header_is_named() {
    let path = Path::new("hand-made.safetensors");
    let cases: &[(&str, usize, &str)] = &[
        (r#"{"w":{"dtype":"F32","shape":[2],"#, 8, "not valid JSON"),
        (
            r#"[1, 2]"#,
            0,
            "a JSON array, expected an object of tensors",
        ),
        (
            r#"{"w":[0, 8]}"#,
            8,
            "tensor \"w\": the entry has no \"dtype\"",
        ),
        (
            r#"{"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#,
            8,
            "dtype \"F16\" is not one this reader knows (F32, I32, I64, U32)",
        ),
        (
            r#"{"w":{"dtype":7,"shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "dtype 7 is not one this reader knows",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            8,
            "shape [-2] is not a list of non-negative integers",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,
            8,
            "data_offsets [0] is not a pair",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
            "data_offsets [8, 0] end before they begin",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            8,
            "tensor \"w\": data_offsets [8, 16] reach beyond the data area, which is 8 bytes",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            "tensor \"w\": shape [3] of F32 needs 12 bytes, but data_offsets [0, 8] hold 8",
        ),
        (
            r#"{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "shape [2] of I64 needs 16 bytes",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
            8,
            "has too many elements",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "tensor \"b\" (data bytes 4..12) overlaps tensor \"a\" (data bytes 0..8)",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            12,
            "data bytes 4..8 belong to no tensor",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            12,
            "the data area is 12 bytes but the tensors end at byte 4",
        ),
        (
            r#"{"__metadata__":{"format":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            4,
            "\"__metadata__\" key \"format\" holds a JSON number, expected a string",
        ),
    ];
    for &(header, data_len, expected) in cases {
        let bytes = file_with_header(header, data_len);
        let message = format_message(decode_safetensors(&bytes, path), path);
        assert_says(&message, expected);
    }

    // The same structure, well-formed, is accepted: the cases above fail for their one flaw.
    let good = file_with_header(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"e":{"dtype":"U32","shape":[0],"data_offsets":[8,8]}}"#,
        8,
    );
    let file = decode_safetensors(&good, path).unwrap();
    assert_eq!(file.tensors.len(), 3);
    assert_eq!(file.tensors[2].dtype(), Dtype::U32);
}

#[test]
fn a_missing_or_foreign_config_is_a_format_error() {
    let scratch = Scratch::new("config");
    let (path, bytes) = saved_checkpoint(&scratch);
    let config = config_path(&path).unwrap();
    let good_config = fs::read(&config).unwrap();

    fs::remove_file(&config).unwrap();
    assert_says(
        &format_message(checkpoint::load(&path), &config),
        "the config file is missing",
    );

    for (text, expected) in [
        (&b"{\"format\": "[..], "the config is not valid JSON"),
        (&b"{\"format\": \"other\"}"[..], "not a checkpoint config"),
        (
            &b"{\"format\": \"shadergrad checkpoint\", \"version\": 2}"[..],
            "config version 2 is not 1",
        ),
    ] {
        fs::write(&config, text).unwrap();
        assert_says(&format_message(checkpoint::load(&path), &config), expected);
    }

    // The tensors of another save beside this config, as after a crash between the two
    // renames of a save: refused, with both sizes.
    let other = scratch.path("other.safetensors");
    save(
        &other,
        &[NamedTensor::new("w", &[1], vec![1.0f32])],
        &json!({}),
    )
    .unwrap();
    fs::write(&config, &good_config).unwrap();
    fs::copy(&other, &path).unwrap();
    let message = format_message(checkpoint::load(&path), &config);
    assert_says(&message, "does not belong to");
    assert_says(&message, &format!("tensors file of {} bytes", bytes.len()));

    // Put back together, it loads.
    fs::write(&path, &bytes).unwrap();
    assert_eq!(checkpoint::load(&path).unwrap().config, sample_config());
}

fn loaded_sample(scratch: &Scratch) -> Checkpoint {
    let (path, _) = saved_checkpoint(scratch);
    checkpoint::load(&path).unwrap()
}

#[test]
fn another_architecture_is_named_by_its_first_mismatching_tensor() {
    let scratch = Scratch::new("mismatch");
    let loaded = loaded_sample(&scratch);
    let matching: Vec<(&str, &[usize])> = loaded
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    loaded.check_against(&matching).unwrap();

    let mut other_shape = matching.clone();
    other_shape[1].1 = &[3, 2]; // encoder.weight, stored as [2, 3]
    other_shape[4].1 = &[7]; // a second difference, reported only as a count
    let message = format_message(loaded.check_against(&other_shape), &loaded.path);
    assert_says(
        &message,
        "tensor \"encoder.weight\" has shape [2, 3] in the checkpoint, expected [3, 2] (and 1 \
         other difference)",
    );

    let mut missing = matching.clone();
    missing.insert(0, ("decoder.weight", &[4, 4]));
    let message = format_message(loaded.check_against(&missing), &loaded.path);
    assert_says(
        &message,
        "tensor \"decoder.weight\" of shape [4, 4] is missing from the checkpoint: was it \
         saved for another architecture?",
    );

    let unexpected: Vec<(&str, &[usize])> = matching
        .iter()
        .copied()
        .filter(|(name, _)| *name != "loss_scale")
        .collect();
    let message = format_message(loaded.check_against(&unexpected), &loaded.path);
    assert_says(
        &message,
        "tensor \"loss_scale\" of shape [] is in the checkpoint but not expected",
    );
}

#[test]
fn taking_tensors_by_name() {
    let scratch = Scratch::new("take");
    let mut loaded = loaded_sample(&scratch);
    let bias = loaded.take("encoder.bias").unwrap();
    assert_eq!(bias.into_f32().unwrap(), [0.25, -0.5, 3.0]);
    let message = format_message(loaded.take("encoder.bias"), &loaded.path);
    assert_says(
        &message,
        "no tensor \"encoder.bias\" in the checkpoint; it holds encoder.weight, loss_scale",
    );

    let error = loaded.get("optimizer.step").unwrap().as_f32().unwrap_err();
    assert_says(
        &error.to_string(),
        "tensor \"optimizer.step\" holds I64 elements, expected F32",
    );
}

#[test]
fn gpu_tensors_round_trip() {
    let gpu = common::gpu();
    let scratch = Scratch::new("gpu");
    let path = scratch.path("model.safetensors");
    let weight = Tensor::from_slice(gpu, &[1.0, 2.0, -3.0, 4.5, 0.0, -0.0], &[3, 2]).unwrap();
    let computed = weight.relu().unwrap(); // a kernel output, not only an upload
    let scale = Tensor::scalar(gpu, 0.125).unwrap();
    save_tensors(
        &path,
        &[("weight", &weight), ("relu", &computed), ("scale", &scale)],
        &json!({"step": 3}),
    )
    .unwrap();

    let loaded = checkpoint::load(&path).unwrap();
    loaded
        .check_against(&[("weight", &[3, 2]), ("relu", &[3, 2]), ("scale", &[])])
        .unwrap();
    let relu = loaded.upload(gpu, "relu").unwrap();
    assert_eq!(relu.shape(), [3, 2]);
    assert_eq!(relu.to_vec().unwrap(), [1.0, 2.0, 0.0, 4.5, 0.0, 0.0]);
    let weight_back = loaded.upload(gpu, "weight").unwrap().to_vec().unwrap();
    let as_bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(as_bits(&weight_back), as_bits(&weight.to_vec().unwrap()));
    let scale_back = loaded.upload(gpu, "scale").unwrap();
    assert_eq!(
        (scale_back.shape(), scale_back.to_vec().unwrap()),
        (&[][..], vec![0.125])
    );

    // Indices travel as U32.
    let ids = Indices::from_slice(gpu, &[3, 0, 4_000_000_000], &[3]).unwrap();
    let indices_path = scratch.path("ids.safetensors");
    save(
        &indices_path,
        &[NamedTensor::download_indices("ids", &ids).unwrap()],
        &json!(null),
    )
    .unwrap();
    let loaded = checkpoint::load(&indices_path).unwrap();
    let ids_back = loaded.upload_indices(gpu, "ids").unwrap();
    assert_eq!(ids_back.to_vec().unwrap(), [3, 0, 4_000_000_000]);
    assert!(
        loaded.upload(gpu, "ids").is_err(),
        "U32 is not uploaded as f32"
    );
}

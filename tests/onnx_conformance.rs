//! ONNX conformance: every operator test case of `tests/data/onnx-node` (taken from the ONNX
//! project's node tests) run on the GPU and compared with ONNX's expected outputs by the
//! runner in `tests/conformance/`.
//!
//! `cargo test --release --test onnx_conformance -- --nocapture` prints the table.

mod conformance;

use std::path::{Path, PathBuf};

use conformance::{npy, Outcome};
use shadergrad::Gpu;

/// The ops the runner implements: every case of each must run and pass.
const IMPLEMENTED_OPS: [&str; 21] = [
    "MatMul",
    "Gemm",
    "Tanh",
    "Relu",
    "Sigmoid",
    "Add",
    "Mul",
    "Transpose",
    "ReduceSum",
    "ReduceMax",
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "SoftmaxCrossEntropyLoss",
    "Gather",
    "Conv",
    "MaxPool",
    "Attention",
    "RNN",
    "GRU",
    "LSTM",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-node")
}

/// The case folders, found independently of the runner.
fn case_folders() -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/onnx-node is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    folders
}

#[test]
fn onnx_node_cases() {
    let gpu = Gpu::default_adapter().expect("a GPU adapter (run scripts/setup-lavapipe.sh)");
    let report = conformance::run_dir(&gpu, &data_dir()).expect("every case is readable");
    println!("ONNX node cases on {gpu:?}:\n{}", report.summary());

    assert_eq!(
        report.cases.len(),
        case_folders().len(),
        "every case folder ran"
    );
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );

    let counts = report.counts_by_op();
    for op in IMPLEMENTED_OPS {
        let op_counts = counts.get(op).copied().unwrap_or_default();
        assert!(op_counts.pass > 0, "{op} has no passing case");
        assert_eq!(
            (op_counts.fail, op_counts.skip),
            (0, 0),
            "every {op} case must pass, none skipped"
        );
    }
}

/// The .npy reader takes every tensor of the data, including those of skipped cases:
/// float32, int32, int64, 0-d scalars and zero-length dimensions.
#[test]
fn every_npy_file_reads() {
    let mut files = 0;
    for folder in case_folders() {
        for entry in std::fs::read_dir(&folder).expect("a readable case folder") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|ext| ext == "npy") {
                npy::read(&path).unwrap_or_else(|e| panic!("{e}"));
                files += 1;
            }
        }
    }
    assert!(
        files > 0,
        "no .npy file found under {}",
        data_dir().display()
    );
}

/// Copies the case folder `name` into a scratch folder of this test binary, edits it with
/// `edit`, and runs it: the runner must notice what the edit broke.
fn run_edited_case(name: &str, edit: impl FnOnce(&Path)) -> Outcome {
    let case_dir = scratch_copy(name, name);
    edit(&case_dir);
    let gpu = Gpu::default_adapter().expect("a GPU adapter");
    conformance::run_case(&gpu, &case_dir).expect("the edited case is readable")
}

/// Copies the case folder `name` to the folder `copy` in a scratch folder of this test
/// binary, and returns its path.
fn scratch_copy(name: &str, copy: &str) -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnx-conformance");
    let case_dir = scratch.join(copy);
    std::fs::create_dir_all(&case_dir).expect("a scratch folder");
    for entry in std::fs::read_dir(data_dir().join(name)).expect("the case folder") {
        let from = entry.expect("a directory entry").path();
        std::fs::copy(&from, case_dir.join(from.file_name().unwrap())).expect("a copy");
    }
    case_dir
}

/// Replaces the first `from` in `case_dir/case.json` with `to`.
fn edit_case_json(case_dir: &Path, from: &str, to: &str) {
    let path = case_dir.join("case.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Replaces the last float32 of the .npy file `case_dir/file` with `value`.
fn overwrite_last_value(case_dir: &Path, file: &str, value: f32) {
    let path = case_dir.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn the_runner_catches_wrong_outputs_engine_errors_and_unknown_attributes() {
    // The last element of Relu's expected output (shape [3, 4, 5]) becomes 12345.
    let outcome = run_edited_case("test_relu", |dir| {
        overwrite_last_value(dir, "y.npy", 12345.0);
    });
    let Outcome::Fail(message) = outcome else {
        panic!("a wrong expected value must fail, got {outcome:?}");
    };
    assert!(
        message.starts_with("test_relu: y.npy: element 59 (index [2, 3, 4])")
            && message.contains("ONNX expects 12345"),
        "{message}"
    );

    // [2, 3, 4] @ [2, 3, 4]: the engine refuses, and the case fails with its error.
    let outcome = run_edited_case("test_matmul_3d", |dir| {
        edit_case_json(dir, "\"b.npy\"", "\"a.npy\"");
    });
    let Outcome::Fail(message) = outcome else {
        panic!("a product of mismatched shapes must fail, got {outcome:?}");
    };
    assert!(
        message.starts_with("test_matmul_3d: running MatMul failed"),
        "{message}"
    );

    // An attribute the runner does not know must not be ignored.
    let outcome = run_edited_case("test_gemm_alpha", |dir| {
        edit_case_json(dir, "\"alpha\": 0.5", "\"alpha\": 0.5, \"broadcast\": 1");
    });
    assert_eq!(
        outcome,
        Outcome::Skip(
            "Gemm (opset 13): attribute broadcast is not understood by the runner".into()
        )
    );
}

#[test]
fn the_runner_compares_every_listed_output() {
    // LayerNormalization lists Y, Mean and InvStdDev: a wrong value in the last one fails.
    let outcome = run_edited_case("test_layer_normalization_4d_axis1", |dir| {
        overwrite_last_value(dir, "InvStdDev.npy", 12345.0);
    });
    let Outcome::Fail(message) = outcome else {
        panic!("a wrong InvStdDev must fail, got {outcome:?}");
    };
    assert!(
        message.starts_with("test_layer_normalization_4d_axis1: InvStdDev.npy: element 1")
            && message.contains("ONNX expects 12345"),
        "{message}"
    );

    // An output beyond those the engine computes is a malformed case, not a pass.
    let case_dir = scratch_copy("test_relu", "test_relu_two_outputs");
    edit_case_json(&case_dir, "\"y.npy\"", "\"y.npy\", \"y.npy\"");
    let gpu = Gpu::default_adapter().expect("a GPU adapter");
    let err = conformance::run_case(&gpu, &case_dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Relu: the engine computes 1 of its outputs"),
        "{err}"
    );

    // A stash_type other than float32 is a mode the engine lacks: skipped, with the reason.
    let outcome = run_edited_case("test_layer_normalization_default_axis", |dir| {
        edit_case_json(
            dir,
            "\"attributes\": {}",
            "\"attributes\": {\"stash_type\": 11}",
        );
    });
    assert_eq!(
        outcome,
        Outcome::Skip(
            "LayerNormalization (opset 17): stash_type 11 is not supported: the engine keeps \
             the mean and variance in float32 (stash_type 1)"
                .into()
        )
    );
}

#[test]
fn every_output_of_a_case_is_compared() {
    // The last element of SoftmaxCrossEntropyLoss's second output, log_prob [3, 5].
    let outcome = run_edited_case("test_sce_mean_log_prob", |dir| {
        overwrite_last_value(dir, "log_prob.npy", 12345.0);
    });
    let Outcome::Fail(message) = outcome else {
        panic!("a wrong second output must fail, got {outcome:?}");
    };
    assert!(
        message.starts_with("test_sce_mean_log_prob: log_prob.npy: element 14 (index [2, 4])"),
        "{message}"
    );

    // An unknown reduction is the engine's error, not a silent default.
    let outcome = run_edited_case("test_sce_sum", |dir| {
        edit_case_json(dir, "\"reduction\": \"sum\"", "\"reduction\": \"max\"");
    });
    let Outcome::Fail(message) = outcome else {
        panic!("an unknown reduction must fail, got {outcome:?}");
    };
    assert!(
        message.contains("attribute reduction is \"max\", expected none, sum or mean"),
        "{message}"
    );
}

#[test]
fn softmax_before_opset_13_flattens_from_its_axis() {
    // Softmax-11 normalizes over every axis from `axis` on. With axis 2 of a rank-3 input
    // that is the last axis alone, as in Softmax-13: the case still passes.
    let outcome = run_edited_case("test_softmax_axis_2", |dir| {
        edit_case_json(dir, "\"opset\": 13", "\"opset\": 11");
    });
    assert_eq!(outcome, Outcome::Pass);
    // With axis 0 it normalizes over all 60 elements at once, not over axis 0 alone.
    let outcome = run_edited_case("test_logsoftmax_axis_0", |dir| {
        edit_case_json(dir, "\"opset\": 13", "\"opset\": 11");
    });
    assert!(matches!(outcome, Outcome::Fail(_)), "{outcome:?}");
}

#[test]
fn conv_and_max_pool_skip_the_modes_the_engine_lacks() {
    let outcome = run_edited_case("test_basic_conv_with_padding", |dir| {
        edit_case_json(dir, "\"pads\"", "\"group\": 2, \"pads\"");
    });
    assert_eq!(
        outcome,
        Outcome::Skip("Conv: grouped convolution (group > 1) is not implemented".into())
    );
    let outcome = run_edited_case("test_basic_conv_with_padding", |dir| {
        edit_case_json(dir, "\"pads\"", "\"dilations\": [2, 2], \"pads\"");
    });
    assert_eq!(
        outcome,
        Outcome::Skip("Conv: dilations other than 1 are not implemented".into())
    );
    // Dilations of 1 are the default, written out.
    let outcome = run_edited_case("test_basic_conv_with_padding", |dir| {
        edit_case_json(dir, "\"pads\"", "\"dilations\": [1, 1], \"pads\"");
    });
    assert_eq!(outcome, Outcome::Pass);
    let outcome = run_edited_case("test_maxpool_1d_default", |dir| {
        edit_case_json(
            dir,
            "\"kernel_shape\"",
            "\"ceil_mode\": 1, \"kernel_shape\"",
        );
    });
    assert_eq!(
        outcome,
        Outcome::Skip("MaxPool: ceil_mode 1 is not implemented".into())
    );
}

#[test]
fn the_runner_compares_every_output_of_a_multi_output_op() {
    // Attention's third output, present_value [2, 3, 18, 8]: its last element becomes 12345,
    // while Y and present_key stay right.
    let outcome = run_edited_case("test_attention_4d_with_past_and_present", |dir| {
        overwrite_last_value(dir, "present_value.npy", 12345.0);
    });
    let Outcome::Fail(message) = outcome else {
        panic!("a wrong second output must fail, got {outcome:?}");
    };
    assert!(
        message.starts_with(
            "test_attention_4d_with_past_and_present: present_value.npy: element 863 (index [1, 2, 17, 7])"
        ) && message.contains("ONNX expects 12345")
            && !message.contains("Y.npy")
            && !message.contains("present_key.npy"),
        "{message}"
    );
}

#[test]
fn malformed_attention_cases_fail_with_the_reason() {
    let failure = |name: &str, edit: &dyn Fn(&Path)| match run_edited_case(name, edit) {
        Outcome::Fail(message) => message,
        outcome => panic!("{name}: expected a failure, got {outcome:?}"),
    };
    let message = failure("test_attention_4d_with_past_and_present", &|dir| {
        edit_case_json(dir, "\"past_value.npy\"", "\"\"");
    });
    assert!(
        message.contains("past_key and past_value must be given together"),
        "{message}"
    );
    let message = failure("test_attention_4d_with_qk_matmul", &|dir| {
        edit_case_json(
            dir,
            "\"attributes\": {}",
            "\"attributes\": {\"qk_matmul_output_mode\": 7}",
        );
    });
    assert!(message.contains("qk_matmul_output_mode is 7"), "{message}");
    let message = failure("test_attention_3d", &|dir| {
        edit_case_json(dir, "\"q_num_heads\": 3", "\"q_num_heads\": 5");
    });
    assert!(
        message.contains("[2, 4, 24] is not [B, L, heads·size] with 5 heads"),
        "{message}"
    );
    let message = failure("test_attention_local_window", &|dir| {
        edit_case_json(dir, "\"left_window_size\": 2", "\"left_window_size\": -3");
    });
    assert!(message.contains("left_window_size is -3"), "{message}");
}

/// RNN, GRU and LSTM with shortened sequences, initial states, peepholes, both layouts,
/// reverse and bidirectional, and both GRU modes: cases the ONNX node tests lack, from a
/// NumPy reference of the specification (tests/data/onnx-recurrent-extra/README.md).
#[test]
fn recurrent_cases_with_sequence_lengths_pass() {
    let gpu = Gpu::default_adapter().expect("a GPU adapter");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-recurrent-extra");
    let report = conformance::run_dir(&gpu, &dir).expect("every case is readable");
    println!("{}", report.summary());
    assert_eq!(report.cases.len(), 8);
    for case in &report.cases {
        assert_eq!(case.outcome, Outcome::Pass, "{}", case.name);
    }
}

#[test]
fn recurrent_cases_skip_the_modes_the_fused_cells_lack() {
    let add_attribute = |name: &str, from: &'static str, attribute: &'static str| {
        run_edited_case(name, move |dir| {
            edit_case_json(dir, from, &format!("{attribute}, {from}"));
        })
    };
    let skip = |reason: &str| Outcome::Skip(reason.to_string());
    assert_eq!(
        add_attribute(
            "test_simple_rnn_defaults",
            "\"hidden_size\": 4",
            "\"activations\": [\"Relu\"]"
        ),
        skip(
            "RNN: activations [\"Relu\"] are not supported: the fused cells apply only the \
             defaults [\"Tanh\"] per direction"
        )
    );
    assert_eq!(
        add_attribute(
            "test_simple_rnn_defaults",
            "\"hidden_size\": 4",
            "\"clip\": 2.5"
        ),
        skip("RNN: clip is not supported: the fused cells do not clip the gate inputs")
    );
    assert_eq!(
        add_attribute(
            "test_gru_defaults",
            "\"hidden_size\": 5",
            "\"activation_alpha\": [0.5]"
        ),
        skip(
            "GRU: activation_alpha is not supported: it parametrizes activations other than \
             the defaults, which the fused cells lack"
        )
    );
    assert_eq!(
        add_attribute(
            "test_lstm_defaults",
            "\"hidden_size\": 3",
            "\"input_forget\": 1"
        ),
        skip(
            "LSTM: input_forget 1 (input and forget gates coupled) is not supported by the \
             fused cell"
        )
    );
    // The defaults written out run.
    assert_eq!(
        add_attribute(
            "test_gru_bidirectional",
            "\"hidden_size\": 5",
            "\"activations\": [\"Sigmoid\", \"Tanh\", \"Sigmoid\", \"Tanh\"]"
        ),
        Outcome::Pass
    );
    assert_eq!(
        add_attribute(
            "test_lstm_defaults",
            "\"hidden_size\": 3",
            "\"input_forget\": 0"
        ),
        Outcome::Pass
    );
}

#[test]
fn gru_linear_before_reset_selects_the_cell() {
    // The fused GRU cell computes linear_before_reset 1 (r applied after the recurrent
    // product); ONNX's default 0 is composed step by step. The ONNX GRU cases cannot tell
    // the two apart (their W and R are constant, so every hidden unit, and every entry of
    // r, is the same): the extra case gru_reverse can, and its expected output is for 0.
    let name = "gru_reverse";
    let copy = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("onnx-conformance")
        .join("gru_reverse_reset_after_product");
    std::fs::create_dir_all(&copy).expect("a scratch folder");
    let extra = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-recurrent-extra");
    for entry in std::fs::read_dir(extra.join(name)).expect("the case folder") {
        let from = entry.expect("a directory entry").path();
        std::fs::copy(&from, copy.join(from.file_name().unwrap())).expect("a copy");
    }
    edit_case_json(
        &copy,
        "\"linear_before_reset\": 0",
        "\"linear_before_reset\": 1",
    );
    let gpu = Gpu::default_adapter().expect("a GPU adapter");
    let outcome = conformance::run_case(&gpu, &copy).expect("the edited case is readable");
    let Outcome::Fail(message) = outcome else {
        panic!("linear_before_reset 1 must change the result, got {outcome:?}");
    };
    assert!(
        message.starts_with("gru_reverse_reset_after_product: Y.npy: element"),
        "{message}"
    );
}

//! `train-cnn`, run as a user runs it, on tiny configurations.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shadergrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .output()
        .expect("the shadergrad binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn train_on_the_builtin_task_with_save_and_metrics() {
    let dir = scratch("cnn-cli");
    let model = dir.join("reviews.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let output = shadergrad(&[
        "train-cnn",
        "--train-size",
        "300",
        "--valid-size",
        "50",
        "--embed",
        "8",
        "--filters",
        "8",
        "--widths",
        "2,3",
        "--batch",
        "50",
        "--epochs",
        "2",
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("epoch 2: train loss"), "{stderr}");
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("validation accuracy "), "{stdout}");
    let config = shadergrad::checkpoint::load(&model)
        .unwrap()
        .config
        .to_string();
    for field in ["\"vocabulary\"", "\"labels\"", "\"neutral\"", "\"textcnn\""] {
        assert!(config.contains(field), "{field} missing from {config}");
    }
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for field in [
        "\"val_accuracy\"",
        "\"train_loss\"",
        "\"examples_per_s\"",
        "\"lr\"",
    ] {
        assert!(lines.contains(field), "{field} missing from {lines}");
    }
}

#[test]
fn train_on_a_tsv_file() {
    let dir = scratch("cnn-cli-tsv");
    let data = dir.join("spam.tsv");
    let mut lines = String::new();
    for i in 0..30 {
        lines.push_str(&format!(
            "spam\tWIN a prize now {i}!\nham\tsee you at lunch {i}\n"
        ));
    }
    std::fs::write(&data, lines).unwrap();
    let output = shadergrad(&[
        "train-cnn",
        "--data",
        data.to_str().unwrap(),
        "--valid-fraction",
        "0.2",
        "--embed",
        "8",
        "--filters",
        "4",
        "--epochs",
        "3",
        "--lr",
        "0.02",
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("48 training and 12 validation"), "{stderr}");
    assert!(stderr.contains("[\"ham\", \"spam\"]"), "{stderr}");
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let dir = scratch("cnn-cli-errors");
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "pos\tgood\nneg without a tab\n").unwrap();
    let output = shadergrad(&["train-cnn", "--data", bad.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.tsv") && stderr.contains("line 2") && stderr.contains("no tab"),
        "{stderr}"
    );

    let train = dir.join("train.tsv");
    std::fs::write(&train, "pos\tgood\nneg\tbad\n").unwrap();
    let valid = dir.join("valid.tsv");
    std::fs::write(&valid, "pos\tfine\nmixed\tso so\n").unwrap();
    let output = shadergrad(&[
        "train-cnn",
        "--data",
        train.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: the validation examples have labels",
            valid.display()
        )) && stderr.contains("lack: mixed"),
        "{stderr}"
    );

    // A training file of one class is refused naming it.
    let one_class = dir.join("one-class.tsv");
    std::fs::write(&one_class, "pos\tgood\npos\tfine\n").unwrap();
    let output = shadergrad(&[
        "train-cnn",
        "--data",
        one_class.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("{}: ", one_class.display())) && stderr.contains("1 class"),
        "{stderr}"
    );

    // A text past the word limit in the validation file is refused when it is read.
    let long = dir.join("long.tsv");
    std::fs::write(&long, format!("pos\tfine\nneg\t{}\n", "word ".repeat(5001))).unwrap();
    let output = shadergrad(&[
        "train-cnn",
        "--data",
        train.to_str().unwrap(),
        "--valid",
        long.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: line 2: the text (after the tab) has 5001 words, more than the 5000",
            long.display()
        )),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(["train-cnn", "--train-size", "50000000", "--valid-size", "5"])
        .env_remove("SHADERGRAD_ADAPTER")
        .env("SHADERGRAD_HOST_MEMORY", "1000000000")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--train-size 50000000 + --valid-size 5: 50000005 examples")
            && stderr.contains("examples fit"),
        "{stderr}"
    );

    for (args, expected) in [
        (&["--task", "tweets"][..], "invalid value 'tweets'"),
        (&["--widths", "2,0"][..], "--widths 2,0"),
        (&["--optimizer", "lbfgs"][..], "invalid value 'lbfgs'"),
        (&["--epochs", "0"][..], "--epochs 0"),
    ] {
        let mut all = vec!["train-cnn", "--train-size", "20", "--valid-size", "5"];
        all.extend_from_slice(args);
        let output = shadergrad(&all);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// A checkpoint saved before the classifier's output layer took PyTorch's layout
/// (`tests/data/legacy-textcnn`: after epoch 1, written by commit 957b7ff) resumes into
/// epoch 2 with the losses that build's own resume gave; today's saves hold
/// `output.weight` as `[classes, features]` and say so.
#[test]
fn a_checkpoint_from_before_pytorchs_layout_resumes_as_it_would_have() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-textcnn");
    let dir = scratch("cnn-legacy");
    let model = dir.join("cnn.safetensors");
    std::fs::copy(data.join("cnn.safetensors"), &model).unwrap();
    let metrics = dir.join("cnn.jsonl");
    let common = [
        "--train-size",
        "200",
        "--valid-size",
        "40",
        "--embed",
        "8",
        "--filters",
        "4",
        "--widths",
        "2,3",
        "--batch",
        "16",
    ];
    let mut args = vec!["train-cnn"];
    args.extend(common);
    args.extend(["--epochs", "2", "--resume", model.to_str().unwrap()]);
    args.extend(["--metrics", metrics.to_str().unwrap()]);
    let output = shadergrad(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    common::assert_metrics_match(
        "cnn",
        &metrics,
        &data.join("cnn.epoch2.jsonl"),
        &["train_loss", "val_loss", "train_accuracy"],
    );

    let fresh = dir.join("fresh.safetensors");
    let mut args = vec!["train-cnn"];
    args.extend(common);
    args.extend(["--epochs", "1", "--save", fresh.to_str().unwrap()]);
    let output = shadergrad(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let saved = shadergrad::checkpoint::load(&fresh).unwrap();
    assert_eq!(saved.config["weight_layout"], "pytorch");
    let classes = saved.get("output.bias").unwrap().shape[0];
    assert_eq!(
        saved.get("output.weight").unwrap().shape,
        [classes, 8],
        "[C, F·widths]"
    );
    assert_eq!(
        saved.get("conv3.weight").unwrap().shape,
        [4, 8, 3],
        "nn.Conv1d's [F, E, w]"
    );
}

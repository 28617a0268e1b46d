//! `train-lm` and `sample`, run as a user runs them, on tiny configurations.

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

/// A tiny model of a tiny text, trained for 2 epochs.
fn tiny_training(corpus: &Path, model: &Path, metrics: &Path) -> Output {
    shadergrad(&[
        "train-lm",
        "--text",
        corpus.to_str().unwrap(),
        "--hidden",
        "16",
        "--embed",
        "8",
        "--steps",
        "16",
        "--batch",
        "8",
        "--epochs",
        "2",
        "--sample-length",
        "20",
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ])
}

#[test]
fn train_save_and_sample() {
    let dir = scratch("lm-cli");
    let corpus = dir.join("verse.txt");
    std::fs::write(&corpus, "the cat sat on the mat with a hat.\n".repeat(40)).unwrap();
    let model = dir.join("lm.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let output = tiny_training(&corpus, &model, &metrics);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    for shown in [
        "validation loss",
        "perplexity",
        "sample at temperature",
        "saved",
    ] {
        assert!(stderr.contains(shown), "{shown:?} missing from {stderr}");
    }
    assert!(
        text(&output.stdout).contains("best validation perplexity"),
        "{}",
        text(&output.stdout)
    );
    assert!(model.exists());
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for field in ["\"val_perplexity\"", "\"val_loss\"", "\"chars_per_s\""] {
        assert!(lines.contains(field), "{field} missing from {lines}");
    }

    // Greedy: the prompt, then exactly --length characters, the same every time.
    let model_arg = model.to_str().unwrap();
    let greedy = [
        "sample",
        "--checkpoint",
        model_arg,
        "--prompt",
        "the c",
        "--temperature",
        "0",
        "--length",
        "30",
    ];
    let output = shadergrad(&greedy);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let sampled = text(&output.stdout);
    assert!(sampled.starts_with("the c"), "{sampled}");
    assert_eq!(sampled.chars().count(), 5 + 30 + 1, "{sampled:?}");
    assert_eq!(text(&shadergrad(&greedy).stdout), sampled);

    // A character the model never saw: a warning, and it is skipped.
    let output = shadergrad(&[
        "sample",
        "--checkpoint",
        model_arg,
        "--prompt",
        "the Z",
        "--length",
        "10",
        "--seed",
        "3",
    ]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains('Z'),
        "{stderr}"
    );
    assert!(text(&output.stdout).starts_with("the Z"));

    // Nothing known to start from, and a negative temperature, are errors.
    for (prompt, temperature, named) in [("ZQ", "1", "no character"), ("the", "-1", "-1")] {
        let output = shadergrad(&[
            "sample",
            "--checkpoint",
            model_arg,
            "--prompt",
            prompt,
            "--temperature",
            temperature,
        ]);
        assert!(!output.status.success());
        assert!(
            text(&output.stderr).contains(named),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn the_shipped_text_trains_by_default() {
    let output = shadergrad(&[
        "train-lm",
        "--hidden",
        "8",
        "--embed",
        "8",
        "--steps",
        "32",
        "--batch",
        "128",
        "--epochs",
        "1",
        "--sample-length",
        "0",
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("coriolanus.txt"), "{stderr}");
}

#[test]
fn bad_texts_and_checkpoints_are_clear_errors() {
    let dir = scratch("lm-cli-errors");
    let train_on = |path: &Path| {
        shadergrad(&[
            "train-lm",
            "--text",
            path.to_str().unwrap(),
            "--epochs",
            "1",
        ])
    };
    let missing = dir.join("missing.txt");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n\n").unwrap();
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, b"fine\n\xff\xfe not text").unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short for a window of 64").unwrap();
    // NUL bytes are read with a warning; an adapter that does not exist then stops the run
    // before any GPU work.
    let nul = dir.join("nul.txt");
    std::fs::write(&nul, "some text\r\nand\0 more\r\n").unwrap();
    let output = shadergrad(&[
        "--adapter",
        "no-such-adapter",
        "train-lm",
        "--text",
        nul.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("warning: {}: line 2: a NUL byte", nul.display()))
            && stderr.contains("no adapter matches"),
        "{stderr}"
    );

    for (path, named) in [
        (&missing, "missing.txt"),
        (&empty, "empty"),
        (&binary, "line 2: not UTF-8"),
        (&short, "--steps 64"),
    ] {
        let output = train_on(path);
        assert!(!output.status.success(), "{} was accepted", path.display());
        let stderr = text(&output.stderr);
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(
            stderr.contains(file) && stderr.contains(named),
            "{file}: {stderr}"
        );
    }

    // A checkpoint of another model, and a corrupt one.
    let mlp = dir.join("mlp.safetensors");
    let output = shadergrad(&[
        "train-mlp",
        "--dataset",
        "xor",
        "--epochs",
        "1",
        "--save",
        mlp.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let sample = |path: &Path| {
        shadergrad(&[
            "sample",
            "--checkpoint",
            path.to_str().unwrap(),
            "--prompt",
            "a",
        ])
    };
    let output = sample(&mlp);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("train-lm"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(&mlp, b"not a checkpoint").unwrap();
    let output = sample(&mlp);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("mlp.safetensors"),
        "{}",
        text(&output.stderr)
    );
}

/// A checkpoint saved before the language model took PyTorch's names and layouts
/// (`tests/data/legacy-charlm`: a 2-layer LSTM after epoch 1, written by commit b08e88f)
/// resumes into epoch 2 with the losses that build's own resume gave, `sample` reads it,
/// and today's saves are in PyTorch's names and layouts.
#[test]
fn a_checkpoint_from_before_pytorchs_layout_resumes_as_it_would_have() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-charlm");
    let dir = scratch("lm-legacy");
    let model = dir.join("lstm.safetensors");
    std::fs::copy(data.join("lstm.safetensors"), &model).unwrap();
    let metrics = dir.join("lstm.jsonl");
    let text_path = data.join("text.txt");
    let output = shadergrad(&[
        "train-lm",
        "--text",
        text_path.to_str().unwrap(),
        "--arch",
        "lstm",
        "--hidden",
        "8",
        "--embed",
        "6",
        "--layers",
        "2",
        "--steps",
        "16",
        "--batch",
        "8",
        "--sample-length",
        "0",
        "--epochs",
        "2",
        "--resume",
        model.to_str().unwrap(),
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    common::assert_metrics_match(
        "lstm",
        &metrics,
        &data.join("lstm.epoch2.jsonl"),
        &["train_loss", "val_loss", "val_accuracy"],
    );
    let saved = shadergrad::checkpoint::load(&model).unwrap();
    assert_eq!(saved.config["weight_layout"], "pytorch");
    assert_eq!(
        saved.get("rnn.weight_ih_l0").unwrap().shape,
        [32, 6],
        "[4H, E]"
    );
    assert_eq!(
        saved.get("rnn.weight_hh_l1").unwrap().shape,
        [32, 8],
        "[4H, H]"
    );
    let vocab = saved.get("embedding.weight").unwrap().shape[0];
    assert_eq!(
        saved.get("output.weight").unwrap().shape,
        [vocab, 8],
        "[V, H]"
    );

    let old = data.join("lstm.safetensors");
    let output = shadergrad(&[
        "sample",
        "--checkpoint",
        old.to_str().unwrap(),
        "--prompt",
        "the",
        "--length",
        "10",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

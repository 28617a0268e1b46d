//! `train-seq2seq` and `translate`, run as a user runs them, on tiny configurations.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn shadergrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .output()
        .expect("the shadergrad binary runs")
}

fn shadergrad_with_memory(args: &[&str], free_bytes: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .env("SHADERGRAD_HOST_MEMORY", free_bytes)
        .output()
        .expect("the shadergrad binary runs")
}

fn shadergrad_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadergrad"))
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shadergrad binary runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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

/// A tiny reverse-the-string model, trained for `epochs` epochs.
fn tiny_training(model: &Path, metrics: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train-seq2seq",
        "--task",
        "reverse",
        "--train-size",
        "200",
        "--valid-size",
        "20",
        "--hidden",
        "16",
        "--embed",
        "8",
        "--batch",
        "50",
        "--epochs",
        epochs,
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    shadergrad(&args)
}

#[test]
fn train_save_translate_and_resume() {
    let dir = scratch("seq2seq-cli");
    let model = dir.join("reverse.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let output = tiny_training(&model, &metrics, "2", &[]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("exact-match") && stderr.contains("expected"),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("best validation exact-match"));
    assert!(model.exists());
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for field in ["\"val_accuracy\"", "\"tokens_per_s\"", "\"train_loss\""] {
        assert!(lines.contains(field), "{field} missing from {lines}");
    }

    // Arguments: one output line each, and nothing else on stdout.
    let model_arg = model.to_str().unwrap();
    let output = shadergrad(&["translate", "--checkpoint", model_arg, "abc", "hello"]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).lines().count(),
        2,
        "{}",
        text(&output.stdout)
    );

    // Standard input, with beam search, and an unknown character (a warning, not an error).
    let output = shadergrad_with_stdin(
        &["translate", "--checkpoint", model_arg, "--beam", "3"],
        "abc\nxyz\nab7\n",
    );
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 3);
    assert!(
        text(&output.stderr).contains("UNK"),
        "{}",
        text(&output.stderr)
    );

    // Beam widths past what the GPU's top-k keeps, and a length penalty that is not a
    // number of at least 0, are refused naming the value.
    for (flag, value, expected) in [
        ("--beam", "17", "beam width (17) is at most 16"),
        ("--length-penalty", "-0.5", "length penalty -0.5"),
        ("--length-penalty", "NaN", "length penalty NaN"),
    ] {
        let output = shadergrad(&["translate", "--checkpoint", model_arg, flag, value, "abc"]);
        assert!(!output.status.success());
        assert!(
            text(&output.stderr).contains(expected),
            "{flag} {value}: {}",
            text(&output.stderr)
        );
    }
    // Any length penalty of at least 0 translates.
    let output = shadergrad(&[
        "translate",
        "--checkpoint",
        model_arg,
        "--beam",
        "4",
        "--length-penalty",
        "0",
        "abc",
    ]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 1);

    // A source longer than any the model was trained on is refused, naming the limit.
    let long = "abcdefghijklmnopqrstuvwxyz";
    let output = shadergrad(&["translate", "--checkpoint", model_arg, long]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("more than the 10 this model reads"),
        "{}",
        text(&output.stderr)
    );

    // Resuming continues the epoch count and the metrics file.
    let output = tiny_training(&model, &metrics, "3", &["--resume", model_arg]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    let lines = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        lines.lines().last().unwrap().contains("\"epoch\":3"),
        "{lines}"
    );
}

#[test]
fn bad_data_and_checkpoints_are_clear_errors() {
    let dir = scratch("seq2seq-cli-errors");
    let tsv = dir.join("pairs.tsv");
    std::fs::write(&tsv, "abc\tcba\nno tab here\n").unwrap();
    let output = shadergrad(&["train-seq2seq", "--data", tsv.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("pairs.tsv") && stderr.contains('2'),
        "{stderr}"
    );

    let empty = dir.join("empty.tsv");
    std::fs::write(&empty, "\n\n").unwrap();
    let output = shadergrad(&["train-seq2seq", "--data", empty.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("empty.tsv"));

    let output = shadergrad(&["train-seq2seq", "--task", "multiplication"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("addition"),
        "{}",
        text(&output.stderr)
    );

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
    let output = shadergrad(&["translate", "--checkpoint", mlp.to_str().unwrap(), "abc"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("seq2seq"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(&mlp, b"not a checkpoint").unwrap();
    let output = shadergrad(&["translate", "--checkpoint", mlp.to_str().unwrap(), "abc"]);
    assert!(!output.status.success());
    assert!(!text(&output.stderr).is_empty());
}

/// A mistyped choice is clap's to refuse, before anything runs: usage error 2, the value
/// that was meant.
#[test]
fn a_mistyped_architecture_gets_the_nearest_choice() {
    let output = shadergrad(&["train-seq2seq", "--arch", "transformr"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("invalid value 'transformr' for '--arch")
            && stderr.contains("a similar value exists: 'transformer'"),
        "{stderr}"
    );
}

#[test]
fn every_file_is_checked_when_it_is_read_before_any_training() {
    let dir = scratch("seq2seq-cli-read-checks");
    let train = dir.join("train.tsv");
    std::fs::write(&train, "abc\tcba\nxy\tyx\nhello\tolleh\n").unwrap();
    let valid = dir.join("valid.tsv");
    std::fs::write(&valid, format!("ab\tba\n{}\tq\n", "q".repeat(4001))).unwrap();
    let (train, valid_name) = (train.to_str().unwrap(), valid.to_str().unwrap());
    let output = shadergrad(&[
        "train-seq2seq",
        "--data",
        train,
        "--valid",
        valid_name,
        "--epochs",
        "1",
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{valid_name}: line 2: the source has 4001 characters, more than the 4000 a \
             source or target may have"
        )) && !stderr.contains("epoch"),
        "{stderr}"
    );

    // NUL bytes are read with a warning; an adapter that does not exist then stops the run
    // before any GPU work.
    let nul = dir.join("nul.tsv");
    std::fs::write(&nul, "ab\tba\nc\0d\tdc\n").unwrap();
    let output = shadergrad(&[
        "--adapter",
        "no-such-adapter",
        "train-seq2seq",
        "--data",
        train,
        "--valid",
        nul.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("warning: {}: line 2: a NUL byte", nul.display()))
            && stderr.contains("no adapter matches"),
        "{stderr}"
    );
}

#[test]
fn validation_characters_the_training_pairs_lack_are_read_as_unknown_with_a_warning() {
    let dir = scratch("seq2seq-cli-unknown-characters");
    let train = dir.join("train.tsv");
    std::fs::write(&train, "abc\tcba\nxy\tyx\nhello\tolleh\nab\tba\n").unwrap();
    let valid = dir.join("valid.tsv");
    std::fs::write(&valid, "zq\tqz\n").unwrap();
    let output = shadergrad(&[
        "train-seq2seq",
        "--data",
        train.to_str().unwrap(),
        "--valid",
        valid.to_str().unwrap(),
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--batch",
        "4",
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("become UNK") && stderr.contains("\"z\", \"q\""),
        "{stderr}"
    );
}

#[test]
fn generated_sizes_beyond_memory_are_refused_at_once_naming_the_flags() {
    let output = shadergrad_with_memory(
        &[
            "train-seq2seq",
            "--task",
            "sort",
            "--train-size",
            "100000000",
        ],
        "1000000000",
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--train-size 100000000 + --valid-size 1000: 100001000 pairs of about")
            && stderr.contains("more than half of the 953.7 MiB free on this machine")
            && stderr.contains("pairs fit"),
        "{stderr}"
    );
}

#[test]
fn a_diverging_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("seq2seq-cli-nan");
    let model = dir.join("m.safetensors");
    let metrics = dir.join("m.jsonl");
    let output = tiny_training(&model, &metrics, "1", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let saved = std::fs::read(&model).unwrap();
    // Plain SGD at an absurd rate without clipping overflows within a few steps.
    let output = tiny_training(
        &model,
        &metrics,
        "5",
        &[
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--clip",
            "0",
            "--overwrite",
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the loss became") && stderr.contains("at step"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        saved,
        "the good checkpoint was overwritten"
    );
}

#[test]
fn a_transformer_trains_saves_and_translates() {
    let dir = scratch("seq2seq-cli-transformer");
    let model = dir.join("reverse.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let transformer = [
        "--arch",
        "transformer",
        "--heads",
        "2",
        "--ff",
        "32",
        "--layers",
        "1",
        "--lr",
        "0.003",
    ];
    let output = tiny_training(&model, &metrics, "1", &transformer);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("Transformer 1-layer"), "{stderr}");
    let config = shadergrad::checkpoint::load(&model).unwrap().config;
    assert!(config.to_string().contains("\"transformer\""), "{config}");

    let model_arg = model.to_str().unwrap();
    let output = shadergrad_with_stdin(
        &["translate", "--checkpoint", model_arg, "--beam", "2"],
        "abc\nhello\n",
    );
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 2);

    // With dropout and a warm-up: trained, saved with its dropout, translated.
    let mut with_dropout = transformer.to_vec();
    with_dropout.extend(["--dropout", "0.2", "--warmup", "3", "--overwrite"]);
    let output = tiny_training(&model, &metrics, "1", &with_dropout);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("dropout 0.2"), "{stderr}");
    let config = shadergrad::checkpoint::load(&model).unwrap().config;
    let dropout = config.pointer("/architecture/dropout");
    assert_eq!(dropout.and_then(|p| p.as_f64()), Some(0.2), "{config}");
    let output = shadergrad(&["translate", "--checkpoint", model_arg, "abc", "fed"]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 2);

    // A drop probability outside [0, 1) is an error naming it.
    for bad in ["1.5", "1"] {
        let mut args = transformer.to_vec();
        args.extend(["--dropout", bad]);
        let output = tiny_training(&model, &metrics, "1", &args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "--dropout {bad} was accepted");
        assert!(
            stderr.contains(&format!("--dropout {bad}")) && stderr.contains("[0, 1)"),
            "{stderr}"
        );
    }
    let mut args = transformer.to_vec();
    args.extend(["--dropout", "NaN"]);
    let output = tiny_training(&model, &metrics, "1", &args);
    assert!(text(&output.stderr).contains("not a finite number"));
}

/// Checkpoints saved before the models took PyTorch's names and layouts
/// (`tests/data/legacy-seq2seq`: written after epoch 1 by the builds before, commit 01be7fe
/// for the recurrent ones, 957b7ff for the Transformer) still resume: epoch 2 gives the losses that build's own resume gave (its
/// metrics line beside each file), the weights and Adam's moments moved to their new names
/// and layouts; the new save is in today's layout, and `translate` reads the old file.
#[test]
fn checkpoints_from_before_pytorchs_layout_resume_as_they_would_have() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-seq2seq");
    let dir = scratch("seq2seq-legacy");
    let cases: [(&str, &[&str]); 3] = [
        (
            "lstm-bidirectional-additive",
            &[
                "--arch",
                "lstm",
                "--bidirectional",
                "true",
                "--attention",
                "additive",
                "--embed",
                "6",
            ],
        ),
        (
            "gru-dot",
            &[
                "--arch",
                "gru",
                "--bidirectional",
                "false",
                "--attention",
                "dot",
                "--embed",
                "6",
            ],
        ),
        // Its query, key and value projections become the blocks of in_proj_weight.
        (
            "transformer",
            &[
                "--arch",
                "transformer",
                "--heads",
                "2",
                "--ff",
                "16",
                "--warmup",
                "0",
                "--lr",
                "0.01",
            ],
        ),
    ];
    for (name, flags) in cases {
        let model = dir.join(format!("{name}.safetensors"));
        std::fs::copy(data.join(format!("{name}.safetensors")), &model).unwrap();
        let metrics = dir.join(format!("{name}.jsonl"));
        let model_arg = model.to_str().unwrap();
        let mut args = vec![
            "train-seq2seq",
            "--task",
            "reverse",
            "--train-size",
            "300",
            "--valid-size",
            "30",
            "--hidden",
            "8",
            "--layers",
            "2",
            "--batch",
            "32",
            "--samples",
            "0",
            "--epochs",
            "2",
            "--resume",
            model_arg,
            "--save",
            model_arg,
            "--metrics",
            metrics.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let output = shadergrad(&args);
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
        let theirs = data.join(format!("{name}.epoch2.jsonl"));
        let fields = ["train_loss", "val_loss", "train_token_accuracy"];
        common::assert_metrics_match(name, &metrics, &theirs, &fields);
        let old = data.join(format!("{name}.safetensors"));
        let output = shadergrad(&["translate", "--checkpoint", old.to_str().unwrap(), "abc"]);
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
    }
    // Today's saves are in PyTorch's names and layouts, and say so.
    let model = dir.join("today-transformer.safetensors");
    let metrics = dir.join("today-transformer.jsonl");
    let output = tiny_training(&model, &metrics, "1", &["--arch", "transformer"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let saved = shadergrad::checkpoint::load(&model).unwrap();
    assert_eq!(saved.config["weight_layout"], "pytorch");
    let layer = "transformer.decoder.layers.1.multihead_attn";
    assert_eq!(
        saved.get(&format!("{layer}.in_proj_weight")).unwrap().shape,
        [48, 16]
    );
    assert_eq!(
        saved
            .get(&format!("{layer}.out_proj.weight"))
            .unwrap()
            .shape,
        [16, 16]
    );
    assert!(saved.get("transformer.encoder.norm.weight").is_ok());
    let model = dir.join("today.safetensors");
    let output = tiny_training(&model, &dir.join("today.jsonl"), "1", &["--arch", "lstm"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let saved = shadergrad::checkpoint::load(&model).unwrap();
    assert_eq!(saved.config["weight_layout"], "pytorch");
    let weight_ih = saved.get("encoder.rnn.weight_ih_l0").unwrap();
    let (hidden, embed) = (weight_ih.shape[0] / 4, weight_ih.shape[1]);
    assert_eq!(
        saved.get("encoder.embedding.weight").unwrap().shape[1],
        embed
    );
    assert_eq!(
        saved.get("encoder.rnn.weight_hh_l0").unwrap().shape,
        [4 * hidden, hidden]
    );
    assert_eq!(
        saved.get("output.weight").unwrap().shape[1],
        hidden,
        "[V, H]"
    );
}

/// Numbers spelled out: "314" → "three one four", 3 words a target.
fn spelled_numbers(count: usize, seed: u64) -> String {
    const WORDS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let mut rng = shadergrad::rng::Rng::new(seed);
    (0..count)
        .map(|_| {
            let digits: Vec<usize> = (0..3).map(|_| rng.below(10)).collect();
            let source: String = digits.iter().map(|d| d.to_string()).collect();
            let target: Vec<&str> = digits.iter().map(|&d| WORDS[d]).collect();
            format!("{source}\t{}\n", target.join(" "))
        })
        .collect()
}

/// Two epochs of a tiny model on the numbers of `data`, with the `extra` flags.
fn train_numbers(data: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train-seq2seq", "--data", data.to_str().unwrap()];
    args.extend([
        "--epochs", "2", "--hidden", "16", "--embed", "8", "--batch", "32",
    ]);
    args.extend(extra);
    shadergrad(&args)
}

/// Word targets make a target of three tokens, not fourteen characters; subword sources
/// learn their merges; both are in the checkpoint, and `translate` writes words back with
/// spaces between them.
#[test]
fn word_and_subword_tokens_train_save_and_translate() {
    let dir = scratch("cli-seq2seq-tokens");
    let data = dir.join("numbers.tsv");
    std::fs::write(&data, spelled_numbers(400, 3)).unwrap();
    let model = dir.join("numbers.safetensors");
    let output = train_numbers(
        &data,
        &[
            "--source-tokens",
            "bpe",
            "--bpe-merges",
            "20",
            "--target-tokens",
            "word",
            "--save",
            model.to_str().unwrap(),
        ],
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("subword pieces (source) and 10 words (target)"),
        "{stderr}"
    );
    let checkpoint = shadergrad::checkpoint::load(&model).unwrap();
    let config = &checkpoint.config;
    assert_eq!(config["max_target"], 3, "{config}");
    assert_eq!(config["target_vocabulary"]["level"], "word");
    assert_eq!(config["source_vocabulary"]["level"], "bpe");
    let merges = config["source_vocabulary"]["merges"].as_array().unwrap();
    assert!(!merges.is_empty() && merges.len() <= 20, "{merges:?}");

    let output = shadergrad_with_stdin(
        &["translate", "--checkpoint", model.to_str().unwrap()],
        "314\n271\n",
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    for line in stdout.lines() {
        assert!(
            !line.is_empty() && line.split(' ').all(|w| words.contains(&w)),
            "{stdout:?}"
        );
    }
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
}

#[test]
fn bad_vocabulary_flags_are_refused_naming_them() {
    let dir = scratch("cli-seq2seq-vocab-flags");
    let data = dir.join("numbers.tsv");
    std::fs::write(&data, spelled_numbers(40, 4)).unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train-seq2seq", "--data", data.to_str().unwrap()];
        args.extend(["--epochs", "1", "--hidden", "8", "--embed", "4"]);
        args.extend(extra);
        shadergrad(&args)
    };
    let refused = |output: Output, expected: &str| {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    };
    refused(train(&["--max-vocab", "4"]), "--max-vocab 4 leaves no room");
    refused(
        train(&["--shared-vocab", "--target-tokens", "word"]),
        "the sources' is char and the targets' word",
    );
    let typo = train(&["--source-tokens", "words"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(text(&typo.stderr).contains("a similar value exists: 'word'"));
    // Resuming keeps the checkpoint's vocabularies: a vocabulary flag is refused.
    let model = dir.join("model.safetensors");
    let saved = train(&["--save", model.to_str().unwrap()]);
    assert!(saved.status.success(), "{}", text(&saved.stderr));
    refused(
        train(&[
            "--resume",
            model.to_str().unwrap(),
            "--target-tokens",
            "word",
        ]),
        "--target-tokens shapes a new model's vocabularies",
    );
}

/// `--select bleu` saves by BLEU, every metric is reported per epoch, and `evaluate` scores
/// a test file (greedy and beam), writing the scores as JSON.
#[test]
fn metrics_per_epoch_select_by_bleu_and_evaluate_a_test_file() {
    let dir = scratch("cli-seq2seq-evaluate");
    let data = dir.join("numbers.tsv");
    std::fs::write(&data, spelled_numbers(300, 5)).unwrap();
    let test = dir.join("test.tsv");
    std::fs::write(&test, spelled_numbers(40, 6)).unwrap();
    let model = dir.join("numbers.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let output = train_numbers(
        &data,
        &[
            "--target-tokens",
            "word",
            "--select",
            "bleu",
            "--save",
            model.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
        ],
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("token error rate") && stderr.contains("BLEU") && stderr.contains("chrF"),
        "{stderr}"
    );
    assert!(stderr.contains("(BLEU "), "{stderr}");
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    for key in ["val_token_error_rate", "val_bleu", "val_chrf"] {
        assert!(last[key].is_number(), "{key} in {last}");
    }
    let checkpoint = shadergrad::checkpoint::load(&model).unwrap();
    assert_eq!(checkpoint.config["training"]["selected_by"], "bleu");

    let json = dir.join("scores.json");
    for beam in ["1", "3"] {
        let output = shadergrad(&[
            "evaluate",
            "--checkpoint",
            model.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--beam",
            beam,
            "--json",
            json.to_str().unwrap(),
        ]);
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            stdout.contains("40 pairs")
                && stdout.contains("token error rate")
                && stdout.contains("(over words)"),
            "{stdout}"
        );
        let scores: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(scores["sentences"], 40);
        assert_eq!(scores["beam"].to_string(), beam);
        for key in [
            "exact_match",
            "token_error_rate",
            "bleu",
            "chrf",
            "sentences_per_s",
        ] {
            let value = scores[key].as_f64().unwrap_or(-1.0);
            assert!(value >= 0.0, "{key} = {value} in {scores}");
        }
        assert!(scores["bleu"].as_f64().unwrap() <= 100.0);
    }

    // Sources longer than the model reads are named; a missing file is an error naming it.
    let long = dir.join("long.tsv");
    std::fs::write(&long, "1234567\tone\n12\tone two\n").unwrap();
    let output = shadergrad(&[
        "evaluate",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        long.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("1 of 2 sources are longer than the 3 tokens"),
        "{}",
        text(&output.stderr)
    );
    let output = shadergrad(&[
        "evaluate",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        dir.join("absent.tsv").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("absent.tsv"));
}

#[test]
fn two_devices_train_data_parallel_and_bad_adapter_lists_are_refused() {
    let dir = scratch("seq2seq-cli-adapters");
    let (model, metrics) = (dir.join("m.safetensors"), dir.join("m.jsonl"));
    let output = tiny_training(&model, &metrics, "1", &["--adapters", "0,0"]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("data-parallel over 2 replicas (2 per process × 1 process)")
            && stderr.contains("gradient sum over 2 replicas:")
            && stderr.contains("saved"),
        "{stderr}"
    );
    let record: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().trim()).unwrap();
    assert!(
        record["all_reduce_bytes_per_step"].as_f64().unwrap() > 1000.0,
        "{record}"
    );
    assert!(
        record["gradient_sum_s_per_step"].as_f64().unwrap() > 0.0,
        "{record}"
    );

    for (args, expected) in [
        (
            vec!["--adapters", "0,x"],
            "--adapters \"0,x\": expected indices of `shadergrad adapters` separated by commas",
        ),
        (
            vec!["--adapters", ""],
            "expected indices of `shadergrad adapters`",
        ),
        (vec!["--adapters", "0,999"], "999"),
        (
            vec!["--adapter", "0", "--adapters", "0,0"],
            "--adapter 0 and --adapters 0,0: give one of them",
        ),
        (
            vec!["--adapters", "0,0,0", "--batch", "2"],
            "a batch of 2 pairs cannot be shared among 3 replicas",
        ),
    ] {
        let mut full = vec!["train-seq2seq", "--task", "reverse", "--train-size", "50"];
        full.extend(["--valid-size", "5", "--epochs", "1"]);
        full.extend(args.iter().copied());
        let output = shadergrad(&full);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// Without the `mpi` feature, `--distributed` says how to get a build that has it.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_training_without_the_mpi_feature_says_how_to_build_it() {
    let output = shadergrad(&["train-seq2seq", "--distributed", "--epochs", "1"]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--distributed needs a build with the mpi feature")
            && stderr.contains("scripts/setup-mpi.sh"),
        "{stderr}"
    );
}

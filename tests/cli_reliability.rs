//! The command line under hostile use: absurd sizes, bad flags, closed and full outputs,
//! checkpoints that lie about their model, saves that would replace a model, resumes that
//! must continue bit for bit, and inputs of many lines with bad ones among them.
//!
//! Every command runs under a watchdog: a hang fails the test instead of stalling it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shadergrad::checkpoint;

/// The longest any command here may take; a size check must answer far sooner.
const WATCHDOG: Duration = Duration::from_secs(120);

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadergrad"));
    command
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child`, killing it (and failing) if it outlives the watchdog.
fn wait(mut child: Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("{what} still ran after {WATCHDOG:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to the end, collecting its output (read on threads, so that a full pipe
/// never blocks it).
fn run(mut command: Command) -> Output {
    let what = format!("{command:?}");
    let mut child = command.spawn().expect("the shadergrad binary runs");
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    })
    .collect();
    let status = wait(child, &what);
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap());
    Output {
        status,
        stdout: outputs.next().unwrap(),
        stderr: outputs.next().unwrap(),
    }
}

fn shadergrad(args: &[&str]) -> Output {
    run(command(args))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the run failed cleanly (exit 1, no panic, no abort) with a message that
/// holds every one of `expected`.
fn assert_refused(output: &Output, expected: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "expected {part:?} in: {stderr}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const HUGE: &str = "18446744073709551615";

/// A tiny train-seq2seq run on the reverse task.
fn tiny_seq2seq(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--hidden", "16", "--embed", "8"];
    args.extend(extra);
    tiny_seq2seq_data(&args)
}

/// train-seq2seq on the tiny task's data, without any architecture flag (for --resume).
fn tiny_seq2seq_data(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train-seq2seq",
        "--task",
        "reverse",
        "--train-size",
        "150",
        "--valid-size",
        "20",
        "--batch",
        "32",
        "--samples",
        "0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Trains a tiny train-lm model for one epoch, saved at `save`.
fn train_tiny_lm(save: &Path) {
    let output = shadergrad(&[
        "train-lm",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--sample-length",
        "0",
        "--save",
        save.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn absurd_sizes_are_refused_at_once_naming_the_size() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["train-seq2seq", "--hidden", "1000000"],
            &["hidden 1000000", "largest buffer"],
        ),
        (
            &[
                "train-seq2seq",
                "--arch",
                "transformer",
                "--hidden",
                "1000000",
                "--heads",
                "1",
            ],
            &["width 1000000"],
        ),
        (
            &["train-seq2seq", "--layers", "1000000"],
            &["1000000 layers"],
        ),
        (
            &["train-seq2seq", "--embed", "100000000"],
            &["embedding 100000000"],
        ),
        (&["train-seq2seq", "--batch", HUGE], &[HUGE]),
        (
            &["train-seq2seq", "--batch", "100000000"],
            &["batch 100000000"],
        ),
        (&["train-lm", "--hidden", "1000000"], &["hidden 1000000"]),
        (&["train-lm", "--layers", "1000000"], &["1000000 layers"]),
        (&["train-lm", "--steps", HUGE], &[HUGE]),
        (&["train-cnn", "--widths", "1000000"], &["width 1000000"]),
        (&["train-cnn", "--batch", HUGE], &[HUGE]),
        (&["train-mlp", "--layers", HUGE], &["overflows"]),
        (&["train-mlp", "--batch", HUGE], &[HUGE]),
    ];
    for (args, expected) in cases {
        let output = shadergrad(args);
        assert_refused(&output, expected);
    }
}

#[test]
fn a_model_larger_than_the_free_memory_is_refused_before_it_is_built() {
    // Room for the 60 points (about 4 KiB), not for the model and its optimizer state.
    let mut command = command(&["train-mlp", "--layers", "64,64", "--points", "20"]);
    command.env(shadergrad::limits::HOST_MEMORY_ENV, "20000");
    let output = run(command);
    assert_refused(&output, &["free on this machine", "parameters"]);
}

/// A checkpoint whose config claims sizes its tensors do not have (saved through the
/// library, so its checksum is right): refused before anything is built.
#[test]
fn a_checkpoint_whose_config_disagrees_with_its_tensors_is_refused() {
    let dir = scratch("reliability-lying-config");
    let model = dir.join("m.safetensors");
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--epochs",
        "1",
        "--save",
        model.to_str().unwrap(),
    ])));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut saved = checkpoint::load(&model).unwrap();
    for (field, value) in [
        ("hidden", json!(1u64 << 40)),
        ("layers", json!(1_000_000)),
        ("hidden", json!(17)),
    ] {
        saved.config["architecture"][field] = value.clone();
        let lying = dir.join(format!("lying-{field}-{value}.safetensors"));
        checkpoint::save(&lying, &saved.tensors, &saved.config).unwrap();
        let lying_arg = lying.to_str().unwrap();
        let output = shadergrad(&["translate", "--checkpoint", lying_arg, "abc"]);
        assert_refused(&output, &[lying_arg, "parameters"]);
        let output = shadergrad(&strings(&tiny_seq2seq_data(&["--resume", lying_arg])));
        assert_refused(&output, &[lying_arg, "parameters"]);
        saved = checkpoint::load(&model).unwrap();
    }
    saved.config["max_target"] = json!(1u64 << 50);
    let lying = dir.join("lying-max-target.safetensors");
    checkpoint::save(&lying, &saved.tensors, &saved.config).unwrap();
    let output = shadergrad(&["translate", "--checkpoint", lying.to_str().unwrap(), "abc"]);
    assert_refused(&output, &["max_target"]);
}

#[test]
fn float_flags_must_be_finite_and_negative_numbers_reach_their_checks() {
    for (args, expected) in [
        (
            vec!["train-seq2seq", "--lr-decay", "nan"],
            "not a finite number",
        ),
        (vec!["train-mlp", "--lr", "inf"], "not a finite number"),
        (
            vec![
                "sample",
                "--checkpoint",
                "x.safetensors",
                "--prompt",
                "a",
                "--temperature",
                "NaN",
            ],
            "not a finite number",
        ),
    ] {
        let output = shadergrad(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            text(&output.stderr).contains(expected),
            "{}",
            text(&output.stderr)
        );
    }
    // A negative rate is the optimizer's to refuse, not clap's "unexpected argument".
    let output = shadergrad(&["train-mlp", "--lr", "-1", "--epochs", "1"]);
    assert_refused(&output, &["learning rate", "-1"]);
    let output = shadergrad(&["train-lm", "--max-minutes", "-2"]);
    assert_refused(&output, &["--max-minutes -2"]);
    // Values read as typed, not as Rust's debug text.
    let output = shadergrad(&strings(&tiny_seq2seq(&["--epochs", "0"])));
    let stderr = text(&output.stderr);
    assert_refused(&output, &["epochs (0)"]);
    assert!(!stderr.contains("Some("), "{stderr}");
}

/// Every command, with its stdout and then its stderr at /dev/full (every write fails) and
/// closed (a pipe whose reader is gone): never a panic. A training still saves its model.
#[test]
fn every_command_survives_a_full_or_closed_stdout_and_stderr() {
    let dir = scratch("reliability-outputs");
    let lm = dir.join("lm.safetensors");
    let seq2seq = dir.join("s.safetensors");
    train_tiny_lm(&lm);
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--epochs",
        "1",
        "--save",
        seq2seq.to_str().unwrap(),
    ])));
    assert!(output.status.success(), "{}", text(&output.stderr));

    let saved = dir.join("saved.safetensors");
    let saved_arg = saved.to_str().unwrap().to_string();
    let commands: Vec<(Vec<String>, bool)> = vec![
        (vec!["adapters".into()], false),
        (
            [
                "train-mlp",
                "--epochs",
                "2",
                "--points",
                "40",
                "--overwrite",
                "--save",
                &saved_arg,
            ]
            .map(String::from)
            .to_vec(),
            true,
        ),
        (
            [
                "train-cnn",
                "--epochs",
                "1",
                "--train-size",
                "64",
                "--valid-size",
                "16",
                "--overwrite",
                "--save",
                &saved_arg,
            ]
            .map(String::from)
            .to_vec(),
            true,
        ),
        (
            tiny_seq2seq(&["--epochs", "1", "--overwrite", "--save", &saved_arg]),
            true,
        ),
        (
            [
                "train-lm",
                "--epochs",
                "1",
                "--hidden",
                "16",
                "--embed",
                "8",
                "--sample-length",
                "20",
                "--overwrite",
                "--save",
                &saved_arg,
            ]
            .map(String::from)
            .to_vec(),
            true,
        ),
        (
            [
                "translate",
                "--checkpoint",
                seq2seq.to_str().unwrap(),
                "abc",
                "xyz",
            ]
            .map(String::from)
            .to_vec(),
            false,
        ),
        (
            [
                "sample",
                "--checkpoint",
                lm.to_str().unwrap(),
                "--prompt",
                "The",
                "--length",
                "50",
            ]
            .map(String::from)
            .to_vec(),
            false,
        ),
        (
            ["bench", "--quick", "--only", "optimizer", "--adapter", "0"]
                .map(String::from)
                .to_vec(),
            false,
        ),
    ];
    for (args, saves) in &commands {
        for broken in [
            "stdout full",
            "stderr full",
            "stdout closed",
            "stderr closed",
        ] {
            let _ = std::fs::remove_file(&saved);
            let mut command = command(&strings(args));
            let full = || Stdio::from(File::create("/dev/full").unwrap());
            match broken {
                "stdout full" => command.stdout(full()),
                "stderr full" => command.stderr(full()),
                _ => &mut command,
            };
            let mut child = command.spawn().unwrap();
            // The reading end goes before the child writes anything: a closed pipe.
            match broken {
                "stdout closed" => drop(child.stdout.take()),
                "stderr closed" => drop(child.stderr.take()),
                _ => {}
            }
            let mut stdout = child.stdout.take();
            let reader = std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(pipe) = stdout.as_mut() {
                    let _ = pipe.read_to_end(&mut bytes);
                }
            });
            let mut stderr = Vec::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_end(&mut stderr);
            }
            let status = wait(child, &format!("{args:?} with {broken}"));
            reader.join().unwrap();
            let stderr = text(&stderr);
            assert!(
                matches!(status.code(), Some(0 | 1)),
                "{args:?} with {broken}: {status:?} {stderr}"
            );
            assert!(
                !stderr.contains("panicked"),
                "{args:?} with {broken}: {stderr}"
            );
            if broken.starts_with("stderr") {
                assert!(status.success(), "{args:?} with {broken}: {status:?}");
            }
            if *saves {
                assert!(
                    checkpoint::load(&saved).is_ok(),
                    "{args:?} with {broken} saved no checkpoint"
                );
            }
        }
    }
}

#[test]
fn a_save_that_cannot_happen_is_refused_before_training() {
    let dir = scratch("reliability-save");
    let missing = dir.join("no-such-folder/m.safetensors");
    for command in ["train-mlp", "train-cnn", "train-lm"] {
        let output = shadergrad(&[command, "--save", missing.to_str().unwrap()]);
        assert_refused(&output, &["no-such-folder", "does not exist"]);
        assert!(!text(&output.stderr).contains("epoch"), "it trained first");
        let output = shadergrad(&[command, "--save", "model.bin"]);
        assert_refused(&output, &["model.bin", ".safetensors"]);
    }
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--save",
        missing.to_str().unwrap(),
    ])));
    assert_refused(&output, &["does not exist"]);
    // So are the other files a run writes at its end.
    let missing_json = dir.join("no-such-folder/bench.json");
    let output = shadergrad(&["bench", "--json", missing_json.to_str().unwrap()]);
    assert_refused(&output, &["--json", "does not exist"]);
    let output = shadergrad(&["train-mlp", "--metrics", dir.to_str().unwrap()]);
    assert_refused(&output, &["--metrics", "is a folder"]);

    // A fresh run does not replace a checkpoint unless told to.
    let model = dir.join("m.safetensors");
    let model_arg = model.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train-mlp",
            "--epochs",
            "1",
            "--points",
            "40",
            "--save",
            model_arg,
        ];
        args.extend(extra);
        shadergrad(&args)
    };
    assert!(train(&[]).status.success());
    let before = std::fs::read(&model).unwrap();
    assert_refused(&train(&["--seed", "5"]), &["already exists", "--overwrite"]);
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the checkpoint was touched"
    );
    assert!(train(&["--seed", "5", "--overwrite"]).status.success());
    assert_ne!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn resume_refuses_architecture_flags_that_disagree_with_the_checkpoint() {
    let dir = scratch("reliability-resume-flags");
    let model = dir.join("m.safetensors");
    let model_arg = model.to_str().unwrap();
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--epochs", "1", "--save", model_arg,
    ])));
    assert!(output.status.success(), "{}", text(&output.stderr));
    for (flag, value, stored) in [
        ("--hidden", "32", "16"),
        ("--arch", "transformer", "recurrent"),
        ("--arch", "lstm", "gru"),
        ("--layers", "2", "1"),
    ] {
        let output = shadergrad(&strings(&tiny_seq2seq_data(&[
            "--epochs", "2", "--resume", model_arg, flag, value,
        ])));
        let stderr = text(&output.stderr);
        assert_refused(&output, &[&format!("{flag} {value}"), stored]);
        assert!(!stderr.contains("epoch 2"), "{stderr}");
    }
    // The checkpoint is at epoch 1: asking for 1 leaves nothing to train.
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--epochs", "1", "--resume", model_arg,
    ])));
    assert_refused(&output, &["after epoch 1", "leaves nothing to train"]);
    // The flag at the checkpoint's value is fine; so is leaving it out.
    let output = shadergrad(&strings(&tiny_seq2seq_data(&[
        "--epochs", "2", "--resume", model_arg, "--save", model_arg, "--hidden", "16",
    ])));
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// The tensors of a checkpoint, for comparing two runs bit for bit.
fn tensors(path: &Path) -> Vec<checkpoint::NamedTensor> {
    checkpoint::load(path).unwrap().tensors
}

/// For each trainer: two epochs in one run give the same model and optimizer state, bit
/// for bit, as one epoch and then a resumed second.
#[test]
fn every_trainer_resumes_bit_for_bit() {
    let dir = scratch("reliability-resume");
    let trainers: [(&str, Vec<&str>); 3] = [
        (
            "train-mlp",
            vec!["train-mlp", "--points", "60", "--schedule", "constant"],
        ),
        (
            "train-cnn",
            vec![
                "train-cnn",
                "--train-size",
                "96",
                "--valid-size",
                "16",
                "--embed",
                "8",
                "--filters",
                "8",
            ],
        ),
        (
            "train-lm",
            vec![
                "train-lm",
                "--hidden",
                "16",
                "--embed",
                "8",
                "--sample-length",
                "0",
                "--patience",
                "10",
            ],
        ),
    ];
    for (name, base) in trainers {
        let whole = dir.join(format!("{name}-whole.safetensors"));
        let halves = dir.join(format!("{name}-halves.safetensors"));
        let run = |epochs: &str, save: &Path, resume: bool| {
            let mut args = base.clone();
            let save = save.to_str().unwrap();
            args.extend(["--epochs", epochs, "--save", save]);
            if resume {
                args.extend(["--resume", save]);
            }
            let output = shadergrad(&args);
            assert!(output.status.success(), "{name}: {}", text(&output.stderr));
            text(&output.stderr)
        };
        run("2", &whole, false);
        run("1", &halves, false);
        let stderr = run("2", &halves, true);
        assert!(stderr.contains("resuming from"), "{name}: {stderr}");
        let (a, b) = (tensors(&whole), tensors(&halves));
        assert_eq!(
            a.iter().map(|t| &t.name).collect::<Vec<_>>(),
            b.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
        for (a, b) in a.iter().zip(&b) {
            assert!(a == b, "{name}: tensor {} differs after resuming", a.name);
        }
    }

    // train-seq2seq saves only when validation improves, which a tiny model may not do in
    // its second epoch: compare what that epoch measured instead, to the last bit.
    let second_epoch = |metrics: &Path| {
        let text = std::fs::read_to_string(metrics).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(line["epoch"], 2, "{text}");
        (
            line["train_loss"].clone(),
            line["val_loss"].clone(),
            line["val_accuracy"].clone(),
        )
    };
    let (whole, halves) = (dir.join("whole.jsonl"), dir.join("halves.jsonl"));
    let model = dir.join("seq2seq.safetensors");
    let model_arg = model.to_str().unwrap();
    let run = |args: &[&str]| {
        let output = shadergrad(&strings(&tiny_seq2seq_data(args)));
        assert!(output.status.success(), "{}", text(&output.stderr));
    };
    run(&[
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--metrics",
        whole.to_str().unwrap(),
    ]);
    run(&[
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--metrics",
        halves.to_str().unwrap(),
        "--save",
        model_arg,
    ]);
    run(&[
        "--epochs",
        "2",
        "--metrics",
        halves.to_str().unwrap(),
        "--resume",
        model_arg,
    ]);
    assert_eq!(second_epoch(&whole), second_epoch(&halves));
}

#[test]
fn translate_reports_bad_lines_and_translates_the_rest() {
    let dir = scratch("reliability-translate");
    let model = dir.join("m.safetensors");
    let model_arg = model.to_str().unwrap();
    let output = shadergrad(&strings(&tiny_seq2seq(&[
        "--epochs", "1", "--save", model_arg,
    ])));
    assert!(output.status.success(), "{}", text(&output.stderr));

    let mut input = Vec::new();
    for line in 0..300 {
        match line {
            7 => input.extend_from_slice(b"ab\xff\xfecd"),
            150 => input.extend("a".repeat(5000).as_bytes()),
            _ => input.extend_from_slice(b"abc"),
        }
        input.push(b'\n');
    }
    let path = dir.join("input.txt");
    std::fs::write(&path, &input).unwrap();
    let mut command = command(&["translate", "--checkpoint", model_arg, "--batch", "64"]);
    command.stdin(File::open(&path).unwrap());
    let output = run(command);
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_refused(
        &output,
        &["line 8", "not UTF-8", "line 151", "5000 tokens", "2 of 300"],
    );
    assert_eq!(lines.len(), 300, "one output line per input line");
    assert_eq!(lines[7], "");
    assert_eq!(lines[150], "");
    assert_eq!(lines[0], lines[299], "the good lines were translated alike");

    assert_refused(
        &shadergrad(&["translate", "--checkpoint", model_arg, "abc", ""]),
        &["text argument 2 is empty"],
    );
    let lm = dir.join("lm.safetensors");
    train_tiny_lm(&lm);
    assert_refused(
        &shadergrad(&["translate", "--checkpoint", lm.to_str().unwrap(), "abc"]),
        &["language model", "sample"],
    );
}

/// A long sample prints as it is drawn: the first characters arrive long before the last
/// could have been drawn (the run is stopped once they are read).
#[test]
fn sample_streams_its_characters() {
    let dir = scratch("reliability-sample");
    let lm = dir.join("lm.safetensors");
    train_tiny_lm(&lm);
    // A million characters take many minutes; the watchdog fails the test if the first
    // ones only come at the end.
    let mut child = command(&[
        "sample",
        "--checkpoint",
        lm.to_str().unwrap(),
        "--prompt",
        "The",
        "--length",
        "1000000",
    ])
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 40];
        let read = stdout.read_exact(&mut first).map(|()| first);
        let _ = sender.send(read);
        // Dropped here: the sampler meets a closed pipe and stops.
    });
    let first = receiver.recv_timeout(WATCHDOG);
    let _ = child.kill();
    let _ = child.wait();
    let first = first
        .expect("40 characters within the watchdog's time")
        .unwrap();
    assert!(first.starts_with(b"The"), "{:?}", text(&first));
}

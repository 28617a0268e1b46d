//! The command line, run as a user runs it.

use std::process::{Command, Output};

use shadergrad::checkpoint::NamedTensor;

fn shadergrad(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadergrad"));
    command.args(args).env_remove("SHADERGRAD_ADAPTER");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the shadergrad binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn adapters_lists_every_adapter_with_its_limits_and_features() {
    let output = shadergrad(&["adapters"], &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    for field in [
        "[0] ",
        "backend:",
        "device type:",
        "driver:",
        "max buffer size:",
        "max workgroup storage:",
        "subgroups:",
        "shader-f16:",
        "timestamps:",
        "cooperative matrix:",
        "selected:",
    ] {
        assert!(stdout.contains(field), "missing {field:?} in:\n{stdout}");
    }
}

#[test]
fn an_unknown_adapter_is_an_error_listing_the_adapters() {
    let output = shadergrad(&["--adapter", "99", "adapters"], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no adapter matches \"99\"") && stderr.contains("[0]"),
        "{stderr}"
    );

    let output = shadergrad(&["adapters"], &[("SHADERGRAD_ADAPTER", "no-such-gpu")]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("no-such-gpu"));
}

#[test]
fn without_any_adapter_commands_fail_and_say_how_to_get_one() {
    // Only Vulkan, and a Vulkan loader pointed at a driver file that does not exist.
    let env = [
        ("WGPU_BACKEND", "vulkan"),
        ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
        ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
    ];
    let output = shadergrad(&["adapters"], &env);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no Vulkan/Metal/DX12 adapter was found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("setup-lavapipe.sh") && stderr.contains("mesa-vulkan-drivers"),
        "{stderr}"
    );
}

#[test]
fn help_names_the_commands() {
    let output = shadergrad(&["--help"], &[]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("adapters"));
}

/// A scratch folder for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn train_mlp_learns_xor_and_saves_its_model_and_metrics() {
    let dir = scratch("train-mlp-xor");
    let model = dir.join("xor.safetensors");
    let metrics = dir.join("metrics.jsonl");
    let output = shadergrad(
        &[
            "train-mlp",
            "--dataset",
            "xor",
            "--points",
            "40",
            "--layers",
            "16",
            "--epochs",
            "30",
            "--save",
            model.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let accuracy: f64 = stdout
        .split("test accuracy ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {stdout:?}"));
    assert!(accuracy >= 90.0, "{stdout}");
    assert!(model.exists());
    assert!(!dir.join("xor.json").exists(), "a checkpoint is one file");
    // The parameters, and Adam's two moments per parameter for resuming.
    let checkpoint = shadergrad::checkpoint::load(&model).unwrap();
    let names: Vec<&str> = checkpoint.tensors.iter().map(|t| t.name.as_str()).collect();
    for name in [
        "layers.0.weight",
        "layers.1.bias",
        "optimizer.layers.0.weight.exp_avg",
        "optimizer.layers.1.bias.exp_avg_sq",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // PyTorch's nn.Linear layout: weight [out, in].
    assert_eq!(checkpoint.get("layers.0.weight").unwrap().shape, [16, 2]);
    assert_eq!(
        checkpoint.config["training"]["optimizer_step"],
        checkpoint.config["training"]["steps"]
    );
    assert_eq!(
        checkpoint.config["architecture"]["hidden"],
        serde_json::json!([16])
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    for field in [
        "epoch",
        "step",
        "elapsed_s",
        "train_loss",
        "val_loss",
        "val_accuracy",
    ] {
        assert!(
            lines[29].get(field).is_some(),
            "{field} missing in {}",
            lines[29]
        );
    }

    // A checkpoint from before the PyTorch layout (`layer{i}.weight` [in, out], the
    // optimizer's moments alike and keyed by the parameter's index, no "weight_layout")
    // resumes as it would have.
    let mut old = checkpoint.clone();
    old.rename_tensors(|name| {
        let by_index = [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias",
        ]
        .iter()
        .enumerate()
        .fold(name.to_string(), |name, (index, parameter)| {
            name.replace(
                &format!("optimizer.{parameter}."),
                &format!("optimizer.{index}."),
            )
        });
        Some(by_index.replace("layers.", "layer"))
    })
    .unwrap();
    let tensors: Vec<NamedTensor> = old
        .tensors
        .iter()
        .map(|t| match t.shape[..] {
            [rows, columns] => {
                let values = t.as_f32().unwrap();
                let transposed: Vec<f32> = (0..rows * columns)
                    .map(|i| values[(i % rows) * columns + i / rows])
                    .collect();
                NamedTensor::new(t.name.clone(), &[columns, rows], transposed)
            }
            _ => t.clone(),
        })
        .collect();
    let mut config = checkpoint.config.clone();
    config.as_object_mut().unwrap().remove("weight_layout");
    let legacy = dir.join("legacy.safetensors");
    shadergrad::checkpoint::save(&legacy, &tensors, &config).unwrap();
    // Resumed from either file, epoch 31 runs the same: the same losses to the bit.
    let resume = |from: &std::path::Path, metrics: &std::path::Path| {
        let output = shadergrad(
            &[
                "train-mlp",
                "--dataset",
                "xor",
                "--points",
                "40",
                "--layers",
                "16",
                "--epochs",
                "31",
                "--resume",
                from.to_str().unwrap(),
                "--metrics",
                metrics.to_str().unwrap(),
            ],
            &[],
        );
        assert!(output.status.success(), "stderr: {}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains("after epoch 30"),
            "{}",
            text(&output.stderr)
        );
        let line = std::fs::read_to_string(metrics).unwrap();
        let mut record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        record.as_object_mut().unwrap().remove("elapsed_s");
        record
    };
    let today = resume(&model, &dir.join("resumed.jsonl"));
    assert_eq!(today["epoch"], 31);
    assert_eq!(resume(&legacy, &dir.join("resumed-legacy.jsonl")), today);
}

#[test]
fn train_mlp_names_the_bad_line_of_a_csv() {
    let dir = scratch("train-mlp-csv");
    let csv = dir.join("points.csv");
    std::fs::write(&csv, "x,y,label\n0.5,1.0,0\n0.25,oops,1\n").unwrap();
    let output = shadergrad(&["train-mlp", "--data", csv.to_str().unwrap()], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("oops"),
        "{stderr}"
    );
    let output = shadergrad(&["train-mlp", "--optimizer", "lbfgs"], &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("lbfgs"));
    let output = shadergrad(&["train-mlp", "--test-fraction", "0"], &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("--test-fraction 0"));
}

#[test]
fn train_mlp_refuses_a_csv_of_one_class() {
    let dir = scratch("train-mlp-one-class");
    let csv = dir.join("one-class.csv");
    std::fs::write(&csv, "x,y,label\n0.5,1.0,1\n0.25,2.0,1\n0.75,3.0,1\n").unwrap();
    let output = shadergrad(&["train-mlp", "--data", csv.to_str().unwrap()], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: the examples have 1 class (every label is 1); a classifier needs at least 2",
            csv.display()
        )),
        "{stderr}"
    );
}

#[test]
fn train_mlp_prints_the_warnings_of_its_csv() {
    let dir = scratch("train-mlp-warnings");
    let csv = dir.join("nul.csv");
    let rows: String = (0..10)
        .map(|i| format!("{i},{},{}\n", i * i, i % 2))
        .collect();
    std::fs::write(&csv, format!("x,y\0,label\n{rows}")).unwrap();
    // An adapter that does not exist stops the run once the data is read and split, before
    // any GPU work.
    let output = shadergrad(
        &[
            "--adapter",
            "no-such-adapter",
            "train-mlp",
            "--data",
            csv.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("warning: {}: line 1: a NUL byte", csv.display()))
            && stderr.contains("no adapter matches"),
        "{stderr}"
    );
}

#[test]
fn train_mlp_refuses_more_points_than_memory_holds_at_once() {
    let output = shadergrad(
        &["train-mlp", "--points", "1000000000"],
        &[("SHADERGRAD_HOST_MEMORY", "1000000000")],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--points 1000000000 × 3 classes: 3000000000 points of about 64 B")
            && stderr.contains("more than half of the 953.7 MiB free on this machine")
            && stderr.contains("at most 7812500 points fit"),
        "{stderr}"
    );
}

#[test]
fn train_mlp_with_its_defaults_reaches_97_percent_on_spirals() {
    let output = shadergrad(&["train-mlp"], &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let accuracy: f64 = stdout
        .split("test accuracy ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {stdout:?}"));
    assert!(accuracy >= 97.0, "{stdout}");
}

/// `shadergrad --adapter 0 bench --quick` with `extra` arguments and `--json` into a scratch
/// directory named `name`: its stdout and the records it wrote. Fails the test if it fails.
fn bench_quick(name: &str, extra: &[&str]) -> (String, Vec<serde_json::Value>) {
    let json = scratch(name).join("bench.json");
    let mut args = vec!["--adapter", "0", "bench", "--quick"];
    args.extend(extra);
    args.extend(["--json", json.to_str().unwrap()]);
    let output = shadergrad(&args, &[]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let records = records.as_array().expect("an array").clone();
    (text(&output.stdout), records)
}

#[test]
fn bench_quick_prints_a_table_and_writes_every_field_as_json() {
    let (stdout, records) = bench_quick("bench", &[]);
    assert!(
        stdout.contains("median ms") && stdout.contains("GFLOP/s"),
        "{stdout}"
    );
    for field in [
        "adapter",
        "backend",
        "kernel",
        "variant",
        "shape",
        "median_ms",
        "gflops",
        "gbps",
    ] {
        assert!(
            records.iter().all(|r| r.get(field).is_some()),
            "{field} missing"
        );
    }
    for kernel in [
        "matmul",
        "softmax",
        "cross-entropy",
        "conv1d",
        "attention",
        "recurrent",
        "optimizer",
        "train step",
    ] {
        assert!(
            records.iter().any(|r| r["kernel"] == kernel),
            "no {kernel} row"
        );
    }
    // Every matmul shape has exactly one variant the engine picks.
    let picked = records
        .iter()
        .filter(|r| r["kernel"] == "matmul" && r["picked"] == true)
        .count();
    let shapes: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r["kernel"] == "matmul")
        .map(|r| r["shape"].as_str().unwrap())
        .collect();
    assert_eq!(picked, shapes.len());
    assert!(records
        .iter()
        .all(|r| r["median_ms"].as_f64().unwrap() > 0.0));
}

#[test]
fn bench_only_measures_the_families_asked_for_and_names_an_unknown_one() {
    let (_, records) = bench_quick("bench-only", &["--only", "optimizer,softmax"]);
    let kernels: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r["kernel"].as_str().unwrap())
        .collect();
    assert_eq!(
        kernels,
        ["optimizer", "softmax"].into_iter().collect(),
        "{records:?}"
    );

    let output = shadergrad(&["bench", "--quick", "--only", "matmul,gemv"], &[]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("invalid value 'gemv'") && stderr.contains("cross-entropy, conv"),
        "{stderr}"
    );
}

/// Every training command trains on two devices (`--adapters 0,0`, two opened on one
/// adapter) and says what the gradient sums cost; a bad adapter list is refused naming it.
#[test]
fn every_training_command_trains_data_parallel_on_two_devices() {
    for args in [
        &["train-mlp", "--epochs", "2"][..],
        &["train-lm", "--epochs", "1", "--sample-length", "0"],
        &[
            "train-cnn",
            "--epochs",
            "1",
            "--train-size",
            "300",
            "--valid-size",
            "50",
        ],
    ] {
        let mut full = args.to_vec();
        full.extend(["--adapters", "0,0"]);
        let output = shadergrad(&full, &[]);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{} on ", args[0]))
                && stderr.contains("gradient sum over 2 replicas:"),
            "{args:?}: {stderr}"
        );
        let mut bad = args.to_vec();
        bad.extend(["--adapters", "0;1"]);
        let output = shadergrad(&bad, &[]);
        let stderr = text(&output.stderr);
        assert!(
            !output.status.success()
                && stderr.contains("--adapters \"0;1\": expected indices")
                && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

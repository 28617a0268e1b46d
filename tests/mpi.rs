//! `train-seq2seq --distributed` under `mpirun -n 2` on this machine (the `mpi` feature;
//! `scripts/setup-mpi.sh` installs Open MPI): two processes on half batches take the steps
//! of one process on the whole batches, a checkpoint resumes on another number of
//! processes, and a process that dies or fails ends the job with a message instead of
//! leaving the others waiting.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::parameter_distance;

/// The tiny model every run here trains: ten SGD steps of 16 pairs per epoch.
const TINY: &[&str] = &[
    "train-seq2seq",
    "--task",
    "reverse",
    "--train-size",
    "160",
    "--valid-size",
    "20",
    "--hidden",
    "16",
    "--embed",
    "8",
    "--batch",
    "16",
    "--optimizer",
    "sgd",
    "--lr",
    "0.5",
    "--clip",
    "1",
    "--select",
    "loss",
    "--samples",
    "0",
];

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `mpirun -n ranks shadergrad args…` (or the binary alone for 0 ranks), not yet waited
/// for. mpirun may run as root here (CI's containers) and place two processes on however
/// few cores there are.
fn launch<S: AsRef<OsStr>>(ranks: usize, args: &[S]) -> Child {
    let binary = env!("CARGO_BIN_EXE_shadergrad");
    let mut command = if ranks == 0 {
        Command::new(binary)
    } else {
        let mut command = Command::new("mpirun");
        command
            .args(["--oversubscribe", "-n", &ranks.to_string(), binary])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        command
    };
    command
        .args(args)
        .env_remove("SHADERGRAD_ADAPTER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("mpirun runs (scripts/setup-mpi.sh installs it): {e}"))
}

/// Waits for `child` for at most `limit`, killing it past that: a hang fails the test.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn run<S: AsRef<OsStr>>(ranks: usize, args: &[S]) -> Output {
    let output = finish(launch(ranks, args), Duration::from_secs(300));
    assert!(
        output.status.success(),
        "{ranks} processes: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Two processes, each on half of every batch, against one process on the whole batches:
/// the same sums in another order, so the parameters agree to the roundings
/// `tests/parallel.rs` accounts for (1e-5 after ten SGD steps of lr 0.5); a share left out
/// or counted twice moves them by 0.1. Then the one-process checkpoint resumes on two
/// processes, and agrees with its resumption on one.
#[test]
fn two_processes_on_half_batches_take_the_steps_of_one_and_resume_on_any_number() {
    let dir = scratch("mpi-equivalence");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let with = |extra: &[&str]| -> Vec<String> {
        TINY.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let one = with(&["--epochs", "1", "--save", &path("one.safetensors")]);
    let two = with(&[
        "--epochs",
        "1",
        "--distributed",
        "--save",
        &path("two.safetensors"),
    ]);
    run(0, &one);
    let output = run(2, &two);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("train-seq2seq process 0 of 2 on")
            && stderr.contains("train-seq2seq process 1 of 2 on")
            && stderr.contains("data-parallel over 2 replicas (1 per process × 2 processes)")
            && stderr.contains("of which the all-reduce between processes"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("epoch 1: train loss").count(),
        1,
        "process 0 alone reports: {stderr}"
    );
    assert_eq!(stdout.matches("best validation").count(), 1, "{stdout}");
    let (distance, largest) =
        parameter_distance(&dir.join("one.safetensors"), &dir.join("two.safetensors"));
    assert!(
        distance <= 1e-5,
        "the parameters differ by up to {distance:e}"
    );
    assert!(largest > 0.1, "parameters of size {largest}");

    // The one-process checkpoint, resumed for a second epoch on one and on two processes.
    let resumed = |ranks: usize, save: &str| -> Vec<String> {
        let mut args = with(&[
            "--epochs",
            "2",
            "--resume",
            &path("one.safetensors"),
            "--save",
            &path(save),
        ]);
        if ranks > 0 {
            args.push("--distributed".into());
        }
        args
    };
    run(0, &resumed(0, "resumed-one.safetensors"));
    run(2, &resumed(2, "resumed-two.safetensors"));
    let (distance, _) = parameter_distance(
        &dir.join("resumed-one.safetensors"),
        &dir.join("resumed-two.safetensors"),
    );
    assert!(
        distance <= 2e-5,
        "resumed: the parameters differ by up to {distance:e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The MLP (its loss a mean over examples, where the seq2seq model's is over tokens) under
/// `mpirun -n 2` against one process: the same parameters to the same bound.
#[test]
fn the_mlp_on_two_processes_takes_the_steps_of_one() {
    let dir = scratch("mpi-mlp");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let args = |save: &str, distributed: bool| -> Vec<String> {
        let mut args: Vec<String> = [
            "train-mlp",
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--epochs",
            "3",
            "--save",
            &path(save),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if distributed {
            args.push("--distributed".into());
        }
        args
    };
    run(0, &args("one.safetensors", false));
    let output = run(2, &args("two.safetensors", true));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("test accuracy").count(), 1, "{stdout}");
    let (distance, largest) =
        parameter_distance(&dir.join("one.safetensors"), &dir.join("two.safetensors"));
    assert!(
        distance <= 1e-5,
        "the parameters differ by up to {distance:e}"
    );
    assert!(largest > 0.1, "parameters of size {largest}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process killed mid-training ends the job: mpirun stops the other and says which one
/// died, well within a minute.
#[test]
fn a_killed_process_ends_the_job_with_a_message() {
    let mut child = launch(
        2,
        &[
            "train-seq2seq",
            "--distributed",
            "--train-size",
            "20000",
            "--valid-size",
            "50",
            "--epochs",
            "5",
        ],
    );
    // Wait until training runs (a progress line), then kill the second process.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let training = line.contains("tok/s");
        seen.push(line);
        if training {
            break;
        }
    }
    assert!(
        seen.iter().any(|line| line.contains("tok/s")),
        "training never started: {seen:?}"
    );
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string(), "-f", "shadergrad"])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&ranks.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(pids.len(), 2, "mpirun's processes: {pids:?}");
    let killed = Instant::now();
    Command::new("kill")
        .args(["-9", &pids[1]])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(std::result::Result::ok).collect();
    let output = finish(child, Duration::from_secs(60));
    assert!(!output.status.success(), "the job ended successfully");
    assert!(killed.elapsed() < Duration::from_secs(60));
    let all = rest.join("\n");
    assert!(
        all.contains("exited on signal 9") || all.contains("killed"),
        "no word of the dead process: {all}"
    );
}

/// An error on the processes (here every one: a batch smaller than the processes) ends
/// the job with the error, not with processes waiting for each other.
#[test]
fn an_error_in_a_process_ends_the_job_naming_it() {
    let output = finish(
        launch(
            2,
            &[
                "train-seq2seq",
                "--distributed",
                "--task",
                "reverse",
                "--train-size",
                "50",
                "--valid-size",
                "5",
                "--batch",
                "1",
            ],
        ),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("a batch of 1 pairs cannot be shared among 2 replicas")
            && stderr.contains("error in train-seq2seq (process"),
        "{stderr}"
    );
}

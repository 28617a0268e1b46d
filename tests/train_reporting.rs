//! Training's reporting: the metrics file read back with serde_json, and the progress
//! display through its public API (its line format is unit-tested beside the code).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shadergrad::train::{
    format_progress, Drawing, EpochMetrics, MetricsFile, Progress, ProgressState,
};
use shadergrad::Error;

/// A fresh folder for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("train-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn epoch(epoch: usize, train_loss: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        step: 40 * epoch as u64,
        elapsed_s: 1.5 * epoch as f64,
        train_loss,
        val_loss: Some(train_loss + 0.125),
        val_accuracy: Some(0.5 + 0.125 * epoch as f64),
        extra: Vec::new(),
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn appending_twice_keeps_every_line_valid() {
    let dir = scratch("append");
    let path = dir.join("metrics.jsonl");
    {
        let mut metrics = MetricsFile::open(&path).unwrap();
        metrics.append(&epoch(1, 0.75)).unwrap();
        metrics.append(&epoch(2, 0.5)).unwrap();
    }
    // A second run appends to the same file.
    let mut metrics = MetricsFile::open(&path).unwrap();
    assert_eq!(metrics.path(), path);
    let mut diverged = epoch(3, f64::NAN)
        .with("lr", 0.01)
        .with("tokens_per_s", f64::INFINITY);
    diverged.val_accuracy = None;
    metrics.append(&diverged).unwrap();

    let records = lines(&path);
    assert_eq!(records.len(), 3);
    for (number, record) in records.iter().enumerate().take(2) {
        let e = number + 1;
        assert_eq!(record["epoch"], e);
        assert_eq!(record["step"], 40 * e);
        assert_eq!(record["elapsed_s"], 1.5 * e as f64);
        assert_eq!(record["val_accuracy"], 0.5 + 0.125 * e as f64);
        assert_eq!(record.as_object().unwrap().len(), 6);
    }
    assert_eq!(records[0]["train_loss"], 0.75);
    assert_eq!(records[1]["val_loss"], 0.625);
    assert_eq!(records[2]["train_loss"], Value::Null);
    assert_eq!(records[2]["val_loss"], Value::Null);
    assert_eq!(records[2]["val_accuracy"], Value::Null);
    assert_eq!(records[2]["lr"], 0.01);
    assert_eq!(records[2]["tokens_per_s"], Value::Null);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_writers_on_one_file_interleave_whole_lines() {
    let dir = scratch("two-writers");
    let path = dir.join("metrics.jsonl");
    let mut first = MetricsFile::open(&path).unwrap();
    let mut second = MetricsFile::open(&path).unwrap();
    for e in 1..=3 {
        first.append(&epoch(e, 1.0)).unwrap();
        second.append(&epoch(e, 2.0)).unwrap();
    }
    let losses: Vec<f64> = lines(&path)
        .iter()
        .map(|r| r["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_line_cut_off_by_a_crash_does_not_swallow_the_next_record() {
    let dir = scratch("cut-off");
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, "{\"epoch\":1,\"step\":40}\n{\"epoch\":2,\"st").unwrap();
    MetricsFile::open(&path)
        .unwrap()
        .append(&epoch(3, 0.25))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1], "{\"epoch\":2,\"st");
    let last: Value = serde_json::from_str(all[2]).unwrap();
    assert_eq!(last["train_loss"], 0.25);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unopenable_metrics_file_names_its_path() {
    let dir = scratch("unopenable");
    let path = dir.join("no-such-folder").join("metrics.jsonl");
    let error = MetricsFile::open(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(error.to_string().starts_with(&path.display().to_string()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_progress_line_from_a_fixed_state() {
    let state = ProgressState {
        epoch: 1,
        epochs: 2,
        step: 25,
        total_steps: 100,
        items: 800,
        unit: "tok",
        values: vec![("loss".into(), 1.0)],
        first_step: None,
    };
    // 800 tokens in 2 s; 75 steps left at 12.5 steps/s → 6 s.
    let line = format_progress(&state, Duration::from_secs(2), 120);
    assert_eq!(
        line,
        format!(
            "epoch 1/2 [{}>{}] 25/100  25% loss 1.000 | 400.0 tok/s | ETA 0:06",
            "=".repeat(7),
            " ".repeat(22)
        )
    );
}

#[test]
fn a_logged_run_prints_whole_lines_and_messages() {
    let mut out = Vec::new();
    {
        let mut progress =
            Progress::new(&mut out, Drawing::Log { every_percent: 25 }, 80, 8, 2, "ex");
        for e in 1..=2 {
            progress.start_epoch(e);
            for _ in 0..4 {
                progress.advance(16, &[("loss", 0.5)]);
            }
            progress.message(&format!("epoch {e} done"));
        }
        progress.finish();
    }
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(!text.contains('\r'));
    for (line, (epoch, step)) in [0, 1, 3, 4].iter().zip([(1, 2), (1, 4), (2, 6), (2, 8)]) {
        assert!(
            lines[*line].starts_with(&format!("epoch {epoch}/2 [")),
            "{}",
            lines[*line]
        );
        assert!(
            lines[*line].contains(&format!(" {step}/8 ")),
            "{}",
            lines[*line]
        );
        assert!(lines[*line].contains("loss 0.5000"), "{}", lines[*line]);
    }
    assert_eq!((lines[2], lines[5]), ("epoch 1 done", "epoch 2 done"));
    assert!(lines[4].contains("done in"), "{}", lines[4]);
}

//! Every pipeline variant compiles under Tint, the WGSL compiler of Chrome and Dawn, and not
//! only under naga, which accepts some WGSL that Tint refuses. The test writes the variant
//! list to `target/pipeline-variants.json` and runs `scripts/tint-check.mjs` on it, which
//! compiles each variant in dawn.node on the machine's Vulkan driver (README, "Tests").
//!
//! A test rather than a step of its own in `.ci/run`: CI runs README's test command and
//! nothing else, so a test is how the check reaches CI, while `cargo test` keeps working
//! on machines without Node.js. Where Node.js or the install of `scripts/setup-tint.sh` is
//! missing the test says that it skips, unless `CI` is set: there that is a failure.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use shadergrad::kernels;

/// The check takes a few seconds; one that hangs fails instead of stalling CI.
const WATCHDOG: Duration = Duration::from_secs(300);

#[test]
fn every_pipeline_variant_compiles_under_tint() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(missing) = missing_tools(repo) {
        skip_or_fail(&missing);
        return;
    }
    let list = repo.join("target/pipeline-variants.json");
    write_variant_list(&list);
    // The report goes to a file, not a pipe, which a long report could fill and block.
    let log = repo.join("target/tint-check.log");
    let status = run_check(repo, &list, &log);
    let report = fs::read_to_string(&log).expect("the check's report");
    assert!(
        status.success(),
        "the Tint check failed ({status}):\n{report}"
    );
    println!("{report}");
}

/// What the check needs that this machine lacks, if anything.
fn missing_tools(repo: &Path) -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        return Some("Node.js (`node`) is not installed".into());
    }
    // scripts/setup-tint.sh writes this once its install has finished.
    if !repo.join(".tint/installed-lock.sha256").exists() {
        return Some("dawn.node is not installed (run scripts/setup-tint.sh)".into());
    }
    None
}

#[expect(
    clippy::explicit_write,
    reason = "eprintln! is captured by the test harness: a skip must be seen"
)]
fn skip_or_fail(missing: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the Tint check cannot run: {missing}; .ci/run must run scripts/setup-tint.sh");
    }
    writeln!(std::io::stderr(), "tint: check SKIPPED: {missing}").unwrap();
}

/// Runs `node scripts/tint-check.mjs list` with its output in `log`, under the watchdog.
fn run_check(repo: &Path, list: &Path, log: &Path) -> ExitStatus {
    let output = File::create(log).expect("target/tint-check.log");
    let mut child = Command::new("node")
        .arg(repo.join("scripts/tint-check.mjs"))
        .arg(list)
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .expect("node runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            child.kill().unwrap();
            panic!(
                "the Tint check ran past {WATCHDOG:?} (its output: {})",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes every variant the launchers can build, as Tint is to compile it
/// (`kernels::variants_for_other_compilers`).
fn write_variant_list(path: &Path) {
    let text = serde_json::to_string(&kernels::variants_for_other_compilers()).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).expect("target/pipeline-variants.json");
}

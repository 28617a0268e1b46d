//! `scripts/setup-lavapipe.sh`'s decision per release, read from os-release files of the
//! systems it supports and some it does not (`--plan` decides without installing).

use std::path::Path;
use std::process::Command;

fn run(release: &str, plan: bool) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/setup-lavapipe.sh")).env(
        "OS_RELEASE",
        root.join("tests/data/os-release").join(release),
    );
    if plan {
        command.arg("--plan");
    }
    command.output().expect("bash runs")
}

#[test]
fn each_release_gets_a_mesa_that_runs_the_shaders() {
    for (release, expected) in [
        ("debian-12", "backports"),
        ("debian-13", "release"),
        ("ubuntu-22.04", "release"),
        ("ubuntu-24.04", "release"),
        ("debian-11", "unsupported: Debian 11 is older than 12"),
        (
            "ubuntu-20.04",
            "unsupported: Ubuntu 20.04 is older than 22.04",
        ),
        (
            "fedora-40",
            "unsupported: this script knows Debian and Ubuntu, not fedora",
        ),
    ] {
        let output = run(release, true);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{release}: {output:?}");
        assert!(stdout.starts_with(expected), "{release}: {stdout}");
    }
}

#[test]
fn an_unsupported_release_is_an_error_that_says_what_to_install() {
    let output = run("fedora-40", false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Mesa Vulkan driver (lavapipe)"), "{stderr}");
}

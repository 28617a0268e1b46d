//! The command line, run as a user runs it.

use std::process::{Command, Output};

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

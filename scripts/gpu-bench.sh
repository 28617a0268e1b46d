#!/usr/bin/env bash
# Measures this machine's GPUs: builds in release, runs the test suite, `shadergrad bench`
# on every adapter (JSON and table), the CPU-GEMM comparison, and, when PyTorch is
# installed, the same matmuls and training steps in PyTorch (benches/pytorch_bench.py).
# Everything lands in DIR.
#
#   scripts/gpu-bench.sh DIR
set -euo pipefail
out="${1:?usage: scripts/gpu-bench.sh DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."

cargo build --release --all-targets
./target/release/shadergrad adapters > "$out/adapters.txt" 2>&1 || true
if cargo test --release > "$out/tests.txt" 2>&1; then
    echo "tests: passed"
else
    echo "tests: FAILED (see $out/tests.txt)"
fi
./target/release/shadergrad bench --json "$out/bench.json" | tee "$out/bench.txt"
cargo bench --bench cpu_gemm > "$out/cpu_gemm.txt" 2>&1 || true
if python3 -c "import torch" 2> /dev/null; then
    python3 benches/pytorch_bench.py --json "$out/pytorch.json" | tee "$out/pytorch.txt"
else
    echo "PyTorch is not installed: its comparison is skipped"
fi
echo "results in $out"

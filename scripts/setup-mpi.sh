#!/usr/bin/env bash
# Installs Open MPI (the library, its headers and mpirun) and libclang (which the `mpi`
# crate's bindings generator loads at build time), idempotently, for the `mpi` feature and
# its tests. Debian and Ubuntu only; run it as root or as a user with sudo.
set -euo pipefail

packages=(libopenmpi-dev openmpi-bin libclang-dev)

installed() {
  command -v mpirun >/dev/null 2>&1 &&
    command -v mpicc >/dev/null 2>&1 &&
    ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1
}

if installed; then
  echo "Open MPI already installed ($(mpirun --version 2>/dev/null | head -n 1))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: this script installs with apt-get (Debian, Ubuntu); install Open MPI's development package, mpirun and libclang by hand" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
echo "installed $(mpirun --version 2>/dev/null | head -n 1)"

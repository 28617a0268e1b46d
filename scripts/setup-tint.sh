#!/usr/bin/env bash
# Installs what scripts/tint-check.mjs needs, idempotently: dawn.node (the npm package
# `webgpu`: Dawn, Chrome's WebGPU implementation, with its WGSL compiler Tint, built for
# Node.js) into .tint/, at the versions scripts/tint/package-lock.json pins. Needs Node.js
# and npm (the machine's); Dawn then runs on the Vulkan driver of scripts/setup-lavapipe.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=scripts/tint
dest=.tint
# Written only once `npm ci` has finished, so that an interrupted install is redone.
stamp="$dest/installed-lock.sha256"
wanted=$(sha256sum "$manifest/package-lock.json" | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "dawn.node already installed in $dest"
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found: the Tint check needs Node.js and npm" >&2; exit 1; }
done

rm -rf "$dest"
mkdir -p "$dest"
cp "$manifest/package.json" "$manifest/package-lock.json" "$dest/"
# --ignore-scripts: the one install script, webgpu's, only clears macOS's quarantine flag.
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "$wanted" >"$stamp"
echo "installed dawn.node (npm webgpu $(node -p "require('./$dest/node_modules/webgpu/package.json').version")) in $dest"

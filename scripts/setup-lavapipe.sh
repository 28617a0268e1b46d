#!/usr/bin/env bash
# Installs lavapipe (Mesa's software Vulkan driver) and the Vulkan loader, idempotently.
# On Debian 12 (bookworm) it takes Mesa from bookworm-backports: Mesa 25 runs our shaders
# 3-4x faster than bookworm's own Mesa 22. The backports entry is derived from the
# machine's existing Debian source, so it uses whatever mirror the machine is set up with.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

has_lavapipe() {
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ldconfig -p | grep -q 'libvulkan.so.1'
}

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
sources=/etc/apt/sources.list.d/debian.sources
backports=/etc/apt/sources.list.d/shadergrad-backports.sources
install_args=()

if [ "$codename" = "bookworm" ]; then
  mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  if has_lavapipe && [[ "$mesa_version" != 22.* ]]; then
    echo "lavapipe already installed (mesa-vulkan-drivers $mesa_version)"
    exit 0
  fi
  if [ ! -f "$backports" ]; then
    if [ -f "$sources" ]; then
      # Take the first stanza naming the main archive (not debian-security) and point it at backports.
      uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")
      keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$sources")
    else
      uri=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
      keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    [ -n "$uri" ] || { echo "error: could not find a Debian mirror in $sources or /etc/apt/sources.list" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "$uri" "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}" | $SUDO tee "$backports" >/dev/null
  fi
  install_args=(-t bookworm-backports)
elif has_lavapipe; then
  echo "lavapipe already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${install_args[@]}" mesa-vulkan-drivers libvulkan1
echo "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

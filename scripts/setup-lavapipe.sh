#!/usr/bin/env bash
# Installs lavapipe (Mesa's software Vulkan driver), the Vulkan loader and Mesa's EGL/GL
# drivers (wgpu's GL backend, which CI also tests), idempotently. Run it as root or as a
# user with sudo; it elevates itself only for the commands that need it.
#
# Which Mesa, by /etc/os-release (or the file $OS_RELEASE names):
# - Debian 12 (bookworm): Mesa from bookworm-backports: Mesa 25 runs our shaders 3-4x
#   faster than bookworm's own Mesa 22. The backports entry is derived from the machine's
#   existing Debian source, so it uses whatever mirror the machine is set up with.
# - Debian 13 (trixie) and later, Ubuntu 22.04 and later: the release's own Mesa (23 or
#   newer).
# - Anything else: an error saying what to install by hand.
#
# `setup-lavapipe.sh --plan` prints the decision and installs nothing.
set -euo pipefail

os_release=${OS_RELEASE:-/etc/os-release}
packages=(mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri)

# The field $1 of the os-release file, empty if absent.
release_field() {
  (. "$os_release" && eval "echo \"\${$1:-}\"")
}

# Prints "backports", "release" or "unsupported: <why>" for this machine's release.
plan() {
  local id version codename
  id=$(release_field ID)
  version=$(release_field VERSION_ID)
  codename=$(release_field VERSION_CODENAME)
  case "$id" in
    debian)
      if [ "$codename" = "bookworm" ]; then
        echo backports
      elif [ -n "$version" ] && [ "${version%%.*}" -lt 12 ]; then
        echo "unsupported: Debian $version is older than 12 (bookworm); its Mesa is too old"
      else
        echo release
      fi
      ;;
    ubuntu)
      if [ "${version%%.*}" -ge 22 ] 2>/dev/null; then
        echo release
      else
        echo "unsupported: Ubuntu ${version:-?} is older than 22.04; its Mesa is too old"
      fi
      ;;
    *)
      echo "unsupported: this script knows Debian and Ubuntu, not ${id:-an unnamed system}; install your distribution's Mesa Vulkan driver (lavapipe) and Vulkan loader"
      ;;
  esac
}

decision=$(plan)
if [ "${1:-}" = "--plan" ]; then
  echo "$decision"
  exit 0
fi
case "$decision" in
  unsupported:*)
    echo "error: ${decision#unsupported: }" >&2
    exit 1
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

installed() {
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 &&
    ldconfig -p | grep -q 'libvulkan.so.1' &&
    ldconfig -p | grep -q 'libEGL.so.1' &&
    ls /usr/share/glvnd/egl_vendor.d/*mesa*.json >/dev/null 2>&1
}

install_args=()
if [ "$decision" = "backports" ]; then
  mesa_version=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  if installed && [[ "$mesa_version" != 22.* ]]; then
    echo "lavapipe already installed (mesa-vulkan-drivers $mesa_version)"
    exit 0
  fi
  sources=/etc/apt/sources.list.d/debian.sources
  backports=/etc/apt/sources.list.d/shadergrad-backports.sources
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
elif installed; then
  echo "lavapipe already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${install_args[@]}" "${packages[@]}"
echo "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"

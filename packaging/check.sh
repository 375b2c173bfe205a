#!/bin/bash
# The packaging checks CI runs (.ci/run calls this). Installs the tools that are missing with
# apt-get (non-interactive; `apt-get update` only when something is missing), builds the
# release binary, the .deb and the tarball from it, then runs tests/packaging.rs against them
# with FLEET_PACKAGING_REQUIRE_TOOLS=1, so a missing tool fails instead of skipping. Checked:
# every script through shellcheck, bash -n on the macOS scripts, the plist through plistlib, the
# unit through systemd-analyze verify (nothing on stderr), `dpkg-deb -c` against the expected
# files and modes, dpkg --root install/remove/purge and the tarball install/purge into
# throwaway roots, the macOS postinstall/uninstall into a scratch volume.
set -euo pipefail
# shellcheck source=SCRIPTDIR/paths.env
. "$(dirname "$0")/paths.env"

# useradd and dpkg's helpers live in sbin, which a CI environment's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# tool -> Debian package
need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
has_units() { [ -e /usr/lib/systemd/system/sysinit.target ] || [ -e /lib/systemd/system/sysinit.target ]; }
if ! command -v systemd-analyze >/dev/null || ! has_units; then need+=(systemd); fi
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v objdump >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
command -v useradd >/dev/null || need+=(passwd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: packaging checks need ${need[*]}: install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release --locked --quiet
binary="$repo/target/release/$FLEET_NAME"
deb=$(packaging/linux/build-deb.sh --binary "$binary" | tail -n 1)
tarball=$(packaging/linux/build-tarball.sh --binary "$binary" | tail -n 1)
size() { stat -c %s "$1"; }
echo "release binary $(size "$binary") bytes; $(basename "$deb") $(size "$deb") bytes; $(basename "$tarball") $(size "$tarball") bytes"

FLEET_PACKAGING_REQUIRE_TOOLS=1 FLEET_PACKAGING_BINARY="$binary" FLEET_PACKAGING_DEB="$deb" \
  cargo test --locked --test integration packaging::

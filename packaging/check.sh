#!/bin/bash
# The packaging checks CI runs (.ci/run calls this). Installs the tools that are missing with
# apt-get (non-interactive; `apt-get update` only when something is missing), builds the static
# release binaries (packaging/linux/build-binary.sh: x86_64 and, cross-built, aarch64 musl), the
# .deb and the tarball of each, then runs tests/packaging.rs against this machine's binary and
# .deb with FLEET_PACKAGING_REQUIRE_TOOLS=1, so a missing tool fails instead of skipping. Checked:
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
# The static builds (build-binary.sh): musl-gcc compiles ring's C for x86_64-unknown-linux-musl,
# the aarch64 cross gcc for aarch64-unknown-linux-musl.
command -v musl-gcc >/dev/null || need+=(musl-tools)
if [ "$(uname -m)" = x86_64 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
fi
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

# What ships: the static musl builds, this machine's architecture (checked below by the tests)
# and the other one when it can be cross-built here (aarch64 from x86_64).
size() { stat -c %s "$1"; }
# Issue 16's size budget for the stripped static binary, receiver included (BENCHMARKS.md):
# a deterministic figure, so it is held here rather than only reported.
max_binary_bytes=2621440
targets=("$(uname -m)-unknown-linux-musl")
[ "$(uname -m)" = x86_64 ] && targets+=(aarch64-unknown-linux-musl)
for target in "${targets[@]}"; do
  built=$(packaging/linux/build-binary.sh --target "$target" | tail -n 1)
  deb=$(packaging/linux/build-deb.sh --binary "$built" | tail -n 1)
  tarball=$(packaging/linux/build-tarball.sh --binary "$built" | tail -n 1)
  echo "$target: binary $(size "$built") bytes; $(basename "$deb") $(size "$deb") bytes; $(basename "$tarball") $(size "$tarball") bytes"
  if [ "$(size "$built")" -gt "$max_binary_bytes" ]; then
    echo "error: $built is $(size "$built") bytes, over the $max_binary_bytes-byte budget (BENCHMARKS.md, issue 16)" >&2
    exit 1
  fi
  if [ "$target" = "${targets[0]}" ]; then
    binary=$built
    native_deb=$deb
  fi
done
deb=$native_deb

FLEET_PACKAGING_REQUIRE_TOOLS=1 FLEET_PACKAGING_BINARY="$binary" FLEET_PACKAGING_DEB="$deb" \
  cargo test --locked --test integration packaging::

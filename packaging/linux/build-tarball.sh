#!/bin/bash
# Build the Linux release tarball: fleet-agent-VERSION-linux-ARCH.tar.gz holding one folder
# with the binary, the systemd unit, the config template, install.sh and uninstall.sh (paths
# inlined, so the folder needs nothing else). Prints the tarball's path on its last line.
#
# Usage: packaging/linux/build-tarball.sh [--binary FILE] [--out DIR]
#   --binary FILE  the fleet-agent to ship (default: target/release/fleet-agent; releases ship
#                  the static build of packaging/linux/build-binary.sh); ARCH is the binary's
#   --out DIR      where the tarball goes (default: target/tarball)
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary="$repo/target/release/fleet-agent"
out="$repo/target/tarball"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary | --out)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --binary ]; then binary=$2; else out=$2; fi
      shift
      ;;
    -h | --help)
      print_header_help "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$binary" ] || { echo "error: $binary is missing: run cargo build --release --locked" >&2; exit 1; }

version=$(cargo_version "$repo")
name="$FLEET_NAME-$version-linux-$(elf_arch "$binary")"
umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-agent-tar.XXXXXX")
trap 'rm -rf "$work"' EXIT
dir="$work/$name"
mkdir -p "$dir"
install -m 0755 "$binary" "$dir/fleet-agent"
install -m 0644 "$repo/systemd/$LINUX_UNIT_NAME" "$dir/$LINUX_UNIT_NAME"
install -m 0644 "$repo/packaging/config.template.json" "$dir/config.template.json"
install -m 0644 "$repo/README.md" "$dir/README.md"
for script in install.sh uninstall.sh; do
  inline_paths "$here/$script" "$dir/$script" "$repo/packaging/paths.env"
  chmod 0755 "$dir/$script"
done
mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
echo "$tarball"

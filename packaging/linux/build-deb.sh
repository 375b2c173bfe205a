#!/bin/bash
# Build the fleet-agent .deb with dpkg-deb (no build-time crate to compile; dpkg is on every
# Debian-family machine). Prints the path of the .deb on its last line.
#
# Usage: packaging/linux/build-deb.sh [--binary FILE] [--out DIR] [--compression TYPE]
#   --binary FILE       the fleet-agent to package (default: target/release/fleet-agent);
#                       releases ship the static build of packaging/linux/build-binary.sh,
#                       which makes an amd64 or arm64 .deb without a libc dependency
#   --out DIR           where the .deb goes (default: target/debian)
#   --compression TYPE  dpkg-deb -Z: xz (default), gzip, zstd or none (tests, debug binaries)
# Environment: FLEET_DEB_MAINTAINER overrides the Maintainer field.
#
# Contents (tests/packaging.rs checks exactly these, with these modes, root:root):
#   /usr/bin/fleet-agent                              0755
#   /usr/lib/systemd/system/fleet-agent.service       0644
#   /etc/fleet-agent/config.json                      0600  conffile: the config template
#   /usr/share/doc/fleet-agent/{README.md,copyright}  0644
# Maintainer scripts: packaging/linux/debian/{postinst,prerm,postrm}, paths inlined.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary="$repo/target/release/fleet-agent"
out="$repo/target/debian"
compression=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --binary | --out | --compression)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --binary) binary=$2 ;;
        --out) out=$2 ;;
        *) compression=$2 ;;
      esac
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

for tool in dpkg-deb dpkg objdump readelf; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed (apt-get install dpkg binutils)" >&2; exit 1; }
done
[ -x "$binary" ] || { echo "error: $binary is missing: run cargo build --release --locked" >&2; exit 1; }

version=$(cargo_version "$repo")
# The package's architecture is the binary's (a cross-built aarch64 binary makes an arm64 .deb).
case "$(elf_arch "$binary")" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
esac
if is_static "$binary"; then
  # The static musl build that ships (build-binary.sh): no libc dependency.
  depends="passwd"
else
  # A glibc build: the newest glibc symbol version it links against is the libc6 it needs.
  glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  [ -n "$glibc" ] || { echo "error: no GLIBC symbol versions in $binary (not a glibc binary?)" >&2; exit 1; }
  depends="libc6 (>= $glibc), passwd"
fi

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-agent-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg="$work/pkg"
doc="$pkg/usr/share/doc/$FLEET_NAME"

install -d -m 0755 "$pkg/DEBIAN" "$pkg$(dirname "$LINUX_BIN")" "$pkg$(dirname "$LINUX_UNIT")" \
  "$pkg$LINUX_CONFIG_DIR" "$doc"
install -m 0755 "$binary" "$pkg$LINUX_BIN"
install -m 0644 "$repo/systemd/$LINUX_UNIT_NAME" "$pkg$LINUX_UNIT"
install -m 0600 "$repo/packaging/config.template.json" "$pkg$LINUX_CONFIG"
install -m 0644 "$repo/README.md" "$doc/README.md"
# Machine-readable copyright: the dual license, the MIT text from LICENSE-MIT, the Apache text
# by reference to the copy every Debian system has (Debian policy 12.5).
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: $FLEET_NAME"
  echo
  echo "Files: *"
  echo "Copyright: $(sed -n 's/^Copyright (c) //p' "$repo/LICENSE-MIT" | head -n 1)"
  echo "License: MIT or Apache-2.0"
  echo
  echo "License: MIT"
  # The text after the Copyright line, as an indented field (blank lines become " .").
  awk 'body && (started || $0 != "") { started = 1; print ($0 == "" ? " ." : " " $0) } /^Copyright/ { body = 1 }' \
    "$repo/LICENSE-MIT"
  echo
  echo "License: Apache-2.0"
  echo " On Debian systems, the full text of the Apache License 2.0 is in"
  echo " /usr/share/common-licenses/Apache-2.0 (and in LICENSE-APACHE of the source)."
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

for script in postinst prerm postrm; do
  inline_paths "$here/debian/$script" "$pkg/DEBIAN/$script" "$repo/packaging/paths.env"
  chmod 0755 "$pkg/DEBIAN/$script"
done
echo "$LINUX_CONFIG" >"$pkg/DEBIAN/conffiles"
installed_kib=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: $FLEET_NAME
Version: $version
Architecture: $arch
Maintainer: ${FLEET_DEB_MAINTAINER:-fleet-agent maintainers <fleet-agent@localhost>}
Installed-Size: $installed_kib
Depends: $depends
Section: admin
Priority: optional
Description: endpoint telemetry agent with an encrypted spool and sealed batches
 fleet-agent collects machine metrics (CPU, memory, disk, network, processes, battery,
 WiFi, ping, speedtest), keeps every record in an encrypted local spool while offline and
 pushes sealed AES-256-GCM batches over HTTPS to a fleet server. Runs as the systemd
 service fleet-agent.service under its own system user; it starts once server_url is set
 in $LINUX_CONFIG.
CONTROL

mkdir -p "$out"
deb="$out/${FLEET_NAME}_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z$compression" --build "$pkg" "$deb" >/dev/null
echo "$deb"

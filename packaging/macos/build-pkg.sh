#!/bin/bash
# Build the macOS installer: a universal (arm64 + x86_64) fleet-agent in a signed, notarized,
# stapled product archive that an MDM can push. Runs only on macOS (Xcode command line tools,
# rustup targets aarch64-apple-darwin and x86_64-apple-darwin).
#
# Usage: packaging/macos/build-pkg.sh [options]
#   --unsigned       local test build: same as --skip-sign --skip-notarize
#   --skip-build     reuse target/{aarch64,x86_64}-apple-darwin/release/fleet-agent
#   --skip-sign      do not codesign the binary nor productsign the package
#   --skip-notarize  do not submit to Apple's notary service nor staple
#   --out DIR        where the .pkg goes (default: target/pkg)
# Environment (signing and notarization):
#   FLEET_APP_IDENTITY        "Developer ID Application: Org (TEAMID)" signs the binary
#                             (hardened runtime + secure timestamp, which notarization requires)
#   FLEET_INSTALLER_IDENTITY  "Developer ID Installer: Org (TEAMID)" signs the .pkg
#   FLEET_NOTARY_PROFILE      keychain profile made with `xcrun notarytool store-credentials`
# Steps: build both targets, lipo, codesign, lay out the payload, pkgbuild --scripts,
# productbuild --distribution, productsign, notarytool submit --wait, stapler staple.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

build=true sign=true notarize=true
out="$repo/target/pkg"
while [ $# -gt 0 ]; do
  case "$1" in
    --unsigned) sign=false notarize=false ;;
    --skip-build) build=false ;;
    --skip-sign) sign=false ;;
    --skip-notarize) notarize=false ;;
    --out)
      [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }
      out=$2
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

if [ "$(uname -s)" != "Darwin" ]; then
  echo "error: build-pkg.sh builds the macOS installer and runs only on macOS (this is $(uname -s));" >&2
  echo "  it needs lipo, codesign, pkgbuild, productbuild, productsign and notarytool." >&2
  echo "  On Linux build packaging/linux/build-deb.sh or packaging/linux/build-tarball.sh instead." >&2
  exit 1
fi
if $notarize && ! $sign; then
  echo "error: notarization needs a signed package: drop --skip-sign, or add --skip-notarize" >&2
  exit 2
fi
if $sign; then
  : "${FLEET_APP_IDENTITY:?set FLEET_APP_IDENTITY to a \"Developer ID Application: …\" identity, or pass --unsigned}"
  : "${FLEET_INSTALLER_IDENTITY:?set FLEET_INSTALLER_IDENTITY to a \"Developer ID Installer: …\" identity, or pass --unsigned}"
fi
if $notarize; then
  : "${FLEET_NOTARY_PROFILE:?set FLEET_NOTARY_PROFILE (xcrun notarytool store-credentials), or pass --skip-notarize}"
fi

version=$(cargo_version "$repo")
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-agent-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

step() { echo "== $*"; }

step "build (aarch64-apple-darwin, x86_64-apple-darwin)"
targets="aarch64-apple-darwin x86_64-apple-darwin"
if $build; then
  for t in $targets; do
    (cd "$repo" && cargo build --release --locked --target "$t")
  done
fi
slices=()
for t in $targets; do
  slice="$repo/target/$t/release/fleet-agent"
  [ -x "$slice" ] || { echo "error: $slice is missing (build it, or drop --skip-build)" >&2; exit 1; }
  slices+=("$slice")
done

step "lipo: one universal binary"
lipo -create -output "$work/fleet-agent" "${slices[@]}"
lipo -verify_arch "$work/fleet-agent" arm64 x86_64
lipo -info "$work/fleet-agent"

if $sign; then
  step "codesign the binary (hardened runtime, secure timestamp)"
  codesign --force --timestamp --options runtime --identifier "$FLEET_LABEL" \
    --sign "$FLEET_APP_IDENTITY" "$work/fleet-agent"
  codesign --verify --strict --verbose=2 "$work/fleet-agent"
fi

step "payload root"
payload="$work/root"
install -d -m 0755 "$payload$(dirname "$MACOS_BIN")" "$payload$(dirname "$MACOS_PLIST")" "$payload$MACOS_SHARE_DIR" \
  "$payload$(dirname "$MACOS_NEWSYSLOG_CONF")"
install -m 0755 "$work/fleet-agent" "$payload$MACOS_BIN"
install -m 0644 "$repo/launchd/$FLEET_LABEL.plist" "$payload$MACOS_PLIST"
plutil -lint "$payload$MACOS_PLIST"
# Log rotation: newsyslog reads /etc/newsyslog.d/*.conf on its hourly run.
install -m 0644 "$repo/launchd/newsyslog.conf" "$payload$MACOS_NEWSYSLOG_CONF"
install -m 0644 "$repo/packaging/config.template.json" "$payload$MACOS_SHARE_DIR/config.template.json"
inline_paths "$here/uninstall.sh" "$payload$MACOS_SHARE_DIR/uninstall.sh" "$repo/packaging/paths.env"
chmod 0755 "$payload$MACOS_SHARE_DIR/uninstall.sh"

step "installer scripts"
mkdir -p "$work/scripts"
for s in preinstall postinstall; do
  inline_paths "$here/scripts/$s" "$work/scripts/$s" "$repo/packaging/paths.env"
  chmod 0755 "$work/scripts/$s"
done

step "pkgbuild"
component="$FLEET_NAME-component.pkg"
pkgbuild --root "$payload" --scripts "$work/scripts" --identifier "$MACOS_PKG_ID" --version "$version" \
  --install-location / --ownership recommended "$work/$component"

step "productbuild"
sed -e "s|@VERSION@|$version|g" -e "s|@LABEL@|$FLEET_LABEL|g" -e "s|@PKG_ID@|$MACOS_PKG_ID|g" \
  -e "s|@COMPONENT@|$component|g" "$here/distribution.xml" >"$work/distribution.xml"
unsigned="$work/$FLEET_NAME-$version-unsigned.pkg"
productbuild --distribution "$work/distribution.xml" --package-path "$work" "$unsigned"

pkg="$out/$FLEET_NAME-$version.pkg"
if $sign; then
  step "productsign"
  productsign --timestamp --sign "$FLEET_INSTALLER_IDENTITY" "$unsigned" "$pkg"
  pkgutil --check-signature "$pkg"
else
  cp "$unsigned" "$pkg"
  echo "unsigned build: fine for a test Mac, refused by Gatekeeper and most MDMs"
fi

if $notarize; then
  step "notarize (this waits for Apple's answer)"
  result="$work/notary.plist"
  xcrun notarytool submit "$pkg" --keychain-profile "$FLEET_NOTARY_PROFILE" --wait --output-format plist >"$result"
  status=$(plutil -extract status raw -o - "$result")
  if [ "$status" != "Accepted" ]; then
    id=$(plutil -extract id raw -o - "$result" 2>/dev/null || echo "?")
    echo "error: notarization status $status; details: xcrun notarytool log $id --keychain-profile \"\$FLEET_NOTARY_PROFILE\"" >&2
    exit 1
  fi
  step "staple"
  xcrun stapler staple "$pkg"
  xcrun stapler validate "$pkg"
fi

echo "built $pkg"

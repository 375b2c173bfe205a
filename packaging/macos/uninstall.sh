#!/bin/bash
# Remove fleet-agent from a Mac: stop and boot out the daemon, remove the binary, the plist,
# the log rotation entry, the pid file, the logs, the template and the package receipt. The
# config, the spool (unsent records, the spool key) and this script
# (/usr/local/share/fleet-agent/uninstall.sh, so `… uninstall.sh --purge` works later) stay,
# so a reinstall picks up where it left off, unless --purge.
#
# Usage: sudo uninstall.sh [--purge] [--root DIR]
#   --purge     also remove "/Library/Application Support/FleetAgent" (config, spool, keys)
#               and /usr/local/share/fleet-agent
#   --root DIR  work under DIR instead of / (another volume, or a test); launchctl and
#               pkgutil are only used for /
# Installed by the .pkg as /usr/local/share/fleet-agent/uninstall.sh.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"

purge=false
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=true ;;
    --root)
      [ $# -ge 2 ] || { echo "error: --root needs a directory" >&2; exit 2; }
      root=${2%/}
      shift
      ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$(id -u)" != 0 ]; then
  echo "error: uninstall.sh must run as root (sudo)" >&2
  exit 1
fi

if [ -z "$root" ]; then
  if launchctl print "system/$FLEET_LABEL" >/dev/null 2>&1; then
    echo "stopping system/$FLEET_LABEL"
    launchctl bootout "system/$FLEET_LABEL" || launchctl bootout system "$MACOS_PLIST" || true
  fi
fi

for file in "$MACOS_BIN" "$MACOS_PLIST" "$MACOS_NEWSYSLOG_CONF" "$MACOS_PID_FILE" \
  "$MACOS_SHARE_DIR/config.template.json"; do
  if [ -e "$root$file" ]; then
    rm -f "$root$file"
    echo "removed $file"
  fi
done
if [ -e "$root$MACOS_LOG_DIR" ]; then
  rm -rf "$root$MACOS_LOG_DIR"
  echo "removed $MACOS_LOG_DIR"
fi

if [ -z "$root" ] && pkgutil --pkg-info "$MACOS_PKG_ID" >/dev/null 2>&1; then
  pkgutil --forget "$MACOS_PKG_ID" >/dev/null
  echo "forgot the package receipt $MACOS_PKG_ID"
fi

if $purge; then
  if [ -e "$root$MACOS_SUPPORT_DIR" ]; then
    rm -rf "$root$MACOS_SUPPORT_DIR"
    echo "removed $MACOS_SUPPORT_DIR (config, spool, keys)"
  fi
  # Possibly this very script: bash reads on through its open descriptor.
  if [ -e "$root$MACOS_SHARE_DIR" ]; then
    rm -rf "$root$MACOS_SHARE_DIR"
    echo "removed $MACOS_SHARE_DIR"
  fi
else
  echo "kept $MACOS_SUPPORT_DIR (config and spool) and $MACOS_SHARE_DIR/uninstall.sh;"
  echo "  remove them with: sudo $MACOS_SHARE_DIR/uninstall.sh --purge"
fi

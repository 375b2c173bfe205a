#!/bin/bash
# Remove a tarball install of fleet-agent (install.sh's counterpart): stop and disable the
# unit, remove the binary, the unit, the template and the README. The config, the state
# (spool, keys, unsent records), the system user and this script
# (/usr/local/share/fleet-agent/uninstall.sh, so `… uninstall.sh --purge` still works later,
# as dpkg keeps a removed package's postrm for its purge) stay unless --purge.
#
# Usage: sudo uninstall.sh [--purge] [--no-user] [--no-systemctl]
#   --purge         also remove /etc/fleet-agent, /var/lib/fleet-agent and the user and group
#   --no-user       with --purge: leave the user and group
#   --no-systemctl  do not stop nor disable the unit (its enablement link is removed anyway)
# Environment: DESTDIR=DIR works under DIR instead of / (nothing is stopped; the user is
#   removed with userdel --prefix when DIR/etc/passwd exists and we are root).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"

root=${DESTDIR:-}
root=${root%/}
purge=false
remove_user=true
use_systemctl=true
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=true ;;
    --no-user) remove_user=false ;;
    --no-systemctl) use_systemctl=false ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
is_root=false
[ "$(id -u)" = 0 ] && is_root=true
if ! $is_root && [ -z "$root" ]; then
  echo "error: uninstall.sh must run as root (sudo), or with DESTDIR set" >&2
  exit 1
fi

has() { # has FILE NAME: NAME has a line in the passwd/group-style FILE
  [ -f "$1" ] && awk -F: -v n="$2" '$1 == n { found = 1 } END { exit !found }' "$1"
}

if $use_systemctl && command -v systemctl >/dev/null 2>&1 && [ -e "$root$LINUX_TARBALL_UNIT" ]; then
  if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl stop "$LINUX_UNIT_NAME" || true
    systemctl disable "$LINUX_UNIT_NAME" || true
  elif [ -n "$root" ]; then
    systemctl --root="$root" disable "$LINUX_UNIT_NAME" || true
  else
    systemctl disable "$LINUX_UNIT_NAME" || true
  fi
fi
rm -f "$root$LINUX_WANTS_LINK"

for path in "$LINUX_TARBALL_BIN" "$LINUX_TARBALL_UNIT" "$LINUX_TARBALL_SHARE_DIR/config.template.json" \
  "$LINUX_TARBALL_DOC"; do
  if [ -e "$root$path" ]; then
    rm -f "$root$path"
    echo "removed $path"
  fi
done
if $use_systemctl && [ -z "$root" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

if ! $purge; then
  echo "kept $LINUX_CONFIG_DIR, $LINUX_STATE_DIR, the user $LINUX_USER and $LINUX_TARBALL_SHARE_DIR/uninstall.sh;"
  echo "  remove them with: $LINUX_TARBALL_SHARE_DIR/uninstall.sh --purge"
  exit 0
fi
# The share folder may hold this very script: bash keeps reading it through its open
# descriptor after the unlink.
for dir in "$LINUX_TARBALL_SHARE_DIR" "$LINUX_CONFIG_DIR" "$LINUX_STATE_DIR"; do
  if [ -e "$root$dir" ]; then
    rm -rf "$root$dir"
    echo "removed $dir"
  fi
done
if $remove_user && $is_root && { [ -z "$root" ] || [ -f "$root/etc/passwd" ]; }; then
  prefix=()
  [ -n "$root" ] && prefix=(--prefix "$root")
  if has "$root/etc/passwd" "$LINUX_USER"; then
    userdel "${prefix[@]}" "$LINUX_USER"
    echo "removed the user $LINUX_USER"
  fi
  if has "$root/etc/group" "$LINUX_GROUP"; then
    groupdel "${prefix[@]}" "$LINUX_GROUP"
    echo "removed the group $LINUX_GROUP"
  fi
else
  echo "left the user $LINUX_USER and group $LINUX_GROUP"
fi

#!/bin/bash
# Install fleet-agent from the tarball by hand, as the .deb does: binary, systemd unit, config
# template (only when no config exists; 0600), system user, unit enabled but started only once
# the config names a server_url. Run from the unpacked tarball (build-tarball.sh makes it).
#
# Usage: sudo ./install.sh [--no-user] [--no-systemctl]
#   --no-user       do not create the system user (then create fleet-agent yourself)
#   --no-systemctl  do not enable nor start the unit
# Environment: DESTDIR=DIR installs under DIR instead of / (packaging or tests): the user is
#   then created only when DIR/etc/passwd exists and we are root (useradd --prefix), the unit
#   is enabled offline (systemctl --root) and nothing is started.
# Paths: binary /usr/local/bin/fleet-agent, unit /etc/systemd/system/fleet-agent.service
#   (Exec lines rewritten to that binary, Documentation= to the README installed here),
#   config /etc/fleet-agent/config.json, state /var/lib/fleet-agent; uninstall.sh, the template
#   and README.md in /usr/local/share/fleet-agent.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
root=${root%/}
make_user=true
use_systemctl=true
while [ $# -gt 0 ]; do
  case "$1" in
    --no-user) make_user=false ;;
    --no-systemctl) use_systemctl=false ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for file in fleet-agent "$LINUX_UNIT_NAME" config.template.json uninstall.sh README.md; do
  if [ ! -f "$here/$file" ]; then
    echo "error: $here/$file is missing: run install.sh from an unpacked release tarball" >&2
    echo "  (packaging/linux/build-tarball.sh builds one)" >&2
    exit 1
  fi
done
is_root=false
[ "$(id -u)" = 0 ] && is_root=true
if ! $is_root && [ -z "$root" ]; then
  echo "error: install.sh must run as root (sudo), or with DESTDIR set" >&2
  exit 1
fi

field() { # field FILE NAME COLUMN: a column of NAME's line in a passwd/group-style file
  [ -f "$1" ] && awk -F: -v n="$2" -v c="$3" '$1 == n { print $c }' "$1"
}

install -d -m 0755 "$root$(dirname "$LINUX_TARBALL_BIN")" "$root$(dirname "$LINUX_TARBALL_UNIT")" \
  "$root$LINUX_CONFIG_DIR" "$root$LINUX_TARBALL_SHARE_DIR"
install -m 0755 "$here/fleet-agent" "$root$LINUX_TARBALL_BIN"
sed -e "s|$LINUX_BIN |$LINUX_TARBALL_BIN |g" -e "s|^Documentation=file:$LINUX_DOC\$|Documentation=file:$LINUX_TARBALL_DOC|" \
  "$here/$LINUX_UNIT_NAME" >"$root$LINUX_TARBALL_UNIT"
chmod 0644 "$root$LINUX_TARBALL_UNIT"
install -m 0644 "$here/config.template.json" "$root$LINUX_TARBALL_SHARE_DIR/config.template.json"
install -m 0644 "$here/README.md" "$root$LINUX_TARBALL_DOC"
install -m 0755 "$here/uninstall.sh" "$root$LINUX_TARBALL_SHARE_DIR/uninstall.sh"
echo "installed $LINUX_TARBALL_BIN, $LINUX_TARBALL_UNIT, $LINUX_TARBALL_SHARE_DIR"

config="$root$LINUX_CONFIG"
if [ -e "$config" ]; then
  echo "kept the existing config $LINUX_CONFIG"
else
  install -m 0600 "$here/config.template.json" "$config"
  echo "installed the config template as $LINUX_CONFIG"
fi
chmod 0600 "$config"

if $make_user && $is_root && { [ -z "$root" ] || [ -f "$root/etc/passwd" ]; }; then
  if [ -z "$(field "$root/etc/passwd" "$LINUX_USER" 3)" ]; then
    prefix=()
    [ -n "$root" ] && prefix=(--prefix "$root")
    group=(--user-group)
    [ -n "$(field "$root/etc/group" "$LINUX_GROUP" 3)" ] && group=(--gid "$LINUX_GROUP")
    useradd "${prefix[@]}" "${group[@]}" --system --home-dir "$LINUX_STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "fleet-agent telemetry agent" "$LINUX_USER"
    echo "created the system user $LINUX_USER"
  fi
  chown "$(field "$root/etc/passwd" "$LINUX_USER" 3):$(field "$root/etc/group" "$LINUX_GROUP" 3)" "$config"
else
  echo "skipped creating the system user $LINUX_USER; create it and run: chown $LINUX_USER: $LINUX_CONFIG"
fi

configured=false
grep -Eq '"server_url"[[:space:]]*:[[:space:]]*"https?://' "$config" && configured=true
if $use_systemctl && command -v systemctl >/dev/null 2>&1; then
  if [ -n "$root" ]; then
    systemctl --root="$root" enable "$LINUX_UNIT_NAME"
  else
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    systemctl enable "$LINUX_UNIT_NAME"
    if $configured && [ -d /run/systemd/system ]; then
      systemctl restart "$LINUX_UNIT_NAME"
      echo "started $LINUX_UNIT_NAME; logs: journalctl -u $LINUX_UNIT_NAME"
    fi
  fi
else
  echo "skipped enabling $LINUX_UNIT_NAME (run: systemctl enable $LINUX_UNIT_NAME)"
fi
if ! $configured; then
  echo "not started: set server_url (and api_key, encryption_key) in $LINUX_CONFIG,"
  echo "  then run: systemctl start $LINUX_UNIT_NAME"
fi

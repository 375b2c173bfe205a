#!/bin/bash
# Live systemd check: install the .deb (and the tarball) in a minimal Debian booted with
# `systemd-nspawn -b` and check what the unit and the packaging promise under a real systemd:
# runs as fleet-agent, data reaches a bundled receiver inside, the config is read-only to the
# service, `systemctl reload` (good config: same process, new config; bad config: the reload
# fails and the agent keeps running), restart after kill -9, a bad config stops after a few
# starts with the reason in `systemctl status`, `systemctl stop` is clean, purge leaves
# nothing, and the tarball's README/uninstall paths. .ci/run runs it after packaging/check.sh.
#
# Usage: sudo packaging/live-systemd-check.sh --deb FILE [--tarball FILE] [--cache DIR] [--keep]
#   --deb FILE      the .deb to check (build-deb.sh); its binary also runs the receiver
#   --tarball FILE  also check this tarball (build-tarball.sh)
#   --cache DIR     where the Debian rootfs is kept between runs
#                   (default: $FLEET_LIVE_CACHE or /var/cache/fleet-agent-live)
#   --keep          keep the scratch folder (the container's root, its console log) to look at
# Environment: FLEET_LIVE_REQUIRE=1 turns a skip (no root, no way to boot nspawn here) into a
#   failure. FLEET_LIVE_MIRROR overrides the Debian mirror (default: the host's apt source).
#
# Network: the first run fetches Debian 12 (bookworm, minbase + systemd, about 40 MB of
# packages) with debootstrap into the cache folder, and apt-get installs debootstrap and
# systemd-container on the host when missing. Nothing else: the container has a private
# network (loopback only), so the agent and the receiver talk inside it.
# Bounded: each wait has a deadline and the whole run is killed after 8 minutes (about 2 min
# with a warm cache). Exit: 0 all passed or skipped (a line starting with `skipped:` says why),
# 1 a check failed, 2 usage or setup error.
set -uo pipefail
# shellcheck source=SCRIPTDIR/paths.env
. "$(dirname "$0")/paths.env"
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

deb="" tarball="" keep=false
cache=${FLEET_LIVE_CACHE:-/var/cache/fleet-agent-live}
while [ $# -gt 0 ]; do
  case "$1" in
    --deb | --tarball | --cache)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --deb) deb=$2 ;;
        --tarball) tarball=$2 ;;
        *) cache=$2 ;;
      esac
      shift
      ;;
    --keep) keep=true ;;
    -h | --help)
      print_header_help "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$deb" ] || { echo "error: --deb FILE is required (see --help)" >&2; exit 2; }
[ -f "$deb" ] || { echo "error: $deb: no such file" >&2; exit 2; }
[ -z "$tarball" ] || [ -f "$tarball" ] || { echo "error: $tarball: no such file" >&2; exit 2; }

skip() {
  echo "skipped: live systemd check: $*"
  if [ "${FLEET_LIVE_REQUIRE:-0}" = 1 ]; then
    echo "error: FLEET_LIVE_REQUIRE=1 and the live systemd check could not run" >&2
    exit 1
  fi
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn)"

# The whole run is bounded: rerun under `timeout` once.
if [ -z "${FLEET_LIVE_TIMED:-}" ]; then
  again=(--deb "$deb" --cache "$cache")
  [ -n "$tarball" ] && again+=(--tarball "$tarball")
  $keep && again+=(--keep)
  FLEET_LIVE_TIMED=1 exec timeout --kill-after=20 480 "$0" "${again[@]}"
fi

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
    skip "apt-get install ${need[*]} failed"
fi

# --- the Debian rootfs, cached --------------------------------------------------------------
packages=systemd,systemd-sysv,dbus,procps
base="$cache/bookworm-minbase-$(echo "$packages" | md5sum | cut -c1-8)"
if [ ! -x "$base/usr/lib/systemd/systemd" ]; then
  mirror=${FLEET_LIVE_MIRROR:-$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "debootstrap bookworm ($packages) from $mirror into $base (once; about 1 min)"
  mkdir -p "$cache"
  rm -rf "$base.tmp"
  if ! debootstrap --variant=minbase --include="$packages" bookworm "$base.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -n 5 "$cache/debootstrap.log"
    rm -rf "$base.tmp"
    skip "debootstrap failed (no mirror reachable?); log: $cache/debootstrap.log"
  fi
  rm -f "$base.tmp"/var/cache/apt/archives/*.deb # 40 MB less to copy at every run
  mv "$base.tmp" "$base"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-live.XXXXXX")
root="$work/root"
nspawn_pid=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill "$nspawn_pid" 2>/dev/null # nspawn turns SIGTERM into an orderly poweroff
    for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$nspawn_pid" 2>/dev/null
  fi
  if $keep; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
cp -a "$base" "$root"

# --- what goes inside -----------------------------------------------------------------------
live="$root/root/live"
mkdir -p "$live" "$root/opt/fleet-live"
cp "$deb" "$live/fleet-agent.deb"
[ -n "$tarball" ] && cp "$tarball" "$live/fleet-agent.tar.gz"
dpkg-deb -x "$deb" "$work/deb"
agent="$work/deb$LINUX_BIN"
install -m 0755 "$agent" "$root/opt/fleet-live/fleet-agent" # the receiver, independent of the package
transport_key=$("$agent" keygen) || { echo "error: $agent keygen failed" >&2; exit 2; }
api_key="live-check-api-key"
config() { # config INTERVAL [EXTRA]: the agent's config against the receiver inside
  printf '{"server_url": "http://127.0.0.1:8768", "api_key": "%s", "encryption_key": "%s", "protocol": "v2",
 "machine_id": "live-check", "interval": %s, "log_level": "info",
 "widgets": {"speedtest": {"enabled": false}, "ping": {"targets": ["127.0.0.1"], "count": 1}}%s}\n' \
    "$api_key" "$transport_key" "$1" "${2:-}"
}
config 2 >"$live/config-good.json"
config 3 >"$live/config-reload.json"
config 2 ', "bogus_option": 1' >"$live/config-bad.json"
echo "$api_key" >"$live/api-key"
chmod 0600 "$live"/*.json "$live/api-key"
# The receiver: a test unit started at boot (TEST ONLY: the transport key sits in the unit).
# Its secrets are files (the receiver takes none on the command line); its store is sealed.
echo "$api_key" >"$root/opt/fleet-live/api-key"
"$agent" keygen >"$root/opt/fleet-live/store.key" || { echo "error: $agent keygen failed" >&2; exit 2; }
chmod 0600 "$root/opt/fleet-live/api-key" "$root/opt/fleet-live/store.key"
cat >"$root/etc/systemd/system/fleet-live-receiver.service" <<UNIT
[Unit]
Description=fleet-agent live check: bundled receiver (test only)
[Service]
Environment=FLEET_ENCRYPTION_KEY=$transport_key
ExecStart=/opt/fleet-live/fleet-agent receive --listen 127.0.0.1:8768 --api-key-file /opt/fleet-live/api-key --store-key-file /opt/fleet-live/store.key --store /var/lib/fleet-live-receiver
StateDirectory=fleet-live-receiver
[Install]
WantedBy=multi-user.target
UNIT
chmod 0600 "$root/etc/systemd/system/fleet-live-receiver.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/fleet-live-receiver.service "$root/etc/systemd/system/multi-user.target.wants/"
echo fleet-live >"$root/etc/hostname"

# The checks, run inside as root. Reads LINUX_* from paths.env, inlined below.
{
  echo '#!/bin/bash'
  echo 'set -uo pipefail'
  grep -E '^[A-Z_]+="[^"]*"$' "$(dirname "$0")/paths.env"
  cat <<'INSIDE'
export SYSTEMD_PAGER="" SYSTEMD_COLORS=0
conf=$LINUX_CONFIG unit=$LINUX_UNIT_NAME
records=/var/lib/fleet-live-receiver/live-check/records.jsonl
passed=0 failed=0
check() { # check NAME CMD...: PASS when CMD exits 0, else FAIL with its output
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then echo "PASS  $name"; passed=$((passed + 1)); else
    echo "FAIL  $name"
    printf '%s\n' "$out" | head -n 20 | sed 's/^/        /'
    failed=$((failed + 1))
  fi
}
waitfor() { # waitfor SECONDS CMD...: poll CMD until it succeeds; the last try's output shows
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { "$@"; return 1; }
    sleep 0.5
  done
}
mainpid() { systemctl show -p MainPID --value "$unit"; }
prop() { systemctl show -p "$1" --value "$unit"; }
batches() { grep -c '"kind":"batch"' "$records" 2>/dev/null || echo 0; }
more_batches() { [ "$(batches)" -gt "$1" ]; }
is_active() { systemctl is-active --quiet "$unit"; }
put_config() { cat "/root/live/$1" >"$conf"; } # same inode: owner and mode stay
export -f mainpid prop batches more_batches is_active
export unit records

echo "== $(systemctl --version | head -n 1)"
check "the bundled receiver is up (127.0.0.1:8768)" waitfor 15 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8768'

echo "== .deb install"
check "dpkg -i exits 0" dpkg -i /root/live/fleet-agent.deb
check "unit enabled, not started (no server_url yet)" bash -c \
  '[ "$(systemctl is-enabled '"$unit"')" = enabled ] && ! systemctl is-active --quiet '"$unit"
check "config $LINUX_USER:$LINUX_GROUP 0600" test "$(stat -c '%U:%G %a' "$conf")" = "$LINUX_USER:$LINUX_GROUP 600"
check "unit's Documentation= file exists" test -f "$(prop Documentation | sed 's/^file://')"

echo "== configured and started"
put_config config-good.json
check "systemctl start" systemctl start "$unit"
check "active" waitfor 10 is_active
pid=$(mainpid)
check "runs as $LINUX_USER" test "$(ps -o user= -p "$pid")" = "$LINUX_USER"
check "data arrives at the receiver (2 sealed batches within 45 s: one at start, one a send_interval later)" waitfor 45 more_batches 1
check "config read-only to the service (even to its own user)" bash -c "
  ! nsenter -t $pid -m setpriv --reuid=$LINUX_USER --regid=$LINUX_GROUP --clear-groups test -w $conf ||
  { grep ' $LINUX_CONFIG_DIR ' /proc/$pid/mountinfo; false; }"
check "state folder writable to it, 0700" test "$(stat -c '%U %a' "$LINUX_STATE_DIR")" = "$LINUX_USER 700"

echo "== reload"
put_config config-reload.json
check "systemctl reload (good config) exits 0" systemctl reload "$unit"
check "same process after reload" test "$(mainpid)" = "$pid"
check "'configuration reloaded' logged" waitfor 5 bash -c "journalctl -u $unit -o cat | grep -qi 'reloaded'"
put_config config-bad.json
check "systemctl reload (bad config) fails" bash -c "! systemctl reload $unit"
check "the reason is in the journal" bash -c "journalctl -u $unit -o cat | grep -q bogus_option"
check "still running, same process" bash -c "systemctl is-active --quiet $unit && [ \"\$(mainpid)\" = $pid ]"
put_config config-good.json
systemctl reload "$unit"

echo "== kill -9"
kill -9 "$pid"
# Counted right after the kill (the killed agent sends nothing more): the restarted agent pushes
# at start, then every send_interval (20 s by default), so a count taken after the restart
# could just miss its first push.
n=$(batches)
check "restarted (Restart=on-failure, RestartSec)" waitfor 25 bash -c \
  "systemctl is-active --quiet $unit && [ \"\$(mainpid)\" != $pid ] && [ \"\$(mainpid)\" != 0 ]"
check "data arrives again" waitfor 45 more_batches "$n"

echo "== a bad config at start"
systemctl stop "$unit"
systemctl reset-failed "$unit"
put_config config-bad.json
systemctl start "$unit" >/dev/null 2>&1
check "start fails (ExecStartPre validate)" bash -c "! systemctl is-active --quiet $unit"
check "gives up after a few tries (failed, no restart pending, within 60 s)" waitfor 60 \
  bash -c '[ "$(prop ActiveState)" = failed ] && systemctl status "$unit" | grep -q "Start request repeated too quickly"'
restarts=$(prop NRestarts)
status=$(systemctl status "$unit" 2>&1)
check "systemctl status names the limit and the failing step (validate, status=2)" bash -c \
  "grep -q 'Start request repeated too quickly' <<<'$status' &&
   grep -q 'ExecStartPre=$LINUX_BIN validate .*status=2' <<<'$status' || { echo '$status'; false; }"
check "the config error is in the journal" bash -c "journalctl -u $unit -o cat | grep -q bogus_option"
check "no more restarts (12 s later)" bash -c \
  "sleep 12; [ \"\$(prop ActiveState)/\$(prop NRestarts)\" = failed/$restarts ]"
put_config config-good.json
systemctl reset-failed "$unit"
check "after fixing the config and reset-failed: starts" bash -c "systemctl start $unit && sleep 1 && systemctl is-active --quiet $unit"

echo "== stop"
check "systemctl stop exits 0" systemctl stop "$unit"
check "clean exit (Result=success, status 0)" test "$(prop Result)/$(prop ExecMainStatus)" = "success/0"
check "nothing of fleet-agent runs" bash -c "! pgrep -u $LINUX_USER"

echo "== purge"
check "dpkg --purge exits 0" dpkg --purge fleet-agent
check "nothing left: files, folders, enablement, user, group" bash -c "
  left=\$(ls -d $LINUX_BIN $LINUX_UNIT $LINUX_CONFIG_DIR $LINUX_STATE_DIR $LINUX_WANTS_LINK 2>/dev/null)
  getent passwd $LINUX_USER >/dev/null && left=\"\$left user\"
  getent group $LINUX_GROUP >/dev/null && left=\"\$left group\"
  dpkg -s fleet-agent >/dev/null 2>&1 && left=\"\$left dpkg-entry\"
  [ -z \"\$left\" ] || { echo \"left: \$left\"; false; }"
check "no file without an owner" bash -c \
  'f=$(find / -xdev \( -nouser -o -nogroup \) 2>/dev/null); [ -z "$f" ] || { echo "$f"; false; }'

if [ -f /root/live/fleet-agent.tar.gz ]; then
  echo "== tarball"
  mkdir -p /root/live/tar && tar -C /root/live/tar -xzf /root/live/fleet-agent.tar.gz
  dir=$(ls -d /root/live/tar/*/)
  check "install.sh exits 0" "$dir/install.sh"
  check "systemd-analyze verify: nothing to say" bash -c \
    "out=\$(systemd-analyze verify $LINUX_TARBALL_UNIT 2>&1); [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
  check "unit's Documentation= file exists" test -f "$(prop Documentation | sed 's/^file://')"
  put_config config-good.json
  n=$(batches)
  systemctl start "$unit"
  check "active, runs as $LINUX_USER" waitfor 10 bash -c \
    "systemctl is-active --quiet $unit && [ \"\$(ps -o user= -p \"\$(mainpid)\")\" = $LINUX_USER ]"
  check "data arrives" waitfor 45 more_batches "$n"
  check "uninstall.sh exits 0, stopped" bash -c "$LINUX_TARBALL_SHARE_DIR/uninstall.sh && ! systemctl is-active --quiet $unit"
  check "uninstall.sh --purge (the README's path, after the plain uninstall)" "$LINUX_TARBALL_SHARE_DIR/uninstall.sh" --purge
  check "nothing left" bash -c "
    left=\$(ls -d $LINUX_TARBALL_BIN $LINUX_TARBALL_UNIT $LINUX_TARBALL_SHARE_DIR $LINUX_CONFIG_DIR $LINUX_STATE_DIR $LINUX_WANTS_LINK 2>/dev/null)
    getent passwd $LINUX_USER >/dev/null && left=\"\$left user\"
    f=\$(find / -xdev \( -nouser -o -nogroup \) 2>/dev/null); [ -z \"\$left\$f\" ] || { echo \"left: \$left \$f\"; false; }"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
INSIDE
} >"$live/check.sh"
chmod 0755 "$live/check.sh"

# --- boot, check, power off ---------------------------------------------------------------
echo "booting the container (systemd-nspawn -b --register=no --keep-unit --private-network)"
setsid systemd-nspawn -b -D "$root" -M fleet-live --private-network --register=no --keep-unit \
  --console=read-only >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!
inside() { # run a command inside the container (all its namespaces, a clean environment)
  nsenter -t "$leader" -m -u -i -n -p -C -r -w -- /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
leader="" state=""
for _ in $(seq 1 120); do
  kill -0 "$nspawn_pid" 2>/dev/null || break
  leader=$(pgrep -P "$nspawn_pid" | head -n 1)
  if [ -n "$leader" ]; then
    state=$(inside systemctl is-system-running 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
  fi
  sleep 0.5
done
case "$state" in
  running | degraded) echo "container up ($state), init pid $leader" ;;
  *)
    tail -n 15 "$work/console.log"
    skip "systemd-nspawn could not boot the container here (state '${state:-none}'; console above)"
    ;;
esac

inside /root/live/check.sh
rc=$?
if [ $rc -ne 0 ]; then
  echo "-- journal of the agent and the receiver inside:"
  inside journalctl --no-pager -o short-precise -u "$LINUX_UNIT_NAME" -u fleet-live-receiver | tail -n 40
  exit 1
fi

"""Wake-ups (voluntary context switches) per minute of the default config, per cause, two agent
builds side by side (BENCHMARKS.md, issue 16 wake-ups).

Usage: wakeup_causes.py BEFORE_AGENT AFTER_AGENT [SECONDS]   (needs perf and python3; root)
Each build runs `run` with the `laptop` config of `fleet-bench footprint` (Atlas protocol,
interval 10 s, every default widget but speedtest, ping to 127.0.0.1) against the AFTER build's
bundled receiver. 12 s after start, `perf record -e sched:sched_switch -g` follows each agent
(every thread, also those that exit during the window, unlike /proc/PID/task) for SECONDS
(default 180). A switch whose previous task was not runnable is voluntary; its kernel stack
names the system call that blocked, which names the cause.
"""
import collections, os, re, subprocess, sys, tempfile, time

AGENTS = {"before": sys.argv[1], "after": sys.argv[2]}
SECONDS = int(sys.argv[3]) if len(sys.argv) > 3 else 180
WIDGETS = '{"ping":{"targets":["127.0.0.1"]},"speedtest":{"enabled":false}}'

# (cause, syscall prefix, kernel function on the stack or None): first match wins.
CAUSES = [
    ("ping: waiting for echo replies", "__x64_sys_recvfrom", "skb_recv_datagram"),
    ("loop sleep (signal pipe, timeout)", "__x64_sys_recvfrom", "unix_stream_read_generic"),
    ("HTTP: waiting for the answer", "__x64_sys_recvfrom", "tcp_recvmsg"),
    ("HTTP: waiting for the answer", "__x64_sys_read", "tcp_recvmsg"),
    ("command: exec of the child", "__x64_sys_recvfrom", "unix_dgram_recvmsg"),
    ("command: reader threads, channel, joins", "__x64_sys_futex", None),
    ("command: reading output", "ksys_read", "anon_pipe_read"),
    ("command: reading output", "__x64_sys_ppoll", None),
    ("command: reading output", "__x64_sys_poll", None),
    ("command: waiting for the exit", "__x64_sys_clock_nanosleep", None),
    ("command: waiting for the exit", "__x64_sys_wait4", None),
    ("disk: fsync, fdatasync, rename", "__x64_sys_fsync", None),
    ("disk: fsync, fdatasync, rename", "__x64_sys_fdatasync", None),
    ("disk: fsync, fdatasync, rename", "__x64_sys_rename", None),
]


def cause(frames):
    syscall = next((f for f in frames if f.startswith(("__x64_sys_", "ksys_"))), "?")
    for name, prefix, inner in CAUSES:
        if syscall.startswith(prefix) and (inner is None or any(inner in f for f in frames)):
            return name
    if any("io_schedule" in f or "submit_bio_wait" in f for f in frames):
        return "disk: fsync, fdatasync, rename"
    return "other: " + syscall


def summarize(path):
    counts = collections.Counter()
    text = subprocess.run(["perf", "script", "-i", path], capture_output=True, text=True).stdout
    for event in text.split("\n\n"):
        lines = [l for l in event.strip().split("\n") if l]
        m = lines and re.search(r"prev_pid=\d+ .*prev_state=(\S+)", lines[0])
        if not m or m.group(1).startswith("R"):
            continue
        counts[cause([l.split()[1].split("+")[0] for l in lines[1:] if len(l.split()) > 1])] += 1
    return counts


def main():
    scratch = tempfile.mkdtemp(prefix="wakeup-causes-")
    os.makedirs(f"{scratch}/secrets")
    with open(f"{scratch}/secrets/api-key", "w") as f:
        f.write("bench-api-key")
    os.chmod(f"{scratch}/secrets/api-key", 0o600)
    key = subprocess.run([AGENTS["after"], "keygen"], capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, FLEET_ENCRYPTION_KEY=key)
    receiver = subprocess.Popen([AGENTS["after"], "receive", "--listen", "127.0.0.1:0", "-q", "--api-key-file",
                                 f"{scratch}/secrets/api-key", "--store-plaintext", "--store", f"{scratch}/store"],
                                stdout=subprocess.PIPE, text=True, env=env)
    url = receiver.stdout.readline().strip().removeprefix("listening on ")
    agents, perfs = {}, {}
    clean = {k: v for k, v in os.environ.items() if k not in ("FLEET_ENCRYPTION_KEY", "FLEET_API_KEY")}
    for name, binary in AGENTS.items():
        os.makedirs(f"{scratch}/{name}")
        config = f"{scratch}/{name}/agent.json"
        with open(config, "w") as f:
            f.write(f'{{"server_url":"{url}","api_key":"bench-api-key","encryption_key":"{key}",'
                    f'"machine_id":"wakeups-{name}","protocol":"atlas","interval":10,"log_level":"warn",'
                    f'"spool":{{"dir":"{scratch}/{name}/spool"}},"widgets":{WIDGETS}}}')
        os.chmod(config, 0o600)
        agents[name] = subprocess.Popen([binary, "run", "--config", config], env=clean,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(12)
    for name, agent in agents.items():
        perfs[name] = subprocess.Popen(["perf", "record", "-q", "-e", "sched:sched_switch", "-g", "-p",
                                        str(agent.pid), "-o", f"{scratch}/{name}/perf.data", "--", "sleep",
                                        str(SECONDS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for perf in perfs.values():
        perf.wait()
    for agent in list(agents.values()) + [receiver]:
        agent.terminate()
        agent.wait()
    results = {name: summarize(f"{scratch}/{name}/perf.data") for name in AGENTS}
    causes = sorted(set().union(*results.values()), key=lambda c: -results["before"][c])
    print(f"wake-ups per minute over {SECONDS} s (before -> after)")
    for c in causes:
        print(f"  {c:44s} {results['before'][c] * 60 / SECONDS:6.1f} -> {results['after'][c] * 60 / SECONDS:6.1f}")
    total = {n: sum(r.values()) * 60 / SECONDS for n, r in results.items()}
    print(f"  {'total':44s} {total['before']:6.1f} -> {total['after']:6.1f}")
    subprocess.run(["rm", "-rf", scratch])


main()

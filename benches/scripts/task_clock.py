"""CPU per cycle of two agent builds side by side, to the microsecond (BENCHMARKS.md, issue 16,
"Branch lean"). `fleet-bench footprint` reads CPU from /proc/PID/stat in 10 ms ticks, too
coarse to tell a few tens of microseconds a cycle apart in a few minutes; `perf stat -e
task-clock` counts on-CPU time in nanoseconds.

Usage: task_clock.py BEFORE_AGENT AFTER_AGENT [SECONDS] [--swap] [--callgrind]
(needs perf, python3, root; valgrind with --callgrind)
One bundled receiver (the BEFORE build's) on loopback; each build runs `run` twice at interval
1 s (v2), with the `system` and the `default` widget sets of `fleet-bench footprint`. 20 s after
start (past the first cycles: machine_info, first reads), `perf stat -e task-clock` follows
each agent for SECONDS (default 300). `--swap` starts the AFTER build's agents first.
`--callgrind` runs every agent under `valgrind --tool=callgrind` instead and counts the user-space
instructions of the window (counters zeroed 20 s after start, dumped SECONDS later): exact and
repeatable where CPU time is noisy on a shared host, but blind to the kernel's share (the
syscalls: count those with `fleet-bench footprint`). Prints one JSON line per agent.
"""
import base64, glob, json, os, subprocess, sys, tempfile, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
BUILDS = {"before": args[0], "after": args[1]}
SECONDS = int(args[2]) if len(args) > 2 else 300
ORDER = ["after", "before"] if "--swap" in sys.argv else ["before", "after"]
CALLGRIND = "--callgrind" in sys.argv
OFF = ["disk", "network", "processes", "battery", "wifi", "ping", "speedtest", "machine_info", "security", "users",
       "temperature"]
SETS = {
    "system": {name: {"enabled": False} for name in OFF},
    "default": {"ping": {"targets": ["127.0.0.1"], "count": 1}, "speedtest": {"enabled": False}},
}


def main():
    root = tempfile.mkdtemp(prefix="task-clock-")
    key = base64.b64encode(os.urandom(32)).decode()
    api_key_file = os.path.join(root, "api-key")
    with open(api_key_file, "w") as f:
        f.write("bench-api-key")
    receiver = subprocess.Popen(
        [BUILDS["before"], "receive", "--listen", "127.0.0.1:0", "-q", "--api-key-file", api_key_file,
         "--store-plaintext", "--store", os.path.join(root, "store")],
        env=dict(os.environ, FLEET_ENCRYPTION_KEY=key), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    agents = []
    try:
        url = receiver.stdout.readline().strip().removeprefix("listening on ")
        env = {k: v for k, v in os.environ.items() if k not in ("FLEET_ENCRYPTION_KEY", "FLEET_API_KEY")}
        for build in ORDER:
            for name, widgets in SETS.items():
                folder = os.path.join(root, f"{build}-{name}")
                os.makedirs(folder)
                config = {"server_url": url, "api_key": "bench-api-key", "encryption_key": key,
                          "machine_id": f"task-clock-{build}-{name}", "protocol": "v2", "interval": 1,
                          "log_level": "warn", "spool": {"dir": os.path.join(folder, "spool")}, "widgets": widgets}
                path = os.path.join(folder, "agent.json")
                with open(path, "w") as f:
                    json.dump(config, f)
                os.chmod(path, 0o600)
                command = [BUILDS[build], "run", "--config", path]
                if CALLGRIND:
                    out = os.path.join(folder, "callgrind.out")
                    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command
                process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                agents.append((build, name, process))
        time.sleep(20)
        if CALLGRIND:
            for build, name, process in agents:
                subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
            time.sleep(SECONDS)
            for build, name, process in agents:
                subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
            time.sleep(2)
            for build, name, process in agents:
                dumps = sorted(glob.glob(os.path.join(root, f"{build}-{name}", "callgrind.out*")), key=os.path.getmtime)
                totals = [line for line in open(dumps[-1]) if line.startswith(("totals:", "summary:"))]
                instructions = int(totals[-1].split()[1])
                print(json.dumps({"build": build, "agent": BUILDS[build], "widgets": name, "window_s": SECONDS,
                                  "user_instructions": instructions,
                                  "user_instructions_per_cycle": round(instructions / SECONDS)}))
            return
        counters = []
        for build, name, process in agents:
            out = os.path.join(root, f"{build}-{name}.perf")
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e", "task-clock", "-p",
                                     str(process.pid), "--", "sleep", str(SECONDS)])
            counters.append((build, name, out, perf))
        for *_, perf in counters:
            perf.wait()
        for build, name, out, _ in counters:
            ms = next(float(line.split(",")[0]) for line in open(out) if ",task-clock," in line)
            print(json.dumps({"build": build, "agent": BUILDS[build], "widgets": name, "window_s": SECONDS,
                              "task_clock_ms": ms, "cpu_ms_per_cycle": round(ms / SECONDS, 4)}))
    finally:
        for *_, process in agents:
            process.terminate()
        receiver.terminate()
        for *_, process in agents:
            process.wait()
        receiver.wait()
        subprocess.run(["rm", "-rf", root], check=False)


if __name__ == "__main__":
    main()

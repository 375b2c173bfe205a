"""Sender state writes and requests per cycle, two agent builds side by side (BENCHMARKS.md,
"sender state writes and requests").

Usage: sender_writes.py BEFORE_AGENT AFTER_AGENT [SECONDS] [INTERVAL]   (needs strace, python3)
Each build runs `run` at interval INTERVAL s (default 1; default widgets minus speedtest, ping
to 127.0.0.1)
against tests/fixtures/atlas_mock.py (atlas) and the AFTER build's bundled receiver (v2);
strace attaches 3 s after start and counts fsync, fdatasync, renames, the durable state writes
(a rename into cursor.json, sender.json, inflight.json, commands.json or transport-key.json,
or an fdatasync of state.bin) per second, and connects to the server for SECONDS (default 120).
Figures are per cycle (per INTERVAL).
"""
import json, os, re, subprocess, sys, time, tempfile, threading
AGENT = {"before": sys.argv[1], "after": sys.argv[2]}
RECV = sys.argv[2]
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
MOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "atlas_mock.py")
DUR = int(sys.argv[3]) if len(sys.argv) > 3 else 120
INTERVAL = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
procs = []

def start_line(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)
    procs.append(p)
    line = p.stdout.readline().strip()
    return p, line.split("listening on ")[1]

def run(version, protocol, results):
    d = tempfile.mkdtemp(prefix=f"m-{version}-{protocol}-")
    if protocol == "atlas":
        _, url = start_line(["python3", MOCK, f"{d}/capture.jsonl", "--rate-limit", "100000"])
    else:
        # Secrets reach the receiver through its environment (never on the command line).
        env = dict(os.environ, FLEET_API_KEY="k", FLEET_ENCRYPTION_KEY=KEY)
        _, url = start_line([RECV, "receive", "--listen", "127.0.0.1:0", "-q", "--store-plaintext", "--store", f"{d}/store"], env=env)
    port = url.rsplit(":", 1)[1]
    cfg = {"server_url": url, "api_key": "k", "encryption_key": KEY, "protocol": protocol, "interval": INTERVAL,
           "machine_id": f"m-{version}-{protocol}", "spool": {"dir": f"{d}/spool"}, "log_level": "info",
           "widgets": {"ping": {"targets": ["127.0.0.1"], "count": 1}, "speedtest": {"enabled": False}}}
    path = f"{d}/c.json"
    with open(path, "w") as f:
        json.dump(cfg, f)
    os.chmod(path, 0o600)
    out = f"{d}/strace.txt"
    a = subprocess.Popen([AGENT[version], "run", "--config", path], stdout=subprocess.DEVNULL, stderr=open(f"{d}/agent.log", "w"))
    time.sleep(3)
    st = subprocess.Popen(["strace", "-f", "-qq", "-y", "-ttt", "-o", out, "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,connect", "-p", str(a.pid)])
    time.sleep(DUR)
    st.terminate(); st.wait(timeout=10)
    a.terminate(); a.wait(timeout=10)
    text = open(out).read()
    # Count only the steady run: everything (start-up included) over DUR cycles.
    fsync = len(re.findall(r"\bfsync\(", text)); fdata = len(re.findall(r"\bfdatasync\(", text))
    ren = len(re.findall(r"\brename(at2?)?\(", text))
    conns = len(re.findall(r"connect\(.*sin_port=htons\(%s\)" % port, text))
    # Durable state writes (a rename into cursor.json / sender.json / inflight.json /
    # commands.json / transport-key.json, or an fdatasync of state.bin), per 1 s bucket.
    buckets = {}
    for line in text.splitlines():
        m = re.search(r"^\d+\s+(\d+)\.\d+ rename(?:at2?)?\(.*?\"([^\"]+)\"[^\"]*\)", line)
        if m and re.search(r"(cursor|sender|inflight|commands|transport-key)\.json\"", line):
            buckets[m.group(1)] = buckets.get(m.group(1), 0) + 1
        m = re.search(r"^\d+\s+(\d+)\.\d+ fdatasync\(\d+<[^>]*state\.bin>", line)
        if m:
            buckets[m.group(1)] = buckets.get(m.group(1), 0) + 1
    results[(version, protocol)] = dict(fsync=fsync, fdatasync=fdata, rename=ren, requests=conns, dir=d,
                                        state_max=max(buckets.values()) if buckets else 0, state_total=sum(buckets.values()))

results = {}
threads = [threading.Thread(target=run, args=(v, p, results)) for v in ("before", "after") for p in ("atlas", "v2")]
for t in threads: t.start()
for t in threads: t.join()
for p in procs: p.terminate()
for (v, p), r in sorted(results.items()):
    per = lambda k: r[k] * INTERVAL / DUR
    print(f"{v:6} {p:5}: per cycle fsync {per('fsync'):.2f} fdatasync {per('fdatasync'):.2f} rename {per('rename'):.2f}; requests/min {r['requests']*60/DUR:.1f}; state writes {r['state_total']} in {DUR} s, at most {r['state_max']} in one second  ({r['dir']})")

#!/usr/bin/env python3
"""The civetweb-mqtt benchmarks: every scenario against its baseline, in one
run, on this machine. Run through `make bench` (or `make bench-quick`).

Each figure is the median of RUNS runs (min-max alongside). Every MQTT row
runs with an independent counting subscriber (bcount) connected to the broker,
baselines included, because on a 2-core machine the counter's CPU changes the
result. Baselines and products run as separate processes of the same shape.
The broker is a mosquitto started here on a free loopback port with
`max_queued_messages 0`: mosquitto 2's default of 1,000 queued messages per
client drops even QoS 1 for a subscriber that falls behind.

Writes bench/RESULTS.md and bench/results.png; prints the tables.
Standard library only.
"""
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bench")
QUICK = "--quick" in sys.argv
RUNS = 1 if QUICK else 3

# Sizes: full run under 10 minutes, quick under 1 on this 2-core machine.
N_INBOUND = 20000 if QUICK else 200000
N_LATENCY = 2000 if QUICK else 10000
LAT_RATE = 2000
HTTP_SECONDS = 2 if QUICK else 5
HTTP_CONNS = 50
FAN_CLIENTS = 100
FAN_MSGS = 500 if QUICK else 2000
FAN_RATE = 1000 if QUICK else 2000
N_SUBS = 10000
N_IDLE_WS = 200 if QUICK else 1000
N_TWO = 20000 if QUICK else 100000

TMP = tempfile.mkdtemp(prefix="cwm-bench-")
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def start(args, ready=False, stdout_file=None):
    """Starts a process; with ready=True waits for its "ready" line."""
    out = open(stdout_file, "w") if stdout_file else subprocess.PIPE
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL,
                         text=True)
    PROCS.append(p)
    if ready:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{args[0]} did not get ready: {line!r}")
    return p


def stop(p, sig=signal.SIGTERM):
    """Stops a process we started, by its PID."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def finish(p, timeout=120):
    out, _ = p.communicate(timeout=timeout)
    if p in PROCS:
        PROCS.remove(p)
    return out


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result in {text!r}")


class Broker:
    def __init__(self):
        self.port = free_port()
        conf = os.path.join(TMP, f"mosquitto-{self.port}.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 0\nmax_inflight_messages 0\n"
                    "set_tcp_nodelay true\n"
                    "persistence false\n")
        os.chmod(TMP, 0o755)
        os.chmod(conf, 0o644)
        self.p = start(["mosquitto", "-c", conf])
        wait_port(self.port)

    def stop(self):
        stop(self.p)


def counter(broker, expected, qos, idle_ms=3000):
    p = start([f"{BIN}/bcount", "-p", str(broker.port), "-t", "bench/#",
               "-n", str(expected), "-q", str(qos), "-w", str(idle_ms),
               "-i", f"bcount-{time.time_ns()}"], ready=True)
    return p


def counter_result(p):
    m = re.search(r"count (\d+) duplicates (\d+) lost (\d+)", finish(p))
    return {"count": int(m.group(1)), "duplicates": int(m.group(2)),
            "lost": int(m.group(3))}


def publish(broker, n, qos, rate=0, size=64, text=False, wait=True):
    args = [f"{BIN}/bpub", "-p", str(broker.port), "-t", "bench/t", "-n",
            str(n), "-q", str(qos), "-s", str(size),
            "-i", f"bpub-{time.time_ns()}"]
    if rate:
        args += ["-r", str(rate)]
    if text:
        args += ["-a"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    PROCS.append(p)
    if wait:
        p.wait(300)
        PROCS.remove(p)
    return p


# ---- scenarios ---------------------------------------------------------------

def inbound(receiver, qos, n=N_INBOUND, latency=False, rate=0):
    b = Broker()
    try:
        cnt = counter(b, n, qos)
        args = [f"{BIN}/{receiver}", "-p", str(b.port), "-t", "bench/#",
                "-q", str(qos), "-n", str(n)]
        if latency:
            args.append("-l")
        r = start(args, ready=True)
        publish(b, n, qos, rate=rate)
        res = last_json(finish(r))
        res["counter"] = counter_result(cnt)
        return res
    finally:
        b.stop()


def two_brokers(n=N_TWO):
    b1, b2 = Broker(), Broker()
    try:
        c1, c2 = counter(b1, n, 0), counter(b2, n, 0)
        r = start([f"{BIN}/recv_cwm", "-p", f"{b1.port},{b2.port}", "-t",
                   "bench/#", "-q", "0", "-n", str(2 * n)], ready=True)
        p1 = publish(b1, n, 0, wait=False)
        p2 = publish(b2, n, 0, wait=False)
        for p in (p1, p2):
            p.wait(300)
            PROCS.remove(p)
        res = last_json(finish(r))
        k1, k2 = counter_result(c1), counter_result(c2)
        res["counter_lost"] = k1["lost"] + k2["lost"]
        return res
    finally:
        b1.stop()
        b2.stop()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server(mode, broker, threads=64):
    port = free_port()
    args = [f"{BIN}/bserver", "-p", str(port), "-m", mode, "-t", str(threads)]
    if broker is not None:
        args += ["-b", str(broker.port)]
    p = start(args, ready=True)
    wait_port(port)
    return p, port


def wrk(port, path):
    lua = os.path.join(TMP, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("x", 64)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(HTTP_CONNS), "-d", f"{HTTP_SECONDS}s",
         "--latency", "-s", lua, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=HTTP_SECONDS + 60).stdout

    def dur(v, unit):
        return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
    req = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    lat = {p: dur(v, u) for p, v, u in
           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "ok": req - (int(non2xx.group(1)) if non2xx else 0),
            "p50_us": lat["50"], "p99_us": lat["99"],
            "socket_errors": errors.group(0) if errors else ""}


def http_row(kind):
    b = Broker()
    try:
        cnt = counter(b, 10**9, 1, idle_ms=2000)
        mode = "ceiling" if kind == "ceiling" else "mqtt"
        srv, port = server(mode, b)
        path = {"ceiling": "/ceiling", "qos0": "/pub0/bench/t",
                "qos1": "/pub1/bench/t",
                "bridge": "/mqtt/publish/bench/t?qos=1"}[kind]
        res = wrk(port, path)
        stop(srv)
        res["counted"] = counter_result(cnt)["count"]
        # wrk stops counting at its deadline: replies still in flight then
        # reach the broker without being counted, so only a shortfall at the
        # broker is a loss.
        res["lost"] = 0 if kind == "ceiling" else max(0, res["ok"] - res["counted"])
        return res
    finally:
        b.stop()


def fanout(kind):
    b = Broker()
    try:
        cnt = counter(b, FAN_MSGS, 0)
        srv, port = (None, b.port) if kind == "mqtt" else server(
            "mqtt", b, threads=FAN_CLIENTS + 32)
        c = start([f"{BIN}/bws", "-p", str(port), "-n", str(FAN_CLIENTS),
                   "-k", kind, "-e", str(FAN_MSGS)], ready=True)
        time.sleep(0.5)  # the bridge's MQTT subscription is acknowledged
        publish(b, FAN_MSGS, 0, rate=FAN_RATE, text=True)
        res = last_json(finish(c))
        counter_result(cnt)
        if srv is not None:
            stop(srv)
        return res
    finally:
        b.stop()


def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), 30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
              .encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode(errors="replace")


def settle(pid, seconds=1.0):
    time.sleep(seconds)
    return rss_kib(pid)


def memory():
    res = {}
    b = Broker()
    try:
        # Idle, and with 10,000 subscriptions.
        srv, port = server("mqtt", b)
        res["idle_mqtt_kib"] = settle(srv.pid)
        # bserver answers once every SUBACK is in.
        if " 200 " not in get(port, f"/subscribe?n={N_SUBS}").split("\r\n", 1)[0]:
            raise RuntimeError("subscriptions not acknowledged")
        res["subs_kib"] = settle(srv.pid)
        stop(srv)
        cel, cport = server("ceiling", None)
        res["idle_ceiling_kib"] = settle(cel.pid)
        stop(cel)
        # Idle browsers: CivetWeb's own WebSocket vs the bridge's.
        for name, mode, kind in (("plain", "ceiling", "plainws"),
                                 ("bridge", "mqtt", "ws")):
            srv, port = server(mode, b if mode == "mqtt" else None,
                               threads=N_IDLE_WS + 32)
            before = settle(srv.pid)
            c = start([f"{BIN}/bws", "-p", str(port), "-n", str(N_IDLE_WS),
                       "-k", kind, "-e", "0"], ready=True)
            res[f"ws_{name}_before_kib"] = before
            res[f"ws_{name}_after_kib"] = settle(srv.pid, 2.0)
            stop(c)
            stop(srv)
    finally:
        b.stop()
    res["bytes_per_sub"] = (res["subs_kib"] - res["idle_mqtt_kib"]) * 1024 / N_SUBS
    plain = res["ws_plain_after_kib"] - res["ws_plain_before_kib"]
    bridge = res["ws_bridge_after_kib"] - res["ws_bridge_before_kib"]
    res["kib_per_ws_civetweb"] = plain / N_IDLE_WS
    res["kib_per_ws_bridge"] = bridge / N_IDLE_WS
    res["kib_per_ws_beyond"] = (bridge - plain) / N_IDLE_WS
    return res


def dispatch():
    out = subprocess.run([f"{BIN}/bdispatch", "200000" if QUICK else "2000000"],
                         capture_output=True, text=True, timeout=120).stdout
    return {str(j["handlers"]): j["ns_per_msg"]
            for j in map(json.loads, out.strip().splitlines())}


# ---- statistics and reporting --------------------------------------------------

def repeat(fn, *args):
    return [fn(*args) for _ in range(RUNS)]


def med(runs, key):
    vals = [r[key] if not callable(key) else key(r) for r in runs]
    return statistics.median(vals), min(vals), max(vals)


def fmt(v):
    m, lo, hi = v
    if abs(m) >= 1000:
        return f"{m:,.0f} ({lo:,.0f}-{hi:,.0f})"
    return f"{m:.1f} ({lo:.1f}-{hi:.1f})"


ROWS = []  # (scenario, metric, baseline name, baseline, product name, product, ratio, target, met)


def row(scn, metric, bname, bval, pname, pval, target=None, higher=True):
    ratio = pval[0] / bval[0] if bval and bval[0] else None
    met = None
    if target is not None and ratio is not None:
        met = ratio >= target if higher else ratio <= target
    ROWS.append((scn, metric, bname, bval, pname, pval, ratio, target, higher,
                 met))


def abs_row(scn, metric, pname, pval, limit, higher=False):
    met = pval[0] >= limit if higher else pval[0] <= limit
    ROWS.append((scn, metric, "", None, pname, pval, None, limit, higher, met))


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f
                       if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    def deb(pkg):
        return ver(["dpkg-query", "-W", "-f", "${Version}", pkg])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024} MiB",
        "kernel": platform.release(),
        "mosquitto": deb("mosquitto"),
        "paho.mqtt.c": deb("libpaho-mqtt1.3"),
        "civetweb": deb("libcivetweb1"),
        "cjson": deb("libcjson1"),
        "compiler": ver(["cc", "--version"]),
        "wrk": deb("wrk"),
    }


def report(info, elapsed):
    lines = []
    cur = None
    hdr = ("| metric | baseline | median (min-max) | civetweb-mqtt | "
           "median (min-max) | ratio | target | met |")
    for scn, metric, bname, bval, pname, pval, ratio, target, higher, met in ROWS:
        if scn != cur:
            lines += ["", f"### {scn}", "", hdr, "|---|---|---|---|---|---|---|---|"]
            cur = scn
        t = "" if target is None else (
            f"{'≥' if higher else '≤'} {target:g}" + ("" if bval else " (absolute)"))
        lines.append(
            f"| {metric} | {bname} | {fmt(bval) if bval else ''} | {pname} | "
            f"{fmt(pval)} | {f'{ratio:.2f}' if ratio is not None else ''} | "
            f"{t} | {'' if met is None else ('yes' if met else '**no**')} |")
    table = "\n".join(lines)
    print(table)
    met_n = sum(1 for r in ROWS if r[9] is True)
    tgt_n = sum(1 for r in ROWS if r[9] is not None)
    print(f"\ntargets met: {met_n} of {tgt_n}")
    if QUICK:
        return
    md = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"{elapsed:.0f} s, {RUNS} runs per figure: median, min-max in "
        "parentheses). Ratios are civetweb-mqtt / baseline, measured in the "
        "same run.",
        "",
        "## Machine and versions",
        "",
    ] + [f"- {k}: {v}" for k, v in info.items()] + [
        "",
        "## How",
        "",
        "- `make bench` builds `build/bench/*` and runs `python3 bench/run.py`;"
        " `make bench-quick` runs `bench/run.py --quick` (one run, smaller sizes).",
        "- A mosquitto per row on a free loopback port, `max_queued_messages 0`"
        ", `max_inflight_messages 0`.",
        "- `bpub`: raw-socket MQTT publisher (64-byte payloads with a sequence "
        "number and send time). `bcount`: raw-socket counting subscriber, "
        "running in every MQTT row, baselines included.",
        f"- Inbound: {N_INBOUND:,} messages flooded; `recv_paho` (bare paho "
        "MQTTAsync, the accounting in messageArrived) vs `recv_cwm` (the same "
        "accounting in a civetweb-mqtt topic handler). Rate from first to last "
        "arrival; CPU = user+sys of the receiving process / messages.",
        f"- Latency: {N_LATENCY:,} messages at {LAT_RATE}/s, publisher's "
        "CLOCK_MONOTONIC stamp to the handler.",
        f"- HTTP: `wrk -t2 -c{HTTP_CONNS} -d{HTTP_SECONDS}s --latency` POSTing "
        "64 bytes to `bserver`: `/ceiling` (CivetWeb alone, reads the body, "
        "200), `/pub0/bench/t` and `/pub1/bench/t` (`mg_mqtt_publish` QoS 0/1 "
        "from the handler), `/mqtt/publish/bench/t?qos=1` (the bridge). "
        "`enable_keep_alive yes`, `tcp_nodelay 1` everywhere. Lost = 200 "
        "replies - messages counted at the broker.",
        "- Dispatch: `bdispatch` calls the dispatch path (topic tree + handler "
        "calls) directly, with 1, 100 and 10,000 handlers of mixed exact, `+` "
        "and `#` filters.",
        f"- Fan-out: {FAN_MSGS} messages at {FAN_RATE}/s to {FAN_CLIENTS} "
        "clients; baseline: as many plain MQTT subscribers on the broker.",
        f"- Memory: VmRSS of `bserver`; {N_SUBS:,} subscriptions via the C API;"
        f" {N_IDLE_WS:,} idle WebSocket clients on CivetWeb's own WebSocket "
        "handler vs the bridge's.",
        f"- Two brokers: one `recv_cwm` process with prefixes MQTT and MQTT2, "
        f"{N_TWO:,} messages flooded into each broker at once.",
        "",
        "## Results",
        table,
        "",
        f"Targets met: {met_n} of {tgt_n}.",
        "",
        "![throughput and latency](results.png)",
        "",
    ]
    with open(os.path.join(ROOT, "bench", "RESULTS.md"), "w") as f:
        f.write("\n".join(md))
    chart()


def chart():
    """Throughput and p99 latency, baseline vs civetweb-mqtt, per scenario."""
    if shutil.which("gnuplot") is None:
        print("gnuplot missing: no chart")
        return
    tput = [r for r in ROWS if r[3] and r[1] in ("rate (msg/s)", "requests/s",
                                                 "deliveries/s")]
    lat = [r for r in ROWS if r[3] and r[1].startswith("p99")]
    data = os.path.join(TMP, "chart.dat")
    with open(data, "w") as f:
        for i, r in enumerate(tput):
            f.write(f'{i} "{r[0].split(":")[0]}\\n{r[4]}" {r[3][0]} {r[5][0]}\n')
        f.write("\n\n")
        for i, r in enumerate(lat):
            f.write(f'{i} "{r[0].split(":")[0]}\\n{r[4]}" {r[3][0]} {r[5][0]}\n')
    gp = f"""
set terminal pngcairo size 1400,560 font ",9"
set output "{os.path.join(ROOT, 'bench', 'results.png')}"
set multiplot layout 1,2 title "civetweb-mqtt vs baselines (medians, same run)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -30 left noenhanced
set key top left
set grid ytics
set logscale y
set title "throughput (higher is better)"
set ylabel "messages or requests per second"
plot "{data}" index 0 using 3:xtic(2) title "baseline", "" index 0 using 4 title "civetweb-mqtt"
set title "p99 latency (lower is better)"
set ylabel "microseconds"
plot "{data}" index 1 using 3:xtic(2) title "baseline", "" index 1 using 4 title "civetweb-mqtt"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=gp, text=True, check=True)


def main():
    t0 = time.time()
    info = machine()
    print(f"civetweb-mqtt benchmarks ({'quick' if QUICK else 'full'}, "
          f"{RUNS} run(s) a figure) on {info['cpu']}")

    for qos in (0, 1):
        base = repeat(inbound, "recv_paho", qos)
        prod = repeat(inbound, "recv_cwm", qos)
        scn = f"1. Inbound dispatch, QoS {qos}"
        row(scn, "rate (msg/s)", "bare paho", med(base, "rate"),
            "topic handler", med(prod, "rate"), 0.95 if qos == 0 else None)
        row(scn, "CPU ns/msg", "bare paho", med(base, "cpu_ns_per_msg"),
            "topic handler", med(prod, "cpu_ns_per_msg"),
            1.2 if qos == 0 else None, higher=False)
        abs_row(scn, "lost (at the handler)", "topic handler",
                med(prod, "lost"), 0)
        abs_row(scn, "lost (at the counter)", "counter",
                med(prod, lambda r: r["counter"]["lost"]), 0)
        if qos == 0:
            single = med(prod, "rate")
    print(f"[{time.time() - t0:.0f} s] inbound done", flush=True)

    base = repeat(inbound, "recv_paho", 0, N_LATENCY, True, LAT_RATE)
    prod = repeat(inbound, "recv_cwm", 0, N_LATENCY, True, LAT_RATE)
    scn = "2. Latency, broker to handler"
    row(scn, "p50 (us)", "bare paho", med(base, "p50_us"), "topic handler",
        med(prod, "p50_us"), higher=False)
    row(scn, "p99 (us)", "bare paho", med(base, "p99_us"), "topic handler",
        med(prod, "p99_us"), 1.3, higher=False)
    row(scn, "p99.9 (us)", "bare paho", med(base, "p999_us"), "topic handler",
        med(prod, "p999_us"), higher=False)
    print(f"[{time.time() - t0:.0f} s] latency done", flush=True)

    ceil = repeat(http_row, "ceiling")
    for kind, name, target in (("qos0", "publish QoS 0", 0.9),
                               ("qos1", "publish QoS 1", 0.8),
                               ("bridge", "bridge POST", 0.8)):
        runs = repeat(http_row, kind)
        scn = f"3. Publishing from a request handler: {name}"
        row(scn, "requests/s", "CivetWeb ceiling", med(ceil, "rps"), name,
            med(runs, "rps"), target)
        row(scn, "p50 (us)", "CivetWeb ceiling", med(ceil, "p50_us"), name,
            med(runs, "p50_us"), higher=False)
        row(scn, "p99 (us)", "CivetWeb ceiling", med(ceil, "p99_us"), name,
            med(runs, "p99_us"), 2.0 if kind == "qos0" else None, higher=False)
        abs_row(scn, "lost (200 replies not at the broker)", name,
                med(runs, "lost"), 0)
    print(f"[{time.time() - t0:.0f} s] http done", flush=True)

    d = repeat(dispatch)
    scn = "4. Topic dispatch cost"
    for h in ("100", "10000"):
        row(scn, f"ns/msg, {h} handlers", "1 handler",
            med(d, lambda r: r["1"]), f"{h} handlers", med(d, lambda r: r[h]),
            2.0 if h == "10000" else None, higher=False)

    base = repeat(fanout, "mqtt")
    for kind, name in (("ws", "WebSocket"), ("sse", "SSE")):
        runs = repeat(fanout, kind)
        scn = f"5. Fan-out to {FAN_CLIENTS} {name} clients"
        row(scn, "deliveries/s", f"{FAN_CLIENTS} MQTT subscribers",
            med(base, "rate"), f"bridge {name}", med(runs, "rate"))
        row(scn, "p99 publish-to-client (us)", f"{FAN_CLIENTS} MQTT subscribers",
            med(base, "p99_us"), f"bridge {name}", med(runs, "p99_us"),
            higher=False)
        abs_row(scn, "deliveries lost", f"bridge {name}",
                med(runs, lambda r: FAN_CLIENTS * FAN_MSGS - r["deliveries"]), 0)
    print(f"[{time.time() - t0:.0f} s] fan-out done", flush=True)

    mem = repeat(memory)
    scn = "6. Memory (RSS)"
    row(scn, "idle server (KiB)", "CivetWeb alone", med(mem, "idle_ceiling_kib"),
        "with client + bridge", med(mem, "idle_mqtt_kib"), higher=False)
    abs_row(scn, f"bytes per subscription ({N_SUBS:,})", "C API",
            med(mem, "bytes_per_sub"), 512)
    row(scn, f"KiB per idle WebSocket ({N_IDLE_WS:,})", "CivetWeb's own",
        med(mem, "kib_per_ws_civetweb"), "bridge", med(mem, "kib_per_ws_bridge"),
        higher=False)
    abs_row(scn, "KiB per idle WebSocket beyond CivetWeb's", "bridge",
            med(mem, "kib_per_ws_beyond"), 32)
    print(f"[{time.time() - t0:.0f} s] memory done", flush=True)

    two = repeat(two_brokers)
    scn = "7. Two brokers in one process"
    row(scn, "combined rate (msg/s)", "one broker (scenario 1)", single,
        "two prefixes", med(two, "rate"))
    abs_row(scn, "lost", "two prefixes",
            med(two, lambda r: r["lost"] + r["counter_lost"]), 0)

    report(info, time.time() - t0)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p, signal.SIGKILL)
        shutil.rmtree(TMP, ignore_errors=True)

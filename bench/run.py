#!/usr/bin/env python3
"""The civetweb-mqtt benchmarks: every scenario against its baseline, in one
run, on this machine. Run through `make bench` (or `make bench-quick`).

Each figure is the median of RUNS runs (min-max alongside). The MQTT rows
run with an independent counting subscriber (bcount) connected to the
broker, baselines included, because on a 2-core machine the counter's CPU
changes the result; the inbound flood rows (1, 1b) run without it, the
receiver alone on the broker, so that it is the bottleneck and CPU, context
switches and instructions per message are its own (their loss is counted at
the handler). Baselines and products run as separate processes of the same shape.
The broker is a mosquitto started here on a free loopback port with
`max_queued_messages 0`: mosquitto 2's default of 1,000 queued messages per
client drops even QoS 1 for a subscriber that falls behind.

Rounds are interleaved (baseline, product, baseline, product, ...), so a
load change on the shared machine hits both sides alike; every table row
shows what was lost in its runs (0 or the count), and the run ends with the
tables of the targets of issues 14 and 19: measured ratio, met or missed
(issue 19: with the reason for a miss from REASONS19, filled in by hand).

Issue 19 adds, in the same HTTP rounds, the baselines of publishing from a
request handler (bench/bhand.c: the physical limit on one raw socket,
libmosquitto and paho used by hand) with server CPU, futex calls (perf) and
context switches per request, ratios taken per round; an idle window of
the example server, the stock civetweb binary and a libmosquitto client
(wake-ups per second per thread); and their memory.

BENCH_BIN (default build/bench) is where the binaries are; PAHO_PREFIX, when
set, is the paho.mqtt.c they were linked against (`make bench
PAHO_PREFIX=/path` builds and passes both).

Writes bench/RESULTS.md and bench/results.png (full run only); prints the
tables. Standard library only.
"""
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, os.environ.get("BENCH_BIN") or "build/bench")
PAHO_PREFIX = os.environ.get("PAHO_PREFIX", "")
QUICK = "--quick" in sys.argv
# --only=inbound,startup,...: just those scenarios (no RESULTS.md written).
SCENARIOS = ("inbound", "latency", "http", "dispatch", "fanout", "memory",
             "two", "startup", "idle")
ONLY = next((a.split("=", 1)[1].split(",") for a in sys.argv
             if a.startswith("--only=")), None)
if ONLY and not set(ONLY) <= set(SCENARIOS):
    sys.exit(f"--only: one or more of {','.join(SCENARIOS)}")


def wanted(name):
    return ONLY is None or name in ONLY
RUNS = 1 if QUICK else 3

# Sizes: full run under 10 minutes, quick under 1 on this 2-core machine.
N_INBOUND = 20000 if QUICK else 200000
N_LATENCY = 2000 if QUICK else 10000
LAT_RATE = 2000
HTTP_SECONDS = 2 if QUICK else 5
HTTP_CONNS = 50
IDLE_SECONDS = 20 if QUICK else 60
FAN_CLIENTS = 100
FAN_MSGS = 500 if QUICK else 2000
FAN_RATE = 1000 if QUICK else 2000
N_SUBS = 10000
N_IDLE_WS = 200 if QUICK else 1000
N_TWO = 20000 if QUICK else 100000
# Callgrind: two message counts; instructions/msg = difference / (n2 - n1).
CG_N = (1000, 4000) if QUICK else (2000, 10000)
CG_RUNS = 1 if QUICK else 3
START_K = 3  # clients in the start-up row

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
        # Lines before "ready" are skipped: paho 1.3.15's MQTTAsync_connect
        # prints "checking <uri>" on stdout for each of serverURIs.
        seen = []
        while True:
            line = p.stdout.readline()
            if line.strip() == "ready":
                break
            seen.append(line)
            if not line or len(seen) > 20:
                raise RuntimeError(f"{args[0]} did not get ready: {seen!r}")
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


def counter_stop(p, expected, quiet=3.0, timeout=120.0):
    """Ends a counter once it has `expected` messages or its count has not
    grown for `quiet` s: asks for the count with SIGUSR1 (bcount answers
    "progress N"), then SIGTERM; returns counter_result. Unlike the idle
    time-out, a publisher that stalls for a while is not taken for a loss."""
    fd = p.stdout.fileno()  # nothing is buffered past "ready" yet
    seen, last, moved = b"", -1, time.time()
    end = time.time() + timeout
    while time.time() < end and p.poll() is None:
        p.send_signal(signal.SIGUSR1)
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 4096)
            counts = re.findall(rb"progress (\d+)", seen)
            if counts:
                n = int(counts[-1])
                if n >= expected:
                    break
                if n != last:
                    last, moved = n, time.time()
        if time.time() - moved > quiet:
            break
    # A signal that lands between bcount's check and its read waits for the
    # next packet: send it again until it ends.
    for _ in range(60):
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(1)
        except subprocess.TimeoutExpired:
            pass
    return counter_result(p)


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

def inbound(receiver, qos, n=N_INBOUND, latency=False, rate=0, wrap=(),
            extra=(), with_counter=True):
    """One receiver process against a flood of n messages (or a paced
    stream); its JSON line, with "counter" (the independent subscriber) and
    "lost" (at the handler + at the counter). with_counter=False: the
    receiver is the broker's only subscriber."""
    b = Broker()
    try:
        cnt = counter(b, n, qos) if with_counter else None
        args = list(wrap) + [f"{BIN}/{receiver}", "-p", str(b.port), "-t",
                             "bench/#", "-q", str(qos), "-n", str(n)]
        args += list(extra)
        if latency:
            args.append("-l")
        if wrap:
            args += ["-w", "20000"]
        r = start(args, ready=True)
        publish(b, n, qos, rate=rate)
        res = last_json(finish(r, timeout=600))
        res["counter"] = counter_result(cnt) if cnt else {"lost": 0}
        res["handler_lost"] = res["lost"]
        res["lost"] = res["handler_lost"] + res["counter"]["lost"]
        return res
    finally:
        b.stop()


def callgrind_ir(receiver, qos, n, extra=()):
    """Instructions callgrind counted in the message phase of one run (the
    receiver zeroes the counters when ready and dumps when done)."""
    out = os.path.join(TMP, f"cg-{receiver}-{n}-{time.time_ns()}.out")
    res = inbound(receiver, qos, n, wrap=("valgrind", "--tool=callgrind",
                                          f"--callgrind-out-file={out}"),
                  extra=extra, with_counter=False)
    with open(out + ".1") as f:
        m = re.search(r"^summary:\s+(\d+)", f.read(), re.M)
    res["ir"] = int(m.group(1))
    return res


def instructions(receiver, qos=0, extra=()):
    """Instructions per message: two message counts, the difference divided
    by the difference in messages (start-up and one-off costs cancel)."""
    n1, n2 = CG_N
    a = callgrind_ir(receiver, qos, n1, extra)
    b = callgrind_ir(receiver, qos, n2, extra)
    return {"ipm": (b["ir"] - a["ir"]) / (n2 - n1),
            "lost": a["lost"] + b["lost"]}


def startup(mode_bin, mode, k, broker):
    out = subprocess.run([f"{BIN}/{mode_bin}", "-p", str(broker.port), "-k",
                          str(k), "-m", mode], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{mode_bin} -m {mode} -k {k}: {out.stderr[-300:]}")
    return last_json(out.stdout)


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
        res["lost"] += k1["lost"] + k2["lost"]
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


def server(mode, broker, threads=64, binary=("bserver",)):
    """A web server of the HTTP rows: bserver (mode ceiling or mqtt) or a
    bhand_* baseline (binary=(name, extra arguments...), no mode)."""
    port = free_port()
    args = [f"{BIN}/{binary[0]}", "-p", str(port), "-t", str(threads)]
    args += list(binary[1:])
    if binary[0] == "bserver":
        args += ["-m", mode]
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
            "requests": req,
            "ok": req - (int(non2xx.group(1)) if non2xx else 0),
            "p50_us": lat["50"], "p99_us": lat["99"],
            "socket_errors": errors.group(0) if errors else ""}


def acks_of(port):
    body = get(port, "/acks").split("\r\n\r\n", 1)[1]
    return json.loads(body)


def wait_acks(port, timeout=60.0):
    """Polls bserver's /acks until every accepted publish is acknowledged
    (or failed) and nothing is queued or in flight (the bridge's publishes
    count there only), or nothing moved for 10 s."""
    end = time.time() + timeout
    last, still = None, time.time()
    while True:
        a = acks_of(port)
        if (a["acks"] + a["failed"] >= a["accepted"] and a["in_flight"] == 0
                and a["queued"] == 0) or time.time() > end:
            return a
        now = (a["acks"], a["in_flight"], a["queued"])
        if now != last:
            last, still = now, time.time()
        elif time.time() - still > 10:
            return a
        time.sleep(0.1)


# The rows of "publishing from a request handler": kind -> (server binary
# and its extra arguments, bserver mode, path, QoS). One wrk run each,
# against a fresh broker; a round runs them in this order.
HTTP_KINDS = {"ceiling": (("bserver",), "ceiling", "/ceiling", None)}
for _q in (0, 1):
    for _name, _binary, _mode in (("raw", ("bhand_raw",), None),
                                  ("rawb", ("bhand_raw", "-B"), None),
                                  ("rawc", ("bhand_raw", "-C"), None),
                                  ("mosq", ("bhand_mosq",), None),
                                  ("paho", ("bhand_paho",), None),
                                  ("qos", ("bserver",), "mqtt")):
        HTTP_KINDS[f"{_name}{_q}"] = (_binary, _mode, f"/pub{_q}/bench/t", _q)
HTTP_KINDS["bridge"] = (("bserver",), "mqtt", "/mqtt/publish/bench/t?qos=1",
                        1)


def proc_sample(pid):
    """CPU seconds (utime + stime of /proc/<pid>/stat) and context switches
    (voluntary + nonvoluntary, summed over /proc/<pid>/task/*/status)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    csw = sum(t["vcsw"] + t["nvcsw"] for t in tasks(pid).values())
    return cpu, csw


def tasks(pid):
    """{tid: {"name", "vcsw", "nvcsw", "cpu_ns"}} of the process's threads
    (cpu_ns from /proc/<pid>/task/<tid>/schedstat: time on a CPU)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        d = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{d}/comm") as f:
                name = f.read().strip()
            with open(f"{d}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            try:
                with open(f"{d}/schedstat") as f:
                    cpu_ns = int(f.read().split()[0])
            except OSError:
                cpu_ns = 0
        except OSError:
            continue  # the thread ended meanwhile
        out[int(tid)] = {"name": name,
                         "vcsw": int(st["voluntary_ctxt_switches"]),
                         "nvcsw": int(st["nonvoluntary_ctxt_switches"]),
                         "cpu_ns": cpu_ns}
    return out


def perf_works():
    """Whether perf can count the futex syscall tracepoint here."""
    if shutil.which("perf") is None:
        return False
    try:
        p = subprocess.run(["perf", "stat", "-x,", "-e", FUTEX_EVENT, "--",
                            "true"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0 and re.search(r"^\d+,", p.stderr, re.M) is not None


FUTEX_EVENT = "syscalls:sys_enter_futex"
PERF = None  # decided once, at the first HTTP row


def perf_start(pid):
    """perf stat counting the process's futex calls until perf_stop."""
    global PERF
    if PERF is None:
        PERF = perf_works()
        if not PERF:
            log("    perf cannot count syscalls:sys_enter_futex here: futex "
                "calls per request not measured")
    if not PERF:
        return None
    out = os.path.join(TMP, f"perf-{pid}-{time.time_ns()}.txt")
    p = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", FUTEX_EVENT,
                          "-p", str(pid)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    PROCS.append(p)
    time.sleep(0.5)  # attached to every thread before the load starts
    return p, out


def perf_stop(handle):
    if handle is None:
        return None
    p, out = handle
    stop(p, signal.SIGINT)
    with open(out) as f:
        m = re.search(r"^(\d+),.*" + re.escape(FUTEX_EVENT), f.read(), re.M)
    return int(m.group(1)) if m else None


def http_row(kind):
    binary, mode, path, qos = HTTP_KINDS[kind]
    b = Broker()
    try:
        # Ended by counter_stop once the server has nothing in flight.
        cnt = counter(b, 10**9, 1, idle_ms=600000)
        srv, port = server(mode, b, binary=binary)
        perf = perf_start(srv.pid)
        cpu0, csw0 = proc_sample(srv.pid)
        res = wrk(port, path)
        if kind == "bridge":
            # Its publishes do not reach the application's on_publish: wait
            # until the client has nothing queued or in flight.
            res["drain"] = wait_acks(port)
        elif kind != "ceiling":
            # The clock of the acknowledged rate stops at the last PUBACK
            # (QoS 0: the last message written to the network).
            a = wait_acks(port)
            res.update(a)
            span = (a["last_ack_ns"] - a["first_ns"]) / 1e9
            res["acked_rate"] = (a["acks"] / span if span > 0 and
                                 a["first_ns"] else 0.0)
            res["unacked"] = max(0, a["accepted"] - a["acks"])
        # CPU and context switches from the start of the load to the last
        # acknowledgement, per request answered.
        cpu1, csw1 = proc_sample(srv.pid)
        futex = perf_stop(perf)
        n = max(1, res["requests"])
        res["cpu_us"] = (cpu1 - cpu0) * 1e6 / n
        res["csw_per_req"] = (csw1 - csw0) / n
        res["futex_per_req"] = None if futex is None else futex / n
        stop(srv)
        expected = {"ceiling": 0, "bridge": res["ok"]}.get(
            kind, res.get("accepted", 0))
        res["counted"] = counter_stop(cnt, expected)["count"]
        if kind == "ceiling":
            res["lost"] = 0
        elif kind == "bridge":
            # wrk stops counting at its deadline: replies still in flight
            # then reach the broker without being counted, so only a
            # shortfall at the broker is a loss.
            res["lost"] = max(0, res["ok"] - res["counted"])
        else:
            # The server counted every publish it accepted (answered 200).
            res["lost"] = max(0, res["accepted"] - res["counted"])
        if res["lost"]:
            log(f"    {kind}: lost {res['lost']}: 200 replies {res['ok']}, "
                f"counted at the broker {res['counted']}, client at the end "
                f"{res.get('drain') or {k: res.get(k) for k in ('accepted', 'acks', 'failed', 'in_flight', 'queued')}}")
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
        res["lost"] = FAN_CLIENTS * FAN_MSGS - res["deliveries"]
        res["lost"] += counter_result(cnt)["lost"]
        if srv is not None:
            stop(srv)
        return res
    finally:
        b.stop()


def get(port, path):
    s = socket.create_connection(("127.0.0.1", port), 30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
              "Connection: close\r\n\r\n".encode())
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

def log(msg):
    print(msg, flush=True)


def brief(r):
    keys = ("rate", "cpu_ns_per_msg", "csw_per_msg", "vcsw_per_msg", "ipm", "rps",
            "acked_rate", "cpu_us", "futex_per_req", "csw_per_req", "p99_us",
            "total_s", "deliveries", "lost")
    if not isinstance(r, dict) or not any(k in r for k in keys):
        return ""
    return " ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else
                    f"{k}={r[k]}" for k in keys if k in r)


def rounds(*cases):
    """Interleaved rounds: RUNS times every case in turn (A, B, C, A, B, C,
    ...). cases: (key, fn, args...). Returns {key: [result per round]}."""
    out = {c[0]: [] for c in cases}
    for i in range(RUNS):
        for key, fn, *args in cases:
            r = fn(*args)
            out[key].append(r)
            log(f"    round {i + 1}/{RUNS} {key}: {brief(r)}")
    return out


def repeat(fn, *args):
    return rounds(("x", fn) + args)["x"]


def med(runs, key):
    vals = [r[key] if not callable(key) else key(r) for r in runs]
    return statistics.median(vals), min(vals), max(vals)


def fmt(v):
    m, lo, hi = v
    if lo == hi:  # one run
        return fmt1(m)
    return f"{fmt1(m)} ({fmt1(lo, m)}-{fmt1(hi, m)})"


def fmt1(x, scale=None):
    """One figure, with the precision its size (or scale's) calls for."""
    m = x if scale is None else scale
    if abs(m) >= 1000:
        return f"{x:,.0f}"
    if abs(m) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def lost_of(runs):
    """What the runs of one side lost, summed ("n/a" where nothing can be)."""
    if runs is None:
        return "n/a"
    return str(int(sum(r.get("lost", 0) for r in runs)))


ROWS = []  # dicts: scn metric bname bval pname pval ratio target higher met lost
TARGETS = {}  # issue figure -> (measured, met, note)


def row(scn, metric, bname, bval, pname, pval, target=None, higher=True,
        absolute=False, lost=("n/a", "n/a"), goal=None):
    """One table row: baseline vs product, ratio product/baseline. target
    applies to the ratio, or with absolute=True to the product's value.
    goal names the figure in the targets table of issue 14."""
    ratio = pval[0] / bval[0] if bval and bval[0] else None
    met = None
    judged = pval[0] if absolute else ratio
    if target is not None and judged is not None:
        met = judged >= target if higher else judged <= target
    ROWS.append(dict(scn=scn, metric=metric, bname=bname, bval=bval,
                     pname=pname, pval=pval, ratio=ratio, target=target,
                     higher=higher, absolute=absolute or not bval, met=met,
                     lost=lost))
    if goal is not None:
        TARGETS[goal] = (judged, met, "")


def abs_row(scn, metric, pname, pval, limit, higher=False, lost="n/a"):
    row(scn, metric, "", None, pname, pval, limit, higher, absolute=True,
        lost=("", lost))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def paho_version():
    if not PAHO_PREFIX:
        return "Debian " + deb("libpaho-mqtt1.3")
    libdir = os.path.join(PAHO_PREFIX, "lib")
    vers = [f.rsplit(".so.", 1)[1] for f in os.listdir(libdir)
            if f.startswith("libpaho-mqtt3as.so.") and f.count(".") >= 4] \
        if os.path.isdir(libdir) else []
    return f"{vers[0] if vers else '?'} from PAHO_PREFIX={PAHO_PREFIX}"


def ver(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def deb(pkg):
    # One line per installed architecture: the first.
    return ver(["dpkg-query", "-W", "-f", "${Version}\n", pkg])


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
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024} MiB",
        "kernel": platform.release(),
        "load average at start (1, 5, 15 min)": loadavg(),
        "mosquitto": deb("mosquitto"),
        "libmosquitto": deb("libmosquitto1"),
        "paho.mqtt.c": paho_version(),
        "civetweb": deb("libcivetweb1"),
        "cjson": deb("libcjson1"),
        "valgrind": deb("valgrind"),
        "compiler": ver(["cc", "--version"]),
        "wrk": deb("wrk"),
    }


# The targets of issue 14, in its order: (figure, target text).
ISSUE_TARGETS = [
    ("inbound QoS 0 CPU/msg vs bare paho, queued handler", "<= 1.10"),
    ("inbound QoS 0 CPU/msg vs bare paho, inline handler", "<= 1.03"),
    ("inbound QoS 1 CPU/msg vs bare paho, queued", "<= 1.15"),
    ("context switches per message, QoS 0 flood, queued", "<= 0.05"),
    ("inbound rate vs bare paho, QoS 0", ">= 0.97"),
    ("inbound rate vs bare paho, QoS 1", ">= 0.97"),
    ("HTTP publish QoS 0 req/s vs CivetWeb ceiling", ">= 0.90"),
    ("HTTP publish QoS 0 p99 vs CivetWeb ceiling", "<= 1.5"),
    ("HTTP publish QoS 1, acknowledged msg/s vs ceiling", ">= 0.85"),
    ("bridge POST vs ceiling", ">= 0.85"),
    ("start of 3 clients vs 1", "<= 1.2"),
    ("lost, every row", "0"),
]


def target_table():
    lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
    for fig, tgt in ISSUE_TARGETS:
        v, met, note = TARGETS.get(fig, (None, None, "not measured"))
        shown = note if v is None else (f"{v:.3g}" if isinstance(v, float)
                                        else str(v))
        lines.append(f"| {fig} | {tgt} | {shown} | "
                     f"{'' if met is None else ('met' if met else '**missed**')} |")
    return "\n".join(lines)


def report(info, elapsed):
    lines = []
    cur = None
    hdr = ("| metric | baseline | median (min-max) | civetweb-mqtt | "
           "median (min-max) | ratio | target | met | lost (base / product) |")
    for r in ROWS:
        if r["scn"] != cur:
            lines += ["", f"### {r['scn']}", "", hdr,
                      "|---|---|---|---|---|---|---|---|---|"]
            cur = r["scn"]
        t = "" if r["target"] is None else (
            f"{'≥' if r['higher'] else '≤'} {r['target']:g}" +
            (" (absolute)" if r["absolute"] else ""))
        bl, pl = r["lost"]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['metric']} | {r['bname']} | "
            f"{fmt(r['bval']) if r['bval'] else ''} | {r['pname']} | "
            f"{fmt(r['pval'])} | "
            f"{ratio} | "
            f"{t} | {'' if r['met'] is None else ('yes' if r['met'] else '**no**')} | "
            f"{bl + ' / ' + pl if bl else pl} |")
    table = "\n".join(lines)
    print(table)
    met_n = sum(1 for r in ROWS if r["met"] is True)
    tgt_n = sum(1 for r in ROWS if r["met"] is not None)
    print(f"\nrow targets met: {met_n} of {tgt_n}")
    for block in HAND_SECTIONS:
        print(f"\n{block}")
    targets = target_table()
    print("\n### Targets of issue 14 (ratios in this run, medians)\n")
    print(targets)
    targets19 = target19_table()
    print("\n### Targets of issue 19 (ratios per round, median of rounds)\n")
    print(targets19)
    print(f"\nload average at the end (1, 5, 15 min): {loadavg()}")
    if QUICK or ONLY:
        return
    md = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"{elapsed:.0f} s, {RUNS} interleaved rounds per figure: median, "
        "min-max in parentheses). Ratios are civetweb-mqtt / baseline, "
        "measured in the same run.",
        "",
        "## Machine and versions",
        "",
    ] + [f"- {k}: {v}" for k, v in info.items()] + [
        f"- load average at the end: {loadavg()}",
        "",
        "## How",
        "",
        "- `make bench` builds `build/bench/*` and runs `python3 bench/run.py`;"
        " `make bench-quick` runs `bench/run.py --quick` (one round, smaller "
        "sizes). `make bench PAHO_PREFIX=/path` builds everything against the "
        "paho.mqtt.c installed there (in `build/bench-paho<path>/`).",
        "- Rounds are interleaved: baseline, product, baseline, product, ... "
        "so a change of load on the shared machine hits both.",
        "- A mosquitto per row on a free loopback port, `max_queued_messages 0`"
        ", `max_inflight_messages 0`.",
        "- `bpub`: raw-socket MQTT publisher (64-byte payloads with a sequence "
        "number and send time). `bcount`: raw-socket counting subscriber, "
        "running in every MQTT row, baselines included, except the inbound "
        "flood rows (1, 1b): there the receiver is the broker's only "
        "subscriber (with a second one on 2 cores the receiver drains its "
        "socket and sleeps, and context switches count the machine, not the "
        "receiver).",
        f"- Inbound: {N_INBOUND:,} messages flooded; `recv_paho` (bare paho "
        "MQTTAsync, the accounting in messageArrived), `recv_mosq` "
        "(libmosquitto with `mosquitto_loop_start`, the accounting in "
        "on_message) and `recv_cwm` (the same accounting in a civetweb-mqtt "
        "topic handler). Rate from first to last arrival; CPU = user+sys of "
        "the receiving process / messages; context switches = ru_nvcsw + "
        "ru_nivcsw of the receiving process (getrusage) / messages; lost = "
        "missing at the handler.",
        f"- Instructions/msg: the receiver under `valgrind --tool=callgrind`,"
        f" counters zeroed when subscribed and dumped at the last message, "
        f"{CG_N[0]:,} and {CG_N[1]:,} messages: (Ir2 - Ir1) / "
        f"{CG_N[1] - CG_N[0]:,}.",
        f"- Start-up: `bstart_paho` / `bstart_cwm`: time from before the first"
        f" create to the last of k clients connected (CONNACK) in one "
        f"process, clients started one after the other (seq); also paho with"
        f" every connect issued at once (together), paho with traffic on the "
        f"first client while the others connect (traffic), paho with the "
        f"first connected and then the others at once (late), paho with the "
        f"first client sending an UNSUBSCRIBE every 10 ms (unsub), "
        f"civetweb-mqtt "
        f"with every mg_mqtt_start from its own thread (threads).",
        f"- Latency: {N_LATENCY:,} messages at {LAT_RATE}/s, publisher's "
        "CLOCK_MONOTONIC stamp to the handler.",
        f"- HTTP: `wrk -t2 -c{HTTP_CONNS} -d{HTTP_SECONDS}s --latency` POSTing "
        "64 bytes to `bserver`: `/ceiling` (CivetWeb alone, reads the body, "
        "200), `/pub0/bench/t` and `/pub1/bench/t` (`mg_mqtt_publish` QoS 0/1 "
        "from the handler), `/mqtt/publish/bench/t?qos=1` (the bridge). "
        "`enable_keep_alive yes`, `tcp_nodelay 1` everywhere. After wrk, the "
        "driver waits until bserver's `GET /acks` shows every accepted "
        "publish acknowledged (on_publish result 0); acknowledged msg/s = "
        "acks / (last acknowledgement - first accepted publish). Lost = "
        "accepted publishes (bridge: 200 replies) - messages counted at the "
        "broker.",
        "- Publishing at the machine's limit (issue 19; tables 9, 9b): the "
        "same wrk load on `bhand_raw` (the physical limit: one raw socket to "
        "the broker, each handler writes its PUBLISH with one writev under a "
        "mutex; QoS 1 with packet ids and a reader thread counting PUBACKs "
        "on that socket; two references for batched designs on that socket: "
        "`-B`, a writer thread woken when idle writes what the handlers "
        "queued, and `-C`, the handler that finds nobody writing writes "
        "what the others queued), `bhand_mosq` (one shared libmosquitto "
        "client, `mosquitto_loop_start`, `mosquitto_publish` from every "
        "handler, its default in-flight window of 20) and `bhand_paho` (one "
        "shared MQTTAsync client, `MQTTAsync_sendMessage` from every "
        "handler), interleaved in the same rounds as the rows above; all on "
        "the same CivetWeb options (`bench/hsrv.h`). Server CPU per request "
        "= utime+stime of /proc/<pid>/stat, context switches = "
        "voluntary+nonvoluntary summed over /proc/<pid>/task/*/status, "
        "futex calls = `perf stat -e syscalls:sys_enter_futex -p <pid>`, "
        "each from the start of the load to the last acknowledgement, "
        "divided by the requests wrk made. "
        "Ratios are taken within a round, then the median of the rounds.",
        f"- Idle (table 10): the example server with example/civetweb.conf, "
        f"connected to a local mosquitto, Debian's `civetweb` binary with "
        f"the same CivetWeb options and a libmosquitto client "
        f"(`bidle_mosq`), {IDLE_SECONDS} s side by side: per-thread context "
        f"switches and CPU (schedstat). Memory (table 11): their "
        f"/proc/<pid>/status at the end.",
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
        f"Row targets met: {met_n} of {tgt_n}.",
        "",
        "## Targets of issue 14",
        "",
        targets,
        "",
        "## Issue 19: publishing at the machine's limit, idle, memory",
        "",
        READ19,
        "\n\n".join(HAND_SECTIONS),
        "",
        "## Targets of issue 19",
        "",
        "Ratios taken per round, median of rounds; the idle figure is the "
        "example server's wake-ups per second over all its threads.",
        "",
        targets19,
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
    tput = [r for r in ROWS if r["bval"] and r["pname"] != "libmosquitto" and
            r["metric"] in ("rate (msg/s)", "requests/s", "deliveries/s")]
    lat = [r for r in ROWS if r["bval"] and r["metric"].startswith("p99")]
    data = os.path.join(TMP, "chart.dat")
    with open(data, "w") as f:
        for i, r in enumerate(tput):
            f.write(f'{i} "{r["scn"].split(":")[0]}\\n{r["pname"]}" '
                    f'{r["bval"][0]} {r["pval"][0]}\n')
        f.write("\n\n")
        for i, r in enumerate(lat):
            f.write(f'{i} "{r["scn"].split(":")[0]}\\n{r["pname"]}" '
                    f'{r["bval"][0]} {r["pval"][0]}\n')
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


# ---- the run -------------------------------------------------------------------

def inline_available():
    """recv_cwm -I registers its handler inline (on paho's receive thread);
    it exits 3 when the library has no inline handlers."""
    p = subprocess.run([f"{BIN}/recv_cwm", "-I", "-p", "1", "-n", "1"],
                       capture_output=True, timeout=30)
    return p.returncode != 3


def run_inbound(t0):
    inline = inline_available()
    if not inline:
        TARGETS["inbound QoS 0 CPU/msg vs bare paho, inline handler"] = (
            None, None, "not measured: no inline handler in this build")
    for qos in (0, 1):
        log(f"[{time.time() - t0:.0f} s] inbound QoS {qos}, {N_INBOUND:,} messages")
        # The flood rows run without the counting subscriber: with a second
        # subscriber on 2 cores the receiver is no longer the bottleneck, it
        # drains its socket and sleeps, and context switches per message
        # measure the machine instead of the receiver (bare paho: 0.4
        # with the counter, 0.005 without). Loss is counted at the handler.
        solo = (N_INBOUND, False, 0, (), (), False)
        cases = [("bare paho", inbound, "recv_paho", qos) + solo,
                 ("libmosquitto", inbound, "recv_mosq", qos) + solo,
                 ("topic handler", inbound, "recv_cwm", qos) + solo]
        if inline:
            cases.append(("inline handler", inbound, "recv_cwm", qos,
                          N_INBOUND, False, 0, (), ("-I",), False))
        R = rounds(*cases)
        base = R["bare paho"]
        scn = f"1. Inbound dispatch, QoS {qos}"
        for name in [c[0] for c in cases[1:]]:
            prod = R[name]
            lost = (lost_of(base), lost_of(prod))
            queued = name == "topic handler"
            row(scn, "rate (msg/s)", "bare paho", med(base, "rate"), name,
                med(prod, "rate"), 0.97 if name != "libmosquitto" else None,
                lost=lost, goal=f"inbound rate vs bare paho, QoS {qos}"
                if queued else None)
            cpu_goal = None
            if queued:
                cpu_goal = ("inbound QoS 0 CPU/msg vs bare paho, queued handler"
                            if qos == 0 else
                            "inbound QoS 1 CPU/msg vs bare paho, queued")
            elif name == "inline handler" and qos == 0:
                cpu_goal = "inbound QoS 0 CPU/msg vs bare paho, inline handler"
            cpu_t = None
            if name != "libmosquitto":
                cpu_t = (1.10 if queued else 1.03) if qos == 0 else (
                    1.15 if queued else None)
            row(scn, "CPU ns/msg", "bare paho", med(base, "cpu_ns_per_msg"),
                name, med(prod, "cpu_ns_per_msg"), cpu_t, higher=False,
                lost=lost, goal=cpu_goal)
            row(scn, "context switches/msg", "bare paho",
                med(base, "csw_per_msg"), name, med(prod, "csw_per_msg"),
                0.05 if queued and qos == 0 else None, higher=False,
                absolute=True, lost=lost,
                goal="context switches per message, QoS 0 flood, queued"
                if queued and qos == 0 else None)
        if qos == 0:
            single = med(R["topic handler"], "rate")
    log(f"[{time.time() - t0:.0f} s] instructions per message (callgrind, "
        f"QoS 0, {CG_N[0]:,} and {CG_N[1]:,} messages)")
    cases = [("bare paho", instructions, "recv_paho"),
             ("libmosquitto", instructions, "recv_mosq"),
             ("topic handler", instructions, "recv_cwm")]
    if inline:
        cases.append(("inline handler", instructions, "recv_cwm", 0, ("-I",)))
    R = rounds(*cases)
    scn = "1b. Instructions per message (callgrind), inbound QoS 0"
    for name in [c[0] for c in cases[1:]]:
        row(scn, "instructions/msg", "bare paho", med(R["bare paho"], "ipm"),
            name, med(R[name], "ipm"), higher=False,
            lost=(lost_of(R["bare paho"]), lost_of(R[name])))
    return single


def run_startup(t0):
    log(f"[{time.time() - t0:.0f} s] start-up, 1 vs {START_K} clients")
    b = Broker()
    try:
        k = START_K
        R = rounds(("paho 1", startup, "bstart_paho", "seq", 1, b),
                   (f"paho {k}", startup, "bstart_paho", "seq", k, b),
                   ("cwm 1", startup, "bstart_cwm", "seq", 1, b),
                   (f"cwm {k}", startup, "bstart_cwm", "seq", k, b),
                   (f"paho {k} together", startup, "bstart_paho", "together", k, b),
                   (f"paho {k} late", startup, "bstart_paho", "late", k, b),
                   (f"paho {k} traffic", startup, "bstart_paho", "traffic", k, b),
                   (f"paho {k} unsub", startup, "bstart_paho", "unsub", k, b),
                   (f"cwm {k} threads", startup, "bstart_cwm", "threads", k, b))
    finally:
        b.stop()
    ms = lambda r: r["total_s"] * 1e3  # noqa: E731
    scn = f"8. Start-up: {k} clients in one process vs 1"
    row(scn, "ms to connect, one after the other", "bare paho, 1 client",
        med(R["paho 1"], ms), f"bare paho, {k} clients", med(R[f"paho {k}"], ms),
        higher=False, lost=("0", "0"))
    row(scn, "ms to connect, one after the other", "civetweb-mqtt, 1 client",
        med(R["cwm 1"], ms), f"civetweb-mqtt, {k} clients",
        med(R[f"cwm {k}"], ms), 1.2, higher=False, lost=("0", "0"),
        goal="start of 3 clients vs 1")
    row(scn, "ms to connect, every connect issued at once", "bare paho, 1 client",
        med(R["paho 1"], ms), f"bare paho, {k} clients",
        med(R[f"paho {k} together"], ms), higher=False, lost=("0", "0"))
    row(scn, "ms, first connected, then the others' connects at once",
        "bare paho, 1 client", med(R["paho 1"], ms), f"bare paho, {k} clients",
        med(R[f"paho {k} late"], ms), higher=False, lost=("0", "0"))
    row(scn, "ms, one after the other, traffic on the first",
        "bare paho, 1 client", med(R["paho 1"], ms), f"bare paho, {k} clients",
        med(R[f"paho {k} traffic"], ms), higher=False, lost=("0", "0"))
    row(scn, "ms, one after the other, first sends UNSUBSCRIBEs",
        "bare paho, 1 client", med(R["paho 1"], ms), f"bare paho, {k} clients",
        med(R[f"paho {k} unsub"], ms), higher=False, lost=("0", "0"))
    row(scn, "ms to connect, mg_mqtt_start from k threads",
        "civetweb-mqtt, 1 client", med(R["cwm 1"], ms),
        f"civetweb-mqtt, {k} clients", med(R[f"cwm {k} threads"], ms),
        higher=False, lost=("0", "0"))
    each = R[f"paho {k}"][len(R[f"paho {k}"]) // 2]["each_s"]
    log("    bare paho, one after the other, connected at (s): " +
        ", ".join(f"{x:.3f}" for x in each))


def run_http(t0):
    log(f"[{time.time() - t0:.0f} s] HTTP publish, wrk {HTTP_SECONDS} s a row, "
        f"{len(HTTP_KINDS)} rows a round")
    R = rounds(*[(k, http_row, k) for k in HTTP_KINDS])
    ceil = R["ceiling"]
    for kind, name, target in (("qos0", "publish QoS 0", 0.9),
                               ("qos1", "publish QoS 1", None),
                               ("bridge", "bridge POST", 0.85)):
        runs = R[kind]
        lost = (lost_of(ceil), lost_of(runs))
        scn = f"3. Publishing from a request handler: {name}"
        row(scn, "requests/s", "CivetWeb ceiling", med(ceil, "rps"), name,
            med(runs, "rps"), target, lost=lost,
            goal={"qos0": "HTTP publish QoS 0 req/s vs CivetWeb ceiling",
                  "bridge": "bridge POST vs ceiling"}.get(kind))
        if kind == "qos1":
            row(scn, "acknowledged msg/s (clock stops at the last PUBACK)",
                "CivetWeb ceiling (req/s)", med(ceil, "rps"), name,
                med(runs, "acked_rate"), 0.85, lost=lost,
                goal="HTTP publish QoS 1, acknowledged msg/s vs ceiling")
            abs_row(scn, "accepted, never acknowledged", name,
                    med(runs, "unacked"), 0, lost=lost_of(runs))
        row(scn, "p50 (us)", "CivetWeb ceiling", med(ceil, "p50_us"), name,
            med(runs, "p50_us"), higher=False, lost=lost)
        row(scn, "p99 (us)", "CivetWeb ceiling", med(ceil, "p99_us"), name,
            med(runs, "p99_us"), 1.5 if kind == "qos0" else None, higher=False,
            lost=lost, goal="HTTP publish QoS 0 p99 vs CivetWeb ceiling"
            if kind == "qos0" else None)
    hand_report(R)


# ---- issue 19: the physical limit, the baselines by hand, idle ---------------

HAND_LABELS = {
    "ceiling": "CivetWeb alone, no publish (reference)",
    "raw0": "physical limit: one raw socket, QoS 0",
    "rawb0": "one raw socket, a writer thread batches (one hand-off), QoS 0 "
             "(reference)",
    "rawc0": "one raw socket, handlers combine their writes (no hand-off), "
             "QoS 0 (reference)",
    "mosq0": "libmosquitto by hand, QoS 0",
    "paho0": "naive shared paho MQTTAsync, QoS 0",
    "qos0": "civetweb-mqtt mg_mqtt_publish, QoS 0",
    "raw1": "physical limit: one raw socket, QoS 1",
    "rawb1": "one raw socket, a writer thread batches (one hand-off), QoS 1 "
             "(reference)",
    "rawc1": "one raw socket, handlers combine their writes (no hand-off), "
             "QoS 1 (reference)",
    "mosq1": "libmosquitto by hand, QoS 1",
    "paho1": "naive shared paho MQTTAsync, QoS 1",
    "qos1": "civetweb-mqtt mg_mqtt_publish, QoS 1",
    "bridge": "civetweb-mqtt bridge POST, QoS 1",
}
# (product, baseline): the ratios printed, each taken per round, then the
# median of the rounds.
HAND_PAIRS = [("rawb0", "raw0"), ("rawc0", "raw0"), ("mosq0", "raw0"),
              ("paho0", "raw0"), ("qos0", "raw0"), ("qos0", "rawb0"),
              ("qos0", "rawc0"), ("qos0", "mosq0"), ("qos0", "paho0"),
              ("rawb1", "raw1"), ("rawc1", "raw1"), ("mosq1", "raw1"),
              ("paho1", "raw1"), ("qos1", "raw1"), ("qos1", "rawb1"),
              ("qos1", "rawc1"), ("qos1", "mosq1"), ("qos1", "paho1"),
              ("bridge", "qos1")]
HAND_SECTIONS = []  # markdown blocks of issue 19, for the report
TARGETS19 = {}  # figure -> (measured, met)
LOST = []  # losses of the rows outside ROWS (issue 19's tables)

# The targets of issue 19: (figure, comparison, threshold).
ISSUE19_TARGETS = [
    ("QoS 0 req/s vs the physical limit", ">=", 0.95),
    ("QoS 0 req/s vs libmosquitto by hand", ">=", 1.0),
    ("QoS 0 server CPU per request vs the physical limit", "<=", 1.15),
    ("QoS 1 acknowledged msg/s vs the physical limit", ">=", 0.90),
    ("bridge POST req/s vs the C route, same QoS (1)", ">=", 0.95),
    ("p99 vs the physical limit (QoS 0)", "<=", 1.3),
    ("idle wake-ups per second, example server, connected", "<=", 2),
    ("lost, every row", "==", 0),
]
# The rows the targets call "the physical limit" (issue 19: one write per
# request under a mutex); "rawc0" / "rawc1" would hold the library to the
# combining design instead.
LIMIT0, LIMIT1 = "raw0", "raw1"
# Why a target is missed: filled in by hand, from what is known of the
# engine, after a run on a quiet machine (printed next to "missed").
REASONS19 = {
    "QoS 0 req/s vs the physical limit":
        "each message is handed to mqtt-io (a futex wake when it sleeps), "
        "which writes it through paho; see the libmosquitto row",
    "QoS 0 req/s vs libmosquitto by hand":
        "libmosquitto writes from the handler's own thread; mg_mqtt_publish "
        "hands the message to mqtt-io (0.4 futex calls a request against "
        "0.09). A combining path (the publishing thread writes while "
        "mqtt-io sleeps) was tried on 2026-12-08 and not kept: context "
        "switches a request rose (1.44 against 1.20, an A/B pair on a "
        "loaded machine), paho's process-wide lock then being taken by "
        "every worker instead of one thread",
    "QoS 0 server CPU per request vs the physical limit":
        "the hand-off to mqtt-io and Debian's paho (stack tracing and heap "
        "tracking on every call: docs/performance.md, paho built for speed)",
    "QoS 1 acknowledged msg/s vs the physical limit":
        "MAX_INFLIGHT (20 by default, libmosquitto's default too) bounds "
        "the messages awaiting PUBACK where the raw socket has no window; "
        "each PUBACK costs paho's receive thread ~25k instructions "
        "(Debian's build) and wakes mqtt-io when the window was full. "
        "BSERVER_MAX_INFLIGHT=200 gave 34.0k against 27.4k acknowledged "
        "msg/s (one run each, no counting subscriber, 2026-12-08); 1000 "
        "gave 19.1k (paho looks up a PUBACK's message in a list)",
    "p99 vs the physical limit (QoS 0)":
        "the hand-off to mqtt-io and its wake-up coalescing window under "
        "load",
    "idle wake-ups per second, example server, connected":
        "paho's receive thread (MQTTClient_run) polls every 100 ms, a "
        "timeout in paho's source (any MQTTClient program with callbacks "
        "wakes as often); the rest of the example server wakes 0.5/s "
        "(CivetWeb's master thread). Only driving paho without its "
        "receive thread would remove it: not done",
    "bridge POST req/s vs the C route, same QoS (1)":
        "the bridge reads the body with mg_mqtt_read_body (its socket "
        "found, a deadline watched) and checks Origin, Host and the allow "
        "list",
}


# How to read issue 19's tables: written into RESULTS.md with them.
READ19 = """\
How to read them:

- Table 9 has one row per server, all under the same wrk load in the same
  rounds. *req/s* is wrk's. *Acknowledged msg/s* (QoS 1 rows) is PUBACKs /
  (last PUBACK - first accepted publish): a server may answer 200 before
  the broker acknowledges, so at QoS 1 this, not req/s, is the rate the
  broker took. *Server CPU us/req*, *futex/req* and *context
  switches/req* are the server process's alone (not mosquitto's, wrk's or
  the counting subscriber's), from the start of the load to the last
  acknowledgement, divided by the requests; on two shared cores every
  microsecond the server spends is one the broker and wrk lack, and CPU
  per request is what the server itself costs, whoever else runs. Futex calls and context
  switches count the hand-offs between threads: CivetWeb alone makes
  about one context switch per request (its worker sleeps between
  requests); what a publish path adds above that is its own. *Lost*: 200
  answers (bridge: wrk's 200s) the counting subscriber never got; must
  be 0.
- The physical limit (issue 19's definition, the baseline of its
  targets: LIMIT0 and LIMIT1 in bench/run.py) is one writev per request
  on one socket under a mutex, no queue, no thread hand-off. It is the
  cost of the simplest correct path, not an upper bound on every design:
  under 50 connections the handlers queue on the mutex, and a design
  that batches can beat it. Two reference rows show two such designs on
  the same socket: a writer thread woken when idle (one hand-off per
  batch, the shape of an engine with its own I/O thread) and combining
  (the handler that finds the socket free writes everything queued; the
  others return at once). libmosquitto and paho are used as a developer
  would without this library: one shared client, the publish call in the
  handler, their defaults.
- Table 9b divides product by baseline within each round (the two ran
  in the same round, a minute apart at most), then takes the median over
  the rounds, so a load change between rounds cancels. When the min-max of a ratio straddles a target,
  the row is not decided by this run: rerun on a quiet machine (the load
  average is printed at the start and the end).
- Table 10: wake-ups are context switches of each thread over the window,
  grouped by thread name. A thread blocked until something happens makes
  0; a timed loop makes its rate (a 100 ms nanosleep: 10/s). The MQTT
  keep-alive (60 s) shows as one PINGREQ and its PINGRESP a minute on the
  network thread(s), a few hundredths a second, or nothing in a 20 s
  quick window. The target (<= 2/s) is the example server's total over
  all its threads; the stock civetweb binary (same CivetWeb options) and
  a libmosquitto client are the references. CPU ms/min is time on a CPU (schedstat) scaled to a minute.
- Table 11: VmRSS = RssAnon (heap and the touched parts of thread stacks:
  what the process itself costs) + RssFile (pages of mapped files, mostly
  shared libraries such as paho, cJSON and OpenSSL, shared with other
  processes that map them). VmSize is address space: each thread reserves
  a stack (the size of the stack rlimit by default, often 8 MiB) that
  costs nothing until touched.
- The targets table takes its ratios from table 9b (QoS 0 rows at QoS 0,
  acknowledged rates at QoS 1, the bridge against the C route at QoS 1)
  and the idle figure from table 10. A missed row shows the reason kept
  in REASONS19 in bench/run.py, filled in by hand from what is known of
  the engine after a run on a quiet machine.
"""


def per_round(R, a, b, key):
    """The ratio a/b of one figure, per round, as (median, min, max)."""
    vals = [x[key] / y[key] for x, y in zip(R[a], R[b])
            if x.get(key) is not None and y.get(key)]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def med_opt(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def section(title, body):
    """A table of issue 19, printed with the others at the end."""
    HAND_SECTIONS.append(f"### {title}\n\n{body}")


def hand_report(R):
    futex_note = ("futex calls: `perf stat -e syscalls:sys_enter_futex -p "
                  "PID` over the same window" if PERF else
                  "futex calls: not measured (perf cannot count the "
                  "syscalls:sys_enter_futex tracepoint here)")
    rows = []
    for k, label in HAND_LABELS.items():
        runs = R[k]
        rate = med_opt(runs, "acked_rate") if HTTP_KINDS[k][3] == 1 and \
            k != "bridge" else None
        futex = med_opt(runs, "futex_per_req")
        lost = int(sum(r.get("lost", 0) for r in runs))
        LOST.append(lost)
        rows.append([label, fmt(med(runs, "rps")),
                     fmt(rate) if rate else "",
                     fmt(med(runs, "cpu_us")),
                     fmt(futex) if futex else "n/a",
                     fmt(med(runs, "csw_per_req")),
                     fmt(med(runs, "p50_us")), fmt(med(runs, "p99_us")),
                     str(lost)])
    section(
        "9. Publishing from a request handler: the physical limit and the "
        "baselines by hand",
        f"wrk -t2 -c{HTTP_CONNS} -d{HTTP_SECONDS}s, 64-byte POST bodies, "
        f"{RUNS} interleaved round(s), a fresh mosquitto per row; median "
        "(min-max). CPU, context switches and futex calls are the server "
        "process's, from the start of the load to its last acknowledgement, "
        f"per request; {futex_note}.\n\n" +
        md_table(["row", "req/s", "acknowledged msg/s", "server CPU us/req",
                  "futex/req", "context switches/req", "p50 us", "p99 us",
                  "lost"], rows))
    rat = []
    for a, b in HAND_PAIRS:
        cells = []
        for key in ("rps", "acked_rate", "cpu_us", "futex_per_req",
                    "csw_per_req", "p99_us"):
            r = None
            if key != "acked_rate" or (HTTP_KINDS[a][3] == 1 and
                                       a != "bridge"):
                r = per_round(R, a, b, key)
            cells.append(fmt(r) if r else "")
        rat.append([HAND_LABELS[a], HAND_LABELS[b]] + cells)
    section(
        "9b. Ratios, per round (median of rounds)",
        "Each ratio is product / baseline within one round (both ran in "
        "the same round), then the median (min-max) over the rounds. Higher "
        "is better for req/s and acknowledged msg/s, lower for the others; "
        "empty where the baseline is 0 or the figure does not apply.\n\n" +
        md_table(["product", "baseline", "req/s", "acknowledged msg/s",
                  "CPU/req", "futex/req", "context switches/req", "p99"],
                 rat))

    def goal(fig, a, b, key):
        r = per_round(R, a, b, key)
        TARGETS19[fig] = r[0] if r else None
    goal("QoS 0 req/s vs the physical limit", "qos0", LIMIT0, "rps")
    goal("QoS 0 req/s vs libmosquitto by hand", "qos0", "mosq0", "rps")
    goal("QoS 0 server CPU per request vs the physical limit", "qos0",
         LIMIT0, "cpu_us")
    goal("QoS 1 acknowledged msg/s vs the physical limit", "qos1", LIMIT1,
         "acked_rate")
    goal("bridge POST req/s vs the C route, same QoS (1)", "bridge", "qos1",
         "rps")
    goal("p99 vs the physical limit (QoS 0)", "qos0", LIMIT0, "p99_us")


def example_args(port, broker_port):
    """The example server with example/civetweb.conf, on a free port, its
    client (prefix MQTT) on the bench's broker."""
    return [f"{BIN}/civetweb-mqtt", os.path.join(ROOT, "example",
                                                 "civetweb.conf"),
            "-listening_ports", f"127.0.0.1:{port}",
            "-MQTT_BROKER_URL", f"mqtt://127.0.0.1:{broker_port}"]


def stock_civetweb_args(port):
    """Debian's civetweb binary with the CivetWeb options of
    example/civetweb.conf (the same workers, time-outs and keep-alive)."""
    args = ["civetweb"]
    with open(os.path.join(ROOT, "example", "civetweb.conf")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition(" ")
            if re.match(r"[A-Z][A-Z0-9]*_", name):
                continue  # <PREFIX>_<KEY>: the example's MQTT options
            if name == "listening_ports":
                value = f"127.0.0.1:{port}"
            elif name == "document_root":
                value = os.path.join(ROOT, "example", value.strip())
            args += [f"-{name}", value.strip()]
    return args


def wait_connected(port, timeout=30.0):
    """Polls the example's GET /mqtt/status until its client is connected."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if re.search(r'"connected"\s*:\s*true', get(port, "/mqtt/status")):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the example server did not connect")


def mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmSize"):
                out[k] = int(v.split()[0])
    return out


def idle():
    """The example server (connected, no traffic), the stock civetweb
    binary and a libmosquitto client side by side for IDLE_SECONDS:
    context switches and CPU per thread, and memory at the end."""
    b = Broker()
    procs = {}
    try:
        port = free_port()
        procs["example server (civetweb-mqtt)"] = start(example_args(port,
                                                                     b.port))
        wait_port(port)
        wait_connected(port)
        cport = free_port()
        procs["stock civetweb binary"] = subprocess.Popen(
            stock_civetweb_args(cport), cwd=TMP, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        PROCS.append(procs["stock civetweb binary"])
        wait_port(cport)
        procs["libmosquitto client"] = start(
            [f"{BIN}/bidle_mosq", "-p", str(b.port)], ready=True)
        time.sleep(2)  # start-up traffic (connect, birth, subscribe) done
        before = {k: (tasks(p.pid), time.monotonic()) for k, p in procs.items()}
        time.sleep(IDLE_SECONDS)
        res = {}
        for k, p in procs.items():
            t1, now = tasks(p.pid), time.monotonic()
            t0, then = before[k]
            res[k] = {"secs": now - then, "threads": [], "mem": mem_kib(p.pid)}
            for tid, a in t1.items():
                z = t0.get(tid, {"vcsw": 0, "nvcsw": 0, "cpu_ns": 0})
                res[k]["threads"].append(
                    {"name": a["name"], "vcsw": a["vcsw"] - z["vcsw"],
                     "nvcsw": a["nvcsw"] - z["nvcsw"],
                     "cpu_ns": a["cpu_ns"] - z["cpu_ns"],
                     "new": tid not in t0})
            res[k]["ended"] = len(set(t0) - set(t1))
        return res
    finally:
        for p in procs.values():
            stop(p)
        b.stop()


def run_idle(t0):
    log(f"[{time.time() - t0:.0f} s] idle: {IDLE_SECONDS} s connected, no "
        "traffic; memory")
    res = idle()
    rows = []
    for proc, r in res.items():
        secs = r["secs"]
        groups = {}
        for t in r["threads"]:
            g = groups.setdefault(t["name"], {"n": 0, "v": 0, "nv": 0,
                                              "cpu": 0, "new": 0})
            g["n"] += 1
            g["v"] += t["vcsw"]
            g["nv"] += t["nvcsw"]
            g["cpu"] += t["cpu_ns"]
            g["new"] += t["new"]
        tot = {"n": 0, "v": 0, "nv": 0, "cpu": 0}
        for name, g in sorted(groups.items(), key=lambda x: -(x[1]["v"] +
                                                              x[1]["nv"])):
            for key in tot:
                tot[key] += g[key]
            rows.append([proc, f"{name} ({g['n']})" +
                         (f", {g['new']} started in the window" if g["new"]
                          else ""),
                         f"{(g['v'] + g['nv']) / secs:.2f}",
                         f"{g['v'] / secs:.2f}", f"{g['nv'] / secs:.2f}",
                         f"{g['cpu'] / 1e6 * 60 / secs:.2f}"])
        rows.append([f"**{proc}**", f"**all {tot['n']} threads**" +
                     (f" ({r['ended']} ended in the window)" if r["ended"]
                      else ""),
                     f"**{(tot['v'] + tot['nv']) / secs:.2f}**",
                     f"{tot['v'] / secs:.2f}", f"{tot['nv'] / secs:.2f}",
                     f"**{tot['cpu'] / 1e6 * 60 / secs:.2f}**"])
        r["wakeups"] = (tot["v"] + tot["nv"]) / secs
    ex = "example server (civetweb-mqtt)"
    TARGETS19["idle wake-ups per second, example server, connected"] = \
        res[ex]["wakeups"]
    section(
        f"10. Idle: wake-ups per second per thread ({IDLE_SECONDS} s, "
        "connected, no traffic)",
        "The example server (`example/civetweb-mqtt example/civetweb.conf`, "
        "its client connected to a local mosquitto, keep-alive 60 s), Debian's "
        "`civetweb` binary with the same CivetWeb options, and a libmosquitto "
        "client (`bench/bidle_mosq.c`: subscribed, `mosquitto_loop_start`, "
        "main thread in sigwait), side by side after 2 s of settling. "
        "Wake-ups = voluntary + nonvoluntary context switches of "
        "/proc/<pid>/task/<tid>/status over the window; threads grouped "
        "by name (/proc/.../comm, thread count in parentheses); CPU from "
        "/proc/<pid>/task/<tid>/schedstat, as ms per minute.\n\n" +
        md_table(["process", "thread (count)", "wake-ups/s", "voluntary/s",
                  "nonvoluntary/s", "CPU ms/min"], rows))
    stock = "stock civetweb binary"
    mrows = []
    for proc in (ex, stock, "libmosquitto client"):
        m = res[proc]["mem"]
        mrows.append([proc] + [f"{m.get(k, 0):,}" for k in
                               ("VmRSS", "RssAnon", "RssFile", "VmSize")])
    d = {k: res[ex]["mem"].get(k, 0) - res[stock]["mem"].get(k, 0)
         for k in ("VmRSS", "RssAnon", "RssFile", "VmSize")}
    mrows.append(["**example - stock civetweb**"] +
                 [f"**{d[k]:+,}**" for k in ("VmRSS", "RssAnon", "RssFile",
                                             "VmSize")])
    section(
        "11. Memory: the example server with one client vs the stock civetweb "
        "binary",
        f"/proc/<pid>/status at the end of the idle window, KiB.\n\n" +
        md_table(["process", "VmRSS", "RssAnon", "RssFile", "VmSize"], mrows))


def target19_table():
    lines = ["| figure | target | measured | met | reason for a miss |",
             "|---|---|---|---|---|"]
    for fig, op, thr in ISSUE19_TARGETS:
        v = TARGETS19.get(fig)
        if v is None:
            lines.append(f"| {fig} | {op} {thr:g} | not measured |  |  |")
            continue
        met = {">=": v >= thr, "<=": v <= thr, "==": v == thr}[op]
        why = "" if met else (REASONS19.get(fig) or "(not filled in)")
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        lines.append(f"| {fig} | {op} {thr:g} | {shown} | "
                     f"{'met' if met else '**missed**'} | {why} |")
    return "\n".join(lines)


def main():
    t0 = time.time()
    info = machine()
    log(f"civetweb-mqtt benchmarks ({'quick' if QUICK else 'full'}, "
        f"{RUNS} interleaved round(s) a figure) on {info['cpu']}; "
        f"paho.mqtt.c {info['paho.mqtt.c']}; load average {info['load average at start (1, 5, 15 min)']}")

    single = None
    if wanted("inbound"):
        single = run_inbound(t0)

    if wanted("latency"):
        run_latency(t0)
    if wanted("http"):
        run_http(t0)
    if wanted("dispatch"):
        run_dispatch(t0)
    if wanted("fanout"):
        run_fanout(t0)
    if wanted("memory"):
        run_memory(t0)
    if wanted("two"):
        run_two(t0, single)
    if wanted("startup"):
        run_startup(t0)
    if wanted("idle"):
        run_idle(t0)
    finish_report(info, t0)


def run_latency(t0):
    log(f"[{time.time() - t0:.0f} s] latency")
    R = rounds(("bare paho", inbound, "recv_paho", 0, N_LATENCY, True, LAT_RATE),
               ("topic handler", inbound, "recv_cwm", 0, N_LATENCY, True,
                LAT_RATE))
    base, prod = R["bare paho"], R["topic handler"]
    lost = (lost_of(base), lost_of(prod))
    scn = "2. Latency, broker to handler"
    row(scn, "p50 (us)", "bare paho", med(base, "p50_us"), "topic handler",
        med(prod, "p50_us"), higher=False, lost=lost)
    row(scn, "p99 (us)", "bare paho", med(base, "p99_us"), "topic handler",
        med(prod, "p99_us"), 1.3, higher=False, lost=lost)
    row(scn, "p99.9 (us)", "bare paho", med(base, "p999_us"), "topic handler",
        med(prod, "p999_us"), higher=False, lost=lost)


def run_dispatch(t0):
    log(f"[{time.time() - t0:.0f} s] dispatch")
    d = repeat(dispatch)
    scn = "4. Topic dispatch cost"
    for h in ("100", "10000"):
        row(scn, f"ns/msg, {h} handlers", "1 handler",
            med(d, lambda r: r["1"]), f"{h} handlers", med(d, lambda r: r[h]),
            2.0 if h == "10000" else None, higher=False)


def run_fanout(t0):
    log(f"[{time.time() - t0:.0f} s] fan-out")
    R = rounds(("mqtt", fanout, "mqtt"), ("ws", fanout, "ws"),
               ("sse", fanout, "sse"))
    base = R["mqtt"]
    for kind, name in (("ws", "WebSocket"), ("sse", "SSE")):
        runs = R[kind]
        lost = (lost_of(base), lost_of(runs))
        scn = f"5. Fan-out to {FAN_CLIENTS} {name} clients"
        row(scn, "deliveries/s", f"{FAN_CLIENTS} MQTT subscribers",
            med(base, "rate"), f"bridge {name}", med(runs, "rate"), lost=lost)
        row(scn, "p99 publish-to-client (us)", f"{FAN_CLIENTS} MQTT subscribers",
            med(base, "p99_us"), f"bridge {name}", med(runs, "p99_us"),
            higher=False, lost=lost)


def run_memory(t0):
    log(f"[{time.time() - t0:.0f} s] memory")
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


def run_two(t0, single):
    log(f"[{time.time() - t0:.0f} s] two brokers")
    two = repeat(two_brokers)
    scn = "7. Two brokers in one process"
    if single is None:
        abs_row(scn, "combined rate (msg/s)", "two prefixes", med(two, "rate"),
                None, lost=lost_of(two))
    else:
        row(scn, "combined rate (msg/s)", "one broker (scenario 1)", single,
            "two prefixes", med(two, "rate"), lost=("", lost_of(two)))


def finish_report(info, t0):
    total_lost = 0
    for r in ROWS:
        for side in r["lost"]:
            if side.isdigit():
                total_lost = max(total_lost, int(side))
    total_lost = max([total_lost] + LOST)
    # Every row's runs are their own; the figure is the largest loss of any.
    TARGETS["lost, every row"] = (total_lost, total_lost == 0, "")
    TARGETS19["lost, every row"] = total_lost
    log(f"[{time.time() - t0:.0f} s] done")
    report(info, time.time() - t0)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p, signal.SIGKILL)
        shutil.rmtree(TMP, ignore_errors=True)

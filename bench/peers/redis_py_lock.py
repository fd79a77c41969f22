#!/usr/bin/python3
"""Peer benchmark: redis-py's Lock (Debian's python3-redis) on the servers rlock-bench started.

Prints one JSON record per line, in rlock-bench's format (bench/stats.h), for bench/render.py.

    /usr/bin/python3 bench/peers/redis_py_lock.py --ports P1,..,P5 --proxy-ports Q1,..,Q5 \
        [--scenarios S1,S3,S4] [--iters N] [--proxy-iters N] [--s4-seconds X]

redis-py's Lock is single-instance only (no quorum), so it runs S1, S3 single through the proxy,
and S4 with N = 1: 4 processes on one key at its default retry pacing (sleep=0.1 s) and at a tuned
one (sleep=0.001 s). Run it with Debian's /usr/bin/python3, which sees python3-redis.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time

import redis

HOST = "127.0.0.1"
TTL_S = 10.0  # S1, S3
S4_TTL_S = 5.0  # as rlock-bench's S4
S4_WAIT_S = 10.0  # blocking_timeout, as rlock-bench's wait_ms
PROCESSES = 4
IMPL = "redis-py"
SLEEP = {"default": 0.1, "tuned": 0.001}

QUANTILES = list(range(0, 99, 2)) + [99, 99.5, 99.9, 100]


def percentile(sorted_values, p):
    """Nearest-rank percentile, as bench/stats.h."""
    if not sorted_values:
        return 0.0
    if p <= 0:
        return sorted_values[0]
    rank = min(len(sorted_values), max(1, math.ceil(p / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(values):
    v = sorted(values)
    r6 = lambda x: float("%.6g" % x)
    if not v:
        return {"n": 0, "mean": 0, "median": 0, "p99": 0, "min": 0, "max": 0, "cdf": []}
    return {
        "n": len(v),
        "mean": r6(sum(v) / len(v)),
        "median": r6(percentile(v, 50)),
        "p99": r6(percentile(v, 99)),
        "min": r6(v[0]),
        "max": r6(v[-1]),
        "cdf": [[q, r6(percentile(v, q))] for q in QUANTILES],
    }


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def client(port):
    r = redis.Redis(host=HOST, port=port)
    r.ping()
    return r


def uncontended(rid, scenario, variant, port, proxy_ms, iters, baseline):
    r = client(port)
    lock = r.lock("bench:" + rid, timeout=TTL_S)
    warmup = max(10, min(1000, iters // 10))
    lat = []
    errors = 0
    first_error = ""
    begin = 0
    for i in range(warmup + iters):
        if i == warmup:
            begin = time.monotonic_ns()
        t0 = time.monotonic_ns()
        try:
            if not lock.acquire(blocking=False):
                raise RuntimeError("not acquired")
            lock.release()
        except Exception as e:  # noqa: BLE001 - any failure is counted and reported
            errors += 1
            first_error = first_error or repr(e)
        if i >= warmup:
            lat.append((time.monotonic_ns() - t0) / 1000.0)
    seconds = (time.monotonic_ns() - begin) / 1e9
    emit({
        "kind": "result", "id": rid, "scenario": scenario, "impl": IMPL, "variant": variant,
        "servers": 1, "proxy_latency_ms": proxy_ms, "settings": "defaults", "baseline": baseline,
        "also_vs": [], "ratio_of": "latency", "iterations": iters, "errors": errors,
        "first_error": first_error, "latency_us": summarize(lat), "ops_per_s": iters / seconds,
    })


def s4_child(index, port, key, sleep, ready, start_at, seconds, out):
    """One contending process: its own connection, created after the fork."""
    r = client(port)
    lock = r.lock(key, timeout=S4_TTL_S, sleep=sleep, blocking_timeout=S4_WAIT_S)
    warm = r.lock("%s:warm:%d" % (key, index), timeout=S4_TTL_S)
    for _ in range(20):
        warm.acquire(blocking=False)
        warm.release()
    ready.release()
    while start_at.value == 0:
        time.sleep(0.0002)
    start = start_at.value
    end = start + int(seconds * 1e9)
    while time.monotonic_ns() < start:
        time.sleep(0.0001)
    waits, enters, exits = [], [], []
    errors = timeouts = 0
    last_done = time.monotonic_ns()
    while time.monotonic_ns() < end:
        t0 = time.monotonic_ns()
        try:
            got = lock.acquire()
        except Exception:  # noqa: BLE001
            errors += 1
            continue
        if not got:
            timeouts += 1
            continue
        t1 = time.monotonic_ns()
        # critical section: only its bounds are recorded (enter after acquire, exit before release)
        t2 = time.monotonic_ns()
        waits.append((t1 - t0) / 1000.0)
        enters.append(t1 - start)
        exits.append(t2 - start)
        try:
            lock.release()
        except Exception:  # noqa: BLE001
            errors += 1
        last_done = time.monotonic_ns()
    out.put({"index": index, "waits": waits, "enters": enters, "exits": exits,
             "errors": errors, "timeouts": timeouts, "last_done": last_done - start})


def analyse(intervals):
    """Overlaps and hand-offs from the holders' (enter, exit, process) on the shared monotonic clock."""
    intervals.sort()
    overlaps = handoffs = 0
    max_exit = -1
    for i, (enter, exit_, proc) in enumerate(intervals):
        if enter < max_exit:
            overlaps += 1
        max_exit = max(max_exit, exit_)
        if i and intervals[i - 1][2] != proc:
            handoffs += 1
    share = handoffs / (len(intervals) - 1) if len(intervals) > 1 else 0.0
    return overlaps, share


def contention(port, setting, seconds):
    rid = "S4/n1/%s/%s" % (IMPL, setting)
    key = "bench:%s:%d" % (rid, os.getpid())
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    start_at = ctx.Value("q", 0)
    out = ctx.Queue()
    procs = [ctx.Process(target=s4_child,
                         args=(i, port, key, SLEEP[setting], ready, start_at, seconds, out))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=30):
            raise RuntimeError("S4 children did not get ready")
    start_at.value = time.monotonic_ns() + 100_000_000
    results = [out.get(timeout=seconds + S4_WAIT_S + 30) for _ in procs]
    for p in procs:
        p.join()
    waits, intervals = [], []
    errors = timeouts = last_done = 0
    for res in results:
        waits += res["waits"]
        intervals += [(e, x, res["index"]) for e, x in zip(res["enters"], res["exits"])]
        errors += res["errors"]
        timeouts += res["timeouts"]
        last_done = max(last_done, res["last_done"])
    overlaps, share = analyse(intervals)
    elapsed = max(seconds, last_done / 1e9)
    rate = len(intervals) / elapsed
    emit({
        "kind": "result", "id": rid, "scenario": "S4", "impl": IMPL, "variant": "n1", "servers": 1,
        "proxy_latency_ms": 0,
        "settings": "sleep %g s%s" % (SLEEP[setting], " (default)" if setting == "default" else ""),
        "baseline": "S4/n1/raw-spin", "ratio_of": "throughput", "processes": PROCESSES,
        "seconds": elapsed, "ttl_ms": int(S4_TTL_S * 1000), "wait_ms": int(S4_WAIT_S * 1000),
        "acquisitions": len(intervals), "acquisitions_per_s": rate, "ops_per_s": rate,
        "wait_us": summarize(waits), "handoff_share": share, "overlaps": overlaps,
        "lost_updates": None, "errors": errors, "timeouts": timeouts,
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", required=True)
    ap.add_argument("--proxy-ports", default="")
    ap.add_argument("--scenarios", default="S1,S3,S4")
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--proxy-iters", type=int, default=300)
    ap.add_argument("--s4-seconds", type=float, default=10)
    ap.add_argument("--proxy-latency-ms", type=int, default=1)
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",") if p]
    proxy_ports = [int(p) for p in a.proxy_ports.split(",") if p]
    scenarios = set(a.scenarios.split(","))
    emit({"kind": "info", "impl": IMPL, "versions": {
        "python": sys.version.split()[0], "redis-py": redis.__version__}})
    failed = False
    runs = []
    if "S1" in scenarios:
        runs.append(lambda: uncontended("S1/" + IMPL, "S1", "single", ports[0], 0, a.iters, "S1/raw"))
    if "S3" in scenarios and proxy_ports:
        runs.append(lambda: uncontended("S3/single/" + IMPL, "S3", "single via proxy", proxy_ports[0],
                                        a.proxy_latency_ms, a.proxy_iters, "S3/single/raw"))
    if "S4" in scenarios:
        for setting in ("default", "tuned"):
            runs.append(lambda s=setting: contention(ports[0], s, a.s4_seconds))
    for run in runs:
        try:
            run()
        except Exception as e:  # noqa: BLE001 - report and go on with the other scenarios
            failed = True
            print("redis_py_lock: %r" % (e,), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

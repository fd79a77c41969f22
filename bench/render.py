#!/usr/bin/python3
"""Renders rlock-bench results (JSON) as markdown and a latency-distribution plot.

    /usr/bin/python3 bench/render.py RESULTS.json --markdown docs/benchmarks.md \
        --plot docs/bench-latency.png [--notes bench/notes.md] [--one-cpu ONE_CPU.json] \
        [--command 'scripts/bench.sh']

Every number in the markdown comes from RESULTS.json; the hand-written analysis is taken verbatim
from --notes. Without --markdown the tables go to stdout. The plot needs matplotlib (Debian's
python3-matplotlib); without --plot none is drawn.
"""
import argparse
import json
import os
import sys

RAW = {"raw-hiredis", "raw-hiredis-pipelined"}
IMPL_ORDER = ["raw-hiredis", "raw-hiredis-pipelined", "rlock", "node-redlock", "redis-py"]

TITLES = {
    "S1": "S1: single server, uncontended acquire + release, one thread",
    "S2": "S2: quorum of 3 and of 5 servers, uncontended acquire + release",
    "S3": "S3: through latency proxies (+{ms} ms each way), single and quorum of 5",
    "S4": "S4: contention, {procs} processes on one key, tiny critical section",
    "S5": "S5: {threads} threads on distinct keys",
}


def load(path):
    with open(path) as f:
        data = json.load(f)
    results = [r for r in data["records"] if r.get("kind") == "result"]
    infos = [r for r in data["records"] if r.get("kind") == "info"]
    errors = [r for r in data["records"] if r.get("kind") == "peer_error"]
    return data["meta"], results, infos, errors


def by_id(results):
    return {r["id"]: r for r in results}


def ratio(rec, base, key="median"):
    """rec / base on the record's ratio metric; None if either is missing."""
    if not base:
        return None
    if rec.get("ratio_of") == "throughput":
        b = base.get("ops_per_s") or 0
        return rec.get("ops_per_s", 0) / b if b else None
    b = base["latency_us"][key]
    return rec["latency_us"][key] / b if b else None


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 10000:
        return "%.1f ms" % (us / 1000)
    if us >= 1000:
        return "%.2f ms" % (us / 1000)
    return "%.0f us" % us


def fmt_x(x):
    return "-" if x is None else "%.2fx" % x


def fmt_rate(x):
    return "-" if x is None else "{:,.0f}".format(x)


def impl_rank(r):
    return IMPL_ORDER.index(r["impl"]) if r["impl"] in IMPL_ORDER else 99


def sort_key(r):
    impl = r["impl"]
    return (IMPL_ORDER.index(impl) if impl in IMPL_ORDER else 99, r["id"])


def latency_table(results, ids):
    lines = [
        "| case | implementation | median | p99 | mean | ops/s | baseline | ratio median | ratio p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = ids.get(r.get("baseline", ""))
        errs = r.get("errors", 0)
        extra = [(a, ids.get(a)) for a in r.get("also_vs", [])]
        lines.append("| %s | %s%s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["variant"], r["impl"], " (%d errors)" % errs if errs else "",
            fmt_us(r["latency_us"]["median"]), fmt_us(r["latency_us"]["p99"]),
            fmt_us(r["latency_us"]["mean"]), fmt_rate(r.get("ops_per_s")),
            "`%s`" % r["baseline"] if r.get("baseline") else "(baseline)",
            ("ops/s " if r.get("ratio_of") == "throughput" and base else "") +
            fmt_x(ratio(r, base)) + "".join("; %s vs `%s`" % (fmt_x(ratio(r, b)), a) for a, b in extra if b),
            fmt_x(ratio(r, base, "p99")) if r.get("ratio_of") != "throughput" else "-"))
    return lines


def contention_table(results, ids):
    lines = [
        "| N | implementation | retry settings | acquisitions/s | wait p50 | wait p99 | wait max "
        "| hand-offs | overlaps | errors / timeouts | vs raw spin |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w = r["wait_us"]
        overl = r.get("overlaps", 0) + (r.get("lost_updates") or 0)
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %.0f%% | %s | %d / %d | %s |" % (
            r["servers"], r["impl"], r.get("settings", ""), fmt_rate(r.get("acquisitions_per_s")),
            fmt_us(w["median"]), fmt_us(w["p99"]), fmt_us(w["max"]),
            100 * r.get("handoff_share", 0), "**%d**" % overl if overl else "0",
            r.get("errors", 0), r.get("timeouts", 0), fmt_x(ratio(r, ids.get(r.get("baseline", ""))))))
    return lines


def targets(results, ids):
    """(what, measured, goal, met) for the project's targets."""
    rows = []

    def lat_ratio(what, rid, bid, goal):
        r, b = ids.get(rid), ids.get(bid)
        if r and b:
            x = ratio(r, b)
            rows.append((what, "%s (%s vs %s)" % (fmt_x(x), fmt_us(r["latency_us"]["median"]),
                                                  fmt_us(b["latency_us"]["median"])),
                         "<= %.1fx" % goal, x is not None and x <= goal))

    lat_ratio("S1 rlock vs raw sync hiredis (median)", "S1/rlock", "S1/raw", 1.3)
    lat_ratio("S2 quorum-3 rlock vs raw pipelined-3 (median)", "S2/q3/rlock", "S2/q3/raw", 1.3)
    lat_ratio("S2 quorum-5 rlock vs raw pipelined-5 (median)", "S2/q5/rlock", "S2/q5/raw", 1.3)
    lat_ratio("S3 single rlock vs raw, through the same proxy", "S3/single/rlock", "S3/single/raw", 1.1)
    lat_ratio("S3 quorum-5 rlock vs single rlock, through proxies", "S3/q5/rlock", "S3/single/rlock", 1.2)
    for r in results:
        if r["scenario"] != "S4" or r["impl"] != "rlock":
            continue
        w = r["wait_us"]
        rate = r["acquisitions_per_s"]
        if r["servers"] == 1:
            ok = rate >= 15000 and w["p99"] <= 2000 and w["max"] <= 20000
            rows.append(("S4 N=1 rlock, %s: acquisitions/s; waiter p99; max" % r["settings"],
                         "%s/s; %s; %s" % (fmt_rate(rate), fmt_us(w["p99"]), fmt_us(w["max"])),
                         ">= 15,000/s; <= 2 ms; <= 20 ms", ok))
        else:
            rows.append(("S4 N=%d rlock, %s: acquisitions/s" % (r["servers"], r["settings"]),
                         "%s/s" % fmt_rate(rate), ">= 5,000/s", rate >= 5000))
    r, b = ids.get("S5/rlock"), ids.get("S5/raw")
    if r and b:
        x = ratio(r, b)
        rows.append(("S5 16 threads, one shared client vs 16 raw connections (ops/s)",
                     "%s (%s vs %s ops/s)" % (fmt_x(x), fmt_rate(r["ops_per_s"]), fmt_rate(b["ops_per_s"])),
                     ">= 1.5x", x is not None and x >= 1.5))
    overl = sum(r.get("overlaps", 0) + (r.get("lost_updates") or 0) for r in results if r["scenario"] == "S4")
    if any(r["scenario"] == "S4" for r in results):
        rows.append(("S4 overlapping holders, all implementations", str(overl), "0", overl == 0))
    return rows


def versions_of(meta, infos):
    v = dict(meta["versions"])
    for i in infos:
        v.update(i.get("versions", {}))
    return v


def one_cpu_section(path):
    """The S1/S2 pass run under `taskset -c 0` (server, caller and rlock's loop thread on one CPU)."""
    meta, results, _, _ = load(path)
    ids = by_id(results)
    rs = sorted(results, key=lambda r: (r["scenario"], r["servers"], impl_rank(r)))
    out = ["", "### The same on one CPU (`taskset -c 0`: servers, caller and rlock's loop thread share it)", "",
           "A second, shorter pass (%d iterations per case) right after the main one. On this 2-vCPU"
           " virtual machine a blocking round trip between two CPUs pays for waking an idle vCPU,"
           " while a thread that spins keeps its CPU awake. On one CPU no vCPU has to be woken, so"
           " the raw baseline gets its fastest, while rlock pays for its extra thread: every call"
           " is handed to its loop thread and back (two context switches; its caller does not spin"
           " when the process's CPU affinity leaves no CPU to spare). The two passes bracket what a"
           " deployment sees; compare both before concluding anything from either."
           % meta["params"]["iters"], ""]
    return out + latency_table(rs, ids)


def render_markdown(meta, results, infos, peer_errors, notes, command, plot_name, one_cpu=None):
    ids = by_id(results)
    m = meta["machine"]
    p = meta["params"]
    v = versions_of(meta, infos)
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/render.py` from the results of one run of `scripts/bench.sh` on %s"
        " (UTC). Do not edit by hand: re-run the command below; the discussion at the end comes from"
        " `bench/notes.md`." % meta["date"].replace("T", " ").rstrip("Z"),
        "",
        "Reproduce (builds `rlock-bench`, installs the peers, runs everything, rewrites this page and"
        " the plot):",
        "",
        "```sh",
        command,
        "```",
        "",
        "`scripts/bench.sh --smoke` runs only the C/C++ scenarios briefly (the ctest `bench_smoke`).",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        "| CPU | %s, %s cores (`nproc`), %.0f GiB |" % (m["cpu"], m["nproc"], m["mem_gib"]),
        "| OS, kernel | %s, %s |" % (m["os"], m["kernel"]),
        "| load average at start | %s |" % " ".join(m.get("loadavg_at_start", "-").split()[:3]),
        "| rlock | %s (%s build, %s) |" % (v.get("rlock"), v.get("build_type"), v.get("compiler")),
        "| redis-server | %s |" % v.get("redis-server"),
        "| hiredis, libuv | %s, %s |" % (v.get("hiredis"), v.get("libuv")),
        "| node, redlock, ioredis | %s, %s, %s |" % (v.get("node", "-"), v.get("redlock", "-"), v.get("ioredis", "-")),
        "| python, redis-py | %s, %s |" % (v.get("python", "-"), v.get("redis-py", "-")),
        "| parameters | S1/S2 %d iterations per case, S3 %d, S4 %g s per case, S5 %s; peers: %d / %d iterations, S4 %g s |" % (
            p["iters"], p["proxy_iters"], p["s4_seconds"],
            ("%g s per case" % p["s5_seconds"]) if p["s5_seconds"] else ("%d iterations per thread" % p["s5_iters"]),
            p["peer_iters"], p["peer_proxy_iters"], p["peer_s4_seconds"]),
        "",
        "## Targets",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for what, measured, goal, ok in targets(results, ids):
        out.append("| %s | %s | %s | %s |" % (what, measured, goal, "yes" if ok else "**no**"))
    out += ["", "## Results", ""]
    out.append("Ratios divide by the baseline named in the row (measured in the same run on the same"
               " servers): for latency a ratio above 1 is slower, for throughput (S4, S5) above 1 is"
               " more. Latencies are per acquire + release (S4: the waiter's wait, from calling acquire"
               " to holding).")
    for scen in ["S1", "S2", "S3", "S4", "S5"]:
        # By server count, then baseline, rlock, peers; within one implementation in run order.
        rs = sorted([r for r in results if r["scenario"] == scen],
                    key=lambda r: (r["servers"], impl_rank(r)))
        if not rs:
            continue
        title = TITLES[scen].format(ms=p["proxy_latency_ms"], procs=rs[0].get("processes", 4),
                                    threads=p["s5_threads"])
        out += ["", "### " + title, ""]
        out += contention_table(rs, ids) if scen == "S4" else latency_table(rs, ids)
    if one_cpu:
        out += one_cpu_section(one_cpu)
    if peer_errors:
        out += ["", "Peer scripts that failed (their other records are kept): " +
                ", ".join("`%s` (status %s)" % (e["command"], e["status"]) for e in peer_errors)]
    if plot_name:
        out += ["", "## Latency distributions", "", "![latency distributions](%s)" % plot_name]
    out += ["", "## Method", "",
            "- One program, `bench/rlock-bench`, starts 5 `redis-server` processes on free loopback"
            " ports and (for S3) 5 in-process TCP proxies (`tests/support/fault_proxy.h`) adding %d ms"
            " each way, one per server. Every baseline runs in the same process on the same servers." % p["proxy_latency_ms"],
            "- Raw baseline: synchronous hiredis doing the minimum work of a lock: `SET key token NX PX"
            " ttl`, then `EVALSHA` of a compare-and-delete script; for N servers the N requests are"
            " written to all N connections before any reply is read. S1-S3 interleave the baseline and"
            " rlock in 10 alternating blocks, S5 in 4 alternating rounds, so that load changes on the"
            " machine hit both alike.",
            "- S1-S3 time each acquire(wait 0)+release with `steady_clock` after a warm-up; median and"
            " p99 are nearest-rank.",
            "- S4 runs 4 processes (the bench re-executes itself) on one key, ttl 5 s, rlock_acquire"
            " with wait 10 s. The critical section only checks an atomic \"inside\" counter in shared"
            " memory (overlap if it was not 0), swaps its process index into \"last holder\" (a"
            " hand-off if it changed) and increments a plain counter (lost updates would show an"
            " overlap). The peers record each holder's [enter, exit] on CLOCK_MONOTONIC and look for"
            " overlapping intervals. The raw S4 baseline retries at once without any delay (spin).",
            "- Peers (`bench/peers/`) run after the C/C++ scenarios on the same servers and proxies,"
            " and print records in the same format. node-redlock uses `retryCount: -1` (retry until"
            " acquired) with its default delay (200 ms +- 100 ms) or a tuned one (1 ms +- 1 ms); a"
            " wait still pending 2 s after the end is abandoned and counted as a timeout. redis-py's"
            " `Lock` is single-instance only (no quorum): S1, S3 single and S4 N=1, with `sleep` 0.1 s"
            " (default) or 0.001 s.",
            "- Results: `bench/results/results.json` (one record per case, with a coarse latency CDF)"
            " and `bench/results/results.md`."]
    if notes:
        out += ["", notes.rstrip()]
    return "\n".join(out) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def r_scenario(rs):
        return rs[0]["scenario"] if rs else None

    panels = [
        ("S1 single server", lambda r: r["scenario"] == "S1", "latency_us"),
        ("S2 quorum of 5", lambda r: r["scenario"] == "S2" and r["servers"] == 5, "latency_us"),
        ("S3 via proxies (single: dashed)", lambda r: r["scenario"] == "S3", "latency_us"),
        ("S4 N=1 waiter wait", lambda r: r["scenario"] == "S4" and r["servers"] == 1, "wait_us"),
    ]
    colors = {"raw-hiredis": "black", "raw-hiredis-pipelined": "black", "rlock": "tab:blue",
              "node-redlock": "tab:green", "redis-py": "tab:orange"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (title, pick, field) in zip(axes.flat, panels):
        rs = sorted([r for r in results if pick(r)], key=sort_key)
        s4_styles = iter(["-", "--", "-.", ":", (0, (5, 1)), (0, (1, 3))])
        for r in rs:
            cdf = r[field]["cdf"]
            if not cdf:
                continue
            xs = [max(v, 1e-3) / 1000.0 for _, v in cdf]
            ys = [q for q, _ in cdf]
            label = r["impl"]
            style = "-"
            if r["scenario"] == "S3":
                style = "--" if r["servers"] == 1 else "-"
                label += " single" if r["servers"] == 1 else " q5"
            if r["scenario"] == "S4":
                label += " " + r.get("settings", "")
                style = next(s4_styles) if r["impl"] == "rlock" else ("--" if "default" in r.get("settings", "") else "-")
            ax.plot(xs, ys, linestyle=style, color=colors.get(r["impl"], "gray"), label=label, linewidth=1.3)
        if r_scenario(rs) == "S3":
            ax.set_xlabel("ms", fontsize=8)
        else:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "%g" % x))
            ax.set_xlabel("ms (log scale)", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("percentile", fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=8)
        if rs:
            ax.legend(fontsize=6.5, loc="lower right")
        else:
            ax.text(0.5, 0.5, "not measured in this run", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    try:  # a palette PNG is a third of the size; Pillow comes with Debian's matplotlib
        from PIL import Image
        Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--markdown", help="write the full page here (else the tables go to stdout)")
    ap.add_argument("--plot", help="write the latency-distribution PNG here")
    ap.add_argument("--notes", help="markdown appended verbatim (the hand-written discussion)")
    ap.add_argument("--command", default="scripts/bench.sh", help="the command shown to reproduce")
    ap.add_argument("--one-cpu", help="results of the S1/S2 pass run under taskset -c 0")
    a = ap.parse_args()
    meta, results, infos, peer_errors = load(a.results)
    notes = open(a.notes).read() if a.notes and os.path.exists(a.notes) else ""
    plot_name = None
    if a.plot:
        plot(results, a.plot)
        plot_name = os.path.relpath(a.plot, os.path.dirname(os.path.abspath(a.markdown))) if a.markdown else a.plot
    one_cpu = a.one_cpu if a.one_cpu and os.path.exists(a.one_cpu) else None
    page = render_markdown(meta, results, infos, peer_errors, notes, a.command, plot_name, one_cpu)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

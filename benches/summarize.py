"""Summarises the results of benches/compare.sh as the tables of BENCHMARKS.md.

Ratios are taken within each round (riskstream against the ceiling or the
peer measured minutes apart), then reported as median with the range over
rounds. Usage: python benches/summarize.py RESULTS_DIR
"""

import glob
import json
import os
import re
import statistics
import sys

results = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(results, "*-*-[0-9]*.json")):
    m = re.match(r"(\w+)-(stream|unary)-(\d+)\.json$", os.path.basename(path))
    if m:
        runs[(m[1], m[2], int(m[3]))] = json.load(open(path))
# Two replicas on one Redis: events/s summed over their two load
# generators, each latency figure the worse of the two.
for (server, mode, r) in [k for k in runs if k[0] == "redis2a"]:
    a, b = runs.pop((server, mode, r)), runs.pop(("redis2b", mode, r), None)
    if b is None:
        continue
    runs[("redis2", mode, r)] = {
        "events_per_s": a["events_per_s"] + b["events_per_s"],
        "latency_us": {q: max(a["latency_us"][q], b["latency_us"][q]) for q in a["latency_us"]},
        "errors": {k: a["errors"].get(k, 0) + b["errors"].get(k, 0) for k in set(a["errors"]) | set(b["errors"])},
    }
runs = {k: v for k, v in runs.items() if k[0] != "redis2b"}
rounds = sorted({r for (_, _, r) in runs})


def spread(values, fmt="{:.0f}"):
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


print(f"Rounds: {len(rounds)}. Median (min–max over rounds).\n")
print("| server | mode | events/s | p50 µs | p99 µs | p99.9 µs | errors |")
print("|---|---|---|---|---|---|---|")
for server in ("riskstream", "before", "redis", "redis2", "memory", "ceiling", "python"):
    for mode in ("stream", "unary"):
        rs = [runs[(server, mode, r)] for r in rounds if (server, mode, r) in runs]
        if not rs:
            continue
        label = {
            "redis": "riskstream on Redis",
            "redis2": "two replicas on one Redis",
            "before": "riskstream, earlier build (BEFORE_BIN)",
        }.get(server, server)
        print(
            f"| {label} | {mode} | {spread([x['events_per_s'] for x in rs])} "
            f"| {spread([x['latency_us']['p50'] for x in rs], '{:.1f}')} "
            f"| {spread([x['latency_us']['p99'] for x in rs], '{:.1f}')} "
            f"| {spread([x['latency_us']['p999'] for x in rs], '{:.1f}')} "
            f"| {sum(sum(x['errors'].values()) for x in rs)} |"
        )

print("\n| ratio | stream | unary |")
print("|---|---|---|")
for top, other, figure, label in (
    ("riskstream", "before", "events_per_s", "riskstream / its earlier build (throughput)"),
    ("riskstream", "before", "p99", "riskstream / its earlier build (p99)"),
    ("riskstream", "memory", "events_per_s", "riskstream (embedded, the default) / riskstream --state memory (throughput)"),
    ("redis", "riskstream", "events_per_s", "riskstream on Redis / embedded (throughput; goal ≥ 0.5 streamed)"),
    ("redis", "riskstream", "p99", "riskstream on Redis / embedded (p99)"),
    ("redis2", "redis", "events_per_s", "two replicas / one replica, on Redis (throughput)"),
    ("riskstream", "ceiling", "events_per_s", "riskstream / ceiling (throughput)"),
    ("riskstream", "python", "events_per_s", "riskstream / Python peer (throughput)"),
):
    cells = []
    for mode in ("stream", "unary"):
        def value(server, r):
            x = runs[(server, mode, r)]
            return x["events_per_s"] if figure == "events_per_s" else x["latency_us"][figure]
        ratios = [
            value(top, r) / value(other, r)
            for r in rounds
            if (top, mode, r) in runs and (other, mode, r) in runs and value(other, r) > 0
        ]
        cells.append(spread(ratios, "{:.2f}") if ratios else "–")
    if cells != ["–", "–"]:
        print(f"| {label} | {cells[0]} | {cells[1]} |")
for mode in ("stream", "unary"):
    ratios = [
        runs[("python", mode, r)]["latency_us"]["p99"] / runs[("riskstream", mode, r)]["latency_us"]["p99"]
        for r in rounds
        if ("riskstream", mode, r) in runs and ("python", mode, r) in runs
    ]
    if ratios:
        print(f"\nPython peer p99 / riskstream p99 ({mode}): {spread(ratios, '{:.1f}')}")

half = {}
for path in glob.glob(os.path.join(results, "*-half-[0-9]*.json")):
    m = re.match(r"(\w+)-half-(\d+)\.json$", os.path.basename(path))
    if m:
        half.setdefault(m[1], []).append(json.load(open(path)))
if half:
    print("\n| unary, open loop at half riskstream's maximum | pacing | events/s | p50 µs | p90 µs | p99 µs | p99.9 µs |")
    print("|---|---|---|---|---|---|---|")
    for server in ("riskstream", "ceiling"):
        hs = half.get(server, [])
        if hs:
            print(
                f"| {server} | {hs[0]['pacing']} | {spread([h['events_per_s'] for h in hs])} "
                + " ".join(
                    f"| {spread([h['latency_us'][q] for h in hs], '{:.0f}')}"
                    for q in ("p50", "p90", "p99", "p999")
                )
                + " |"
            )

steal = os.path.join(results, "steal.json")
if os.path.exists(steal):
    st = json.load(open(steal))
    print(
        f"\nCPU time stolen by the hypervisor during the runs above: "
        f"{100 * st['steal_ticks'] / max(st['total_ticks'], 1):.1f}% of all CPU time"
    )

for name, label in (("million-register-memory", "in memory"), ("million-register", "durable (embedded store)")):
    path = os.path.join(results, name + ".json")
    if os.path.exists(path):
        r = json.load(open(path))
        print(
            f"\nRegistrations {label}: {r['events_per_s']:.0f}/s acknowledged "
            f"(128 in flight), errors {sum(r['errors'].values())}"
        )

mem = os.path.join(results, "memory.json")
if os.path.exists(mem):
    m = json.load(open(mem))
    per = (m["rss_after_kib"] - m["rss_before_kib"]) * 1024 / max(m["payment_methods"], 1)
    print(
        f"\nMemory: {m['payment_methods']:.0f} payment methods registered; resident "
        f"{m['rss_before_kib'] / 1024:.0f} MiB → {m['rss_after_kib'] / 1024:.0f} MiB: "
        f"{per:.0f} bytes per payment method with its creation session"
    )
    if "disk_bytes" in m:
        print(
            f"Disk: {m['disk_bytes'] / 2**20:.0f} MiB in the data directory: "
            f"{m['disk_bytes'] / max(m['payment_methods'], 1):.0f} bytes per payment method with its creation session"
        )

setup = os.path.join(results, "redis-setup.json")
if os.path.exists(setup):
    st = json.load(open(setup))
    print(
        f"\nRedis {st['redis_version']} on CPU {st['redis_cpu']} (appendonly yes, appendfsync "
        f"{st['redis_fsync']}); riskstream on CPU {st['server_cpu']}, the second replica on CPU "
        f"{st['replica_b_cpu']}, the load on CPU {st['load_cpu']}."
    )


def info(path):
    """The fields of a Redis INFO section, as a dict of strings."""
    fields = {}
    for line in open(path):
        if ":" in line and not line.startswith("#"):
            k, v = line.strip().split(":", 1)
            fields[k] = v
    return fields


ops_rows = []
for mode in ("stream", "unary"):
    path = os.path.join(results, f"ops-{mode}.json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    payments = max(sum(r["decisions"].values()), 1)
    stats = info(os.path.join(results, f"ops-{mode}-stats.txt"))
    commands = info(os.path.join(results, f"ops-{mode}-commandstats.txt"))
    calls = {}
    for k, v in commands.items():
        name = k.removeprefix("cmdstat_")
        if name in ("info", "config", "ping"):
            continue
        calls[name] = int(dict(kv.split("=") for kv in v.split(","))["calls"])
    trips = json.load(open(os.path.join(results, f"ops-{mode}-trips.json")))
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    ops_rows.append(
        f"| {mode} | {payments} | {(trips['round_trips'] - trips['round_trips_before']) / payments:.3f} "
        f"| {scripts / payments:.2f} | {sum(calls.values()) / payments:.1f} "
        f"| {int(stats['total_net_input_bytes']) / payments:.0f} "
        f"| {int(stats['total_net_output_bytes']) / payments:.0f} |"
    )
if ops_rows:
    print(
        "\nRedis per scored payment (one replica; the replay's fraud reports included; "
        "commands count those the scripts run):\n"
    )
    print("| mode | payments | round trips | script calls | commands | bytes to Redis | bytes from Redis |")
    print("|---|---|---|---|---|---|---|")
    for row in ops_rows:
        print(row)

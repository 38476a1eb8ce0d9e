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
rounds = sorted({r for (_, _, r) in runs})


def spread(values, fmt="{:.0f}"):
    values = sorted(values)
    return f"{fmt.format(statistics.median(values))} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


print(f"Rounds: {len(rounds)}. Median (min–max over rounds).\n")
print("| server | mode | events/s | p50 µs | p99 µs | p99.9 µs | errors |")
print("|---|---|---|---|---|---|---|")
for server in ("riskstream", "memory", "ceiling", "python"):
    for mode in ("stream", "unary"):
        rs = [runs[(server, mode, r)] for r in rounds if (server, mode, r) in runs]
        if not rs:
            continue
        print(
            f"| {server} | {mode} | {spread([x['events_per_s'] for x in rs])} "
            f"| {spread([x['latency_us']['p50'] for x in rs], '{:.1f}')} "
            f"| {spread([x['latency_us']['p99'] for x in rs], '{:.1f}')} "
            f"| {spread([x['latency_us']['p999'] for x in rs], '{:.1f}')} "
            f"| {sum(sum(x['errors'].values()) for x in rs)} |"
        )

print("\n| ratio | stream | unary |")
print("|---|---|---|")
for other, label in (
    ("memory", "riskstream (embedded, the default) / riskstream --state memory (throughput)"),
    ("ceiling", "riskstream / ceiling (throughput)"),
    ("python", "riskstream / Python peer (throughput)"),
):
    cells = []
    for mode in ("stream", "unary"):
        ratios = [
            runs[("riskstream", mode, r)]["events_per_s"] / runs[(other, mode, r)]["events_per_s"]
            for r in rounds
            if ("riskstream", mode, r) in runs and (other, mode, r) in runs
        ]
        cells.append(spread(ratios, "{:.2f}") if ratios else "–")
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

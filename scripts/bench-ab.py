#!/usr/bin/env python3
"""Compares two hallmark binaries on `hallmark bench workload-api`.

    scripts/bench-ab.py BEFORE_BINARY AFTER_BINARY [ROUNDS] [--alternate]   (default 3 rounds)

By default each round starts both benchmarks at the same moment (side by
side): on a shared, noisy machine both meet the same interference, so their
ratio means more than two runs one after the other. Side by side, though,
each benchmark has the other's clients and agent on the same cores, which
makes its latencies longer than either binary's alone: compare its p99s
with each other, not with a target.

With --alternate, each round runs the two one after the other, alone (the
order swapped every round so that drift hits both alike): the latencies are
each binary's own, for holding p99 against a target.

For each binary and round it prints the benchmark's rows (calls per second,
p50, p99), and the CPU time (user + system) its agent process used per
Workload API call, sampled from /proc every 50 ms until the agent exits. At
the end: calls per second summed over the rounds and the after/before ratio,
the median p50 and p99 of each pass, and the agent CPU per call. Each run
also says how many cores were idle and how many the hypervisor took for
other guests (steal), on average: a run with steal measured a slower machine.
"""

import os
import re
import statistics
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
ROW = re.compile(r"^\| (Fetch\w+ \([^)]*\)) \| (\d+) \| (\d+) \| (\d+) \| (\d+) µs \| (\d+) µs \|", re.M)


def cpu_seconds(pid: int) -> float:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_ticks():
    """The machine's (idle, steal) clock ticks since boot, from /proc/stat."""
    fields = open("/proc/stat").readline().split()[1:]
    return int(fields[3]) + int(fields[4]), int(fields[7])


def agent_of(parent: int):
    """The pid of `hallmark agent` started by `parent`, if running."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            argv = open(f"/proc/{d}/cmdline").read().split("\0")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent and argv[1:2] == ["agent"]:
            return int(d)
    return None


def run(binary: str, result: dict) -> None:
    started, (idle0, steal0) = time.monotonic(), machine_ticks()
    p = subprocess.Popen([binary, "bench", "workload-api"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    agent_cpu = 0.0
    pid = None
    while p.poll() is None:
        # The agent is looked for once: a scan of every process in /proc
        # every 50 ms took a core for milliseconds at a time, and showed in
        # the benchmark's p99. Then only its own stat file is read.
        if pid is None:
            pid = agent_of(p.pid)
        if pid is not None:
            try:
                agent_cpu = cpu_seconds(pid)
            except OSError:
                pass
        time.sleep(0.05)
    out = p.stdout.read()
    (idle1, steal1), wall = machine_ticks(), time.monotonic() - started
    # Cores the hypervisor gave to others (steal) and cores left idle, on
    # average over the run: a run with steal measured a slower machine.
    result.update(steal=(steal1 - steal0) / TICK / wall, idle=(idle1 - idle0) / TICK / wall)
    rows = [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))) for m in ROW.finditer(out)]
    if p.returncode != 0 or not rows:
        sys.exit(f"{binary} bench workload-api failed:\n{out}")
    result.update(out=out, rows=rows, agent_cpu=agent_cpu, calls=sum(r[2] for r in rows))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--alternate"]
    alternate = len(args) != len(sys.argv) - 1
    before, after = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 3
    binaries = {"before": before, "after": after}
    totals = {"before": {}, "after": {}}
    p50s = {"before": {}, "after": {}}
    p99s = {"before": {}, "after": {}}
    cpu = {"before": [], "after": []}
    print(f"== {'alternating, one at a time' if alternate else 'side by side'}; {rounds} rounds")
    for i in range(1, rounds + 1):
        results = {"before": {}, "after": {}}
        if alternate:
            order = ("before", "after") if i % 2 else ("after", "before")
            for k in order:
                run(binaries[k], results[k])
        else:
            threads = [threading.Thread(target=run, args=(binaries[k], results[k])) for k in ("before", "after")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for k in ("before", "after"):
            r = results[k]
            per_call = r["agent_cpu"] / r["calls"] * 1e6
            cpu[k].append(per_call)
            print(
                f"== round {i}, {k}: agent CPU {per_call:.1f} µs per call ({r['calls']} calls);"
                f" cores idle {r['idle']:.2f}, stolen {r['steal']:.2f}"
            )
            for name, clients, calls, per_second, p50, p99 in r["rows"]:
                print(f"   {name}, {clients} clients: {per_second}/s, p50 {p50} µs, p99 {p99} µs")
                key = (name, clients)
                totals[k][key] = totals[k].get(key, 0) + per_second
                p50s[k].setdefault(key, []).append(p50)
                p99s[k].setdefault(key, []).append(p99)
    print(f"== calls per second, summed over {rounds} rounds: before, after, ratio")
    for key in totals["before"]:
        b, a = totals["before"][key], totals["after"][key]
        print(f"   {key[0]}, {key[1]} clients: {b}, {a}, {a / b:.2f}")
    b, a = sum(totals["before"].values()), sum(totals["after"].values())
    print(f"   all passes: {b}, {a}, {a / b:.2f}")
    print("== median over the rounds of p50 and p99 (µs): before, after")
    for key in p99s["before"]:
        med = lambda d: statistics.median(d[key])
        print(
            f"   {key[0]}, {key[1]} clients: p50 {med(p50s['before']):.0f}, {med(p50s['after']):.0f};"
            f" p99 {med(p99s['before']):.0f}, {med(p99s['after']):.0f}"
        )
    mb, ma = statistics.median(cpu["before"]), statistics.median(cpu["after"])
    print(f"== agent CPU per call, median over the rounds: before {mb:.1f} µs, after {ma:.1f} µs, ratio {ma / mb:.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Compares two hallmark binaries on `hallmark bench workload-api`, run side by
side: each round starts both benchmarks at the same moment, so on a shared,
noisy machine both meet the same interference, and their ratio means more
than two runs one after the other.

    scripts/bench-ab.py BEFORE_BINARY AFTER_BINARY [ROUNDS]     (default 3)

For each binary and round it prints the benchmark's table rows, and the CPU
time (user + system) its agent process used per Workload API call, sampled
from /proc every 50 ms until the agent exits. At the end: calls per second
summed over the rounds, per pass and in all, with the after/before ratio.
"""

import os
import re
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
ROW = re.compile(r"^\| (Fetch\w+ \([^)]*\)) \| (\d+) \| (\d+) \| (\d+) \|", re.M)


def cpu_seconds(pid: int) -> float:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


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
    p = subprocess.Popen([binary, "bench", "workload-api"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    agent_cpu = 0.0
    while p.poll() is None:
        pid = agent_of(p.pid)
        if pid is not None:
            try:
                agent_cpu = cpu_seconds(pid)
            except OSError:
                pass
        time.sleep(0.05)
    out = p.stdout.read()
    rows = [(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))) for m in ROW.finditer(out)]
    if p.returncode != 0 or not rows:
        sys.exit(f"{binary} bench workload-api failed:\n{out}")
    result.update(out=out, rows=rows, agent_cpu=agent_cpu, calls=sum(r[2] for r in rows))


def main() -> None:
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    totals = {"before": {}, "after": {}}
    for i in range(1, rounds + 1):
        results = {"before": {}, "after": {}}
        threads = [threading.Thread(target=run, args=(b, results[k])) for k, b in (("before", before), ("after", after))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in ("before", "after"):
            r = results[k]
            print(f"== round {i}, {k}: agent CPU {r['agent_cpu'] / r['calls'] * 1e6:.1f} µs per call ({r['calls']} calls)")
            for name, clients, calls, per_second in r["rows"]:
                print(f"   {name}, {clients} clients: {per_second}/s")
                key = (name, clients)
                totals[k][key] = totals[k].get(key, 0) + per_second
    print(f"== calls per second, summed over {rounds} rounds: before, after, ratio")
    for key in totals["before"]:
        b, a = totals["before"][key], totals["after"][key]
        print(f"   {key[0]}, {key[1]} clients: {b}, {a}, {a / b:.2f}")
    b, a = sum(totals["before"].values()), sum(totals["after"].values())
    print(f"   all passes: {b}, {a}, {a / b:.2f}")


if __name__ == "__main__":
    main()

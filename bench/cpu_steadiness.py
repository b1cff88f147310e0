"""How steady one core of this host is: the work a busy loop gets done in each 100 ms.

    .venv/bin/python bench/cpu_steadiness.py [--seconds 60] [--core N]

A server at 80-90 % of a core turns every dip in what the core delivers into a backlog (the
soak's p99, docs/performance.md). On a virtual machine a core can deliver less for a while
without the guest seeing any stolen time; this measures it directly: the loop runs alone on
``--core`` (default: the last) and prints the quantiles of its work per 100 ms, as a share of
the median. Run it on an otherwise idle host.
"""

from __future__ import annotations

import argparse
import os
import time

WINDOW_S = 0.1


def spin(seconds: float) -> list[int]:
    """Units of work done in each window of ``WINDOW_S`` for ``seconds``."""
    done: list[int] = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        units, stop = 0, now + WINDOW_S
        while time.perf_counter() < stop:
            for _ in range(1000):
                pass
            units += 1
        done.append(units)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--core", type=int, help="the core to measure (default: the last)")
    args = parser.parse_args()
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    done = sorted(spin(args.seconds))
    median = done[len(done) // 2]
    for name, value in (
        ("min", done[0]),
        ("p1", done[len(done) // 100]),
        ("p10", done[len(done) // 10]),
        ("median", median),
        ("max", done[-1]),
    ):
        print(f"{name:>6}: {value / median:6.1%} of the median ({value} units per 100 ms)")
    print(f"core {core}, {len(done)} windows of {WINDOW_S * 1000:.0f} ms")


if __name__ == "__main__":
    main()

"""`make bench-quick`: every benchmark at toy size, one after another, to check that they run.

Each runs in its own process with ``TGS_BENCH_QUICK=1``, which makes
:func:`benchmarks.harness.write_results` write ``results/<name>_quick.*`` (git-ignored), so a
quick run never replaces a recorded result. The peers (tfmot, Torch-Pruning) run inside the
budget and transformer benchmarks' quick rows. Two benchmarks run at a time (``--jobs``), the
longest first: a smoke run checks that they run, its timings are not figures.

    python -m benchmarks.quick            # all of them (under 20 minutes on 2 cores)
    python -m benchmarks.quick --jobs 1   # one after another
    python -m benchmarks.quick --list     # the commands, without running them
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

#: (module, arguments) of every benchmark's smoke run, the longest first
COMMANDS = (
    ("budget_pruning", ["--quick", "--targets", "0.5"]),
    ("transformer_pruning", []),
    ("run_all", ["--quick"]),
    ("backend_pruning_time", ["--repeats", "1", "--no-warm-up"]),
    ("pruning_planting_fashion", ["--quick"]),
    ("training_overhead", ["--quick"]),
    ("pruning_planting_digits", ["--quick"]),
    ("channel_multiple", ["--rounds", "1", "--runs", "10", "--mlp-scan", "96", "105", "4",
                          "--conv-scan", "8", "17", "8"]),
    ("mlp_size_bound", ["--epochs", "1", "--train-samples", "1000"]),
    ("shrink_speed", ["--quick"]),
    ("grouping_speed", ["--quick"]),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="run only these benchmarks")
    parser.add_argument("--jobs", type=int, default=2, help="benchmarks run at a time (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    chosen = [(m, a) for m, a in COMMANDS if not args.only or m in args.only]
    if args.list:
        for module, arguments in chosen:
            print(" ".join(["python -m benchmarks." + module, *arguments]))
        return 0
    from benchmarks.harness import require

    require("fashion")  # several of them read Fashion-MNIST: stop with the hint before any training
    env = dict(os.environ, TGS_BENCH_QUICK="1", TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()

    def run(module, arguments):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *arguments], env=env,
                              stdout=subprocess.DEVNULL)
        print(f"{module}: {'ok' if done.returncode == 0 else f'FAILED (exit {done.returncode})'} "
              f"in {time.perf_counter() - t:.0f} s", flush=True)
        return done.returncode

    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait for the benchmarks' processes
        codes = list(pool.map(lambda command: run(*command), chosen))
    failed = [module for (module, _), code in zip(chosen, codes) if code]
    print(f"{len(chosen) - len(failed)} of {len(chosen)} benchmarks ran in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

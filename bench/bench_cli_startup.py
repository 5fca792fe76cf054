"""How long `mailer --help` takes: every CLI test and every organiser command pays it.

Target (issue 9): `mailer --help` under 0.4 s. Runs `python -m mailer --help` N times in
fresh processes and prints the median, beside `python -c pass` (the interpreter's own
start) measured in the same run, and `import mailer.cli` alone.

    .venv/bin/python bench/bench_cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "100"},
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    cases = {
        "python -c pass": ["-c", "pass"],
        "import mailer.cli": ["-c", "import mailer.cli"],
        "mailer --help": ["-m", "mailer", "--help"],
    }
    medians: dict[str, float] = {}
    for _ in range(2):  # warm the file cache
        timed(cases["mailer --help"])
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so drifting load hits every case alike
        for name, args in cases.items():
            samples[name].append(timed(args))
    for name, values in samples.items():
        medians[name] = statistics.median(values)
        print(f"{name:20s} median {medians[name] * 1000:7.1f} ms  (min {min(values) * 1000:.1f})")
    help_time = medians["mailer --help"]
    print(
        f"mailer --help: {help_time:.3f} s; target 0.4 s: {'met' if help_time < 0.4 else 'NOT met'}"
    )
    print(f"over the bare interpreter: {help_time - medians['python -c pass']:.3f} s")
    print(f"load: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""How long `mailer --help` takes: every CLI test and every organiser command pays it.

Target (issue 9): `mailer --help` under 0.4 s. Runs `python -m mailer --help` N times in
fresh processes and prints the median, beside `python -c pass` (the interpreter's own
start) measured in the same run, and `import mailer.cli` alone. Also `mailer campaign
list` on an empty, already migrated SQLite store: a command that opens the store (and
checks its schema is the newest) as most organiser commands do.

    .venv/bin/python bench/bench_cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], folder: Path) -> tuple[float, float]:
    """Wall time and the child's CPU time (user + system): on a machine shared with
    other work the CPU time moves less with the load."""
    # Only this run's store and folders: no MAILER_ setting or .env of the developer's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        COLUMNS="100",
        HOME=str(folder),
        MAILER_DATABASE_URL=f"sqlite:///{folder / 'mailer.db'}",
        MAILER_VAR_DIR=str(folder / "var"),
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=folder,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    cases = {
        "python -c pass": ["-c", "pass"],
        "import mailer.cli": ["-c", "import mailer.cli"],
        "mailer --help": ["-m", "mailer", "--help"],
        "mailer campaign list": ["-m", "mailer", "campaign", "list"],
    }
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(2):  # warm the file cache; the first list migrates the new store
            for args in cases.values():
                timed(args, folder)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(runs):  # interleaved, so drifting load hits every case alike
            for name, args in cases.items():
                samples[name].append(timed(args, folder))
    for name, values in samples.items():
        walls = [wall for wall, _ in values]
        medians[name] = statistics.median(walls)
        cpu = statistics.median(cpu for _, cpu in values)
        print(
            f"{name:20s} median {medians[name] * 1000:7.1f} ms  (min {min(walls) * 1000:.1f})"
            f"  CPU median {cpu * 1000:7.1f} ms"
        )
    help_time = medians["mailer --help"]
    print(
        f"mailer --help: {help_time:.3f} s; target 0.4 s: {'met' if help_time < 0.4 else 'NOT met'}"
    )
    print(f"over the bare interpreter: {help_time - medians['python -c pass']:.3f} s")
    print(f"load: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

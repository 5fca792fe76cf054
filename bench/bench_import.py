"""Import a generated 1,000,000-row CSV into a fresh SQLite store; print rows/s and peak RSS.

Targets (issue "Foundation"): >= 30,000 rows/s on one core, peak RSS under 200 MB, i.e.
memory that does not grow with the file. Run: .venv/bin/python bench/bench_import.py [ROWS]
Each run happens in a child process so its peak RSS is its own.
"""

from __future__ import annotations

import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOMAINS = [
    "gmail.com",
    "yahoo.co.uk",
    "outlook.com",
    "hotmail.co.uk",
    "btinternet.com",
    "icloud.com",
    "proton.me",
    "posteo.de",
    "bücher.de",
    "example.org",
]
NAMES = ["Zoë", "José", "Łukasz", "Amira", "Seán", "Priya", "Kwame", "Ingrid", "Mehmet", "Chloé"]
# Local parts stay ASCII: one with non-ASCII letters needs SMTPUTF8, which mailer does not
# send yet, so the import refuses it (every row must import for the figure to count).
LOCAL_PARTS = [
    "zoe",
    "jose",
    "lukasz",
    "amira",
    "sean",
    "priya",
    "kwame",
    "ingrid",
    "mehmet",
    "chloe",
]
CITIES = ["London", "Manchester", "Leeds", "Glasgow", "Cardiff", "Belfast", "Bristol"]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(42)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,city,member_since\n")
        for i in range(rows):
            which = rng.randrange(len(NAMES))
            name, local = NAMES[which], LOCAL_PARTS[which]
            domain = rng.choice(DOMAINS) if i % 50 else f"club{i % 997}.example.net"
            handle.write(f"{local}.{i}@{domain},{name} {i},{rng.choice(CITIES)},{2000 + i % 25}\n")


def child(csv_path: str, db_path: str) -> None:
    from mailer.audience.importer import import_file
    from mailer.store import Store

    store = Store.open(f"sqlite:///{db_path}")
    started = time.perf_counter()
    report = import_file(
        store,
        Path(csv_path),
        list_name="bench",
        rejects_path=Path(db_path).with_suffix(".rejects.csv"),
    )
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{report.counts.imported} {elapsed:.3f} {peak_mb:.1f}")


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    runs = 3
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "big.csv"
        generate(csv_path, rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"generated {rows:,} rows ({size_mb:.0f} MB)")
        rates, peaks = [], []
        for run in range(runs):
            db = Path(tmp) / f"run{run}.db"
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(csv_path), str(db)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            imported, elapsed, peak = int(out[0]), float(out[1]), float(out[2])
            assert imported == rows, f"imported {imported} of {rows}"
            rates.append(rows / elapsed)
            peaks.append(peak)
            print(
                f"run {run + 1}: {rows / elapsed:,.0f} rows/s, {elapsed:.1f} s, peak {peak:.0f} MB"
            )
    print(
        f"median: {statistics.median(rates):,.0f} rows/s (target >= 30,000), "
        f"peak RSS {max(peaks):.0f} MB (target < 200)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()

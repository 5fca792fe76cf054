"""Import files whose one bad row is a huge line; print time, MB/s and peak RSS per shape and size.

Issue 9: a 1 GiB line ran past 200 s (the line splitter searched all pending text after each
read: quadratic) and a field over 128 KiB stopped the whole import. Reading must be linear in
the file's size (4x the line, about 4x the time) with flat memory, and the huge row must come
out as one rejected row while the rows around it are imported.

Run: .venv/bin/python bench/bench_long_lines.py [MiB ...]   (default: 64 256 1024)
Each import runs in its own child process, so its peak RSS is its own. Files are made one at a
time in a temporary folder (as large as the largest size) and deleted after use.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 1 << 20
# name -> (the row's start, one MiB of its body, its end)
SHAPES = {
    "one unquoted field": ("big@example.org,", "x" * BLOCK, "\n"),
    "one quoted field, 64-char lines": (
        'big@example.org,"',
        ("y" * 63 + "\n") * (BLOCK // 64),
        '"\n',
    ),
    "tiny unquoted fields (w,)": ("big@example.org,", "w," * (BLOCK // 2), "w\n"),
    'tiny quoted fields ("",)': (
        "big@example.org,",
        '"",' * (BLOCK // 3) + "," * (BLOCK % 3),
        '""\n',
    ),
    'quotes inside unquoted (a"b,)': ("big@example.org,", 'a"b,' * (BLOCK // 4), "w\n"),
    'both mixed (a"b,"",)': (
        "big@example.org,",
        'a"b,"",' * (BLOCK // 7) + "," * (BLOCK % 7),
        "w\n",
    ),
}


def generate(path: Path, shape: str, mib: int) -> None:
    start, block, end = SHAPES[shape]
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\nana@example.org,Ana\n" + start)
        for _ in range(mib):
            handle.write(block)
        handle.write(end + "dee@example.org,Dee\n")


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
    print(f"{report.counts.imported} {report.counts.invalid} {elapsed:.3f} {peak_mb:.1f}")


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [64, 256, 1024]
    print(f"{'shape':34} {'MiB':>5} {'seconds':>8} {'MB/s':>7} {'peak RSS':>9}  x time")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            previous: tuple[int, float] | None = None
            for mib in sizes:
                csv_path = Path(tmp) / "long.csv"
                db = Path(tmp) / "bench.db"
                db.unlink(missing_ok=True)
                generate(csv_path, shape, mib)
                size = csv_path.stat().st_size
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(csv_path), str(db)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                csv_path.unlink()
                imported, invalid = int(out[0]), int(out[1])
                elapsed, peak = float(out[2]), float(out[3])
                assert (imported, invalid) == (2, 1), f"imported {imported}, invalid {invalid}"
                growth = ""
                if previous is not None:
                    growth = f"  {elapsed / previous[1]:.1f}x for {mib / previous[0]:.0f}x"
                print(
                    f"{shape:34} {mib:5} {elapsed:8.2f} {size / elapsed / 1e6:7.0f} "
                    f"{peak:7.0f} MB{growth}"
                )
                previous = (mib, elapsed)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()

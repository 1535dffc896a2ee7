"""Cost of line-level quarantine on the demo: 365 daily flight CSVs read and ingested with and without the per-line field count.

Ratios against a baseline measured in the same run (the same code with the line check switched off):

* ``read``: :func:`aiflow.data.parse.read_file` over every file (the parser alone);
* ``ingest``: :func:`aiflow.data.ingest.ingest` of every file into a fresh lake (what a user waits for);
* ``quoted``: the parser on the same files with one quoted field per row (the ``csv`` module path).

Run: ``.venv/bin/python -m benchmarks.parse_lines [--repeat 3]``; figures go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aiflow.data import parse
from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage.lake import Lake
from aiflow.storage.landing import LocalLandingZone


@contextlib.contextmanager
def line_check_off() -> Iterator[None]:
    """The parser as it was before line-level quarantine: no per-line field count."""
    original = parse.csv_bad_lines
    parse.csv_bad_lines = lambda data, name: (data, [])
    try:
        yield
    finally:
        parse.csv_bad_lines = original


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    spec = load_spec(demo_spec_path())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [Path(f) for f in write_landing(root / "landing")]
        blobs = [(f.name, f.read_bytes()) for f in files]
        quoted = [(n, b.replace(b",EWR,", b',"EWR",').replace(b",JFK,", b',"JFK",')) for n, b in blobs]
        rows = sum(b.count(b"\n") - 1 for _, b in blobs)
        print(f"{len(blobs)} files, {rows:,} rows, {sum(len(b) for _, b in blobs) / 1e6:.1f} MB")

        def read_all(items) -> None:
            for name, data in items:
                parse.read_file(data, "csv", spec, name)

        def ingest_all(tag: str, i: int) -> None:
            ingest(Lake(root / f"lake-{tag}-{i}"), LocalLandingZone(root / "landing" / "flights"), spec)

        times: dict[str, list[float]] = {k: [] for k in ("read_off", "read_on", "quoted_on", "ingest_off", "ingest_on")}
        for i in range(args.repeat):  # interleaved, so drift on a shared machine hits both sides
            with line_check_off():
                times["read_off"].append(_timed(lambda: read_all(blobs)))
                times["ingest_off"].append(_timed(lambda i=i: ingest_all("off", i)))
            times["read_on"].append(_timed(lambda: read_all(blobs)))
            times["quoted_on"].append(_timed(lambda: read_all(quoted)))
            times["ingest_on"].append(_timed(lambda i=i: ingest_all("on", i)))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"read   : line check off {med['read_off']:.2f} s, on {med['read_on']:.2f} s, ratio {med['read_on'] / med['read_off']:.2f}")
        print(f"quoted : on {med['quoted_on']:.2f} s, ratio to unquoted off {med['quoted_on'] / med['read_off']:.2f}")
        print(f"ingest : line check off {med['ingest_off']:.2f} s, on {med['ingest_on']:.2f} s, ratio {med['ingest_on'] / med['ingest_off']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

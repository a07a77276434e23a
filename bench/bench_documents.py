"""Time the offline processor: a 200-byte text file and each bundled sample, median of many runs.

Run: ``.venv/bin/python bench/bench_documents.py``
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from actors.documents import process_document

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SMALL_TEXT = (
    b"Pump station report\n\n"
    b"The east pump ran for six hours on Monday. Pressure stayed within limits. "
    b"The filter was cleaned on Tuesday and the flow rate returned to normal. "
    b"No leaks were seen at any joint.\n"
)
assert len(SMALL_TEXT) == 200, len(SMALL_TEXT)


def median_microseconds(data: bytes, name: str, runs: int) -> float:
    """Return the median wall time of `process_document` on `data`, in microseconds."""
    process_document(data, filename=name)  # warm up: imports, regex caches
    timings = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        process_document(data, filename=name)
        timings.append(time.perf_counter_ns() - start)
    return statistics.median(timings) / 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    cases = [(f"{len(SMALL_TEXT)}-byte text", "pump.txt", SMALL_TEXT)]
    cases += [(path.name, path.name, path.read_bytes()) for path in sorted(SAMPLES.iterdir())]
    print(f"{'document':28} {'bytes':>6} {'median µs':>10}")
    for label, name, data in cases:
        count = runs if not name.endswith(".pdf") else max(runs // 10, 50)
        print(f"{label:28} {len(data):6d} {median_microseconds(data, name, count):10.1f}")


if __name__ == "__main__":
    main()

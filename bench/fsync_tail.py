"""The disk's fsync tail: how often one durable commit alone takes longer than a latency target.

A measurement, not a test. Every answer the signer gives waits for the group commit that audits it,
and that commit ends with an fdatasync of SQLite's WAL (``synchronous=FULL``). At 2 clients a commit
carries one request, so each request waits for one fsync of its own: when more than 1 % of fsyncs on
the data directory's disk take longer than T, the service's p99 at low load cannot be under T with
durable audit, whatever the service does around it. This appends 4 KiB and calls ``os.fdatasync``
``--count`` times in ``--dir`` (default: a temporary directory, which on this VM is on the same disk
as the data directories the benches use) and prints the distribution and the share over 1, 3 and 5 ms.

    .venv/bin/python bench/fsync_tail.py [--count 3000] [--dir PATH] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fsync_times_ms, percentile


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsync-tail-", dir=args.dir) as tmp:
        for round_no in range(1, args.rounds + 1):
            times = sorted(fsync_times_ms(Path(tmp), args.count))
            over = {limit: sum(t > limit for t in times) / len(times) for limit in (1.0, 3.0, 5.0)}
            print(
                f"round {round_no}: {len(times)} fdatasync of a 4 KiB append: "
                f"p50 {percentile(times, 0.5):.3f}  p90 {percentile(times, 0.9):.3f}  "
                f"p99 {percentile(times, 0.99):.3f}  p99.9 {percentile(times, 0.999):.3f}  "
                f"max {times[-1]:.3f} ms;  over 1 ms {over[1.0]:.2%}, over 3 ms {over[3.0]:.2%}, "
                f"over 5 ms {over[5.0]:.2%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

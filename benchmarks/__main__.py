"""``python -m benchmarks``: the pytest-benchmark suite, then the side-by-side comparison with the kernel."""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    suite = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only", "-q",
                            "--benchmark-columns=min,median,max,rounds", *sys.argv[1:]], check=False)
    side = subprocess.run([sys.executable, "-m", "benchmarks.side_by_side"], check=False)
    return suite.returncode or side.returncode


if __name__ == "__main__":
    sys.exit(main())

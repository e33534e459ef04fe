#!/usr/bin/env python
"""Training throughput, generation speed and peak memory against fairseq's stock
transformer: :mod:`fairseq_rskip.benchmark.throughput`, whose docstring says what
is measured and how, run from this checkout.

    python benchmarks/benchmark_throughput.py                 # iwslt_de_en size, CPU
    python benchmarks/benchmark_throughput.py --quick         # smoke test, seconds
    python benchmarks/benchmark_throughput.py --sweep length width depth --plot cost_sweep.png
    python benchmarks/benchmark_throughput.py --device cuda --precision fp16   # on a GPU
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.benchmark.throughput import cli_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli_main())

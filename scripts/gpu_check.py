#!/usr/bin/env python
"""Every family through fairseq's GPU paths on this machine: ``rskip-gpu-check``
(fairseq_rskip/cli/gpu_check.py), run from this checkout.

    python scripts/gpu_check.py --out work/gpu-check

See docs/half_precision.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.gpu_check import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

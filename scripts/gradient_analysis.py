#!/usr/bin/env python
"""Per-sublayer gradient norms against layer index (Liu et al. 2020): ``rskip-gradient-analysis``
(fairseq_rskip/cli/gradient_analysis.py), run from this checkout.

    python scripts/gradient_analysis.py --sweep all --out work/gradient-analysis

See docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.gradient_analysis import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

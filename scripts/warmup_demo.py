#!/usr/bin/env python
"""Post-LN vs Pre-LN at a high learning rate without warm-up (Xiong et al. 2020):
``rskip-warmup-demo`` (fairseq_rskip/cli/warmup_demo.py), run from this checkout.

    python scripts/warmup_demo.py --out work/warmup-demo

See docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.warmup_demo import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

#!/usr/bin/env python
"""Compare architectures over depths and seeds: ``rskip-reproduce``
(fairseq_rskip/cli/reproduce.py), run from this checkout.

    python scripts/reproduce.py --config examples/translation/configs/bundled-cpu.json \
        --data work/bundled/data-bin --out work/repro-bundled

Resumable: run the same command again after a crash; finished runs are
skipped. See docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.reproduce import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

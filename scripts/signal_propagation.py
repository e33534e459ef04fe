#!/usr/bin/env python
"""Rank collapse at initialisation (He et al. 2023): ``rskip-signal-propagation``
(fairseq_rskip/cli/signal_propagation.py), run from this checkout.

    python scripts/signal_propagation.py --data work/bundled/data-bin --out work/signal-propagation

See docs/signal_propagation.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.signal_propagation import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

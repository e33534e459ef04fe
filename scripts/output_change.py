#!/usr/bin/env python
"""Output change at initialisation (Liu et al. 2020): ``rskip-output-change``
(fairseq_rskip/cli/output_change.py), run from this checkout.

    python scripts/output_change.py --data work/bundled/data-bin --out work/output-change

See docs/output_change.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.output_change import cli_main  # noqa: E402

if __name__ == "__main__":
    cli_main()

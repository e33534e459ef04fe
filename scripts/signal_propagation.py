#!/usr/bin/env python
"""Rank collapse at initialisation: mean pairwise cosine similarity of token
representations per layer, for every variant and depth, on real batches.

    python scripts/signal_propagation.py --data work/bundled/data-bin --out work/signal-propagation

See fairseq_rskip/analysis/signal_propagation.py and docs/signal_propagation.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_rskip.analysis.signal_propagation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

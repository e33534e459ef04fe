#!/usr/bin/env python
"""Per-sublayer gradient norms against layer index (Liu et al. 2020).

    python scripts/gradient_analysis.py --sweep all --out work/gradient-analysis

See fairseq_rskip/analysis/gradients.py and docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_rskip.analysis.gradients import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

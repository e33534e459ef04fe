#!/usr/bin/env python
"""Post-LN vs Pre-LN at a high learning rate without warm-up (Xiong et al. 2020).

    python scripts/warmup_demo.py --out work/warmup-demo

See fairseq_rskip/analysis/warmup.py and docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_rskip.analysis.warmup import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

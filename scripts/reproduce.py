#!/usr/bin/env python
"""Compare architectures over depths and seeds: fairseq-train + scripts/evaluate.sh.

    python scripts/reproduce.py --config examples/translation/configs/bundled-cpu.json \
        --data data-bin/bundled --out work/repro-bundled

Resumable: run the same command again after a crash; finished runs are
skipped. See fairseq_rskip/analysis/reproduce.py and docs/reproduction.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_rskip.analysis.reproduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

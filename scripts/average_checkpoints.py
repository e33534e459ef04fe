#!/usr/bin/env python3
"""Average the parameters of fairseq checkpoints: ``rskip-average-checkpoints``
(fairseq_rskip/cli/average_checkpoints.py), run from this checkout.

    python scripts/average_checkpoints.py --inputs CKPT_DIR --num-epoch-checkpoints 5 \
        --output CKPT_DIR/checkpoint.avg5.pt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.cli.average_checkpoints import cli_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli_main())

#!/usr/bin/env bash
# Translate with fairseq-generate (optionally averaging the last N epoch checkpoints) and
# report tokenised BLEU, detokenised sacreBLEU and chrF; one summary line on stdout, a JSON record
# next to the checkpoint (<ckpt_dir>/eval_<subset>.json), the translations kept beside it.
# --compare BASELINE SYSTEM: sacreBLEU's paired significance tests of two checkpoints or files.
#   bash scripts/evaluate.sh --data DATA_BIN (--checkpoint FILE | --checkpoint-dir DIR [--avg-last N]) \
#       [--beam 5] [--lenpen 1.0] [--subset test] [--compound-split] [--user-dir PATH] \
#       [--max-tokens N] [--detok moses|none] [-- extra fairseq-generate options]
# Same as: rskip-evaluate [options]. All options: bash scripts/evaluate.sh --help
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.scoring.cli "$@"

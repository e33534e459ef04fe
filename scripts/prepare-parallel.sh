#!/usr/bin/env bash
# Generic: raw parallel text PREFIX.{src,tgt} -> tokenised, cleaned, BPE -> DEST/data-bin.
#   bash scripts/prepare-parallel.sh --src-lang de --tgt-lang en --train-prefix raw/train \
#       --valid-prefix raw/valid --test-prefix raw/test --dest work/mydata \
#       [--bpe subword_nmt|sentencepiece|none] [--bpe-size N] [--lowercase] [--joined-dictionary]
# All options: bash scripts/prepare-parallel.sh --help. Same as: rskip-prepare parallel [options]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli parallel "$@"

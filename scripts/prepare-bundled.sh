#!/usr/bin/env bash
# Prepare the bundled German-English corpus (fairseq_rskip/corpus/ding-de-en) into a fairseq
# data-bin with the generic recipe (Moses tokenisation, lowercased, joint subword-nmt BPE with
# 4000 merges, joined dictionary):
#   bash scripts/prepare-bundled.sh [DEST]        # default DEST: work/bundled
# Result: DEST/data-bin, language pair de -> en. Options after DEST go to prepare-parallel.sh
# (e.g. --bpe sentencepiece --bpe-size 4000). Same as: rskip-prepare bundled [DEST] [options]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli bundled "$@"

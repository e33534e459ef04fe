#!/usr/bin/env bash
# IWSLT'15 English-Vietnamese, the Stanford release (already tokenised): train, tst2012 (valid),
# tst2013 (test); word level with the release's vocabulary sizes (or --bpe subword_nmt --bpe-size N).
# Default DEST: ./work/iwslt15.en-vi
#   bash scripts/prepare-iwslt15-envi.sh [--dest DIR] [--archive-dir DIR_WITH_DOWNLOADED_ARCHIVES]
#       [--bpe subword_nmt|sentencepiece] [--bpe-size N] [--workers N] [other prepare-parallel.sh options]
# Downloads (resumable, checksummed) into DEST/orig unless --archive-dir is given; re-runs
# reuse finished steps. Result: DEST/data-bin. All options: --help. Same as: rskip-prepare iwslt15-envi
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli iwslt15-envi "$@"

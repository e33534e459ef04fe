#!/usr/bin/env bash
# IWSLT'14 German-English, fairseq's recipe: TED talks of the 2014-01 release; train minus every
# 23rd pair (= valid); test = dev2010 + TEDX dev2012 + tst2010-2012; Moses tokenisation, cleaning
# (ratio 1.5, 1-175 tokens), lowercased, joint BPE of 10,000 merges. Default DEST: ./work/iwslt14.de-en
#   bash scripts/prepare-iwslt14.sh [--dest DIR] [--archive-dir DIR_WITH_DOWNLOADED_ARCHIVES]
#       [--bpe subword_nmt|sentencepiece] [--bpe-size N] [--workers N] [other prepare-parallel.sh options]
# Downloads (resumable, checksummed) into DEST/orig unless --archive-dir is given; re-runs
# reuse finished steps. Result: DEST/data-bin. All options: --help. Same as: rskip-prepare iwslt14
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli iwslt14 "$@"

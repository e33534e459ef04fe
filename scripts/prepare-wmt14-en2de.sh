#!/usr/bin/env bash
# WMT'14 English-German, fairseq's recipe: Europarl v7 + CommonCrawl + News Commentary v9;
# newstest2013 (valid), newstest2014 full (test); punctuation normalisation, Moses tokenisation with
# aggressive hyphen splitting, cleaning (ratio 1.5, 1-250 tokens), joint BPE of 40,000 merges, joined
# dictionary. Default DEST: ./work/wmt14.en-de (needs ~15 GB of disk and hours of CPU: use --workers)
#   bash scripts/prepare-wmt14-en2de.sh [--dest DIR] [--archive-dir DIR_WITH_DOWNLOADED_ARCHIVES]
#       [--bpe subword_nmt|sentencepiece] [--bpe-size N] [--workers N] [other prepare-parallel.sh options]
# Downloads (resumable, checksummed) into DEST/orig unless --archive-dir is given; re-runs
# reuse finished steps. Result: DEST/data-bin. All options: --help. Same as: rskip-prepare wmt14-en2de
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli wmt14-en2de "$@"

#!/usr/bin/env bash
# Prepare the bundled German-English corpus (examples/translation/corpus/ding-de-en)
# into a fairseq data-bin with the generic recipe (Moses tokenisation, lowercased,
# joint subword-nmt BPE with 4000 merges, joined dictionary):
#   bash scripts/prepare-bundled.sh [DEST]        # default DEST: work/bundled
# Result: DEST/data-bin, language pair de -> en. Options after DEST go to prepare-parallel.sh
# (e.g. --bpe sentencepiece --bpe-size 4000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
dest="$RSKIP_ROOT/work/bundled"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    dest="$1"
    shift
fi
corpus="$RSKIP_ROOT/examples/translation/corpus/ding-de-en"
raw="$dest/raw"
mkdir -p "$raw"
# decompress (atomically, only when the shipped file is newer)
for split in train valid test; do
    for l in de en; do
        if [ ! -f "$raw/$split.$l" ] || [ "$corpus/$split.$l.gz" -nt "$raw/$split.$l" ]; then
            gzip -dc "$corpus/$split.$l.gz" > "$raw/.partial-$split.$l"
            mv "$raw/.partial-$split.$l" "$raw/$split.$l"
        fi
    done
done
exec bash "$RSKIP_ROOT/scripts/prepare-parallel.sh" --src-lang de --tgt-lang en \
    --train-prefix "$raw/train" --valid-prefix "$raw/valid" --test-prefix "$raw/test" \
    --dest "$dest" --bpe subword_nmt --bpe-size 4000 --lowercase --joined-dictionary \
    --clean-max-len 175 --normalize-punct "$@"

#!/usr/bin/env bash
# Rebuild the bundled German-English corpus examples/translation/corpus/ding-de-en from
# its source, the Debian package trans-de-en 1.9-6 (Ding, GPL-2+). Needs apt-get
# (Debian 12 "bookworm" package lists) or a copy of the .deb:
#   bash scripts/build-bundled-corpus.sh [PATH/TO/trans-de-en_1.9-6_all.deb]
# The package's SHA-256 is checked; the output is deterministic (same files every time).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
out="$RSKIP_ROOT/examples/translation/corpus/ding-de-en"
deb="${1:-}"
if [ -z "$deb" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download trans-de-en=1.9-6)
    deb="$tmp/trans-de-en_1.9-6_all.deb"
fi
"$RSKIP_PY" -m fairseq_rskip.data_prep.bundled --deb "$deb" --out "$out"

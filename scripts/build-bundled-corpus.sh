#!/usr/bin/env bash
# Rebuild the bundled German-English corpus fairseq_rskip/corpus/ding-de-en from its source,
# the Debian package trans-de-en 1.9-6 (Ding, GPL-2+). Needs apt-get (Debian 12 "bookworm"
# package lists) or a copy of the .deb:
#   bash scripts/build-bundled-corpus.sh [PATH/TO/trans-de-en_1.9-6_all.deb] [--out DIR]
# The package's SHA-256 is checked; the output is deterministic (same files every time).
# Same as: rskip-prepare build-bundled-corpus [options]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$RSKIP_PY" -m fairseq_rskip.data_prep.cli build-bundled-corpus "$@"

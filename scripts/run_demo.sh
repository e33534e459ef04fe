#!/usr/bin/env bash
# The demo, end to end on the bundled German-English corpus (a few CPU minutes):
# install (if needed), prepare the corpus into a data-bin, train transformer_rskip
# (rSkip+LN, 2 recursions) and fairseq's Post-LN transformer at the same small size,
# evaluate both (rskip-evaluate) and print the comparison table with BLEU. In a terminal,
# each run shows a progress bar (updates, loss, elapsed time, time left).
#   bash scripts/run_demo.sh [extra rskip-reproduce options, e.g. --seeds 1 2]
# Outputs under work/ (RSKIP_WORK=DIR: under DIR): work/bundled/data-bin,
# work/demo/{results.md,results.csv,*.png}. A re-run reuses the finished steps.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup_env.sh"
source "$root/scripts/_env.sh"
work=${RSKIP_WORK:-$root/work}
"$RSKIP_PY" -m fairseq_rskip.data_prep.cli bundled "$work/bundled"
"$RSKIP_PY" -m fairseq_rskip.tools.runner.cli \
    --config "$root/examples/translation/configs/bundled-demo.json" \
    --data "$work/bundled/data-bin" --out "$work/demo" \
    "$@"
echo
cat "$work/demo/results.md"

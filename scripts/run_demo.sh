#!/usr/bin/env bash
# The demo, end to end on the bundled German-English corpus (a few CPU minutes):
# install (if needed), prepare the corpus into a data-bin, train transformer_rskip
# (rSkip+LN, 2 recursions) and fairseq's Post-LN transformer at the same small size,
# evaluate both (rskip-evaluate) and print the comparison table with BLEU. In a terminal,
# each run shows a progress bar (updates, loss, elapsed time, time left).
#   bash scripts/run_demo.sh [extra rskip-reproduce options, e.g. --seeds 1 2]
# Outputs under work/: work/bundled/data-bin, work/demo/{results.md,results.csv,*.png}.
# A re-run reuses the finished steps.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup_env.sh"
source "$root/scripts/_env.sh"
"$RSKIP_PY" -m fairseq_rskip.data_prep.cli bundled "$root/work/bundled"
"$RSKIP_PY" -m fairseq_rskip.tools.runner.cli \
    --config "$root/examples/translation/configs/bundled-demo.json" \
    --data "$root/work/bundled/data-bin" --out "$root/work/demo" \
    "$@"
echo
cat "$root/work/demo/results.md"

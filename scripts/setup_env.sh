#!/usr/bin/env bash
# Create ./.venv with everything fairseq_rskip needs. Idempotent: a second run
# with unchanged requirements.txt and setup.py returns at once.
#   RSKIP_VENV=/path  use another virtual environment
#   PYTHON=python3.11 the interpreter that creates it
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${RSKIP_VENV:-$root/.venv}
python=${PYTHON:-python3}
fairseq_pin="fairseq-fixed==0.12.3.1"

stamp="$venv/.fairseq_rskip-installed"
want=$(cat "$root/requirements.txt" "$root/setup.py" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setup_env: installing into $venv (first run builds fairseq, about 3 minutes)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip setuptools wheel
"${pip[@]}" install -r "$root/requirements.txt"
# fairseq-fixed compiles against the torch installed above (no build isolation)
# and would otherwise pull torchaudio (see requirements.txt).
"${pip[@]}" install --no-build-isolation --no-deps "$fairseq_pin"
"${pip[@]}" install --no-deps -e "$root"
"$venv/bin/python" -c "import fairseq_rskip" 2>/dev/null
echo "$want" > "$stamp"
echo "setup_env: done" >&2

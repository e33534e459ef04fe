# Sourced by the scripts/*.sh entry points: the repository root, its Python, PYTHONPATH.
RSKIP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${RSKIP_VENV:-}" ]; then
    RSKIP_PY="$RSKIP_VENV/bin/python"
elif [ -x "$RSKIP_ROOT/.venv/bin/python" ]; then
    RSKIP_PY="$RSKIP_ROOT/.venv/bin/python"
else
    RSKIP_PY=$(command -v python3 || command -v python)
fi
export PYTHONPATH="$RSKIP_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# fairseq-preprocess / fairseq-generate of the same environment
export PATH="$(dirname "$RSKIP_PY"):$PATH"

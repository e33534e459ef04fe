# Sourced by the scripts/*.sh wrappers: the Python to run, and this checkout's package on PYTHONPATH.
RSKIP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${RSKIP_VENV:-}" ]; then
    RSKIP_PY="$RSKIP_VENV/bin/python"
elif [ -x "$RSKIP_ROOT/.venv/bin/python" ]; then
    RSKIP_PY="$RSKIP_ROOT/.venv/bin/python"
else
    RSKIP_PY=$(command -v python3 || command -v python)
fi
export PYTHONPATH="$RSKIP_ROOT${PYTHONPATH:+:$PYTHONPATH}"

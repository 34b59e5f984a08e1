#!/usr/bin/env bash
# Runs this integration's tests against the OLDEST anthropic release its range claims (the lower bound in
# integrations/anthropic/pyproject.toml), in a throwaway virtual environment. Extra arguments go to pytest.
#   bash integrations/anthropic/tests/run_oldest.sh            # VENV=/some/dir to choose where the venv goes
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
OLDEST="$(sed -n 's/^ *"anthropic>=\([0-9.]*\),.*/\1/p' "$ROOT/integrations/anthropic/pyproject.toml")"
VENV="${VENV:-/tmp/paygentic-costs-anthropic-oldest}"
echo "anthropic==$OLDEST in $VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" -e "$ROOT/integrations/anthropic" "anthropic==$OLDEST"
"$VENV/bin/python" -c "import anthropic; print('testing with anthropic', anthropic.__version__)"
cd "$ROOT"
"$VENV/bin/python" -m pytest integrations/anthropic -q "$@"

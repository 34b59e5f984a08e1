#!/usr/bin/env sh
# Manual version-matrix check: run this integration's tests against the OLDEST openai its range claims (1.66.0, the
# first release with the Responses API), in a throwaway venv. CI runs only the latest openai.
#   integrations/openai/tests/run_oldest.sh            (PYTHON=python3.11 VENV=/tmp/x to override)
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
VENV=${VENV:-/tmp/paygentic-costs-openai-oldest}
PYTHON=${PYTHON:-python3}
OLDEST=1.66.0
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q -e "$ROOT" -e "$ROOT/integrations/openai" "openai==$OLDEST" "pytest>=8" "pytest-asyncio>=0.23"
"$VENV/bin/python" -c "import openai; assert openai.__version__ == '$OLDEST', openai.__version__"
cd "$ROOT" && exec "$VENV/bin/python" -m pytest integrations/openai/tests -q -p no:randomly "$@"

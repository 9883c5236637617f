#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine: the README's test command, and what
# .ci/run calls. Creates .venv (Python >= 3.11) if missing, installs the project with its test
# extras (pip's cache lives outside the clone, in ~/.cache/pip), installs the search engines the
# integration tests start (downloads cached in ~/.cache/rerank-sidecar/engines), then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k parity -x`.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
echo "== installing the project and its test dependencies"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"

echo "== installing test engines (cached after the first run)"
bash tests/engines/all.sh install

echo "== building helm for the chart tests (cached after the first run)"
bash tests/tools/helm.sh >/dev/null

echo "== installing chromium, its driver and docker-compose (tests/test_web.py, tests/test_compose.py)"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v docker-compose >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    # docker-compose only parses and validates docker-compose.yml here; no Docker engine is needed.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
fi

echo "== running tests"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q --durations=15 "$@"

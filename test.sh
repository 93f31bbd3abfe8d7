#!/usr/bin/env bash
# Fresh machine -> lint and tests: a virtual environment, the install step (requirements, the
# stand-in model packages, the benchmarks' peers, the fec package itself), the data (copied from ../shared/data, or
# $FEC_DATA_FROM, when present), Chromium for the browser test, then ruff and pytest.
# Extra arguments go to pytest, e.g. `bash test.sh -m slow` for the real-model checks.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
pip install -q --no-deps -r requirements-standins.txt
pip install -q -r requirements-bench.txt
pip install -q -r requirements-test.txt
pip install -q --no-deps --no-build-isolation -e .
data_from=${FEC_DATA_FROM:-../shared/data}
if [ -d "$data_from" ]; then
  python prepare_data.py --from "$data_from"
fi
# The browser test (tests/runs/test_browser.py) drives Debian's chromium; install it where we can.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null \
    || echo "test.sh: chromium did not install; the browser test will say why" >&2
fi
ruff check .
ruff format --check .
python -m pytest -q "$@"

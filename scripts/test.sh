#!/usr/bin/env bash
# Run every test of the template: installs what the tests need, then runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the fast tier only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/check-disk.sh
python3 -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
python3 -m ruff check .
python3 -m ruff format --check .
exec python3 -m pytest -n auto --dist loadgroup "$@"

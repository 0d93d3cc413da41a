#!/usr/bin/env bash
# `make test`: everything a fresh machine needs, the type checker, then unit, integration
# and e2e tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "==> mypy (packages and settings in pyproject.toml [tool.mypy])"
.venv/bin/mypy
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap services_stop EXIT
services_start
export TAILOR_CACHE_DIR="${TAILOR_CACHE_DIR:-$PWD/var/cache}"
echo "==> fetching offline models and corpus (cached after the first run)"
.venv/bin/python scripts/fetch_assets.py
echo "==> pytest"
# --durations: the slowest tests, so the suite stays within its 15 minutes.
.venv/bin/python -m pytest tests -q -p no:cacheprovider --durations=40 "$@"

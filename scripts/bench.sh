#!/usr/bin/env bash
# `make bench`: every benchmarks/*.py, each as a script from the project root, against throwaway
# PostgreSQL and Redis (migrated first). Benchmarks print their own figures. Exits non-zero when any fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# Under make the venv is ready already; run directly, this script makes it ready.
[ -n "${MAKELEVEL:-}" ] || make --no-print-directory venv-dev

shopt -s nullglob
benchmarks=(benchmarks/*.py)
if [ ${#benchmarks[@]} -eq 0 ]; then
	echo "bench: no benchmarks/*.py to run"
	exit 0
fi

SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/platform-bench-services.XXXXXX")
trap 'scripts/services.sh stop "$SERVICES_DIR" || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/services.sh start "$SERVICES_DIR"
# shellcheck disable=SC1091
. "$SERVICES_DIR/env"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

.venv/bin/python manage.py migrate --noinput >/dev/null

failed=()
for benchmark in "${benchmarks[@]}"; do
	echo "== $benchmark"
	.venv/bin/python "$benchmark" || failed+=("$benchmark")
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "bench: failed: ${failed[*]}" >&2
	exit 1
fi

#!/usr/bin/env bash
# `make test`: the whole suite against throwaway PostgreSQL and Redis, torn down whatever happens.
# Arguments go to pytest. Exits with pytest's exit code.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# Under make the venv is ready already; run directly, this script makes it ready.
[ -n "${MAKELEVEL:-}" ] || make --no-print-directory venv-dev

# The settings page's browser test drives Debian's Chromium through Playwright (pip installed it with the
# dev requirements); Playwright's own browser download is never used.
if ! [ -x /usr/bin/chromium ]; then
	[ "$(id -u)" = 0 ] || { echo "test: Chromium is missing; run: sudo apt-get install -y chromium" >&2; exit 1; }
	echo "test: installing Chromium from Debian's packages" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

export TEST_ARTIFACTS_DIR="$ROOT/var/test-artifacts"
rm -rf "$TEST_ARTIFACTS_DIR"
mkdir -p "$TEST_ARTIFACTS_DIR"

SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/platform-test-services.XXXXXX")
cleanup() { scripts/services.sh stop "$SERVICES_DIR" "$TEST_ARTIFACTS_DIR/services" || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/services.sh start "$SERVICES_DIR"
# shellcheck disable=SC1091
. "$SERVICES_DIR/env"

status=0
.venv/bin/python -m pytest --junitxml="$TEST_ARTIFACTS_DIR/junit.xml" "$@" || status=$?
exit "$status"

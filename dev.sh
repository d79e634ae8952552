#!/usr/bin/env bash
# The two set-up commands of pixelpipe, on a fresh machine with python3 (>= 3.11), java 17, mvn:
#
#   ./dev.sh demo     set up, start a local Kafka broker, run the demo (pixelpipe demo)
#   ./dev.sh test     set up, run the checks and the whole test suite (starts its own broker)
#
# Set-up = a virtualenv in .venv with pixelpipe installed (editable) with its test extras;
# it is redone only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "[dev] creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.pixelpipe-installed"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "[dev] installing pixelpipe and its test dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        echo "$want" > "$stamp"
    fi
}

# The dashboard's browser test drives Debian's chromium (playwright cannot download a browser
# here): install it when it is missing and we can (root with apt-get), else say how.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "[dev] installing chromium (for the dashboard browser test) ..." >&2
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
            echo "[dev] apt-get install failed; trying again after apt-get update" >&2
            apt-get update -qq >/dev/null || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
                || echo "[dev] could not install chromium: the dashboard browser test will fail" >&2
        fi
    else
        echo "[dev] chromium is missing: the dashboard browser test will fail; install it with: sudo apt-get install -y --no-install-recommends chromium" >&2
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    demo)
        setup
        exec "$VENV/bin/pixelpipe" demo "$@"
        ;;
    test)
        setup
        echo "[dev] ruff" >&2
        "$VENV/bin/ruff" check pixelpipe tests benchmarks
        echo "[dev] mypy --strict" >&2
        "$VENV/bin/mypy" pixelpipe
        echo "[dev] import contracts" >&2
        "$VENV/bin/lint-imports"
        ensure_chromium
        echo "[dev] pytest" >&2
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    setup)
        setup
        ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

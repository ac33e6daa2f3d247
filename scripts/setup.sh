#!/usr/bin/env bash
# Set up .venv with gais-pipe and its test dependencies. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Real test clips (Megamind.avi with a bad AC3 packet, vtest.avi without sound): Debian's opencv-doc.
# Optional: the tests that need them skip where they are missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ! -e /usr/share/doc/opencv-doc/examples/data/Megamind.avi ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends opencv-doc >/dev/null) \
    || echo "setup: opencv-doc not installed; tests that use its clips will skip" >&2
fi
# A headless browser for the search page's test (Debian's chromium and its chromedriver; Selenium is told
# their paths, never downloads a browser). Optional: that test skips where they are missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null) \
    || echo "setup: chromium not installed; the search page's browser test will skip" >&2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[cpu,dev]"

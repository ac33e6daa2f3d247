#!/usr/bin/env bash
# Set up .venv with gais-pipe and its test dependencies. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Real test clips (Megamind.avi with a bad AC3 packet, vtest.avi without sound): Debian's opencv-doc.
# Optional: the tests that need them skip where they are missing.
# espeak-ng: make-synthetic's spoken-word videos (without it the collection has tones only and the
# word tests skip). Optional too.
APT_PACKAGES=()
[ -e /usr/share/doc/opencv-doc/examples/data/Megamind.avi ] || APT_PACKAGES+=(opencv-doc)
command -v espeak-ng >/dev/null || APT_PACKAGES+=(espeak-ng)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  apt-get update -qq || true
  for package in "${APT_PACKAGES[@]}"; do  # one at a time: one missing package does not block the other
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
      || echo "setup: $package not installed; the tests that need it will skip" >&2
  done
elif [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  echo "setup: not installed (needs root and apt-get): ${APT_PACKAGES[*]}; the tests that need them will skip" >&2
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

#!/usr/bin/env bash
# Screenshots of what a run produces, for the README: the evaluation report with the decision, the decision
# record and the validation report of the last `make run` (outputs/), as headless Chromium draws them.
# Usage: bash tools/screenshots.sh [outputs] [docs]    (needs `make chromium`)
set -euo pipefail
out="${1:-outputs}"; docs="${2:-docs}"
mkdir -p "$docs"
profile="$(mktemp -d)"; trap 'rm -rf "$profile"' EXIT
shot() {  # page, png, height
  chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --user-data-dir="$profile" \
    --window-size=1400,"$3" --virtual-time-budget=5000 --screenshot="$(realpath "$2")" \
    "file://$(realpath "$1")" 2>/dev/null
  echo "$2"
}
shot "$out/decision/report.html" "$docs/evaluation-report.png" 7300
shot "$out/decision/decision.html" "$docs/decision-record.png" 2600
shot "$out/validation/report.html" "$docs/validation-report.png" 2400

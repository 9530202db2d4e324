#!/usr/bin/env bash
# Install each torch release in a throwaway venv, measure how it quantizes
# (history/measure.py), save history/results/torch-RELEASE.json, and collect
# the results into qlib/data/torch_releases.json (history/collect.py).
#
# Usage: history/sweep.sh [RELEASE ...]     (default: every release below)
# A RELEASE such as 2.13.0-pypi installs torch==2.13.0 from PyPI alone,
# ignoring pip's local find-links (where a 2.13.0+cpu wheel lies on this
# machine), so that the CUDA wheel PyPI serves is measured too.
# Slow (a CUDA build of torch with its nvidia-* packages per release) and not
# part of `make test`; run by hand as `make history`. See history/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RESULTS="$HERE/results"
PYTHON="${PYTHON:-python3}"

# The latest patch of each minor with a cp311 manylinux x86_64 wheel on PyPI
# (`pip index versions torch`). 2.13.0 comes as the +cpu wheel from the local
# find-links where there is one; the pip constraint here caps torch at 2.14.1.
DEFAULT_RELEASES=(
  1.13.1 2.0.1 2.1.2 2.2.2 2.3.1 2.4.1 2.5.1 2.6.0 2.7.1
  2.8.0 2.9.1 2.10.0 2.11.0 2.12.1 2.13.0 2.13.0-pypi 2.14.1
)
if [ "$#" -gt 0 ]; then
  RELEASES=("$@")
else
  RELEASES=("${DEFAULT_RELEASES[@]}")
fi

mkdir -p "$RESULTS"
log() { echo "[sweep $(date -u +%H:%M:%S)] $*" >&2; }

# Writes {"torch": RELEASE, "error": ...} for a release that could not be measured.
write_error() {
  local release="$1" message="$2" out="$3"
  RELEASE="$release" MESSAGE="$message" "$PYTHON" -c '
import datetime, json, os
print(json.dumps({
    "torch": os.environ["RELEASE"],
    "requested": os.environ["RELEASE"],
    "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "error": os.environ["MESSAGE"],
}, indent=1))' >"$out"
}

sweep_start=$SECONDS
for release in "${RELEASES[@]}"; do
  out="$RESULTS/torch-$release.json"
  venv="$(mktemp -d /tmp/torch-history-XXXXXX)"
  log "torch $release: venv $venv ($(df -h --output=avail /tmp | tail -1 | tr -d ' ') free in /tmp)"
  "$PYTHON" -m venv "$venv"
  t0=$SECONDS
  version="${release%-pypi}"
  pip_env=()
  if [ "$version" != "$release" ]; then
    # PyPI only: no pip config file (its find-links), no find-links from the environment
    pip_env=(PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=)
  fi
  # --no-cache-dir: several GB of wheels per release must not pile up in pip's cache
  if ! env "${pip_env[@]}" "$venv/bin/python" -m pip install --quiet --no-cache-dir "torch==$version" \
    2>"$venv/pip.err"; then
    message="pip install torch==$version failed: $(grep -E 'ERROR' "$venv/pip.err" | head -3 | tr '\n' ' ')"
    log "torch $release: ${message}"
    write_error "$release" "$message" "$out"
    rm -rf "$venv"
    continue
  fi
  install_seconds=$((SECONDS - t0))
  log "torch $release: installed in ${install_seconds}s ($(du -sh "$venv" | cut -f1)); measuring"
  if HISTORY_RELEASE="$release" HISTORY_INSTALL_SECONDS="$install_seconds" \
    "$venv/bin/python" "$HERE/measure.py" >"$out.tmp" 2>"$venv/measure.err"; then
    mv "$out.tmp" "$out"
    log "torch $release: saved $out"
  else
    message="measure.py failed: $(tail -3 "$venv/measure.err" | tr '\n' ' ')"
    log "torch $release: $message"
    write_error "$release" "$message" "$out"
    rm -f "$out.tmp"
  fi
  rm -rf "$venv"
done
log "all ${#RELEASES[@]} releases done in $(((SECONDS - sweep_start) / 60)) min $(((SECONDS - sweep_start) % 60)) s"

"$PYTHON" "$HERE/collect.py"

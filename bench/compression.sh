#!/usr/bin/env bash
# The compression benchmark of docs/COMPRESSION.md ("Accuracy against bytes on Fashion-MNIST"):
# one `fedc sim` run per upload encoding (cnn, 100 clients IID, 10 per round, E=1, B=10,
# SGD lr 0.05, seed 42, float32 downloads), then `fedc plot` draws test accuracy against
# cumulative upload bytes (bench/compression.svg) and prints the Markdown table (also written
# to OUTDIR/table.md).
#
#   bench/compression.sh [-r ROUNDS] [-o OUTDIR] [-s SVG] [-e "SPEC ..."] [-p]
#
#   -r ROUNDS     rounds per run (default 30)
#   -o OUTDIR     the runs' outputs, one directory per encoding (default out/compression)
#   -s SVG        the chart (default bench/compression.svg)
#   -e "SPEC ..." space-separated upload specs (default: the table's seven)
#   -p            plot and tabulate the runs already in OUTDIR, run nothing
#
# Environment: FEDC (default build/fedc), FEDC_DATASETS (see `fedc help data`: the Debian
# package dataset-fashion-mnist, which `make demo` installs). Runs are sequential and use every
# core (~3-6 min each for 30 rounds on 2 cores); a run whose metrics.jsonl already holds ROUNDS
# records is not run again, so an interrupted benchmark resumes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FEDC=${FEDC:-$here/build/fedc}
rounds=30
out=out/compression
svg=$here/bench/compression.svg
encodings="none f16 q8 q4:b=64 q4+zstd topk:1% topk:1%+q8"
plot_only=0
while getopts "r:o:s:e:ph" opt; do
  case $opt in
  r) rounds=$OPTARG ;;
  o) out=$OPTARG ;;
  s) svg=$OPTARG ;;
  e) encodings=$OPTARG ;;
  p) plot_only=1 ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compression.sh: -r wants a round count, got '$rounds'" >&2; exit 2; }
[[ -x $FEDC ]] || { echo "compression.sh: no fedc binary at $FEDC (build first, or set FEDC)" >&2; exit 2; }

# A directory name for a spec: topk:1%+q8 -> topk-1pct+q8
dir_of() { local d=${1//%/pct}; d=${d//:/-}; d=${d//=/}; d=${d//,/_}; echo "$out/$d"; }
# How the table and legend name a spec.
label_of() {
  case $1 in
  none) echo "none (float32)" ;;
  topk*) echo "$1 (error feedback)" ;;
  *) echo "$1" ;;
  esac
}

read -r -a specs <<<"$encodings"
mkdir -p "$out"
if [[ $plot_only == 0 ]]; then
  for spec in "${specs[@]}"; do
    d=$(dir_of "$spec")
    if [[ -f $d/metrics.jsonl && $(wc -l <"$d/metrics.jsonl") -ge $rounds ]]; then
      echo "== $spec: already in $d" >&2
      continue
    fi
    echo "== $spec ($rounds rounds) -> $d" >&2
    start=$(date +%s)
    "$FEDC" sim "$here/examples/fmnist-fedavg.ini" --quiet --out "$d" \
      --set model.spec=cnn --set train.epochs=1 --set run.rounds="$rounds" \
      --set compress.upload="$spec" >/dev/null
    echo "   $(($(date +%s) - start)) s" >&2
  done
fi

args=()
for spec in "${specs[@]}"; do
  args+=("$(dir_of "$spec")/metrics.jsonl=$(label_of "$spec")")
done
title="Fashion-MNIST, cnn, 100 clients (10 per round), E=1, $rounds rounds: test accuracy against upload bytes"
at=$rounds
((rounds > 10)) && at="10,$rounds"
"$FEDC" plot --x up --y accuracy --log-x --title "$title" --width 900 --out "$svg" \
  --table --at "$at" "${args[@]}" | tee "$out/table.md"
echo "chart: $svg; table: $out/table.md" >&2

#!/usr/bin/env bash
# `fedc plot` on real run records: three tiny `fedc sim` runs (two --out directories, one saved
# --json stream with its final line) drawn on one SVG: one polyline per run with one point per
# evaluated round, labels, axis titles, log axis; the --table numbers against the records;
# clear errors for missing, garbage and inconsistent files. Also report.html's charts, drawn by
# the same code, and `fedc bench codec`.
set -u
. "$FEDC_SRC/tests/lib.sh"

cat >"$TMP/run.ini" <<'INI'
[run]
seed = 7
rounds = 4
[clients]
count = 8
per_round = 4
[data]
dataset = synthetic-iid
[model]
spec = logreg
[train]
epochs = 1
lr = 0.5
[eval]
every = 2
INI
"$FEDC" sim "$TMP/run.ini" --quiet --out "$TMP/plain" >/dev/null 2>"$TMP/e1"
check "sim 1 exits 0" test $? -eq 0
"$FEDC" sim "$TMP/run.ini" --quiet --out "$TMP/q8run" --set compress.upload=q8 >/dev/null 2>"$TMP/e2"
check "sim 2 (q8 uploads) exits 0" test $? -eq 0
"$FEDC" sim "$TMP/run.ini" --json --set eval.every=1 --set run.seed=8 >"$TMP/stream.jsonl" 2>"$TMP/e3"
check "sim 3 (--json) exits 0" test $? -eq 0

# report.html (same chart code): its six charts, the accuracy one with a line of 2 points
html=$TMP/plain/report.html
check "report.html has its charts" test "$(grep -o '<svg' "$html" | wc -l)" -ge 5
check "report.html accuracy chart has a 2-point line" \
  grep -Eq "Test accuracy</text>.*<polyline[^>]*points='[0-9.]+,[0-9.]+ [0-9.]+,[0-9.]+ '" "$html"

svg=$TMP/p.svg
"$FEDC" plot "$TMP/plain" "$TMP/q8run=8-bit uploads" "$TMP/stream.jsonl" --x up --log-x \
  --title "a <test> & title" --out "$svg" 2>"$TMP/err"
check "plot exits 0" test $? -eq 0
check "an SVG file" grep -q "^<svg xmlns='http://www.w3.org/2000/svg'" "$svg"
if command -v xmllint >/dev/null; then
  check "well-formed XML" xmllint --noout "$svg"
fi
check "one polyline per run" test "$(grep -o '<polyline' "$svg" | wc -l)" -eq 3
# points per line: rounds 2 and 4 evaluated in runs 1 and 2, every round in run 3
pts=$(grep -o "<polyline[^>]*points='[^']*'" "$svg" | sed "s/.*points='//; s/'//" |
  awk '{ printf "%d ", NF }')
check "points per line = evaluated rounds (2 2 4): got $pts" test "$pts" = "2 2 4 "
check "legend: directory name as default label" grep -q "class='legend'>plain</text>" "$svg"
check "legend: given label" grep -q "class='legend'>8-bit uploads</text>" "$svg"
check "legend: file name without .jsonl" grep -q "class='legend'>stream</text>" "$svg"
check "x axis title" grep -q "class='xlabel'>cumulative upload bytes</text>" "$svg"
check "y axis title" grep -q "class='ylabel'>central test accuracy (%)</text>" "$svg"
check "title escaped" grep -q "a &lt;test&gt; &amp; title" "$svg"
check "byte ticks" grep -Eq "class='xtick'>[0-9.]+ (kB|MB)</text>" "$svg"
# q8 uploads are smaller: its points sit left of the plain run's on the same x axis
x_of() { grep -o "<polyline[^>]*points='[^']*'" "$svg" | sed -n "${1}p" | sed "s/.*points='//" |
  awk '{ split($1, a, ","); print a[1] }'; }
check "q8 run's first point left of float32's ($(x_of 2) < $(x_of 1))" \
  awk -v a="$(x_of 2)" -v b="$(x_of 1)" 'BEGIN { exit !(a < b) }'

# --x round, --y loss, stdout
"$FEDC" plot "$TMP/plain" --y loss --out - >"$TMP/loss.svg" 2>"$TMP/err"
check "plot --out - exits 0" test $? -eq 0
check "--y loss axis title" grep -q "class='ylabel'>central test loss (cross-entropy)</text>" "$TMP/loss.svg"
check "--x round ticks are rounds" grep -q "class='xtick'>4</text>" "$TMP/loss.svg"

# --table against the records
"$FEDC" plot "$TMP/plain" "$TMP/q8run" --table --at 2 >"$TMP/table" 2>"$TMP/err"
check "plot --table exits 0" test $? -eq 0
acc2=$(grep '"round":2,' "$TMP/plain/metrics.jsonl" | grep -o '"test_accuracy":[0-9.e-]*' | cut -d: -f2)
want=$(awk -v a="$acc2" 'BEGIN { printf "%.2f%%", 100 * a }')
check "table: round-2 accuracy of run 1 is the record's ($want)" \
  grep -q "^| plain | 4 | .* | 1.0x | .* | $want |" "$TMP/table"
ratio=$(grep '^| q8run ' "$TMP/table" | awk -F'|' '{ print $5 }' | tr -d ' x')
check "table: q8 uploads fewer bytes than float32 (${ratio}x)" \
  awk -v r="$ratio" 'BEGIN { exit !(r > 1.5 && r < 4.1) }'

# errors
expect_exit 1 "$FEDC" plot "$TMP/nope" --out "$TMP/x.svg"
expect_err "cannot open .*nope/?: No such file" "$FEDC" plot "$TMP/nope" --out "$TMP/x.svg"
printf 'hello\n' >"$TMP/garbage.jsonl"
expect_err "garbage.jsonl:1: not a round record" "$FEDC" plot "$TMP/garbage.jsonl" --out "$TMP/x.svg"
printf '{"round":1,"test_accuracy":0.5}\n' >"$TMP/nobytes.jsonl"
expect_err 'nobytes.jsonl:1: round 1: "bytes_up" is missing' \
  "$FEDC" plot "$TMP/nobytes.jsonl" --x up --out "$TMP/x.svg"
cat "$TMP/plain/metrics.jsonl" "$TMP/plain/metrics.jsonl" >"$TMP/twice.jsonl"
expect_err "twice.jsonl:5: round 1: round does not follow" "$FEDC" plot "$TMP/twice.jsonl" --out "$TMP/x.svg"
: >"$TMP/empty.jsonl"
expect_err "empty.jsonl: no round records" "$FEDC" plot "$TMP/empty.jsonl" --out "$TMP/x.svg"
grep -v test_accuracy "$TMP/plain/metrics.jsonl" >"$TMP/noeval.jsonl"
expect_err 'noeval.jsonl: no round has "test_accuracy"' "$FEDC" plot "$TMP/noeval.jsonl" --out "$TMP/x.svg"
check "no SVG written on errors" test ! -e "$TMP/x.svg"
expect_exit 2 "$FEDC" plot --out "$TMP/x.svg"
expect_exit 2 "$FEDC" plot "$TMP/plain"
expect_err "--x wants round, up, bytes or time" "$FEDC" plot "$TMP/plain" --x cats --out "$TMP/x.svg"

# `fedc bench codec` (the codec speed measurement issue 9's chart goes with): one JSON line per
# encoding, sizes the encoder's, rates measured against memcpy in the same run
"$FEDC" bench codec --spec q8 --spec topk:10%+q8 --params 5000 --seconds 0.03 --json \
  >"$TMP/codec.jsonl" 2>"$TMP/err"
check "bench codec exits 0" test $? -eq 0
check "one JSON line per encoding" test "$(wc -l <"$TMP/codec.jsonl")" -eq 2
# q8, one tensor: 88-byte header + min, max + 5000 codes
check "q8 message of 5096 bytes" grep -q '"case":"codec","encoding":"q8","n":5000,"bytes":5096,' "$TMP/codec.jsonl"
check "rates and their ratio to memcpy" grep -Eq '"memcpy_gbps":[0-9.e+-]+,"encode_gbps":[0-9.e+-]+,"decode_gbps":[0-9.e+-]+,"encode_vs_memcpy":' "$TMP/codec.jsonl"
check "top-k 10% + q8 smaller than q8" awk -F'"bytes":' 'NR == 2 { split($2, a, ","); exit !(a[1] < 5096) }' "$TMP/codec.jsonl"
expect_exit 1 "$FEDC" bench codec --spec q9 --params 100 --seconds 0.01
expect_err "codec q9: .*unknown stage" "$FEDC" bench codec --spec q9 --params 100 --seconds 0.01
finish

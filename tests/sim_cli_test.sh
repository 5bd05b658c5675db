#!/usr/bin/env bash
# `fedc sim` as a user runs it: JSON lines, output files, the model hash shared with
# `fedc inspect`, thread-count independence, and clear errors for bad configs.
set -u
. "$FEDC_SRC/tests/lib.sh"

cat > "$TMP/run.ini" <<'INI'
[run]
seed = 3
rounds = 4
[clients]
count = 12
per_round = 4
[data]
dataset = synthetic-iid
partition = dirichlet
alpha = 1.0
[model]
spec = logreg
[train]
epochs = 1
lr = 1.0
[strategy]
name = fedavg
[eval]
every = 2
INI

"$FEDC" sim "$TMP/run.ini" --json --threads 1 --out "$TMP/out1" >"$TMP/j1" 2>"$TMP/e1"
check "sim exits 0" test $? -eq 0
check "one JSON line per round plus a final line" test "$(wc -l <"$TMP/j1")" -eq 5
check "round lines carry round and seconds" grep -q '"round":1,.*"seconds":' "$TMP/j1"
check "evaluated rounds carry test_accuracy" grep -q '"round":2,.*"test_accuracy":' "$TMP/j1"
check "rounds not due for evaluation do not" bash -c "! grep -q '\"round\":1,.*test_accuracy' '$TMP/j1'"
check "final line" grep -q '"final":true,.*"model_sha256":"[0-9a-f]\{64\}"' "$TMP/j1"
check "human text went to stderr" grep -q "model_sha256" "$TMP/e1"
for f in metrics.jsonl metrics.csv model.safetensors report.html; do
  check "out dir has $f" test -s "$TMP/out1/$f"
done
check "metrics.csv has a header and 4 rows" test "$(wc -l <"$TMP/out1/metrics.csv")" -eq 5
check "report is self-contained (no http)" bash -c "! grep -q 'http' '$TMP/out1/report.html'"
check "report has plots" grep -q '<svg' "$TMP/out1/report.html"

sha1=$(grep -o '"model_sha256":"[0-9a-f]*"' "$TMP/j1" | cut -d'"' -f4)
"$FEDC" sim "$TMP/run.ini" --json --threads 2 >"$TMP/j2" 2>/dev/null
sha2=$(grep -o '"model_sha256":"[0-9a-f]*"' "$TMP/j2" | cut -d'"' -f4)
check "same model with 1 and 2 threads ($sha1)" test "$sha1" = "$sha2"
"$FEDC" sim "$TMP/run.ini" --json --set run.seed=4 >"$TMP/j3" 2>/dev/null
sha3=$(grep -o '"model_sha256":"[0-9a-f]*"' "$TMP/j3" | cut -d'"' -f4)
check "another seed, another model" test "$sha1" != "$sha3"
"$FEDC" inspect "$TMP/out1/model.safetensors" --json >"$TMP/insp" 2>&1
check "fedc inspect prints the same model_sha256" grep -q "$sha1" "$TMP/insp"

# bad configs: exit 1 with a message naming the problem
expect_exit 2 "$FEDC" sim
expect_exit 2 "$FEDC" sim "$TMP/run.ini" --bogus
expect_exit 1 "$FEDC" sim "$TMP/missing.ini"
expect_err "missing.ini: cannot open" "$FEDC" sim "$TMP/missing.ini"
expect_err "unknown key 'bogus'" "$FEDC" sim "$TMP/run.ini" --set train.bogus=1
expect_err "clients.per_round = 20 is more than clients.count = 12" "$FEDC" sim "$TMP/run.ini" --set clients.per_round=20
expect_err "fedbogus" "$FEDC" sim "$TMP/run.ini" --set strategy.name=fedbogus
expect_err "data.dataset = nosuch" "$FEDC" sim "$TMP/run.ini" --set data.dataset=nosuch
printf '[run]\nrounds = many\n' >"$TMP/bad.ini"
expect_err "bad.ini:2: \[run\] rounds: 'many' is not an integer" "$FEDC" sim "$TMP/bad.ini"
finish

#!/usr/bin/env bash
# Empty clients (data.min_size = 0): a Dirichlet split with small alpha over many clients leaves
# some clients without samples. `fedc sim` selects them like any other client (the sampling
# rate, and so any DP accounting, is over all clients); they report 0 examples and the engine
# skips them cleanly: neither participants nor rejected, no warning, the round goes on.
set -u
. "$FEDC_SRC/tests/lib.sh"

SPEC='synthetic:1,1?users=30'
"$FEDC" data partition "$SPEC" --clients 300 --scheme dirichlet --alpha 0.05 --min-size 0 \
  --seed 5 --json >"$TMP/part.json" 2>"$TMP/part.err"
check "partition with min_size 0 succeeds" test $? -eq 0
# per client: "train":N,"test":M
grep -o '"train":[0-9]*,"test":[0-9]*' "$TMP/part.json" | tr -c '0-9\n' ' ' >"$TMP/sizes"
check "300 clients listed" test "$(wc -l <"$TMP/sizes")" -eq 300
empty=$(awk '$1 + $2 == 0' "$TMP/sizes" | wc -l)
nonempty=$(awk '$1 > 0' "$TMP/sizes" | wc -l)
examples=$(awk '{ s += $1 } END { print s }' "$TMP/sizes")
check "the split has empty clients ($empty)" test "$empty" -gt 10
check "every non-empty client has training samples" test $((empty + nonempty)) -eq 300
expect_err "fewer than 1 training samples \(min_size" "$FEDC" data partition "$SPEC" \
  --clients 300 --scheme dirichlet --alpha 0.05 --min-size 1 --max-attempts 2 --seed 5

cat >"$TMP/run.ini" <<INI
[run]
seed = 5
rounds = 2
[clients]
count = 300
per_round = 300
min = 1
[data]
dataset = $SPEC
partition = dirichlet
alpha = 0.05
min_size = 0
[model]
spec = logreg
[train]
epochs = 1
lr = 0.1
[eval]
every = 1
INI
# every client selected every round: the empty ones are among them
"$FEDC" sim "$TMP/run.ini" --json --threads 2 >"$TMP/j" 2>"$TMP/e"
check "sim with empty clients exits 0" test $? -eq 0
check "two round records" test "$(grep -c '"round":' "$TMP/j")" -eq 2
field() { grep -o "\"$1\":[0-9.e+-]*" <<<"$2" | head -1 | cut -d: -f2; }
for r in 1 2; do
  line=$(grep "\"round\":$r," "$TMP/j")
  check "round $r: 300 selected" test "$(field selected "$line")" -eq 300
  check "round $r: participants = the $nonempty non-empty clients" \
    test "$(field participants "$line")" -eq "$nonempty"
  check "round $r: nothing rejected" test "$(field rejected "$line")" -eq 0
  check "round $r: examples = their $examples training samples" \
    test "$(field examples "$line")" -eq "$examples"
  check "round $r: a test accuracy" grep -Eq '"test_accuracy":0\.[0-9]*[1-9]' <<<"$line"
done
check "no client failure or refusal logged" bash -c "! grep -Eiq 'failed|refused' '$TMP/e'"
finish

#!/usr/bin/env bash
# `mpirun -np R fedc sim` (docs/SCALING.md): the same model_sha256 and the same per-round
# metrics as the single-process run with 1 and 2 threads, for a linear strategy (fedavg), a
# server optimizer (fedadam), robust ones (krum, fedmedian) and scaffold; the same with
# differential privacy (central with adaptive clipping, local, DP-SGD: same model and epsilon,
# the budget stop on the same round) and with compression (error feedback, scaffold, krum);
# rank 0 alone writes the outputs; a failure on one rank, ranks given different configs,
# SecAgg (refused) and a rank that dies end the run with a clear error. Without MPI in the build: `fedc sim --mpi` says how to install it,
# and the rest is skipped.
set -u
. "$FEDC_SRC/tests/lib.sh"

cat > "$TMP/run.ini" <<'INI'
[run]
seed = 5
rounds = 3
[clients]
count = 16
per_round = 7
[data]
dataset = synthetic-iid
partition = dirichlet
alpha = 0.5
[model]
spec = logreg
[train]
epochs = 1
lr = 0.5
[strategy]
name = fedavg
[eval]
every = 2
fraction = 0.5
INI

if ! have_mpi; then
  expect_exit 1 "$FEDC" sim "$TMP/run.ini" --mpi --quiet
  expect_err "apt-get install libopenmpi-dev openmpi-bin" "$FEDC" sim "$TMP/run.ini" --mpi
  expect_err "built without MPI" env OMPI_COMM_WORLD_SIZE=2 "$FEDC" sim "$TMP/run.ini" --quiet
  echo "skip: this fedc has no MPI backend (install libopenmpi-dev openmpi-bin and rebuild)"
  finish
  exit
fi
if ! command -v mpirun >/dev/null; then
  echo "skip: fedc has MPI but mpirun is not on PATH"
  finish
  exit
fi

use_mpirun

sha() { grep -o '"model_sha256":"[0-9a-f]*"' "$1" | cut -d'"' -f4; }
# The per-round records without the timings (which differ from run to run).
rounds() { grep '"round":' "$1" | sed -E 's/"(seconds|fit_seconds)":[^,}]*,?//g'; }

for s in fedavg fedadam krum fedmedian scaffold; do
  set_s=(--set "strategy.name=$s")
  "$FEDC" sim "$TMP/run.ini" "${set_s[@]}" --json --threads 1 >"$TMP/$s.1" 2>"$TMP/err"
  "$FEDC" sim "$TMP/run.ini" "${set_s[@]}" --json --threads 2 >"$TMP/$s.2" 2>>"$TMP/err"
  "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${set_s[@]}" --json --threads 1 \
    >"$TMP/$s.m" 2>"$TMP/$s.merr"
  check "$s: mpirun -np 2 exits 0" test $? -eq 0
  a=$(sha "$TMP/$s.1"); b=$(sha "$TMP/$s.2"); m=$(sha "$TMP/$s.m")
  check "$s: a model hash ($a)" test ${#a} -eq 64
  check "$s: same model with 1 thread, 2 threads and 2 ranks" test "$a" = "$b" -a "$a" = "$m"
  check "$s: same per-round metrics (losses, accuracies, counts) on 2 ranks" \
    test "$(rounds "$TMP/$s.1" | wc -l)" -eq 3 -a "$(rounds "$TMP/$s.1")" = "$(rounds "$TMP/$s.m")"
  check "$s: one JSON line per round plus the final one, from rank 0 only" \
    test "$(wc -l <"$TMP/$s.m")" -eq 4
done
# DP and compression: the same model, epsilon and per-round records (bytes as encoded) on 2 ranks
# as in one process with 2 threads. Seeded test noise makes the DP runs reproducible; rank 0
# draws the central noise once and broadcasts it.
DPC=(--set dp.mode=central --set dp.seeded_noise=true --set dp.noise_multiplier=0.5
     --set dp.clip=1 --set dp.delta=0.01)
cases=(
  "dp-central-fedadam|${DPC[*]} --set dp.clip_on=server --set strategy.name=fedadam"
  "dp-local-fedmedian|--set dp.mode=local --set dp.seeded_noise=true --set dp.noise_multiplier=0.5 --set dp.clip=1 --set dp.delta=0.01 --set strategy.name=fedmedian"
  "dp-sgd-central|${DPC[*]} --set dp.sgd=true"
  "dp-budget-stop|${DPC[*]} --set dp.adaptive_clip=true --set run.rounds=6 --set dp.epsilon_budget=12"
  "compress-ef|--set compress.upload=topk:0.1 --set compress.error_feedback=on --set compress.download=fp16"
  "compress-scaffold|--set compress.upload=qsgd:s=4 --set compress.error_feedback=on --set strategy.name=scaffold"
  "compress-krum|--set compress.upload=topk:0.2 --set compress.error_feedback=on --set strategy.name=krum"
)
strip() { sed -E 's/"(seconds|fit_seconds|train_seconds|wait_seconds|comm_seconds|server_seconds|eval_seconds|imbalance)":[^,}]*,?//g; s/"ranks":2,"threads":1,//' "$1"; }
for c in "${cases[@]}"; do
  name=${c%%|*}
  read -r -a args <<<"${c#*|}"
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --threads 2 >"$TMP/$name.1" 2>"$TMP/err"
  "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --threads 1 \
    >"$TMP/$name.m" 2>"$TMP/$name.merr"
  check "$name: mpirun -np 2 exits 0" test $? -eq 0
  a=$(sha "$TMP/$name.1"); m=$(sha "$TMP/$name.m")
  check "$name: a model hash ($a)" test ${#a} -eq 64
  check "$name: the same model on 2 ranks" test "$a" = "$m"
  check "$name: the same records (epsilon, clip, bytes) and final line on 2 ranks" \
    test "$(strip "$TMP/$name.1")" = "$(strip "$TMP/$name.m")"
done
check "DP: records carry epsilon" grep -q '"epsilon":' "$TMP/dp-budget-stop.m"
check "DP: adaptive clipping moved the clip" \
  test "$(grep -o '"dp_clip":[0-9.e-]*' "$TMP/dp-budget-stop.m" | sort -u | wc -l)" -gt 1
check "DP-SGD: example-level epsilon" grep -q '"dp_sgd_epsilon":' "$TMP/dp-sgd-central.m"
check "DP budget: stopped after round 4 of 6 on 2 ranks" \
  grep -q '"final":true,"rounds":4,.*"dp_budget_stop":true' "$TMP/dp-budget-stop.m"
check "compression: bytes_up as encoded, below raw" \
  grep -q '"bytes_up":[0-9]*,"bytes_down":[0-9]*,"bytes_up_raw":17080' "$TMP/compress-ef.m"

check "federated evaluation ran (and matched)" grep -q '"fed_accuracy"' "$TMP/fedavg.m"
check "final line reports ranks and communication time" \
  grep -q '"ranks":2,"threads":1,"train_seconds":.*"comm_seconds":' "$TMP/fedavg.m"

# 3 ranks and 2 threads each, with outputs: only rank 0 writes; fedc inspect agrees.
"${MPIRUN[@]}" -np 3 "$FEDC" sim "$TMP/run.ini" --threads 2 --out "$TMP/out3" >"$TMP/h3" 2>&1
check "mpirun -np 3 exits 0" test $? -eq 0
check "3 ranks: same model" grep -q "model_sha256: $(sha "$TMP/fedavg.1")" "$TMP/h3"
check "3 ranks: one summary (rank 0 prints, the others are silent)" \
  test "$(grep -c '^model_sha256:' "$TMP/h3")" -eq 1
check "3 ranks: the summary gives the time split" grep -q "^MPI: 3 ranks x 2 threads" "$TMP/h3"
check "3 ranks: metrics.csv has a header and 3 rows" test "$(wc -l <"$TMP/out3/metrics.csv")" -eq 4
"$FEDC" inspect "$TMP/out3/model.safetensors" --json >"$TMP/insp" 2>&1
check "3 ranks: the written model has the same hash" grep -q "$(sha "$TMP/fedavg.1")" "$TMP/insp"

# Failures: on one rank only (MPMD launch: rank 1 gets another --set), different configs,
# SecAgg (not supported under MPI). Rank 0 names the rank and the reason; exit 1.
"${MPIRUN[@]}" -np 1 "$FEDC" sim "$TMP/run.ini" -q : -np 1 "$FEDC" sim "$TMP/run.ini" -q \
  --set data.dataset=csv:"$TMP/missing.csv" >"$TMP/o" 2>"$TMP/e"
check "rank 1 without its data: exit non-zero" test $? -ne 0
check "rank 1 without its data: rank 0 says which rank and why" \
  grep -q "fedc sim: rank 1: data.dataset = csv:.*missing.csv" "$TMP/e"
"${MPIRUN[@]}" -np 1 "$FEDC" sim "$TMP/run.ini" -q : -np 1 "$FEDC" sim "$TMP/run.ini" -q \
  --set train.lr=0.25 >"$TMP/o" 2>"$TMP/e"
check "different configs: exit non-zero" test $? -ne 0
check "different configs: refused before training" \
  grep -q "ranks do not run the same federation: their configurations differ" "$TMP/e"
check "different configs: said once" test "$(grep -c 'same federation' "$TMP/e")" -eq 1
"${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" -q --set secagg.enabled=true >"$TMP/o" 2>"$TMP/e"
check "SecAgg under MPI: exit non-zero" test $? -ne 0
check "SecAgg under MPI: a clear refusal saying why" \
  grep -q "secure aggregation (secagg.enabled) does not run under MPI: its protocol needs" "$TMP/e"

# A rank that dies mid-run: mpirun ends the run, names the rank, and rank 0 says why it stops.
"${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" -q --set run.rounds=1000000 \
  --set eval.every=0 --set eval.fraction=0 >"$TMP/o" 2>"$TMP/e" &
launcher=$!
victim=""
for _ in $(seq 100); do # up to 10 s for the ranks to start
  for p in $(pgrep -P "$launcher" 2>/dev/null); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then
      victim=$p
    fi
  done
  [[ -n $victim ]] && break
  sleep 0.1
done
check "found rank 1's process" test -n "$victim"
sleep 1
[[ -n $victim ]] && kill -9 "$victim"
wait "$launcher"
rc=$?
check "a dead rank ends the run with a failure (exit $rc)" test "$rc" -ne 0
check "mpirun names the dead rank" grep -q "rank 1 .*exited on signal 9" "$TMP/e"
check "rank 0 says why it stopped" grep -q "rank 0 stopped by a signal" "$TMP/e"
finish

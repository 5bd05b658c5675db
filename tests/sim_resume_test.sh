#!/usr/bin/env bash
# `fedc sim --checkpoint DIR` and `--resume` (docs/SCALING.md "Checkpoint and resume"): a run
# stopped after round 3 (--stop-after) or killed with SIGKILL, then resumed, ends with the model
# of the uninterrupted run, bit for bit, and its outputs hold every round's metrics, equal to
# the uninterrupted run's; for fedavg, fedadam, scaffold (client control variates in the
# sidecar), central DP with adaptive clipping (epsilon continues), and compression with error
# feedback (residuals in the sidecar). Under mpirun -np 2 (when built with MPI): the same, and a
# checkpoint written by one process resumes on 2 ranks and the other way round, and a job whose
# rank 1 was killed resumes to the same model. Refusals: --resume
# without a directory, a directory holding another run's checkpoints without --resume, a
# damaged checkpoint, another configuration.
set -u
. "$FEDC_SRC/tests/lib.sh"

cat > "$TMP/run.ini" <<'INI'
[run]
seed = 11
rounds = 6
[clients]
count = 16
per_round = 6
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

# metrics.jsonl without the timings
metrics() { sed -E 's/"(seconds|fit_seconds)":[^,}]*,?//g' "$1"; }

DPC="--set dp.mode=central --set dp.seeded_noise=true --set dp.noise_multiplier=0.5 --set dp.clip=1 --set dp.delta=0.01 --set dp.adaptive_clip=true"
cases=(
  "fedavg|"
  "fedadam|--set strategy.name=fedadam"
  "scaffold|--set strategy.name=scaffold"
  "dp|$DPC --set strategy.name=fedavgm"
  "compress|--set compress.upload=topk:0.2 --set compress.error_feedback=on --set compress.download=fp16"
)

for c in "${cases[@]}"; do
  name=${c%%|*}
  read -r -a args <<<"${c#*|}"
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --out "$TMP/$name.full" >"$TMP/$name.a" 2>"$TMP/err"
  check "$name: uninterrupted run exits 0" test $? -eq 0
  a=$(sha_of "$TMP/$name.a")
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --checkpoint "$TMP/$name.ck" --stop-after 3 \
    --out "$TMP/$name.out1" >"$TMP/$name.b" 2>"$TMP/err"
  check "$name: --stop-after 3 exits 0" test $? -eq 0
  check "$name: stopped after round 3" grep -q '"final":true,"rounds":3,' "$TMP/$name.b"
  check "$name: checkpoint of round 3 is complete" test -s "$TMP/$name.ck/round-00000003/MANIFEST" \
    -a -s "$TMP/$name.ck/round-00000003/engine.safetensors"
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --checkpoint "$TMP/$name.ck" --resume \
    --out "$TMP/$name.out2" >"$TMP/$name.c" 2>"$TMP/err"
  check "$name: --resume exits 0" test $? -eq 0
  check "$name: resumed run printed rounds 4 to 6 only" \
    test "$(grep -c '"round":' "$TMP/$name.c")" -eq 3 -a "$(grep -c '"round":4,' "$TMP/$name.c")" -eq 1
  r=$(sha_of "$TMP/$name.c")
  check "$name: resumed model = uninterrupted model ($a)" test ${#a} -eq 64 -a "$a" = "$r"
  check "$name: resumed outputs hold all 6 rounds, equal to the uninterrupted run's" \
    test "$(metrics "$TMP/$name.out2/metrics.jsonl")" = "$(metrics "$TMP/$name.full/metrics.jsonl")" \
    -a "$(wc -l <"$TMP/$name.out2/metrics.jsonl")" -eq 6
  check "$name: metrics.csv has a header and 6 rows" test "$(wc -l <"$TMP/$name.out2/metrics.csv")" -eq 7
  check "$name: report.html written" test -s "$TMP/$name.out2/report.html"
  check "$name: 2 checkpoints kept (rounds 5 and 6)" \
    test "$(ls "$TMP/$name.ck" | grep -c '^round-')" -eq 2 -a -d "$TMP/$name.ck/round-00000006"
done
check "scaffold: the clients' control variates are in the sidecar" \
  test -s "$TMP/scaffold.ck/round-00000006/clients.safetensors"
check "compression: the error-feedback residuals are in the sidecar" \
  test -s "$TMP/compress.ck/round-00000006/clients.safetensors"
check "fedavg: no sidecar without client state" test ! -e "$TMP/fedavg.ck/round-00000006/clients.safetensors"
check "dp: epsilon continues across the resume" \
  test "$(grep -o '"epsilon":[0-9.e+-]*' "$TMP/dp.c" | tail -1)" = \
       "$(grep -o '"epsilon":[0-9.e+-]*' "$TMP/dp.a" | tail -1)"
"$FEDC" inspect "$TMP/fedavg.ck/round-00000006/engine.safetensors" --json >"$TMP/insp" 2>&1
check "a checkpoint is a safetensors file fedc inspect reads" test $? -eq 0

# SIGKILL mid-run (a checkpoint every 2 rounds), then --resume: the uninterrupted model.
# (every checkpoint kept, so that the one the test waits for is not pruned before it looks)
long=(--set run.rounds=150 --set eval.every=0 --set eval.fraction=0 --set strategy.name=scaffold
      --set run.checkpoint_every=2 --set run.keep_checkpoints=0)
"$FEDC" sim "$TMP/run.ini" "${long[@]}" --json >"$TMP/long.a" 2>"$TMP/err"
"$FEDC" sim "$TMP/run.ini" "${long[@]}" --json --checkpoint "$TMP/kill.ck" >"$TMP/long.b" 2>"$TMP/err" &
pid=$!
for _ in $(seq 500); do [[ -d $TMP/kill.ck/round-00000010 ]] && break; sleep 0.02; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
killed=$(ls "$TMP/kill.ck" | grep '^round-[0-9]*$' | tail -1)
check "killed mid-run: a checkpoint remains ($killed)" test -n "$killed"
check "killed mid-run: before the end" test "${killed:-round-00000150}" != round-00000150
# (checkpoint options may change on resume: fewer checkpoints, a faster test)
"$FEDC" sim "$TMP/run.ini" "${long[@]}" --json --checkpoint "$TMP/kill.ck" --resume \
  --set run.checkpoint_every=1000 >"$TMP/long.c" 2>"$TMP/err"
check "killed run: --resume exits 0" test $? -eq 0
check "killed run: resumed model = uninterrupted model" test "$(sha_of "$TMP/long.a")" = "$(sha_of "$TMP/long.c")"

# Refusals
expect_exit 1 "$FEDC" sim "$TMP/run.ini" --resume -q
expect_err "--resume needs the checkpoint directory" "$FEDC" sim "$TMP/run.ini" --resume -q
expect_err "holds checkpoints of a run .the newest after round 6.: add --resume" \
  "$FEDC" sim "$TMP/run.ini" --checkpoint "$TMP/fedavg.ck" -q
"$FEDC" sim "$TMP/run.ini" --checkpoint "$TMP/empty.ck" --resume -q --json >"$TMP/o" 2>"$TMP/err"
check "--resume with no checkpoint yet starts at round 1" test "$(sha_of "$TMP/o")" = "$(sha_of "$TMP/fedavg.a")"
cp -r "$TMP/fedavg.ck" "$TMP/bad.ck"
head -c 100 "$TMP/fedavg.ck/round-00000006/engine.safetensors" >"$TMP/bad.ck/round-00000006/engine.safetensors"
"$FEDC" sim "$TMP/run.ini" --checkpoint "$TMP/bad.ck" --resume -q >"$TMP/o" 2>"$TMP/err"
check "damaged checkpoint: exit 1" test $? -eq 1
check "damaged checkpoint: the message names the file" grep -q "round-00000006/engine.safetensors" "$TMP/err"
"$FEDC" sim "$TMP/run.ini" --checkpoint "$TMP/scaffold.ck" --resume -q --set run.rounds=8 >"$TMP/o" 2>"$TMP/err"
check "another configuration (fedavg on scaffold's checkpoint): refused" test $? -eq 1
check "another configuration: a clear message" grep -qi "config\|scaffold" "$TMP/err"

# MPI: the same on 2 ranks, and across process counts.
if have_mpi && command -v mpirun >/dev/null; then
  use_mpirun
  args_of() { for c in "${cases[@]}"; do [[ ${c%%|*} == "$1" ]] && read -r -a args <<<"${c#*|}"; done; }
  for name in scaffold dp; do
    args_of "$name"
    "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --threads 1 \
      --checkpoint "$TMP/$name.mck" --stop-after 3 >"$TMP/$name.mb" 2>"$TMP/err"
    check "$name: mpirun -np 2 --stop-after 3 exits 0" test $? -eq 0
    "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --threads 1 \
      --checkpoint "$TMP/$name.mck" --resume --out "$TMP/$name.mout" >"$TMP/$name.mc" 2>"$TMP/err"
    check "$name: mpirun -np 2 --resume exits 0" test $? -eq 0
    check "$name: 2 ranks, resumed = uninterrupted single process" \
      test "$(sha_of "$TMP/$name.mc")" = "$(sha_of "$TMP/$name.a")"
    check "$name: 2 ranks, resumed outputs hold all 6 rounds" \
      test "$(metrics "$TMP/$name.mout/metrics.jsonl")" = "$(metrics "$TMP/$name.full/metrics.jsonl")"
  done
  # One process checkpoints, 2 ranks resume (each keeps its home clients' residuals) and
  # checkpoint (the residuals gathered to rank 0), one process finishes.
  args_of compress
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" -q --checkpoint "$TMP/x.ck" --stop-after 2 2>"$TMP/err"
  "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --threads 1 \
    --checkpoint "$TMP/x.ck" --resume --stop-after 4 >"$TMP/o" 2>"$TMP/err"
  check "compress: 2 ranks continued the single process's checkpoint to round 4" \
    grep -q '"final":true,"rounds":4,' "$TMP/o"
  "$FEDC" sim "$TMP/run.ini" "${args[@]}" --json --checkpoint "$TMP/x.ck" --resume >"$TMP/o" 2>"$TMP/err"
  check "compress: 1 process -> 2 ranks -> 1 process, resumed = uninterrupted" \
    test "$(sha_of "$TMP/o")" = "$(sha_of "$TMP/compress.a")"
  # Rank 1 killed mid-run (mpirun ends the job), then the job restarted with --resume.
  "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${long[@]}" -q --threads 1 \
    --checkpoint "$TMP/mkill.ck" >"$TMP/o" 2>"$TMP/e" &
  launcher=$!
  for _ in $(seq 750); do [[ -d $TMP/mkill.ck/round-00000010 ]] && break; sleep 0.02; done
  for p in $(pgrep -P "$launcher" 2>/dev/null); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && kill -9 "$p"
  done
  wait "$launcher"
  check "rank 1 killed: the job fails" test $? -ne 0
  check "rank 1 killed: mpirun names it" grep -q "rank 1 .*exited on signal 9" "$TMP/e"
  "${MPIRUN[@]}" -np 2 "$FEDC" sim "$TMP/run.ini" "${long[@]}" --json --threads 1 \
    --checkpoint "$TMP/mkill.ck" --resume --set run.checkpoint_every=1000 >"$TMP/o" 2>"$TMP/e"
  check "rank 1 killed: the restarted job resumes to the uninterrupted model" \
    test "$(sha_of "$TMP/o")" = "$(sha_of "$TMP/long.a")"
else
  echo "skip: MPI parts (this fedc has no MPI backend or mpirun is missing)"
fi
finish

#!/usr/bin/env bash
# Crash recovery (issue 6): the server is killed with SIGKILL in the middle of a round,
# restarted on the same state directory, and the run finishes with every committed round
# intact and the same final model as `fedc sim` (an uninterrupted run). Then SIGKILL at random
# moments, several times in a row (checkpoint writes and commits included): the store stays
# readable, its rounds are always a prefix of the uninterrupted run's, and the run finishes
# with the same model. A finished run restarts idempotently; another config is refused.
# With a stateful server optimizer (fedadam) the checkpoints hold the engine's state too, and
# the resumed run's final model is still the uninterrupted run's, bit for bit.
set -u
. "$FEDC_SRC/tests/lib.sh"

trap fed_cleanup EXIT
expect_absent() { [[ -s "$2" ]] && ! grep -q -- "$1" "$2"; }  # PATTERN FILE: non-empty, no match
# round_shas FILE: "round sha" per committed round line
round_shas() { grep -o '"round":[0-9]*,.*"model_sha256":"[0-9a-f]*"' "$1" |
               sed -E 's/^"round":([0-9]+),.*"model_sha256":"([0-9a-f]+)"$/\1 \2/'; }

cd "$TMP"
cat >run.ini <<'INI'
[run]
seed = 11
rounds = 6
[clients]
count = 5
per_round = 5
min = 5
[data]
dataset = synthetic-iid
partition = iid
[model]
spec = logreg
[train]
epochs = 1
lr = 0.5
[eval]
every = 3
[round]
deadline = 120
[client]
retry_initial = 0.05
retry_max = 0.25
INI
allow_list 5 allow.txt

# The uninterrupted run's model after every round, from fedc sim.
for k in 1 2 3 4 5 6 7 8 9 10 11 12; do
  "$FEDC" sim run.ini --json --threads 1 --set run.rounds=$k >sim.out 2>/dev/null
  echo "$k $(sha_of sim.out)"
done >sim_rounds.txt
SIM6=$(awk '$1 == 6 {print $2}' sim_rounds.txt)
SIM12=$(awk '$1 == 12 {print $2}' sim_rounds.txt)
check "fedc sim gives the reference models" test -n "$SIM6" -a -n "$SIM12"

crash_client() {  # crash_client I TAG [OPTIONS]: client I against $URL (cTAG_I.out); sets CL[I]
  local i=$1 tag=$2; shift 2
  start_client "c${tag}_$i" "k$i.key" run.ini --json "$@"
  CL[$i]=$CLIENT
}

# ---- 1. SIGKILL mid-round, restart, finish ----
# Clients 3 and 4 leave after 2 tasks (--tasks 2): round 3 then waits for them (clients.min =
# 5), with the results of clients 0-2 in: the server is killed in the middle of it.
start_server s1 run.ini st --allow-file allow.txt
PORT=$(port_of s1.out)
CL=()
for i in 0 1 2; do crash_client $i a; done
for i in 3 4; do crash_client $i a --tasks 2; done
wait_exit "${CL[3]}" 60
wait_exit "${CL[4]}" 60
check "two clients leave after 2 tasks (exit $EXIT_CODE)" test "$EXIT_CODE" -eq 0
wait_for s1.out '"round":2,' 30
sleep 0.5
R=$(grep -c '"round":' s1.out)
check "the server is in the middle of round 3 (committed $R of 6 rounds)" test "$R" -eq 2
kill9 "$SRV"
round_shas s1.out >before.txt
"$FEDC" server rounds --state st --json >r1.out 2>&1
check "after SIGKILL the store is readable" test $? -eq 0
round_shas r1.out >stored.txt
check "the store holds exactly the $R committed rounds" test "$(wc -l <stored.txt)" -eq "$R"
check "... with the models the server reported" diff -q before.txt stored.txt
check "... which are the uninterrupted run's" diff -q stored.txt <(head -"$R" sim_rounds.txt)
CK=$(printf 'st/checkpoints/round-%08d.safetensors' "$R")
"$FEDC" inspect "$CK" --json >ck.out 2>&1
check "the last checkpoint verifies against its model_sha256" \
  grep -q "$(awk -v r="$R" '$1 == r {print $2}' sim_rounds.txt)" ck.out

LISTEN="127.0.0.1:$PORT" start_server s2 run.ini st
check "restarted on the same port and directory, it resumes after round $R" \
  grep -q "\"resumed_round\":$R" s2.out
for i in 3 4; do crash_client $i b; done
wait_exit "$SRV" 60
check "the resumed run finishes: exit 0 (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "final model == the uninterrupted run's ($SIM6)" same "$(sha_of s2.out)" "$SIM6"
"$FEDC" server rounds --state st --json >r2.out 2>&1
round_shas r2.out >all.txt
check "every committed round's model is the uninterrupted run's" \
  diff -q all.txt <(head -6 sim_rounds.txt)
ok=1
for i in 0 1 2 3 4; do
  wait_exit "${CL[$i]}" 20; [[ $EXIT_CODE == 0 ]] || ok=0
done
for i in 0 1 2; do [[ "$(sha_of "ca_$i.out")" == "$SIM6" ]] || ok=0; done
check "clients 0-2 rode through the restart with the same keys and finished" test $ok = 1

"$FEDC" server run.ini --listen 127.0.0.1:0 --state st --json --set server.linger=0 >s3.out 2>s3.err &
SRV=$!; PIDS+=("$SRV")
wait_exit "$SRV" 20
check "restarting a finished run exits 0 at once (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "... with its model" same "$(sha_of s3.out)" "$SIM6"
expect_exit 1 "$FEDC" server run.ini --listen 127.0.0.1:0 --state st --set run.seed=12
expect_err "different configuration" "$FEDC" server run.ini --listen 127.0.0.1:0 --state st --set run.seed=12

# ---- 1b. the same with a stateful server optimizer (fedadam): the checkpoints are engine
# checkpoints (model + the server moments m, v), so the resumed run is exact ----
{ cat run.ini; printf '[strategy]\nname = fedadam\neta = 0.05\n'; } >adam.ini
"$FEDC" sim adam.ini --json --threads 1 >simA.out 2>/dev/null
SIMA=$(sha_of simA.out)
check "fedadam's uninterrupted model differs from fedavg's" test -n "$SIMA" -a "$SIMA" != "$SIM6"
start_server a1 adam.ini sta --allow-file allow.txt
PORT=$(port_of a1.out)
CL=()
for i in 0 1 2; do crash_client $i A; done
for i in 3 4; do crash_client $i A --tasks 2; done
wait_for a1.out '"round":2,' 60
sleep 0.5
check "fedadam: killed in the middle of round 3" test "$(grep -c '"round":' a1.out)" -eq 2
kill9 "$SRV"
"$FEDC" inspect sta/checkpoints/round-00000002.safetensors >ckA.txt 2>&1
check "fedc inspect shows the checkpoint's state tensors" grep -q '__fedc__.strategy.v .*(state)' ckA.txt
check "... and its model_sha256 over the model alone" grep -q 'matches metadata' ckA.txt
LISTEN="127.0.0.1:$PORT" start_server a2 adam.ini sta
check "fedadam: resumed after round 2" grep -q '"resumed_round":2' a2.out
for i in 3 4; do crash_client $i B; done
wait_exit "$SRV" 60
check "fedadam: the resumed run finishes (exit $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "fedadam: final model == the uninterrupted run's ($SIMA)" same "$(sha_of a2.out)" "$SIMA"
check "... with no warning about lost server state" expect_absent 'not bit-identical' a2.err
"$FEDC" inspect sta/model.safetensors --json >mA.out 2>&1
check "the final model.safetensors holds the model alone" expect_absent '__fedc__' mA.out
for i in 0 1 2 3 4; do wait_exit "${CL[$i]}" 20; done

# ---- 2. SIGKILL at random moments, five times, then let it finish ----
rm -rf st
PORT=""
ok=1
for n in 1 2 3 4 5 6; do
  LISTEN="127.0.0.1:${PORT:-0}" start_server "k$n" run.ini st --allow-file allow.txt \
    --set run.rounds=12 || ok=0
  if [[ -z "$PORT" ]]; then
    PORT=$(port_of "k$n.out")
    for i in 0 1 2 3 4; do crash_client $i c; done
  fi
  [[ $n == 6 ]] && break
  sleep "0.$(( (RANDOM % 4) + 1 ))$(( RANDOM % 10 ))"
  kill9 "$SRV"
  "$FEDC" server rounds --state st --json >kr.out 2>&1 || ok=0
  round_shas kr.out >kr.txt
  diff -q kr.txt <(head -"$(wc -l <kr.txt)" sim_rounds.txt) >/dev/null || ok=0
done
check "after each of 5 random SIGKILLs the store is intact and a prefix of the run" test $ok = 1
wait_exit "$SRV" 60
check "after them the run finishes (exit $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "with the uninterrupted run's model ($SIM12)" same "$(sha_of k6.out)" "$SIM12"
"$FEDC" server rounds --state st --json >kr.out 2>&1
round_shas kr.out >kr.txt
check "and all 12 rounds' models are the uninterrupted run's" diff -q kr.txt sim_rounds.txt
finish

#!/usr/bin/env bash
# SecAgg+ over the real transport (issue 8): `fedc server` and `fedc client` processes over TLS
# on loopback with [secagg] enabled end with exactly the model `fedc sim` makes; a client
# killed in the masked-input stage (test hook FEDC_TEST_SECAGG_HANG) is dropped and the round
# completes with exactly the sum of the others (the simulation with the same client dropped at
# the same stage: FEDC_TEST_SECAGG_DROP); a round that falls below the threshold aborts and is
# re-run; secure aggregation with central DP matches the simulation; configurations that cannot
# run under SecAgg are refused. Hostile SecAgg messages: tests/secagg_net_test.c.
set -u
. "$FEDC_SRC/tests/lib.sh"
trap fed_cleanup EXIT
if "$FEDC" server 2>&1 | grep -q 'client-only'; then echo "skipped: client-only build"; exit 0; fi

cd "$TMP"
make_test_ca
allow_list 4 allow4.txt
allow_list 3 allow3.txt

cat >run.ini <<'INI'
[run]
seed = 3
rounds = 2
log_level = info
[clients]
count = 4
per_round = 4
min = 2
[data]
dataset = synthetic-iid
[model]
spec = logreg
[train]
epochs = 1
lr = 1.0
[eval]
every = 0
[round]
deadline = 30
retry_delay = 0.1
[secagg]
enabled = true
stage_timeout = 2
[server]
linger = 1
[client]
retry_initial = 0.1
retry_max = 0.5
INI

# ---- 1. TLS, 4 clients, 2 rounds: bit-identical to fedc sim ----
"$FEDC" sim run.ini --json --threads 1 >sim1.out 2>/dev/null
SIM_SHA=$(sha_of sim1.out)
check "fedc sim with SecAgg gives a model hash" test -n "$SIM_SHA"
start_server srv1 run.ini st1 --tls-cert srv.pem --tls-key srv.key --allow-file allow4.txt
check "the server listens on https://" test "${URL%%:*}" = https
CL=()
for i in 0 1 2 3; do start_client "c1_$i" "k$i.key" run.ini --ca ca.pem --json; CL+=("$CLIENT"); done
wait_exit "$SRV" 60
check "server exits 0 at the end of the run (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "SecAgg over HTTPS: the final model == fedc sim's ($SIM_SHA)" same "$(sha_of srv1.out)" "$SIM_SHA"
check "every round unmasked the sum of 4 clients" \
  test "$(grep -c '"selected":4,"participants":4' srv1.out)" -eq 2
check "the server ran the four stages each round" \
  test "$(grep -c 'stage unmask closed with 4 of 4 clients; stage done open' srv1.err)" -eq 2
check "each client's keys were signed and checked (no refusal logged)" \
  bash -c "! grep -q 'refused' srv1.err"
ok=1
for i in 0 1 2 3; do
  wait_exit "${CL[$i]}" 20 || ok=0
  [[ $EXIT_CODE == 0 && "$(sha_of "c1_$i.out")" == "$SIM_SHA" ]] || ok=0
  grep -q '"tasks":2' "c1_$i.out" || ok=0   # trained once per round: no wasted re-runs
done
check "each client exits 0 after training once per round, with the final hash" test $ok = 1

# ---- 2. a client killed in the masked-input stage: the round completes with the others' sum ----
sed 's/^rounds = 2/rounds = 1/' run.ini >one.ini
FEDC_TEST_SECAGG_DROP=2:masked "$FEDC" sim one.ini --json --threads 1 >sim2.out 2>sim2.err
DROP_SHA=$(sha_of sim2.out)
"$FEDC" sim one.ini --json --threads 1 >sim2all.out 2>/dev/null
check "the simulation's test hook drops client 2 before its masked input" \
  grep -q '"participants":3' sim2.out
check "... which changes the model (the dropped input matters)" \
  test "$DROP_SHA" != "$(sha_of sim2all.out)"
start_server srv2 one.ini st2 --tls-cert srv.pem --tls-key srv.key --allow-file allow4.txt
for i in 0 1 3; do start_client "c2_$i" "k$i.key" one.ini --ca ca.pem --json; done
FEDC_TEST_SECAGG_HANG=masked start_client c2_2 k2.key one.ini --ca ca.pem --json
VICTIM=$CLIENT
wait_for c2_2.err 'TEST HOOK FEDC_TEST_SECAGG_HANG=masked' 30
check "client 2 reached the masked-input stage and hangs there" \
  grep -q 'hanging before the masked message' c2_2.err
kill9 "$VICTIM"
wait_exit "$SRV" 60
check "server exits 0 (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "the masked stage closed at its deadline with 3 of 4 clients" \
  grep -q 'stage masked closed with 3 of 4 clients (deadline)' srv2.err
check "the round unmasked 3 clients' sum" grep -q '"selected":4,"participants":3' srv2.out
check "the model == the simulation with client 2 dropped at the same stage" \
  same "$(sha_of srv2.out)" "$DROP_SHA"
"$FEDC" server rounds --state st2 --json >rounds2.out 2>&1
check "the store committed that round with its hash" same "$(sha_of rounds2.out)" "$DROP_SHA"

# ---- 3. below the threshold: the round aborts, nothing is released, and it is re-run ----
cat >thr.ini <<'INI'
[run]
seed = 8
rounds = 2
log_level = info
[clients]
count = 3
per_round = 3
min = 2
[data]
dataset = synthetic-iid
[model]
spec = logreg
[train]
epochs = 1
lr = 0.5
[eval]
every = 0
[round]
deadline = 30
retry_delay = 0.1
[secagg]
enabled = true
threshold = 2
stage_timeout = 2
[server]
linger = 0.5
[client]
retry_initial = 0.1
retry_max = 0.3
INI
"$FEDC" sim thr.ini --json --threads 1 >sim3.out 2>/dev/null
start_server srv3 thr.ini st3 --allow-file allow3.txt
start_client c3_0 k0.key thr.ini --json
V=()
for i in 1 2; do FEDC_TEST_SECAGG_HANG=masked start_client "c3_$i" "k$i.key" thr.ini; V+=("$CLIENT"); done
wait_for c3_1.err 'TEST HOOK' 30 && wait_for c3_2.err 'TEST HOOK' 30
kill9 "${V[0]}"; kill9 "${V[1]}"
wait_for srv3.err 're-run' 30
check "1 of 3 masked inputs (t = 2): the protocol aborts" \
  grep -q 'stage masked closed with 1 of 3 clients (deadline): the protocol aborts' srv3.err
check "the round misses its quorum and is re-run" grep -q 'the round is re-run' srv3.err
check "no round was committed from the aborted attempt" bash -c "! grep -q '\"round\":1,' srv3.out"
for i in 1 2; do start_client "c3b_$i" "k$i.key" thr.ini; done
wait_exit "$SRV" 60
check "server exits 0 after the re-run (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "round 1 committed on attempt 1 with all 3 clients" \
  grep -Eq '"round":1,"selected":3,"participants":3,.*"attempt":1' srv3.out
check "the re-run round's model == fedc sim's (nothing of the aborted attempt leaked in)" \
  same "$(sha_of srv3.out)" "$(sha_of sim3.out)"

# ---- 4. SecAgg + central DP: clipped on the clients, noised once after unmasking ----
cp one.ini dp.ini
printf '[dp]\nmode = central\nseeded_noise = true\nnoise_multiplier = 0.5\nclip = 2\ndelta = 1e-3\n' >>dp.ini
"$FEDC" sim dp.ini --json --threads 1 >sim4.out 2>/dev/null
check "fedc sim runs SecAgg with central DP and reports epsilon" grep -q '"epsilon":[0-9]' sim4.out
start_server srv4 dp.ini st4 --allow-file allow4.txt
for i in 0 1 2 3; do start_client "c4_$i" "k$i.key" dp.ini; done
wait_exit "$SRV" 60
check "server exits 0 (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "SecAgg + central DP over HTTP: the model == fedc sim's (seeded test noise)" \
  same "$(sha_of srv4.out)" "$(sha_of sim4.out)"
check "... with the same epsilon" \
  same "$(grep -o '"epsilon":[0-9.e+-]*' srv4.out | tail -1)" "$(grep -o '"epsilon":[0-9.e+-]*' sim4.out | tail -1)"

# ---- 5. what cannot run under SecAgg is refused, by sim and server alike ----
cp run.ini local.ini; printf '[dp]\nmode = local\n' >>local.ini
expect_err 'dp.mode = central' "$FEDC" sim local.ini
cp run.ini krum.ini; printf '[strategy]\nname = krum\n' >>krum.ini
expect_err 'reveals only the sum' "$FEDC" server krum.ini --listen 127.0.0.1:0 --state st5 \
  --allow-file allow4.txt
cp dp.ini dpsrv.ini; printf 'clip_on = server\n' >>dpsrv.ini
expect_err 'dp.clip_on = client' "$FEDC" sim dpsrv.ini
finish

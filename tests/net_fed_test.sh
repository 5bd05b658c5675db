#!/usr/bin/env bash
# Real federations on loopback (issue 6): `fedc server` and 5 `fedc client` processes over TLS
# with a test CA made here end with the model `fedc sim` makes (bit-identical); clients that
# vanish mid-round are covered by over-selection and the deadline; a round that misses its
# quorum is re-run. Also: keygen, allow-list, certificate and key refusals.
set -u
. "$FEDC_SRC/tests/lib.sh"

# (process, wait and CA helpers: tests/lib.sh)
trap fed_cleanup EXIT

# ---- a test CA and a server certificate for 127.0.0.1 / localhost ----
cd "$TMP"
make_test_ca
check "openssl made a CA and a server certificate" test -s srv.pem

# ---- keys ----
make_keys 6
check "keygen writes the secret key with mode 0600" test "$(stat -c %a k0.key)" = 600
check "keygen prints a 64-hex public key" grep -Eq '^[0-9a-f]{64}$' k0.pub
expect_exit 1 "$FEDC" keygen --out k0.key
expect_err "never overwritten" "$FEDC" keygen --out k0.key
expect_out "$(cat k0.pub)" "$FEDC" keygen --show k0.key
cp k0.key open.key && chmod 644 open.key
expect_err "too open" "$FEDC" keygen --show open.key
allow_list 5 allow5.txt
expect_err "not a public key" "$FEDC" server allow nothex --state st0

cat >run.ini <<'INI'
[run]
seed = 3
rounds = 4
[clients]
count = 5
per_round = 5
min = 5
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
[round]
deadline = 60
[client]
retry_initial = 0.1
retry_max = 0.5
INI

"$FEDC" sim run.ini --json --threads 1 >sim.out 2>/dev/null
SIM_SHA=$(sha_of sim.out)
check "fedc sim gives a model hash" test -n "$SIM_SHA"

# ---- 1. TLS, 5 clients, no dropouts: bit-identical to fedc sim ----
start_server srv1 run.ini st1 --tls-cert srv.pem --tls-key srv.key --allow-file allow5.txt
PORT=$(port_of srv1.out)
check "server listens on a port ($PORT)" test -n "$PORT"
check "with TLS it listens on https://" test "${URL%%:*}" = https

# refusals while the server runs: no CA, an unknown key, a key file others can read
expect_exit 1 "$FEDC" client --server "$URL" --key k0.key --config run.ini
expect_err "certificate" "$FEDC" client --server "$URL" --key k0.key --config run.ini
expect_err "allow-list" "$FEDC" client --server "$URL" --key k5.key --ca ca.pem --config run.ini \
  --set client.retry_max=0.05 --set client.retry_initial=0.01
expect_err "too open" "$FEDC" client --server "$URL" --key open.key --ca ca.pem --config run.ini
expect_exit 2 "$FEDC" client --key k0.key
grep -q "unknown_key" srv1.err && pass "the server logs the unknown key" || fail "no unknown_key in the server log"

CL=()
for i in 0 1 2 3 4; do
  start_client "c1_$i" "k$i.key" run.ini --ca ca.pem --json; CL+=("$CLIENT")
done
wait_exit "$SRV" 60
check "server exits 0 at the end of the run (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
SRV_SHA=$(sha_of srv1.out)
check "server's final model == fedc sim's ($SIM_SHA)" same "$SRV_SHA" "$SIM_SHA"
check "one JSON line per round" test "$(grep -c '"round":' srv1.out)" -eq 4
check "every round had 5 of 5 results" test "$(grep -c '"selected":5,"participants":5' srv1.out)" -eq 4
ok=1
for i in 0 1 2 3 4; do
  wait_exit "${CL[$i]}" 20 || ok=0
  [[ $EXIT_CODE == 0 ]] || ok=0
  [[ "$(sha_of "c1_$i.out")" == "$SIM_SHA" ]] || ok=0
  grep -q '"accepted":4' "c1_$i.out" || ok=0
done
check "each client exits 0, had 4 results accepted, and reports the final hash" test $ok = 1
"$FEDC" inspect st1/model.safetensors --json >insp.out 2>&1
check "DIR/model.safetensors holds that model" grep -q "$SIM_SHA" insp.out
"$FEDC" server rounds --state st1 --json >rounds1.out 2>&1
check "the store lists 4 committed rounds" test "$(grep -c '"round"' rounds1.out)" -eq 4
check "the last committed round's hash is the final model's" same "$(sha_of rounds1.out)" "$SIM_SHA"
"$FEDC" server clients --state st1 --json >clients1.out 2>&1
check "the allow-list has 5 clients with ids 0..4" grep -q "\"client_id\":4,\"public_key\":\"$(cat k4.pub)\"" clients1.out

# ---- 2. dropouts: over-selection, the deadline, and a round re-run for its quorum ----
cat >drop.ini <<'INI'
[run]
seed = 5
rounds = 150
[clients]
count = 6
per_round = 4
min = 3
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
overselect = 0.5
deadline = 1.5
retry_delay = 0.1
[client]
retry_initial = 0.1
retry_max = 0.3
wait = 5
INI
allow_list 6 allow6.txt
start_server srv2 drop.ini st2 --allow-file allow6.txt --set run.log_level=info
CL=()
for i in 0 1 2 3 4 5; do
  "$FEDC" client --server "$URL" --key "k$i.key" --config drop.ini --quiet >/dev/null 2>"c2_$i.err" &
  CL+=($!); PIDS+=($!)
done
# (rounds go fast while enough clients answer: the run is long, so that each step below
# happens with rounds to spare; rounds paced by the deadline leave time for the next step)
wait_for srv2.out '"round":2,' 20
check "with 6 selected, rounds close at 4 results (over-selection)" \
  grep -q '"round":1,"selected":6,"participants":4' srv2.out
kill -STOP "${CL[4]}" "${CL[5]}"   # two clients vanish (they may hold tasks)
N=$(grep -c '"round":' srv2.out)
wait_for srv2.out "\"round\":$((N + 3))," 20
check "without 2 of 6 clients, rounds still close at 4 results" \
  grep -q "\"round\":$((N + 3)),\"selected\":6,\"participants\":4" srv2.out
kill9 "${CL[3]}"                   # 3 left: fewer than the 4 wanted
wait_for srv2.out '"participants":3' 20
check "with 3 clients, a round closes at the deadline with 3 results (>= clients.min)" \
  grep -Eq '"participants":3,.*"seconds":(1\.[5-9]|[2-9])' srv2.out
kill9 "${CL[2]}"                   # 2 left: below clients.min = 3
wait_for srv2.err 'below clients.min' 20
check "a round below its quorum is re-run, not committed" grep -q "re-run" srv2.err
sleep 2
kill -CONT "${CL[4]}" "${CL[5]}"   # the vanished clients come back
wait_for srv2.out '"attempt":[1-9]' 30
check "the re-run round completes once clients return (attempt > 0)" grep -q '"attempt":[1-9]' srv2.out
wait_exit "$SRV" 60
check "the run finishes: server exits 0 (got $EXIT_CODE)" test "$EXIT_CODE" -eq 0
check "150 rounds committed" test "$(grep -c '"round":' srv2.out)" -eq 150
for i in 0 1 4 5; do wait_exit "${CL[$i]}" 20; done
check "the returning clients finish too (exit $EXIT_CODE)" test "$EXIT_CODE" -eq 0

# ---- 3. differential privacy over HTTP: the clients clip (and noise) as the server asks ----
for mode in local central; do
  cp run.ini "dp_$mode.ini"
  printf '[dp]\nmode = %s\nseeded_noise = true\nnoise_multiplier = 0.5\nclip = 5\ndelta = 1e-3\n' \
    "$mode" >>"dp_$mode.ini"
  "$FEDC" sim "dp_$mode.ini" --json --threads 1 >"dpsim_$mode.out" 2>/dev/null
  start_server "dpsrv_$mode" "dp_$mode.ini" "st_dp_$mode" --allow-file allow5.txt
  for i in 0 1 2 3 4; do
    "$FEDC" client --server "$URL" --key "k$i.key" --config "dp_$mode.ini" --quiet >/dev/null 2>&1 &
    PIDS+=($!)
  done
  wait_exit "$SRV" 60
  check "dp.mode = $mode: the federation's model == fedc sim's (seeded test noise)" \
    same "$(sha_of "dpsrv_$mode.out")" "$(sha_of "dpsim_$mode.out")"
  check "dp.mode = $mode: rounds report epsilon" grep -q '"epsilon":' "dpsrv_$mode.out"
done
finish

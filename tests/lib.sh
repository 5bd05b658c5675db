# Helpers for the bash tests (sourced). Each check prints one line; `finish` prints the totals
# as "N passed, N failed" and exits non-zero on any failure.
: "${FEDC:?FEDC must name the fedc binary}"
: "${FEDC_SRC:?FEDC_SRC must name the source tree}"
TESTS_PASSED=0
TESTS_FAILED=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fedc-sh-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

pass() { TESTS_PASSED=$((TESTS_PASSED + 1)); echo "ok   $*"; }
fail() { TESTS_FAILED=$((TESTS_FAILED + 1)); echo "FAIL $*"; }

# expect_exit CODE cmd...: the command exits with CODE.
expect_exit() {
  local want=$1; shift
  "$@" >"$TMP/out" 2>"$TMP/err"; local got=$?
  if [[ $got == "$want" ]]; then pass "exit $want: $*"; else
    fail "exit $got (want $want): $*"; sed 's/^/    /' "$TMP/err" | head -5; fi
}
# expect_out REGEX cmd...: stdout matches REGEX (extended).
expect_out() {
  local re=$1; shift
  "$@" >"$TMP/out" 2>"$TMP/err"
  if grep -Eq -- "$re" "$TMP/out"; then pass "stdout ~ /$re/: $*"; else
    fail "stdout lacks /$re/: $*"; head -5 "$TMP/out" | sed 's/^/    /'; fi
}
# expect_err REGEX cmd...: stderr matches REGEX.
expect_err() {
  local re=$1; shift
  "$@" >"$TMP/out" 2>"$TMP/err"
  if grep -Eq -- "$re" "$TMP/err"; then pass "stderr ~ /$re/: $*"; else
    fail "stderr lacks /$re/: $*"; head -5 "$TMP/err" | sed 's/^/    /'; fi
}
# check DESCRIPTION test-expression...
check() {
  local d=$1; shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}
finish() {
  echo "$TESTS_PASSED passed, $TESTS_FAILED failed"
  [[ $TESTS_FAILED == 0 ]]
}

# ---- federations on loopback (net_*_test.sh): processes, waits, a test CA, keys ----
# Tests that start processes add their pids to PIDS and `trap fed_cleanup EXIT`.
PIDS=()
fed_cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
# wait_for FILE REGEX SECONDS: until a line of FILE matches.
wait_for() {
  local f=$1 re=$2 t=$(( $3 * 10 ))
  for ((i = 0; i < t; i++)); do
    grep -Eq -- "$re" "$f" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# wait_exit PID SECONDS: waits for PID to end; sets EXIT_CODE (124 on timeout).
wait_exit() {
  local p=$1 t=$(( $2 * 10 ))
  for ((i = 0; i < t; i++)); do
    if ! kill -0 "$p" 2>/dev/null; then wait "$p"; EXIT_CODE=$?; return 0; fi
    sleep 0.1
  done
  EXIT_CODE=124
  return 1
}
kill9() { kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
port_of() { grep -o '"port":[0-9]*' "$1" | head -1 | cut -d: -f2; }
same() { [[ -n "$1" && "$1" == "$2" ]]; }  # non-empty and equal
sha_of() { grep -o '"model_sha256":"[0-9a-f]*"' "$1" | tail -1 | cut -d'"' -f4; }

# make_test_ca: ca.pem (+ ca.key) and a server certificate srv.pem / srv.key for 127.0.0.1
# and localhost, in the current directory.
make_test_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
    -out ca.pem -days 2 -subj "/CN=fedc test CA" >/dev/null 2>&1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
    -out srv.csr -subj "/CN=localhost" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 \
    -extfile ext.cnf >/dev/null 2>&1
}
# make_keys N: client keys k0.key .. k(N-1).key with their public keys in k0.pub ...
make_keys() {
  local i
  for ((i = 0; i < $1; i++)); do
    [[ -e "k$i.key" ]] || "$FEDC" keygen --out "k$i.key" >"k$i.pub" 2>/dev/null
  done
}
# allow_list N FILE: make_keys N, and their public keys (the allow list for ids 0..N-1) in FILE.
allow_list() {
  local i
  make_keys "$1"
  for ((i = 0; i < $1; i++)); do cat "k$i.pub"; done >"$2"
}
# start_server NAME CONFIG STATE_DIR [ARGS...]: `fedc server --json` on 127.0.0.1 (a free
# port, or $LISTEN if set) with stdout NAME.out, stderr NAME.err; waits until it listens. Sets
# SRV (pid) and URL (https:// when ARGS has --tls-cert). Returns 1 when it did not start
# within 15 s.
start_server() {
  local name=$1 cfg=$2 state=$3; shift 3
  "$FEDC" server "$cfg" --listen "${LISTEN:-127.0.0.1:0}" --state "$state" --json "$@" \
    >"$name.out" 2>"$name.err" &
  SRV=$!; PIDS+=("$SRV")
  wait_for "$name.out" '"listening"' 15 || return 1
  local scheme=http
  grep -q '"listening":"https://' "$name.out" && scheme=https
  URL="$scheme://127.0.0.1:$(port_of "$name.out")"
}
# start_client NAME KEY CONFIG [ARGS...]: `fedc client --server $URL` in the background with
# stdout NAME.out, stderr NAME.err. Sets CLIENT (pid).
start_client() {
  local name=$1 key=$2 cfg=$3; shift 3
  "$FEDC" client --server "$URL" --key "$key" --config "$cfg" "$@" >"$name.out" 2>"$name.err" &
  CLIENT=$!; PIDS+=("$CLIENT")
}
# federate NAME CONFIG: a server (state st_NAME, allow.txt) and 4 clients k0..k3 (--json,
# output NAME_cI.out/.err) run to the end. Sets SERVER_EXIT (the server's exit code);
# EXIT_CODE is left from the last wait: the last client's.
federate() {
  start_server "$1" "$2" "st_$1" --allow-file allow.txt
  local cl=() i p
  for i in 0 1 2 3; do start_client "$1_c$i" "k$i.key" "$2" --json; cl+=("$CLIENT"); done
  wait_exit "$SRV" 90; SERVER_EXIT=$EXIT_CODE
  for p in "${cl[@]}"; do wait_exit "$p" 20; done
}
# round_field FILE R NAME: the integer field NAME of round R's JSON line in FILE.
round_field() { grep "\"round\":$2," "$1" | head -1 | grep -o "\"$3\":[0-9]*" | cut -d: -f2; }

# ---- MPI (mpi_sim_test.sh, sim_resume_test.sh) ----
# have_mpi: this fedc was built with the MPI backend.
have_mpi() { "$FEDC" version | grep -q '[(, ]mpi[,)]'; }
# use_mpirun: sets MPIRUN to mpirun with flags for a container or a root shell: oversubscribe
# the 2 cores, no binding, shared memory without the single-copy mechanism (ptrace is often
# not allowed).
use_mpirun() {
  MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader
          --mca btl_vader_single_copy_mechanism none)
  export OMPI_MCA_rmaps_base_oversubscribe=1
}

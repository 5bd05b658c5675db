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

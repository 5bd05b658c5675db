#!/usr/bin/env bash
# Compression on the wire (issue 9): a `fedc server` and 4 `fedc client` processes with
# compress.upload = topk:10%+q8+zstd (error feedback kept by each client process across
# rounds) and compress.download = q8+zstd end with the model `fedc sim` makes with the same
# config (bit-identical: the clients encode and decode exactly as the simulation does), and the
# rounds' bytes are the real wire bytes: the encoded messages plus the stream framing, far
# below float32. Also: a float32 run's bytes, and what the server refuses.
set -u
. "$FEDC_SRC/tests/lib.sh"
trap fed_cleanup EXIT
cd "$TMP"

allow_list 4 allow.txt

cat >base.ini <<'INI'
[run]
seed = 7
rounds = 3
[clients]
count = 4
per_round = 4
min = 4
[data]
dataset = synthetic-iid
[model]
spec = dense(128) relu dense(10)
[train]
epochs = 1
lr = 0.5
[eval]
every = 0
[round]
deadline = 60
[client]
retry_initial = 0.1
retry_max = 0.5
INI
cp base.ini comp.ini
printf '[compress]\nupload = topk:10%%+q8+zstd\ndownload = q8+zstd\n' >>comp.ini

"$FEDC" sim comp.ini --json --threads 1 >sim.out 2>/dev/null
"$FEDC" sim base.ini --json --threads 1 >simf.out 2>/dev/null
SIM_SHA=$(sha_of sim.out)
check "fedc sim with compression gives a model hash" test -n "$SIM_SHA"
check "... another one than without" test "$SIM_SHA" != "$(sha_of simf.out)"

federate comp comp.ini
check "the server exits 0 (got $SERVER_EXIT)" test "$SERVER_EXIT" -eq 0
check "encoded federation's final model == fedc sim's ($SIM_SHA)" same "$(sha_of comp.out)" "$SIM_SHA"
check "every client reports that model" \
  test "$(grep -l "\"model_sha256\":\"$SIM_SHA\"" comp_c?.out | wc -l)" -eq 4
check "3 rounds of 4 results" test "$(grep -c '"selected":4,"participants":4' comp.out)" -eq 3

# bytes: sim counts the codec messages; the server counts the HTTP bodies, which add a result
# header and the chunk framing (< 200 bytes per result) or a model header with the layout
# (< 400 bytes per download) to the same messages
ok=1
for r in 1 2 3; do
  su=$(round_field sim.out $r bytes_up); wu=$(round_field comp.out $r bytes_up)
  sd=$(round_field sim.out $r bytes_down); wd=$(round_field comp.out $r bytes_down)
  raw=$(round_field comp.out $r bytes_up_raw)
  echo "#    round $r: up $wu wire / $su sim / $raw float32; down $wd wire / $sd sim"
  [[ -n "$wu" && -n "$su" && $wu -ge $su && $wu -le $((su + 4 * 200)) ]] || ok=0
  [[ -n "$wd" && -n "$sd" && $wd -ge $sd && $wd -le $((sd + 4 * 400)) ]] || ok=0
  [[ -n "$raw" && $((raw / wu)) -ge 15 ]] || ok=0
done
check "rounds' bytes up/down are the encoded messages plus framing, >= 15x below float32" test $ok = 1

# float32 over the wire: bytes = the float vectors plus framing
federate plain base.ini
check "float32 federation == fedc sim ($(sha_of simf.out))" same "$(sha_of plain.out)" "$(sha_of simf.out)"
wu=$(round_field plain.out 1 bytes_up); raw=$(round_field plain.out 1 bytes_up_raw)
check "float32 round: bytes up ($wu) within 1% above the raw size ($raw)" \
  test "$wu" -ge "$raw" -a "$wu" -le $((raw + raw / 100))

# refusals: a bad spec (delta downloads: tests/net_delta_test.sh)
cp base.ini badspec.ini
printf '[compress]\nupload = q7\n' >>badspec.ini
expect_exit 1 "$FEDC" server badspec.ini --listen 127.0.0.1:0 --state st_bad
finish

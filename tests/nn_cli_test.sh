#!/usr/bin/env bash
# fedc model and fedc bench: preset parameter counts pinned to the papers (REFERENCES.md),
# JSON output, errors naming the bad token, and a short smoke run of the training benchmark.
set -u
. "$FEDC_SRC/tests/lib.sh"

params() { "$FEDC" model "$@" --json | sed -n 's/.*"params":\([0-9]*\),"param_bytes".*/\1/p'; }
check "mlp has 199,210 params" [ "$(params mlp)" = 199210 ]
check "cnn has 1,663,370 params" [ "$(params cnn)" = 1663370 ]
check "femnist-cnn has 6,603,710 params" [ "$(params femnist-cnn --outputs 62)" = 6603710 ]
check "shakespeare-lstm has 817,872 params" [ "$(params shakespeare-lstm)" = 817872 ]
check "logreg on 784 inputs has 7,850 params" [ "$(params logreg --input 784)" = 7850 ]
expect_out "199,210" "$FEDC" model mlp
expect_out "maxpool\(2\) +32x14x14" "$FEDC" model cnn
expect_out '"tensors":\[\{"name":"1.weight","shape":\[200,784\],"offset":0\}' "$FEDC" model mlp --json
expect_out '"spec":"dense\(3\) relu dense\(2\)"' "$FEDC" model 'dense(3)' relu 'dense(2)' --input 4 --json

expect_exit 1 "$FEDC" model 'dense(10) frob'
expect_err "token 2 'frob'" "$FEDC" model 'dense(10) frob'
expect_exit 1 "$FEDC" model 'conv(8,3)' --input 784
expect_err "conv needs an image input" "$FEDC" model 'conv(8,3)' --input 784
expect_exit 1 "$FEDC" model 'dense(5)' --outputs 10
expect_err "data has 10 classes" "$FEDC" model 'dense(5)' --outputs 10
expect_exit 2 "$FEDC" model
expect_exit 2 "$FEDC" model mlp --outputs x
expect_exit 2 "$FEDC" model mlp --input 1,,2
expect_exit 2 "$FEDC" model mlp --frob
expect_exit 0 "$FEDC" help model

expect_exit 2 "$FEDC" bench nosuch
expect_err "train" "$FEDC" bench nosuch
expect_exit 2 "$FEDC" bench --frob
expect_exit 2 "$FEDC" bench train --seconds 0
expect_exit 2 "$FEDC" bench train --batches 0
expect_exit 1 "$FEDC" bench train --models 'frob' --batches 2 --seconds 0.05
"$FEDC" bench train --json --models mlp --batches 2 --seconds 0.1 >"$TMP/bench" 2>"$TMP/bench.err"
check "bench train exits 0" [ $? = 0 ]
for key in model batch samples_per_s gflops peak_gflops ratio param_bytes workspace_bytes; do
  check "bench line has $key" grep -q "\"$key\":" "$TMP/bench"
done
check "bench reports a positive rate" grep -Eq '"samples_per_s":[1-9]' "$TMP/bench"
check "bench times the fused step and the unfused one" \
  grep -Eq '"fused_sgd":true,"unfused_ms_per_step":[0-9]' "$TMP/bench"

# `fedc sim` with SGD takes the fused step (nn_fused_test: same bits as the unfused one); a
# clipping norm that never clips sends the same run through train_batch + optim_step, so
# the final models must be the same, with plain SGD and with momentum, Nesterov, weight
# decay and FedProx.
cat > "$TMP/fused.ini" <<'INI'
[run]
seed = 5
rounds = 3
[clients]
count = 6
per_round = 3
[data]
dataset = synthetic-iid
[model]
spec = dense(24) relu dense(10)
[train]
epochs = 1
batch_size = 10
lr = 0.05
[strategy]
name = fedavg
[eval]
every = 3
INI
sim_sha() { "$FEDC" sim "$TMP/fused.ini" --json --threads 1 "$@" 2>"$TMP/sim.err" | tail -1 >"$TMP/sim.out"; sha_of "$TMP/sim.out"; }
a=$(sim_sha)
b=$(sim_sha --set train.clip_grad_norm=1e12)
check "fused and unfused SGD give the same model ($a)" same "$a" "$b"
opts=(--set train.momentum=0.9 --set train.nesterov=true --set train.weight_decay=0.001
      --set train.prox_mu=0.1)
c=$(sim_sha "${opts[@]}")
d=$(sim_sha "${opts[@]}" --set train.clip_grad_norm=1e12)
check "the same with momentum, Nesterov, weight decay, FedProx ($c)" same "$c" "$d"
check "those options do change the model" test "$a" != "$c"
finish

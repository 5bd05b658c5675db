#!/usr/bin/env bash
# The fedc command's contract: help, version, exit codes for unknown subcommands and flags,
# config errors naming file and line.
set -u
. "$FEDC_SRC/tests/lib.sh"

expect_exit 0 "$FEDC" --help
expect_out "subcommands:" "$FEDC" --help
expect_exit 0 "$FEDC" --version
expect_out "fedc 0." "$FEDC" --version
expect_exit 0 "$FEDC" version --json
expect_out '"version":' "$FEDC" version --json
# which convolution kernels this CPU runs: one of the three names
"$FEDC" version --json | grep -Eq '"conv_kernels": *"(direct AVX-512|direct AVX2|im2col \+ GEMM)"' ||
    fail "fedc version --json names no convolution kernels"
expect_exit 2 "$FEDC"
expect_exit 2 "$FEDC" frobnicate
expect_err "unknown subcommand 'frobnicate'" "$FEDC" frobnicate
expect_exit 2 "$FEDC" --frob
expect_exit 2 "$FEDC" version --bogus
expect_err "unknown argument '--bogus'" "$FEDC" version --bogus
expect_exit 0 "$FEDC" help version
expect_out "usage: fedc version" "$FEDC" help version
expect_exit 2 "$FEDC" help nosuch
expect_exit 0 "$FEDC" help config
expect_out "batch_size" "$FEDC" help config
expect_out "\[strategy\]|\[train\]" "$FEDC" help config
finish

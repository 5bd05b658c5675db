#!/usr/bin/env bash
# `make install`'s result works for another project: headers, the pkg-config file and the CMake
# package. Installs into a temporary prefix, builds examples/custom_trainer.c against it both
# ways, and runs it.
set -u
. "$FEDC_SRC/tests/lib.sh"
: "${FEDC_BUILD:?FEDC_BUILD must name the build directory}"

prefix="$TMP/prefix"
cmake --install "$FEDC_BUILD" --prefix "$prefix" >"$TMP/install.log" 2>&1
check "cmake --install succeeds" test $? -eq 0
check "headers installed" test -f "$prefix/include/fedc/fedc.h"
check "config_build.h installed" test -f "$prefix/include/fedc/config_build.h"
pc=$(find "$prefix" -name fedc.pc | head -n 1)
check "fedc.pc installed" test -n "$pc"
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs fedc)
check "pkg-config points into the prefix" grep -q -- "-L$prefix" <<<"$flags"
cc -std=c11 "$FEDC_SRC/examples/custom_trainer.c" $flags -lm -o "$TMP/ct_pc" 2>"$TMP/cc.log"
check "custom_trainer builds with pkg-config" test -x "$TMP/ct_pc"
libdir=$(pkg-config --variable=libdir fedc)
LD_LIBRARY_PATH="$libdir" "$TMP/ct_pc" >"$TMP/ct.out" 2>&1
check "custom_trainer (pkg-config build) runs and converges" test $? -eq 0

mkdir -p "$TMP/proj"
cat >"$TMP/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(use_fedc C)
find_package(fedc REQUIRED)
add_executable(ct custom_trainer.c)
target_link_libraries(ct PRIVATE fedc::fedc m)
CM
cp "$FEDC_SRC/examples/custom_trainer.c" "$TMP/proj/"
cmake -S "$TMP/proj" -B "$TMP/proj/build" -DCMAKE_PREFIX_PATH="$prefix" >"$TMP/cm.log" 2>&1 &&
  cmake --build "$TMP/proj/build" >>"$TMP/cm.log" 2>&1
check "find_package(fedc) project builds" test -x "$TMP/proj/build/ct"
"$TMP/proj/build/ct" >"$TMP/ct2.out" 2>&1
check "find_package build runs and converges" test $? -eq 0
[[ $TESTS_FAILED == 0 ]] || tail -20 "$TMP/cm.log" "$TMP/cc.log"
finish

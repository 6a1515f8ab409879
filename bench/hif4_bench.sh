#!/usr/bin/env bash
# HiF4 benchmark: builds bench/hif4_bench.c against the CPU sources it needs and prints the table.
# Usage: bash bench/hif4_bench.sh [out in]   (default 4096 4096)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
${CC:-gcc} -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc bench/hif4_bench.c src/core/*.c \
  src/quant/hif4.c src/quant/hif4_linear.c src/quant/hadamard.c -o build/hif4_bench -lopenblas -llapacke -lm -lpthread
exec build/hif4_bench "$@"

#!/usr/bin/env bash
# HiF4 benchmark: builds bench/hif4_bench.c against the CPU sources it needs and prints the tables
# for 1 and 2 threads (one process per thread count). Usage: bash bench/hif4_bench.sh [out in]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
${CC:-gcc} -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc bench/hif4_bench.c src/core/*.c \
  src/quant/hif4.c src/quant/hif4_linear.c src/quant/hadamard.c src/quant/rht.c \
  -o build/hif4_bench -lopenblas -llapacke -lm -lpthread
shape="${1:-4096} ${2:-4096}"
echo "HiF4, weight $shape (out in)"
echo
echo "| op | threads | values/s |"
echo "|---|---|---|"
for t in 1 2; do GLQ_THREADS=$t OPENBLAS_NUM_THREADS=$t build/hif4_bench quant $shape; done
echo
echo "| batch | threads (glq/openblas) | hif4 ms | openblas f32 ms | speed-up |"
echo "|---|---|---|---|---|"
for t in 1 2; do GLQ_THREADS=$t OPENBLAS_NUM_THREADS=$t build/hif4_bench forward $shape; done

#!/usr/bin/env bash
# make bench: build the C benchmarks and print every table (run on a quiet machine).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
for src in bench/*.c; do
  bin=build/bench/$(basename "$src" .c)
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ] || [ build/libglq.a -nt "$bin" ]; then
    ${CC:-cc} -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc "$src" build/libglq.a \
      -lopenblas -llapacke -lpcre2-8 -lm -lpthread -ldl -o "$bin" || exit 1
  fi
done
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo; echo "== E8 encoding and E8 linear (build/bench/e8_bench)"; build/bench/e8_bench
echo; echo "== LDLQ layer quantization, 4096x4096 (build/bench/quant_bench)"; build/bench/quant_bench
echo; echo "== HiF4 4096x4096 (build/bench/hif4_bench)"
echo "| op | threads | values/s |"; echo "|---|---|---|"
for t in 1 2; do GLQ_THREADS=$t OPENBLAS_NUM_THREADS=$t build/bench/hif4_bench quant 4096 4096; done
echo; echo "| batch | threads (glq/openblas) | hif4 ms | openblas f32 ms | speed-up |"; echo "|---|---|---|---|---|"
for t in 1 2; do GLQ_THREADS=$t OPENBLAS_NUM_THREADS=$t build/bench/hif4_bench forward 4096 4096; done
echo; echo "== forward, SmolLM2 shapes with random weights (bench/forward_bench.lua)"; build/glq bench/forward_bench.lua
echo; echo "== Hadamard transforms (build/bench/hadamard_bench)"; build/bench/hadamard_bench
echo; echo "== fused CPU decode kernels alone, SmolLM2's 210 shapes at batch 1, one thread (bench/layer_time.lua)"
for k in "e8 2" "e8p 2" "e8p 2 20 l1" "e8 4" "trellis 2" "trellis 3"; do build/glq bench/layer_time.lua $k; done
echo; echo "== SmolLM2-135M dense vs E8 vs HiF4 (bench/model_bench.lua 64 cpu 5)"; build/glq bench/model_bench.lua 64 cpu 5
echo; echo "== KV caches (bench/kvcache_bench.lua)"; build/glq bench/kvcache_bench.lua

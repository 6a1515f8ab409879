#!/bin/bash
# the GPU alone (after the rows): kernel timings, e2e decode with split inputs on and off
source .device/setup.sh
L=$OUT/logs
mkdir -p $L/kb
( time timeout 200 build-gpu/cuda/kernel_bench $L/kb ) > $L/kernel_bench_t.log 2>&1; grep -E "target|split|real" $L/kernel_bench_t.log | tail -40
( time timeout 150 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" "trellis 2-bit" ) > $L/e2e_split.log 2>&1; cat $L/e2e_split.log
( time GLQ_CUDA_SPLIT_INPUTS=0 timeout 100 build-gpu/bench/e2e_bench "E8P 2-bit" "trellis 2-bit" ) > $L/e2e_nosplit.log 2>&1; cat $L/e2e_nosplit.log

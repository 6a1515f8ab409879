#!/bin/bash
# exp-decode-step.patch applied (README.md); carry the pack. Binaries: e2e_bench_base (before the patch), e2e_bench
# (after: attention with the q/k/v preparation folded in), e2e_bench_pf3/4 (the patch with E8P weights loaded 3 / 4
# steps ahead, -DGLQ_E8P_PREFETCH). GLQ_CUDA_STAGE_X=1: each warp stages its own steps' x in shared memory; =2: x
# prefetched into L1. linear_check (staging = step by step, byte for byte), e2e, cuda_spec (defaults), e2e again
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
nvidia-smi -L; which nsys ncu
( timeout 90 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head -20; el
E=build-gpu/bench
e2e() { local tag=$1; shift; ( timeout 60 "$@" ) > $L/e2e_$tag.log 2>&1; echo "$tag:"; grep -E "^\| (dense|E8P)" $L/e2e_$tag.log; }
e2e base1 $E/e2e_bench_base "dense bf16" "E8P 2-bit"
e2e att $E/e2e_bench "dense bf16" "E8P 2-bit"
GLQ_CUDA_STAGE_X=2 e2e stage2 $E/e2e_bench_base "E8P 2-bit"
e2e pf4 $E/e2e_bench_pf4 "E8P 2-bit"
GLQ_CUDA_STAGE_X=1 e2e stage1 $E/e2e_bench_base "E8P 2-bit"
el
( timeout 100 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -2 $L/cuda_spec.log; el
e2e base2 $E/e2e_bench_base "dense bf16" "E8P 2-bit"
e2e att2 $E/e2e_bench "dense bf16" "E8P 2-bit"
el

#!/bin/bash
# staged fused-kernel inputs (GLQ_CUDA_STAGE_X=1, off by default until this has run; carry the pack): linear_check
# (staged = step by step, byte for byte), e2e with staging off then on, cuda_spec with it on
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
nvidia-smi -L
( timeout 60 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head -20; el
( timeout 60 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" ) > $L/e2e_off.log 2>&1; tail -2 $L/e2e_off.log; el
( GLQ_CUDA_STAGE_X=1 timeout 60 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" ) > $L/e2e_on.log 2>&1; tail -2 $L/e2e_on.log; el
( GLQ_CUDA_STAGE_X=1 timeout 60 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -2 $L/cuda_spec.log; el

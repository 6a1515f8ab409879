#!/bin/bash
# folded decode ops: linear_check (fused == standalone bytes), e2e (dense, E8P 2/4-bit, trellis 2-bit, E8 2-bit)
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
nvidia-smi -L
( time timeout 150 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head -20; el
( time timeout 200 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" "E8P 3-bit" "E8P 4-bit" "trellis 2-bit" "E8 2-bit" ) > $L/e2e.log 2>&1; tail -12 $L/e2e.log; el
( time timeout 120 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -6 $L/cuda_spec.log; el

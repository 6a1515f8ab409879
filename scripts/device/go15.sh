#!/bin/bash
# batched loads in the row / cluster transforms (call 1, carry the pack and model/part.aa): linear_check (byte
# comparisons of lanes, clusters, folded ops, prologue), e2e with the prologue off and on, cuda_spec (prologue on)
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
nvidia-smi -L
( timeout 150 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head -20; el
# the tree before (binary carried as .device/base_e2e, when present), then this tree, on the same machine
[ -x .device/base_e2e ] && { ( timeout 100 .device/base_e2e "dense bf16" "E8P 2-bit" "E8P 4-bit" ) > $L/e2e_base.log 2>&1; tail -4 $L/e2e_base.log; el; }
( timeout 150 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" "E8P 4-bit" "trellis 2-bit" ) > $L/e2e.log 2>&1; tail -6 $L/e2e.log; el
( GLQ_CUDA_PROLOGUE=1 timeout 90 build-gpu/bench/e2e_bench "E8P 2-bit" "E8P 4-bit" ) > $L/e2e_prologue.log 2>&1; tail -3 $L/e2e_prologue.log; el
( GLQ_CUDA_PROLOGUE=1 timeout 120 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -3 $L/cuda_spec.log; el

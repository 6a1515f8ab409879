#!/bin/bash
# the E8P prologue transform (GLQ_CUDA_PROLOGUE, off by default until this has run): linear_check (prologue on = off,
# byte for byte, at B = 1), e2e with it on and off, cuda_spec with it on
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
( timeout 150 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head; el
( timeout 60 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" ) > $L/e2e.log 2>&1; tail -2 $L/e2e.log
( GLQ_CUDA_PROLOGUE=1 timeout 60 build-gpu/bench/e2e_bench "E8P 2-bit" "E8P 4-bit" ) >> $L/e2e.log 2>&1; echo prologue; tail -2 $L/e2e.log; el
( GLQ_CUDA_PROLOGUE=1 timeout 120 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -3 $L/cuda_spec.log; el

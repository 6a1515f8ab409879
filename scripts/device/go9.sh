#!/bin/bash
# cluster transforms: linear_check (byte-identity with one CTA a row), e2e with clusters on/off, cuda_spec
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi -L
( time timeout 120 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|real\|FAIL\|DIFFER\|error" $L/linear_check.log | head -20; el
( time GLQ_CUDA_CLUSTERS=1 timeout 100 build-gpu/bench/e2e_bench "dense bf16" "E8P 2-bit" "trellis 2-bit" ) > $L/e2e.log 2>&1; tail -8 $L/e2e.log
( time GLQ_CUDA_CLUSTERS=0 timeout 60 build-gpu/bench/e2e_bench "E8P 2-bit" ) >> $L/e2e.log 2>&1; tail -6 $L/e2e.log; el
( time GLQ_CUDA_CLUSTERS=1 timeout 120 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -8 $L/cuda_spec.log; el

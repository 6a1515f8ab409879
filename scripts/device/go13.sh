#!/bin/bash
# linear_check + cuda_spec of the tree; the cluster gather batched (e2e vs the experimental binary built before it);
# how much of the 8B E8P decode step the transforms are (experimental binary: GLQ_EXP_NO_IN_T / _OUT_T skip them)
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
( timeout 150 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|FAIL\|DIFFER\|error" $L/linear_check.log | head; el
( timeout 120 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -3 $L/cuda_spec.log; el
E=.device/exp/e2e_exp
( timeout 60 $E "dense bf16" "E8P 2-bit" ) > $L/exp.log 2>&1; tail -2 $L/exp.log
( timeout 40 build-gpu/bench/e2e_bench "E8P 2-bit" ) >> $L/exp.log 2>&1; echo gather-batched; tail -1 $L/exp.log
( timeout 40 $E "E8P 2-bit" ) >> $L/exp.log 2>&1; echo before-again; tail -1 $L/exp.log
( GLQ_EXP_NO_IN_T=1 timeout 40 $E "E8P 2-bit" ) >> $L/exp.log 2>&1; echo no-in; tail -1 $L/exp.log
( GLQ_EXP_NO_OUT_T=1 timeout 40 $E "E8P 2-bit" ) >> $L/exp.log 2>&1; echo no-out; tail -1 $L/exp.log
( GLQ_EXP_NO_IN_T=1 GLQ_EXP_NO_OUT_T=1 timeout 40 $E "E8P 2-bit" "E8P 4-bit" ) >> $L/exp.log 2>&1; echo none; tail -2 $L/exp.log; el
GLQ_BENCH_LAYERS=e8-2 timeout 60 build-gpu/cuda/linear_bench 1 2>&1 | tail -6

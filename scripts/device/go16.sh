#!/bin/bash
# call 2 of go15 (within the idle window, carry model/part.ab and part.ac): cuda_spec with SmolLM2, SmolLM2 GPU decode
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
( timeout 200 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec2.log 2>&1; tail -3 $L/cuda_spec2.log; el
( timeout 200 build-gpu/glq bench/model_bench.lua 64 cuda 3 "E8 2-bit,E8P 2-bit,trellis 2-bit" ) > $L/smol_gpu.log 2>&1; tail -8 $L/smol_gpu.log; el
# where the E8P 2-bit decode step goes now (each kernel alone; ncu serialises them)
( timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --launch-skip 9000 --launch-count 1200 build-gpu/bench/e2e_bench "E8P 2-bit" ) > $L/ncu_e2e.csv 2> $L/ncu_e2e.err; python3 .device/ncu_sum.py $L/ncu_e2e.csv | head -16; el

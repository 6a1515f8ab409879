#!/bin/bash
# go9 (cluster transforms) plus: e2e with clusters and split inputs off, an ncu profile of the E8P decode step with clusters
bash .device/go9.sh
source .device/setup.sh
L=$OUT/logs
( GLQ_CUDA_CLUSTERS=1 GLQ_CUDA_SPLIT_INPUTS=0 timeout 60 build-gpu/bench/e2e_bench "E8P 2-bit" "E8P 4-bit" ) > $L/e2e_nosplit.log 2>&1; tail -4 $L/e2e_nosplit.log
( GLQ_CUDA_CLUSTERS=1 timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --launch-skip 9000 --launch-count 1200 build-gpu/bench/e2e_bench "E8P 2-bit" ) > $L/ncu_e2e.csv 2> $L/ncu_e2e.err; tail -2 $L/ncu_e2e.err
python3 .device/ncu_sum.py $L/ncu_e2e.csv 2>&1 | head -20

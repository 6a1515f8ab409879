#!/bin/bash
source .device/setup.sh
L=$OUT/logs
( time timeout ${1:-150} ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --launch-skip 9000 --launch-count 1200 build-gpu/bench/e2e_bench "E8P 2-bit" ) > $L/ncu_e2e.csv 2> $L/ncu_e2e.err; tail -3 $L/ncu_e2e.err; wc -l $L/ncu_e2e.csv

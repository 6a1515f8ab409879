#!/bin/bash
source .device/setup.sh
L=$OUT/logs
nvidia-smi -L > $L/smi.txt 2>&1; cat $L/smi.txt
( time timeout 120 build-gpu/cuda/trellis_check ) > $L/trellis_check.log 2>&1; grep -i "passed\|failed\|real\|ms" $L/trellis_check.log | tail -8
( time timeout 200 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|failed\|real" $L/linear_check.log | tail -3
( time timeout 200 build-gpu/cuda/ldlq_check ) > $L/ldlq_check.log 2>&1; grep -i "passed\|failed\|real" $L/ldlq_check.log | tail -3
( time timeout 300 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -4 $L/cuda_spec.log
( time timeout 120 build-gpu/glq bench/trellis_time.lua 1536x576,576x1536 2 cuda ) > $L/trellis_time.log 2>&1; tail -6 $L/trellis_time.log

#!/bin/bash
# second call: SmolLM2 joined; cuda_spec with it, SmolLM2 GPU decode (model_bench cuda)
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
ls -la $HOME/.cache/glq/
( time timeout 200 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec2.log 2>&1; tail -6 $L/cuda_spec2.log; el
( time timeout 200 build-gpu/glq bench/model_bench.lua 64 cuda 3 "E8 2-bit,E8P 2-bit,trellis 2-bit" ) > $L/smol_gpu.log 2>&1; tail -12 $L/smol_gpu.log; el

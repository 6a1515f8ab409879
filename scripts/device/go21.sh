#!/bin/bash
# call 2 of go20 (within the idle window; carry model/part.ab and part.ac, part.aa came with go20): cuda_spec with
# SmolLM2, SmolLM2 GPU decode with the E8P weights loaded ahead as built and x prefetched (GLQ_CUDA_STAGE_X=2) or not
source .device/setup.sh
L=$OUT/logs; T0=$(date +%s); el() { echo "t=$(( $(date +%s) - T0 ))"; }
ls -la $HOME/.cache/glq/
( timeout 240 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec_smol.log 2>&1; tail -3 $L/cuda_spec_smol.log; el
for m in 0 2; do
( GLQ_CUDA_STAGE_X=$m timeout 150 build-gpu/glq bench/model_bench.lua 64 cuda 3 "E8P 2-bit" ) > $L/smol_gpu_$m.log 2>&1; echo "stage $m"; tail -6 $L/smol_gpu_$m.log; el
done

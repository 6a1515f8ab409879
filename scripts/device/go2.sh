#!/bin/bash
source .device/setup.sh
L=$OUT/logs
ls -la $HOME/.cache/glq/ > $L/model.txt 2>&1; sha256sum $HOME/.cache/glq/SmolLM2-135M-Instruct.Q4_1.gguf >> $L/model.txt
if [ ! -f /tmp/glq-q/started ]; then
  mkdir -p /tmp/glq-q && touch /tmp/glq-q/started
  setsid nohup bash -c '.device/quality.sh t3 trellis-3 4' > /dev/null 2>&1 < /dev/null &
  setsid nohup bash -c '.device/quality.sh t4 trellis-4 4' > /dev/null 2>&1 < /dev/null &
  setsid nohup bash -c '.device/quality.sh t2 trellis-2 4' > /dev/null 2>&1 < /dev/null &
  setsid nohup bash -c '.device/quality.sh tm trellis-mixed-2.5 4' > /dev/null 2>&1 < /dev/null &
fi
( time timeout 400 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -5 $L/cuda_spec.log
mkdir -p build-gpu/gpu-results
( time timeout 150 build-gpu/cuda/kernel_bench build-gpu/gpu-results ) > $L/kernel_bench.log 2>&1; grep -i "passed\|failed\|real" $L/kernel_bench.log | tail -3
cp /tmp/glq-q/*.log $L/ 2>/dev/null; for f in /tmp/glq-q/*/quality.md; do [ -f $f ] && cp $f $L/$(basename $(dirname $f)).md; done
for f in /tmp/glq-q/*.log; do echo "== $f"; tail -2 $f; done

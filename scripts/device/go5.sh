#!/bin/bash
# call 2 when the budget allows one long call: rows in the background, the checks, then poll until ~LIMIT s
source .device/setup.sh
L=$OUT/logs
T0=$(date +%s); LIMIT=${LIMIT:-540}
el() { echo $(( $(date +%s) - T0 )); }
ls -la $HOME/.cache/glq/ > $L/model.txt 2>&1; sha256sum $HOME/.cache/glq/SmolLM2-135M-Instruct.Q4_1.gguf >> $L/model.txt
nvidia-smi -L > $L/smi.txt
if [ ! -f /tmp/glq-q/started ]; then
  mkdir -p /tmp/glq-q && touch /tmp/glq-q/started
  for r in ${ROWS:-t3:trellis-3 t4:trellis-4 t2:trellis-2}; do
    setsid nohup bash -c ".device/quality.sh ${r%%:*} ${r#*:} ${RT:-4}" > /dev/null 2>&1 < /dev/null &
  done
fi
( time timeout 150 build-gpu/cuda/linear_check ) > $L/linear_check.log 2>&1; grep -i "passed\|failed\|real\|FAIL" $L/linear_check.log | tail -6; el
( time timeout 300 $BUSTED --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-gpu/lib/?.so' -o spec/support/output.lua spec/cuda_spec.lua ) > $L/cuda_spec.log 2>&1; tail -8 $L/cuda_spec.log; el
mkdir -p $L/kb
( time KERNEL_BENCH_CHECKS_ONLY=1 timeout 120 build-gpu/cuda/kernel_bench $L/kb ) > $L/kernel_bench.log 2>&1; grep -i "passed\|FAIL\|real" $L/kernel_bench.log | tail -6; el
[ $(el) -lt $((LIMIT - 120)) ] && { ( time timeout 60 build-gpu/cuda/ldlq_check ) > $L/ldlq_check.log 2>&1; grep -i "passed\|failed\|real" $L/ldlq_check.log | tail -3; }
[ $(el) -lt $((LIMIT - 150)) ] && { ( time timeout 120 build-gpu/cuda/trellis_check ) > $L/trellis_check.log 2>&1; grep -i "passed\|failed\|real" $L/trellis_check.log | tail -3; }
while [ $(el) -lt $LIMIT ]; do
  n=$(grep -l "^exit" /tmp/glq-q/*.log 2>/dev/null | wc -l); [ "$n" -ge $(echo ${ROWS:-a b c} | wc -w) ] && break; sleep 10
done
cp /tmp/glq-q/*.log $L/ 2>/dev/null; for f in /tmp/glq-q/*/quality.md; do [ -f $f ] && cp $f $L/$(basename $(dirname $f)).md; done
for f in /tmp/glq-q/*.log; do echo "== $f"; tail -3 $f; done; el

#!/bin/bash
# poll.sh SECONDS: wait, then copy the quality logs/tables
source .device/setup.sh
L=$OUT/logs
sleep ${1:-60}
cp /tmp/glq-q/*.log $L/ 2>/dev/null; for f in /tmp/glq-q/*/quality.md; do [ -f $f ] && cp $f $L/$(basename $(dirname $f)).md; done
for f in /tmp/glq-q/*.log; do echo "== $f"; tail -3 $f; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv

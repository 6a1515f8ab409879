#!/bin/bash
# quality.sh NAME ROWS [THREADS]: one full-protocol SmolLM2 run into logs/q-NAME.{log,md}
N=$1; ROWS=$2; T=${3:-5}
mkdir -p /tmp/glq-q
GLQ_THREADS=$T build-gpu/glq bench/quality.lua --model $HOME/.cache/glq/SmolLM2-135M-Instruct.Q4_1.gguf \
  --calib ../shared/text/calib/wiki.utf8 --text ../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt \
  --nsamples 128 --seqlen 2048 --eval-seqlen 2048 --device cuda --rows $ROWS --out /tmp/glq-q/$N > /tmp/glq-q/$N.log 2>&1
echo "exit $?" >> /tmp/glq-q/$N.log

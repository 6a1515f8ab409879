#!/bin/bash
# builds .device/pack.tar.xz: binaries of $B (renamed build-gpu), debs, the shared data the GPU runs read
set -e
cd "$(dirname "$0")/.."
B=${B:-build-gpu2}
rm -rf /tmp/pk && mkdir -p /tmp/pk/build-gpu/lib/glq /tmp/pk/build-gpu/cuda /tmp/pk/build-gpu/bench /tmp/pk/shared/text/calib /tmp/pk/shared/text/wikitext-2-raw /tmp/pk/shared/models
cp $B/glq /tmp/pk/build-gpu/; cp $B/lib/glq/core.so /tmp/pk/build-gpu/lib/glq/
for f in linear_check ldlq_check trellis_check linear_bench kernel_bench; do cp $B/cuda/$f /tmp/pk/build-gpu/cuda/; done
cp $B/bench/e2e_bench* /tmp/pk/build-gpu/bench/
cp -r .device/debs /tmp/pk/debs
cp -r ../shared/models/stories260K /tmp/pk/shared/models/
cp ../shared/text/calib/wiki.utf8 ../shared/text/calib/tiny.utf8 /tmp/pk/shared/text/calib/
cp ../shared/text/wikitext-2-raw/wikitext2_test_hf_joined.txt /tmp/pk/shared/text/wikitext-2-raw/
tar -C /tmp/pk -cJf .device/pack.tar.xz .
ls -la .device/pack.tar.xz

#!/bin/sh
# Builds the interop environments under $GLQ_INTEROP_DIR (default .interop/, git-ignored) from PyPI:
# one venv with torch + safetensors + numpy, and `pip install --target` directories per
# transformers major and per glq version, combined on PYTHONPATH by run.sh (torch is shared).
# Downloads go through pip's cache, so a rerun is fast; a finished step is marked and skipped.
set -eu
D=${GLQ_INTEROP_DIR:-.interop}
PY=${PYTHON:-python3}
T4=${GLQ_INTEROP_TF4:-4.57.6}
T5=${GLQ_INTEROP_TF5:-5.25.0}
OLD=${GLQ_INTEROP_GLQ_OLD:-0.2.7}
NEW=${GLQ_INTEROP_GLQ_NEW:-0.8.16}
mkdir -p "$D"
if [ ! -f "$D/venv/.done" ]; then
  rm -rf "$D/venv"
  "$PY" -m venv "$D/venv"
  # PyPI's torch (CPU use here); GLQ_INTEROP_TORCH_INDEX may point at a CPU-only index instead
  "$D/venv/bin/pip" install -q ${GLQ_INTEROP_TORCH_INDEX:+--index-url "$GLQ_INTEROP_TORCH_INDEX"} torch
  "$D/venv/bin/pip" install -q safetensors numpy psutil pyyaml
  # accelerate (transformers' quantized loading needs it) without its deps: huggingface_hub differs per major
  "$D/venv/bin/pip" install -q --no-deps accelerate
  touch "$D/venv/.done"
fi
tgt() { # dir, packages...
  dir=$1; shift
  if [ ! -f "$D/$dir/.done" ]; then
    rm -rf "${D:?}/$dir"
    "$D/venv/bin/pip" install -q --target "$D/$dir" "$@"
    touch "$D/$dir/.done"
  fi
}
# transformers with its own dependencies (tokenizers, huggingface_hub differ between majors)
tgt tf4 "transformers==$T4"
tgt tf5 "transformers==$T5"
# glq without dependencies: torch/transformers/safetensors come from the dirs above
tgt "glq-$OLD" --no-deps "glq==$OLD"
tgt "glq-$NEW" --no-deps "glq==$NEW"
echo "interop environments ready in $D (torch $("$D/venv/bin/python" -c 'import torch; print(torch.__version__)'), transformers $T4 / $T5, glq $OLD / $NEW)"

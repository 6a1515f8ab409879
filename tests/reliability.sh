#!/usr/bin/env bash
# Issue #17's scripted checks on stories260K (about a minute): `glq quantize` on a full disk (small
# tmpfs mounts: needs root, skipped with a message otherwise) fails naming the file and keeps its
# finished layers for --resume; kills at fixed points and at times resume to the same bytes as an
# uninterrupted run and leave no OUT.tmp.<pid>/ behind. Ends with "N passed, M failed".
# usage: tests/reliability.sh [path/to/glq]
set -u
cd "$(dirname "$0")/.."
BIN=${1:-${GLQ_BIN:-build/glq}}
S=../shared/models/stories260K
GGUF=$S/stories260K.gguf
TINY=../shared/text/calib/tiny.utf8
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

if [ ! -f "$GGUF" ] || [ ! -f "$TINY" ]; then
  echo "skip: ../shared (stories260K, calibration text) is absent"
  echo "0 passed, 0 failed"
  exit 0
fi
T=$(mktemp -d /tmp/glq-rel.XXXXXX)
MNT=$T/mnt
cleanup() { mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"; rm -rf "$T"; }
trap cleanup EXIT

q() { "$BIN" quantize --model "$GGUF" --calib "$TINY" --nsamples 16 --seqlen 256 --bpw 3 --quiet --output "$@"; }

# the reference: one uninterrupted run
if q "$T/ref" >"$T/ref.log" 2>&1; then ok "reference run"; else bad "reference run: $(tail -3 "$T/ref.log")"; fi

# same checkpoint as the reference (model.safetensors and config.json byte for byte), nothing left over
same_as_ref() {
  local out=$1 what=$2
  if cmp -s "$T/ref/model.safetensors" "$out/model.safetensors" && cmp -s "$T/ref/config.json" "$out/config.json" \
     && [ ! -e "$out/.glq-partial" ] && [ -z "$(ls -d "$out".tmp.* 2>/dev/null)" ]; then
    ok "$what: resumed to the reference's bytes, no leftovers"
  else
    local why=""
    cmp -s "$T/ref/model.safetensors" "$out/model.safetensors" || why="$why model.safetensors differs;"
    cmp -s "$T/ref/config.json" "$out/config.json" || why="$why config.json differs;"
    [ ! -e "$out/.glq-partial" ] || why="$why $out/.glq-partial left;"
    [ -z "$(ls -d "$out".tmp.* 2>/dev/null)" ] || why="$why $(ls -d "$out".tmp.* | tr '\n' ' ') left;"
    bad "$what: resumed checkpoint differs from the reference or left files behind:$why"
    cp -r "$out" "${GLQ_RELIABILITY_KEEP:-/tmp}/reliability-failed-$(basename "$out")" 2>/dev/null || true
  fi
}

# ---- full disk (item 1)
mkdir -p "$MNT"
if mount -t tmpfs -o size=552k tmpfs "$MNT" 2>/dev/null; then
  umount "$MNT"
  # 88k/128k: state.json's writes fail; 300k, 400k: the final checkpoint's (the layers of .glq-partial take ~190k);
  # 552k (the issue's): the tokenizer files' once, today the whole run fits
  for size in 88k 128k 300k 400k 552k; do
    mount -t tmpfs -o size=$size tmpfs "$MNT"
    q "$MNT/out" >"$T/full.log" 2>&1
    rc=$?
    msg=$(tail -1 "$T/full.log")
    if [ $rc -eq 0 ]; then # it fitted (the checkpoint writer got smaller): then it must be complete
      same_as_ref "$MNT/out" "full disk ($size): fitted"
      umount "$MNT"
      continue
    fi
    if [ $rc -ne 0 ] && grep -q "No space left on device" "$T/full.log" && echo "$msg" | grep -q "$MNT/out"; then
      ok "full disk ($size): exit $rc naming the file: $msg"
    else
      bad "full disk ($size): exit $rc: $msg"
    fi
    if [ -e "$MNT/out/config.json" ]; then bad "full disk ($size): a config.json was left (looks finished)"; else ok "full disk ($size): nothing looks finished"; fi
    if [ -f "$MNT/out/.glq-partial/state.json" ] && ! "$BIN" -e "assert(require('glq.json').read_file('$MNT/out/.glq-partial/state.json').layers)" >/dev/null 2>&1; then
      bad "full disk ($size): state.json is not valid"
    fi
    mount -o remount,size=16m "$MNT"
    if q "$MNT/out" --resume >"$T/resume.log" 2>&1; then same_as_ref "$MNT/out" "full disk ($size) then --resume"; else bad "full disk ($size): --resume failed: $(tail -2 "$T/resume.log")"; fi
    umount "$MNT"
  done
  # a read-only mount: the real errno, before any layer is quantized (item 5)
  mount -t tmpfs -o ro,size=64k tmpfs "$MNT"
  q "$MNT/out" >"$T/ro.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && grep -q "Read-only file system" "$T/ro.log"; then ok "read-only output: $(tail -1 "$T/ro.log")"; else bad "read-only output: exit $rc: $(tail -1 "$T/ro.log")"; fi
  umount "$MNT"
else
  echo "skip: full-disk checks (mounting a tmpfs is not permitted here)"
fi

# ---- kills at fixed points (item 6) and at times
# (tests/support/on_event.lua runs the recipe and SIGKILLs it at a glq.events event: partial.started = the
# run's directory made, before its first state.json; checkpoint.written = the final files in OUT.tmp.<pid>)
for point in partial.started checkpoint.written; do
  out=$T/kill-$point
  "$BIN" tests/support/on_event.lua $point kill quantize --model "$GGUF" --calib "$TINY" --nsamples 16 --seqlen 256 --bpw 3 \
    --quiet --output "$out" >"$T/kill.log" 2>&1
  rc=$?
  if [ $rc -eq 137 ]; then ok "killed at $point"; else bad "kill at $point: exit $rc"; fi
  if [ "$point" = checkpoint.written ] && [ -z "$(ls -d "$out".tmp.* 2>/dev/null)" ]; then bad "checkpoint.written kill left no $out.tmp.<pid> to clean (event not reached?)"; fi
  if q "$out" --resume >"$T/resume.log" 2>&1; then same_as_ref "$out" "kill at $point"; else bad "kill at $point: --resume failed: $(tail -2 "$T/resume.log")"; fi
done
for t in 0.4 0.8 1.2 1.6; do
  out=$T/kill-t$t
  # (timeout re-raises SIGKILL on itself: sh -c keeps the shell's "Killed" notice out of the log)
  sh -c 'timeout -s KILL "$@" >/dev/null 2>&1; true' - $t "$BIN" quantize --model "$GGUF" --calib "$TINY" --nsamples 16 --seqlen 256 --bpw 3 --quiet --output "$out"
  if [ -e "$out/config.json" ]; then
    ok "kill after ${t}s: the run had finished"
    continue
  fi
  if q "$out" --resume >"$T/resume.log" 2>&1; then same_as_ref "$out" "kill after ${t}s"; else bad "kill after ${t}s: --resume failed: $(tail -2 "$T/resume.log")"; fi
done

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

#!/usr/bin/env bash
# Build every fuzz/fuzz_*.c harness with clang's libFuzzer + ASan + UBSan and run each for a
# bounded time (seconds: $1, default 60). Prints one line per harness and "N passed, M failed".
set -uo pipefail
secs=${1:-60}
cd "$(dirname "$0")/.."
out=build-fuzz
mkdir -p "$out/obj"
if ! command -v clang >/dev/null 2>&1; then echo "fuzz: clang not installed"; echo "0 passed, 1 failed"; exit 1; fi
flags="-g -O1 -std=c11 -D_GNU_SOURCE -Isrc -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
objs=()
# the harnesses cover file parsers and tokenizers; only their sources are instrumented
for c in src/core/*.c src/io/*.c src/linalg/*.c src/model/tokenizer.c; do
  [ -f "$c" ] || continue
  o="$out/obj/$(echo "$c" | tr / _).o"
  if [ ! -f "$o" ] || [ "$c" -nt "$o" ]; then clang $flags -c "$c" -o "$o" || { echo "fuzz: cannot compile $c"; echo "0 passed, 1 failed"; exit 1; }; fi
  objs+=("$o")
done
pass=0; fail=0
for h in fuzz/fuzz_*.c; do
  [ -f "$h" ] || continue
  name=$(basename "$h" .c)
  bin="$out/$name"
  if ! clang $flags -fsanitize=fuzzer "$h" "${objs[@]}" -lopenblas -llapacke -lpcre2-8 -lm -lpthread -o "$bin"; then
    echo "FAIL $name (does not build)"; fail=$((fail + 1)); continue
  fi
  corpus="$out/corpus-$name"
  rm -rf "$corpus"; mkdir -p "$corpus"
  seed="fuzz/corpus/${name#fuzz_}"
  [ -d "$seed" ] && cp -r "$seed"/. "$corpus"/
  log="$out/$name.log"
  dict=()
  [ -f "fuzz/${name#fuzz_}.dict" ] && dict=(-dict="fuzz/${name#fuzz_}.dict")
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" "$corpus" >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "ok   $name: ${execs:-?} executions in ${secs}s, no crash"
    pass=$((pass + 1))
  else
    echo "FAIL $name: crash or leak; see $log"; tail -30 "$log"
    fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

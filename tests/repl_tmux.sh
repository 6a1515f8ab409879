#!/bin/sh
# repl_tmux.sh - drives the interactive `glq` REPL in a private tmux server and checks what a user
# sees: expression values, a tensor, multi-line chunks, errors, Ctrl-C at the prompt, Up-arrow
# history (in the session and in the history file), Tab completion, help, Ctrl-C during a
# computation (the prompt comes back, the state stays) and Ctrl-D; then glq chat (with SmolLM2):
# Ctrl-C stops a reply and the conversation goes on. Exits non-zero on the first failure.
# usage: tests/repl_tmux.sh [path/to/glq]   (default: build/glq next to this script's tests/)
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${GLQ_BIN:-$here/build/glq}}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
[ -x "$bin" ] || { echo "repl_tmux: no executable at $bin (build it first)"; exit 1; }
command -v tmux >/dev/null || { echo "repl_tmux: tmux not installed"; exit 1; }

tmp=$(mktemp -d)
sock="glq-repl-test-$$"
tm() { tmux -L "$sock" -f /dev/null "$@"; }
cleanup() { tm kill-server 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

fail() {
  echo "repl_tmux: FAIL: $1"
  echo "---- screen ----"
  tm capture-pane -p -t t 2>/dev/null
  exit 1
}
screen() { tm capture-pane -p -t t -S -200; }
# wait_for PATTERN [COUNT]: until the screen has COUNT (default 1) lines matching the regex
wait_for() {
  want=${2:-1}
  i=0
  while [ $i -lt 100 ]; do
    n=$(screen | grep -c -E -- "$1")
    [ "$n" -ge "$want" ] && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}
send() { tm send-keys -t t "$@"; }
# wait_last PATTERN: until the last non-empty screen line matches (e.g. a fresh prompt)
wait_last() {
  i=0
  while [ $i -lt 100 ]; do
    screen | grep -v '^$' | tail -1 | grep -q -E -- "$1" && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

tm new-session -d -s t -x 100 -y 50 \
  "env GLQ_HISTORY='$tmp/history' HOME='$tmp' '$bin'; echo \"glq-exit=\$?\"; sleep 30" || fail "cannot start tmux"

wait_for '^glq>' || fail "no prompt"

send -l '1+1'; send Enter
wait_for '^2$' || fail "1+1 did not print 2"

send -l 'glq.zeros("f32",{2,3})'; send Enter
wait_for 'f32' || fail "tensor not printed with its dtype"
screen | grep -q -E 'userdata|table: 0x' && fail "tensor printed as a raw address"
screen | grep -A3 'glq.zeros' | grep -q -E '2.*3' || fail "tensor shape 2x3 not shown"

send -l 'for i = 1, 2 do'; send Enter
wait_for '^>>' || fail "no continuation prompt for an incomplete chunk"
send -l 'print(i * 10)'; send Enter
send -l 'end'; send Enter
wait_for '^20$' || fail "multi-line chunk did not run"

send -l '{1, "two", x = 3}'; send Enter
wait_for '^\{1, "two", x = 3\}$' || fail "table not printed readably"

send -l 'error("oops")'; send Enter
wait_for 'oops' || fail "error message not shown"
send -l '"still", "alive"'; send Enter
wait_for '^still[[:space:]]+alive$' || fail "REPL did not continue after an error (or multiple values not printed)"

# typed at human speed: Ctrl-C once the text is on the line, the next line once the prompt is back
wait_last '^glq>$' || fail "no prompt after the error"
send -l 'this is half typed'
wait_last '^glq> this is half typed$' || fail "typed text not echoed"
send C-c
wait_last '^glq>$' || fail "Ctrl-C at the prompt did not give a fresh prompt"
send -l '6*7'; send Enter
wait_for '^42$' || fail "Ctrl-C at the prompt did not give a fresh line"

# Up arrow: the 7th entry back is 1+1 (entries: 1+1, zeros, for-chunk, table, error, still, 6*7)
send Up Up Up Up Up Up Up Enter
wait_for '^2$' 2 || fail "Up-arrow history did not recall 1+1"

# Tab completes fields (after '.') and methods (after ':')
send -l 'string.upp'; send Tab
send -l '("abc")'; send Enter
wait_for '^ABC$' || fail "Tab did not complete string.upper"
send -l 's = "abc"'; send Enter
send -l 's:rev'; send Tab
send -l '()'; send Enter
wait_for '^cba$' || fail "Tab did not complete the method s:reverse"

# help: the overview, and one function's docstring
send -l 'help'; send Enter
wait_for '^glq help: help\(glq.zeros\)' || fail "help did not print the overview"
send -l 'help(glq.zeros)'; send Enter
wait_for '^glq.zeros\(a, b\) +\[lua/glq/tensor.lua\]' || fail "help(glq.zeros) did not print its docstring"

# Ctrl-C during a computation stops it and returns to the prompt with the state kept
send -l 'kept = 41; n = 0'; send Enter
send -l 'for i = 1, 1e9 do n = n + glq.randn({16, 16}, i):sum() end'; send Enter
sleep 1
send C-c
wait_for '^interrupted$' || fail "Ctrl-C did not interrupt the running chunk"
wait_last '^glq>$' || fail "no prompt after interrupting a computation"
send -l 'kept + 1'; send Enter
wait_for '^42$' || fail "the REPL lost its state after Ctrl-C"

send C-d
wait_for '^glq-exit=' || fail "Ctrl-D did not leave the REPL"
wait_for '^glq-exit=0$' || fail "the REPL exited with a non-zero status"
screen | grep -q -E 'Sanitizer|runtime error' && fail "sanitizer report"
grep -qx '1+1' "$tmp/history" || fail "history file lacks 1+1"

[ -n "${REPL_TMUX_SHOW:-}" ] && screen

# glq chat (when SmolLM2 is fetched): Ctrl-C stops a reply, the next question is answered
smol=${GLQ_CACHE:-$HOME/.cache/glq}/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$smol" ]; then
  tm kill-session -t t
  tm new-session -d -s t -x 120 -y 50 \
    "env GLQ_HISTORY='$tmp/history' HOME='$tmp' '$bin' chat --model '$smol' --max-new-tokens 400; echo \"glq-exit=\$?\"; sleep 30" ||
    fail "cannot start glq chat"
  wait_for '^you>' || fail "glq chat: no prompt"
  send -l 'Write a long story about a dragon.'; send Enter
  wait_for '^you> Write a long story' || fail "glq chat: the message was not echoed"
  sleep 3
  send C-c
  wait_for '^\(reply interrupted; not kept\)$' || fail "glq chat: Ctrl-C did not stop the reply"
  wait_last '^you>$' || fail "glq chat: no prompt after Ctrl-C"
  send -l 'What is the capital of France?'; send Enter
  wait_for 'Paris' || fail "glq chat: no answer after an interrupted reply"
  wait_last '^you>$' || fail "glq chat: no prompt after the answer"
  send C-d
  wait_for '^glq-exit=0$' || fail "glq chat: Ctrl-D did not leave with status 0"
else
  echo "repl_tmux: glq chat part skipped (no $smol; make model fetches it)"
fi
echo "repl_tmux: ok"

#!/usr/bin/env bash
# Install the Debian/Ubuntu packages glq needs, only those missing. Safe to run repeatedly.
set -euo pipefail
pkgs=(gcc make pkg-config luajit libluajit-5.1-dev libopenblas-dev liblapacke-dev lua-cjson lua-busted
      luarocks libreadline-dev libpcre2-dev clang unzip python3-pip tmux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# libFuzzer's runtime ships in a package named after clang's major version
if command -v clang >/dev/null 2>&1; then
  v=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
  rt="libclang-rt-${v}-dev"
  if [ -n "$v" ] && ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q "install ok installed"; then missing+=("$rt"); fi
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
# a second pass for the libFuzzer runtime once clang itself is present
if ! printf '%s\n' "${missing[@]}" | grep -q '^libclang-rt' && command -v clang >/dev/null 2>&1; then
  v=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
  $SUDO apt-get install -y -qq "libclang-rt-${v}-dev" >/dev/null 2>&1 || echo "deps: libclang-rt-${v}-dev unavailable; make fuzz will skip"
fi
echo "deps: done"

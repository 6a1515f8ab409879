# sourced at the start of every device call: unpack once, environment every time
R=$PWD
if [ ! -x build-gpu/glq ] && [ -f .device/pack.tar.xz ]; then
  tar -xJf .device/pack.tar.xz -C "$R"
  mkdir -p .device/root && for f in debs/*.deb; do dpkg -x "$f" "$R/.device/root"; done
  if [ ! -d ../shared ]; then mkdir -p ../shared 2>/dev/null && cp -r shared/* ../shared/ || true; fi
fi
if [ -f .device/model/part.aa ] && [ -f .device/model/part.ab ] && [ -f .device/model/part.ac ] && [ ! -f $HOME/.cache/glq/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  mkdir -p $HOME/.cache/glq && cat .device/model/part.a? > $HOME/.cache/glq/SmolLM2-135M-Instruct.Q4_1.gguf
fi
export PATH="$R/.device/root/usr/bin:$PATH" LD_LIBRARY_PATH="$R/.device/root/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH"
export LUA_PATH="$R/.device/root/usr/share/lua/5.1/?.lua;$R/.device/root/usr/share/lua/5.1/?/init.lua;;"
export LUA_CPATH="$R/.device/root/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;"
export BUSTED="luajit $R/.device/root/usr/bin/busted" GLQ_BUILD=build-gpu
mkdir -p $OUT/logs 2>/dev/null || true

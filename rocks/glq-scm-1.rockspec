-- Builds glq from this source tree with the project Makefile (offline; no rock dependencies).
--   luarocks --lua-version=5.1 make rocks/glq-scm-1.rockspec --tree=DIR
-- installs the C module glq.core, the Lua modules glq.*, the recipes (as LUADIR/glq/recipes, where
-- the glq executable looks in a luarocks tree) and the glq executable into DIR/bin.
rockspec_format = "3.0"
package = "glq"
version = "scm-1"

source = {
  url = "git+file:///dev/null/glq.git", -- built from a checkout with `luarocks make`; nothing is fetched
}

description = {
  summary = "Post-training quantization of LLM weights (E8 lattice codebooks, HiF4) in C and LuaJIT",
  detailed = [[
A C runtime (tensors, safetensors/GGUF, E8 codebook, Hadamard transforms, LDLQ, HiF4, a Llama
forward pass; CUDA kernels when nvcc is present) driven from LuaJIT: recipes, a REPL and the
`glq` command. Needs LuaJIT 2.1, OpenBLAS, LAPACKE, PCRE2 and readline (Debian packages
libluajit-5.1-dev libopenblas-dev liblapacke-dev libpcre2-dev libreadline-dev).
]],
  license = "Apache-2.0",
}

dependencies = {
  "lua == 5.1", -- LuaJIT; satisfied by the interpreter itself, nothing is downloaded
}

build = {
  type = "make",
  -- luarocks' CFLAGS (-O2 -fPIC) are added to the project's own flags rather than replacing them;
  -- its own build directory, so `make` (build/) and `luarocks make` never rebuild each other's objects
  build_variables = {
    BUILD = "build-rocks",
    EXTRA_CFLAGS = "$(CFLAGS)",
  },
  install_variables = {
    BUILD = "build-rocks",
    EXTRA_CFLAGS = "$(CFLAGS)",
    PREFIX = "$(PREFIX)",
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    SHAREDIR = "$(LUADIR)/glq",
  },
}

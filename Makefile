# glq - build, test, bench, demo, install.  `make` builds the CPU library, the Lua C module and
# the `glq` executable; the CUDA backend is added when nvcc is found (force CPU with CUDA=0).
VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
LUADIR    ?= $(PREFIX)/share/lua/5.1
LIBDIR    ?= $(PREFIX)/lib/lua/5.1
SHAREDIR  ?= $(PREFIX)/share/glq

CC        ?= gcc
LUAJIT_INC ?= $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)
LUAJIT_LIB ?= $(shell pkg-config --libs luajit 2>/dev/null || echo -lluajit-5.1)
WERROR    ?= -Werror
OPT       ?= -O2
CFLAGS_BASE = -std=c11 $(OPT) -g -march=x86-64-v2 -Wall -Wextra $(WERROR) -D_GNU_SOURCE -fPIC \
              -DGLQ_VERSION=\"$(VERSION)\" -Isrc $(LUAJIT_INC)
LIBS      = -lopenblas -llapacke -lpcre2-8 -lm -lpthread -ldl

# NVCC: the CUDA backend is built when nvcc exists (CUDA=0 disables it)
NVCC      ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA      ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=compute_90
CU_SRCS   := $(if $(filter 1,$(CUDA)),$(wildcard cuda/*.cu),)

BUILD     ?= build
SRCS      := $(filter-out $(EXCLUDE),$(wildcard src/core/*.c src/io/*.c src/linalg/*.c src/quant/*.c src/layers/*.c src/model/*.c))
LUA_SRCS  := $(filter-out $(EXCLUDE),$(wildcard src/lua/*.c))
OBJS      := $(SRCS:%.c=$(BUILD)/obj/%.o)
LUA_OBJS  := $(LUA_SRCS:%.c=$(BUILD)/obj/%.o)
CU_OBJS   := $(CU_SRCS:%.cu=$(BUILD)/obj/%.o)
ifneq ($(CU_OBJS),)
CFLAGS_BASE += -DGLQ_HAVE_CUDA=1
LIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lstdc++
endif
CFLAGS    = $(CFLAGS_BASE) $(EXTRA_CFLAGS)
LDFLAGS  += $(EXTRA_LDFLAGS)

LIB       := $(BUILD)/libglq.a
MODULE    := $(BUILD)/lib/glq/core.so
EXE       := $(BUILD)/glq

.PHONY: all test test-c test-repl test-reliability test-asan test-interop test-gpu bench-gpu fuzz bench demo deps model install uninstall clean
all: $(LIB) $(MODULE) $(if $(wildcard src/main.c),$(EXE))

# objects are rebuilt when the flags change (e.g. switching between CUDA=0 and CUDA=1)
FLAGS_FILE := $(BUILD)/.flags
$(FLAGS_FILE): FORCE
	@mkdir -p $(BUILD)
	@echo '$(CFLAGS) $(CU_SRCS)' | cmp -s - $@ || echo '$(CFLAGS) $(CU_SRCS)' > $@
FORCE:

$(BUILD)/obj/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# (every CUDA object depends on the cuda/ headers, which hold the context struct; -MMD adds the rest;
# cuda/ldlq.cu and cuda/trellis.cu repeat the CPU's f32 arithmetic, so no multiply-add contraction there)
$(BUILD)/obj/%.o: %.cu $(wildcard cuda/*.h cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -std=c++17 $(CUDA_ARCH) $(if $(filter cuda/ldlq.cu cuda/trellis.cu,$<),-fmad=false) -Xcompiler -fPIC -Isrc -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(LIB): $(OBJS) $(CU_OBJS) $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $(OBJS) $(CU_OBJS)

$(MODULE): $(LUA_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(LUA_OBJS) $(LIB) $(LDFLAGS) $(LIBS)

$(EXE): src/main.c $(LUA_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ src/main.c $(LUA_OBJS) $(LIB) -Wl,-E $(LDFLAGS) $(LUAJIT_LIB) -lreadline $(LIBS)

-include $(OBJS:.o=.d) $(LUA_OBJS:.o=.d) $(CU_OBJS:.o=.d)

# ---- tests ----
BUSTED    ?= luajit /usr/bin/busted
SPEC      ?= spec
BUSTED_ARGS = --lpath='lua/?.lua;lua/?/init.lua' --cpath='$(BUILD)/lib/?.so' -o spec/support/output.lua
test: deps
	$(MAKE) all
	GLQ_BUILD=$(BUILD) $(BUSTED) $(BUSTED_ARGS) $(SPEC)

# C test programs (tests/c): exhaustive encoder check against brute force on ~10^6 vectors per
# codebook, dense kernels, the stories260K forward from llama2.c's checkpoint
C_TESTS := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/*.c))
$(BUILD)/tests/%: tests/c/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LIBS)
test-c: $(C_TESTS)
	@pass=0; fail=0; for t in $(C_TESTS); do \
	  if $$t >$$t.log 2>&1; then pass=$$((pass+1)); echo "ok   $$t"; \
	  else fail=$$((fail+1)); echo "FAIL $$t"; tail -20 $$t.log; fi; done; \
	echo "$$pass passed, $$fail failed"; [ $$fail -eq 0 ]

# issue #17's scripted checks: glq quantize on full tmpfs disks (root only, else skipped) and killed at
# fixed points and times, each resumed to the uninterrupted run's bytes (about a minute)
test-reliability: $(EXE)
	bash tests/reliability.sh $(EXE)

# the REPL driven in a terminal (tmux)
test-repl: $(EXE)
	sh tests/repl_tmux.sh $(EXE)

# AddressSanitizer + UBSan: the specs run against an instrumented module (luajit itself is not)
ASAN_RT := $(shell $(CC) -print-file-name=libasan.so)
test-asan:
	$(MAKE) BUILD=build-asan OPT=-O1 CUDA=0 EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" all
	LD_PRELOAD=$(ASAN_RT) ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  GLQ_BUILD=build-asan GLQ_ASAN=1 $(BUSTED) --lpath='lua/?.lua;lua/?/init.lua' --cpath='build-asan/lib/?.so' -o spec/support/output.lua $(SPEC)

# ---- fuzzing (clang libFuzzer), bounded runs ----
FUZZ_SECONDS ?= 60
FUZZ_SRCS := $(filter-out src/core/ops.c,$(SRCS))
fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# interop with the real Python glq (0.2.7 and the latest) on transformers 4 and 5, from PyPI into
# .interop/ (git-ignored; pip's cache makes reruns fast): our checkpoints are read exactly or refused
test-interop: all
	BUILD=$(BUILD) tests/interop/run.sh

# ---- GPU: kernel checks against an fp64 CPU reference + timings vs cuBLAS (needs a CUDA GPU) ----
# then glq_cuda_linear against the CPU layers (linear_check) and the GPU E8 search / LDLQ sweeps against
# the CPU's (ldlq_check), the GPU trellis Viterbi against the CPU's (trellis_check); they link the CUDA build
test-gpu: all
	$(MAKE) -f cuda/Makefile.inc CUDA_BUILD=$(BUILD)/cuda NVCC=$(NVCC) $(BUILD)/cuda/kernel_bench
	mkdir -p $(BUILD)/gpu-results && $(BUILD)/cuda/kernel_bench $(BUILD)/gpu-results
	$(MAKE) $(BUILD)/cuda/linear_check
	$(BUILD)/cuda/linear_check
	$(MAKE) $(BUILD)/cuda/ldlq_check
	$(BUILD)/cuda/ldlq_check
	$(MAKE) $(BUILD)/cuda/trellis_check
	$(BUILD)/cuda/trellis_check
	GLQ_BUILD=$(BUILD) $(BUSTED) $(BUSTED_ARGS) spec/cuda_spec.lua

# C programs against the CUDA build of the library: linear_check, ldlq_check, linear_bench
$(BUILD)/cuda/%: bench/cuda/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include -o $@ $< $(LIB) $(LDFLAGS) $(LIBS)

# GPU benchmarks: kernels vs cuBLAS (kernel_bench), glq_cuda_linear at small batch against its bare
# matmul and cuBLAS (linear_bench), the 8B-shaped model end to end (e2e_bench), SmolLM2-135M on the
# GPU (model_bench.lua cuda)
$(BUILD)/bench/e2e_bench: bench/cuda/e2e_bench.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LIBS)
bench-gpu: all $(BUILD)/bench/e2e_bench $(BUILD)/cuda/linear_bench
	$(MAKE) -f cuda/Makefile.inc CUDA_BUILD=$(BUILD)/cuda NVCC=$(NVCC) $(BUILD)/cuda/kernel_bench
	mkdir -p $(BUILD)/gpu-results && $(BUILD)/cuda/kernel_bench $(BUILD)/gpu-results
	$(BUILD)/cuda/linear_bench
	$(BUILD)/bench/e2e_bench
	$(EXE) bench/model_bench.lua 64 cuda 3
	$(EXE) bench/ldlq_bench.lua
	$(EXE) bench/trellis_time.lua 4096x4096,1536x576 2,4 cuda

# ---- benchmarks, demo, model, deps ----
bench: all
	@bash scripts/bench.sh

demo: deps all model
	$(EXE) demo

model:
	@bash scripts/fetch-model.sh

deps:
	@bash scripts/install-deps.sh

# ---- install (also used by the luarocks rockspec) ----
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/glq $(DESTDIR)$(LIBDIR)/glq $(DESTDIR)$(SHAREDIR)/recipes
	install -m 755 $(EXE) $(DESTDIR)$(BINDIR)/glq
	install -m 755 $(MODULE) $(DESTDIR)$(LIBDIR)/glq/core.so
	install -m 644 lua/glq/*.lua $(DESTDIR)$(LUADIR)/glq/
	install -m 644 recipes/*.lua $(DESTDIR)$(SHAREDIR)/recipes/
	install -d $(DESTDIR)$(SHAREDIR)/scripts
	install -m 755 scripts/fetch-model.sh $(DESTDIR)$(SHAREDIR)/scripts/

uninstall:
	rm -rf $(DESTDIR)$(BINDIR)/glq $(DESTDIR)$(LUADIR)/glq $(DESTDIR)$(LIBDIR)/glq $(DESTDIR)$(SHAREDIR)

clean:
	rm -rf build build-asan build-fuzz build-rocks

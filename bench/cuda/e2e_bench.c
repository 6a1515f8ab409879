/* e2e_bench.c - end-to-end GPU throughput of a model with Llama-3-8B shapes (dim 4096, 32 layers,
 * 32 heads / 8 KV heads of 128, MLP 14336, vocabulary 128256, llama3 RoPE) whose projections are
 * random valid layers (values do not change the work): dense bf16, E8 shell, E8P and trellis (3inst) at
 * 2/3/4 bits, HiF4.
 * Prefill: one sequence of PREFILL tokens, median of 3 after a warm-up. Decode: after a 128-token
 * prompt, DECODE steps of one token with the KV cache (CUDA graphs on), median step time.
 * The embedding and head stay bf16 in every variant. Usage: e2e_bench [variant ...], a variant named by its
 * label ("E8P 2-bit") or its kind (dense, e8, e8p, trellis, hif4: every width of that kind); none: all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model/llama.h"
#include "core/error.h"
#include "../../cuda/model_cuda.h"

enum { PREFILL = 2048, PROMPT = 128, DECODE = 128, MAX_SEQ = 4096 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#define CHECK(x)                                                        \
  do {                                                                  \
    if ((x) != 0) {                                                     \
      fprintf(stderr, "e2e_bench: %s: %s\n", #x, glq_errmsg());         \
      return 1;                                                         \
    }                                                                   \
  } while (0)

static int run(const char *kind, int bits, const char *label, glq_llama *cpu, const glq_llama_config *cfg) {
  glq_cuda_llama *g;
  CHECK(glq_cuda_llama_new(cpu, 1, &g));
  double t0 = now();
  for (int l = 0; l < cfg->n_layers; l++) CHECK(glq_cuda_llama_random_layer(g, l, kind, bits, 1000 + (uint64_t)l));
  CHECK(glq_cuda_llama_random_head(g, 7));
  double build_s = now() - t0;
  size_t bytes = glq_cuda_llama_bytes(g);
  int32_t *tok = malloc(sizeof(int32_t) * PREFILL);
  float *logits = malloc(sizeof(float) * cfg->vocab);
  for (int i = 0; i < PREFILL; i++) tok[i] = (int32_t)((i * 7919u) % (unsigned)cfg->vocab);
  double pt[3];
  CHECK(glq_cuda_llama_forward(g, NULL, tok, 1, PREFILL, logits, 0)); /* warm-up */
  for (int r = 0; r < 3; r++) {
    double a = now();
    CHECK(glq_cuda_llama_forward(g, NULL, tok, 1, PREFILL, logits, 0));
    pt[r] = now() - a;
  }
  qsort(pt, 3, sizeof(double), cmp);
  glq_cuda_kv *kv;
  CHECK(glq_cuda_kv_new(g, 1, MAX_SEQ, &kv));
  double dt[DECODE];
  for (int rep = 0; rep < 2; rep++) { /* the first pass warms up */
    glq_cuda_kv_reset(kv);
    CHECK(glq_cuda_llama_forward(g, kv, tok, 1, PROMPT, logits, 0));
    for (int s = 0; s < DECODE; s++) {
      int32_t t = tok[PROMPT + s];
      double a = now();
      CHECK(glq_cuda_llama_forward(g, kv, &t, 1, 1, logits, 0));
      dt[s] = now() - a;
    }
  }
  qsort(dt, DECODE, sizeof(double), cmp);
  printf("| %-13s | %8.2f | %10.0f | %9.3f | %9.1f |\n", label, bytes / 1e9, PREFILL / pt[1], dt[DECODE / 2] * 1e3,
         1.0 / dt[DECODE / 2]);
  fflush(stdout);
  (void)build_s;
  glq_cuda_kv_free(kv);
  glq_cuda_llama_free(g);
  free(tok);
  free(logits);
  return 0;
}

int main(int argc, char **argv) {
  char desc[256];
  if (glq_cuda_describe(desc, sizeof desc)) {
    printf("e2e_bench: no CUDA device (%s); skipped\n", desc);
    return 0;
  }
  glq_llama_config cfg = {0};
  cfg.dim = 4096; cfg.n_layers = 32; cfg.n_heads = 32; cfg.n_kv_heads = 8; cfg.head_dim = 128;
  cfg.ffn_dim = 14336; cfg.vocab = 128256; cfg.max_seq = MAX_SEQ; cfg.norm_eps = 1e-5f; cfg.rope_theta = 500000.0f;
  cfg.rope_layout = GLQ_ROPE_HALF; cfg.rope_scaling = GLQ_ROPE_SCALE_LLAMA3; cfg.rope_factor = 8.0f;
  cfg.rope_low_freq_factor = 1.0f; cfg.rope_high_freq_factor = 4.0f; cfg.rope_original_max_pos = 8192; cfg.tied = 0;
  glq_llama *cpu;
  CHECK(glq_llama_new(&cfg, 1, &cpu));
  const char *sp = getenv("GLQ_CUDA_SPLIT_INPUTS");
  printf("Llama-3-8B-shaped model on %s; prefill 1 x %d tokens; decode after a %d-token prompt (median of %d steps); "
         "quantized layers take %s inputs at decode (GLQ_CUDA_SPLIT_INPUTS); GLQ_CUDA_CLUSTERS=%s\n\n",
         desc, PREFILL, PROMPT, DECODE, sp && !strcmp(sp, "0") ? "bf16" : "split bf16 hi + lo",
         getenv("GLQ_CUDA_CLUSTERS") ? getenv("GLQ_CUDA_CLUSTERS") : "(unset: the build's default)");
  printf("| projections | weights GB | prefill tok/s | decode ms/token | decode tok/s |\n|---|---|---|---|---|\n");
  struct { const char *kind; int bits; const char *label; } v[] = {
    {"dense", 16, "dense bf16"}, {"e8", 2, "E8 2-bit"},          {"e8", 3, "E8 3-bit"},
    {"e8", 4, "E8 4-bit"},       {"e8p", 2, "E8P 2-bit"},        {"e8p", 3, "E8P 3-bit"},
    {"e8p", 4, "E8P 4-bit"},     {"trellis", 2, "trellis 2-bit"}, {"trellis", 3, "trellis 3-bit"},
    {"trellis", 4, "trellis 4-bit"}, {"hif4", 4, "HiF4"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    int pick = argc < 2;
    for (int a = 1; a < argc; a++) pick |= !strcmp(argv[a], v[i].label) || !strcmp(argv[a], v[i].kind);
    if (pick && run(v[i].kind, v[i].bits, v[i].label, cpu, &cfg)) return 1;
  }
  glq_llama_free(cpu);
  return 0;
}

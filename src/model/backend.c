/* backend.c - the CPU backend (llama.c's forward and kvcache.c's caches behind backend.h's table)
 * and the choice of a backend by device name. */
#include "backend.h"
#include "evalops.h"
#include <stdlib.h>
#include <string.h>
#ifdef GLQ_HAVE_CUDA
#include "../../cuda/model_cuda.h"
#endif

/* ---- CPU KV cache: a glq_kvcache ---- */

static glq_kvcache *kv_of(const glq_model_kv *kv) { return kv->impl; }
static int ckv_len(const glq_model_kv *kv) { return glq_kvcache_len(kv_of(kv)); }
static int ckv_advance(glq_model_kv *kv, int T) { return glq_kvcache_advance(kv_of(kv), T); }
static void ckv_reset(glq_model_kv *kv) { glq_kvcache_reset(kv_of(kv)); }
static size_t ckv_bytes(const glq_model_kv *kv) { return glq_kvcache_bytes(kv_of(kv)); }
static void ckv_free(glq_model_kv *kv) {
  glq_kvcache_free(kv_of(kv));
  free(kv);
}
static const glq_model_kv_vt cpu_kv_vt = {ckv_len, ckv_advance, ckv_reset, ckv_bytes, ckv_free};

/* the glq_kvcache of kv, or an error when kv belongs to another backend */
static int cpu_cache(glq_model_kv *kv, glq_kvcache **out) {
  *out = NULL;
  if (!kv) return GLQ_OK;
  if (kv->vt != &cpu_kv_vt) return glq_error(GLQ_EINVAL, "a %s KV cache cannot serve a model on the cpu", kv->device);
  *out = kv_of(kv);
  return GLQ_OK;
}

static int cpu_kv_new(glq_model_backend *b, const glq_kvcache_config *cfg, glq_model_kv **out) {
  *out = NULL;
  glq_model_kv *kv = calloc(1, sizeof *kv);
  if (!kv) return glq_error(GLQ_ENOMEM, "kvcache: out of memory");
  (void)b;
  glq_kvcache *c;
  int rc = glq_kvcache_new(cfg, &c);
  if (rc) {
    free(kv);
    return rc;
  }
  *kv = (glq_model_kv){&cpu_kv_vt, "cpu", c};
  *out = kv;
  return GLQ_OK;
}

/* ---- CPU forward ---- */

static void cpu_free(glq_model_backend *b) { free(b); }
static int cpu_sync_layer(glq_model_backend *b, int l) {
  glq_llama_view v;
  return glq_llama_layer_view(b->cpu, l, &v); /* the weights are used where they are: only check they are set */
}
static void cpu_drop_layer(glq_model_backend *b, int l) { (void)b; (void)l; }
static int cpu_sync_head(glq_model_backend *b) { (void)b; return GLQ_OK; }
static size_t cpu_bytes(const glq_model_backend *b) { (void)b; return 0; }

static int cpu_embed(glq_model_backend *b, const int32_t *tokens, int64_t n, float *hidden) {
  return glq_llama_embed(b->cpu, tokens, n, hidden);
}

/* Without a cache the sequences are independent: one at a time (the scratch is one sequence's, and
 * each gives the bytes it gives alone); in_place = 0 runs each on a copy. */
static int cpu_layer(glq_model_backend *b, int l, float *hidden, int B, int T, glq_model_kv *kv, glq_llama_capture *cap,
                     int in_place) {
  glq_kvcache *c;
  int rc = cpu_cache(kv, &c);
  if (rc) return rc;
  if (c) {
    if (!in_place) return glq_error(GLQ_EINVAL, "llama layer %d: a cached call must run in place", l);
    return glq_llama_layer(b->cpu, l, hidden, B, T, glq_kvcache_len(c), c, cap);
  }
  size_t seq = (size_t)T * (size_t)glq_llama_config_of(b->cpu)->dim;
  float *copy = NULL;
  if (!in_place && !(copy = malloc(seq * sizeof(float))))
    return glq_error(GLQ_ENOMEM, "llama layer %d: cannot allocate a sequence of %d positions", l, T);
  for (int s = 0; s < B && !rc; s++) {
    float *h = hidden + (size_t)s * seq;
    if (copy) h = memcpy(copy, h, seq * sizeof(float));
    rc = glq_llama_layer(b->cpu, l, h, 1, T, 0, NULL, cap);
  }
  free(copy);
  return rc;
}

static int cpu_head(glq_model_backend *b, const float *hidden, int64_t n, float *logits) {
  return glq_llama_head(b->cpu, hidden, n, logits);
}

static int cpu_forward(glq_model_backend *b, glq_model_kv *kv, const int32_t *tokens, int B, int T, float *logits,
                       int all_logits, int32_t *next) {
  glq_kvcache *c;
  int rc = cpu_cache(kv, &c);
  if (rc || !next) return rc ? rc : glq_llama_forward(b->cpu, c, tokens, B, T, logits, all_logits);
  if (B < 1) return glq_error(GLQ_EINVAL, "llama forward: B=%d must be >= 1", B);
  int64_t V = glq_llama_config_of(b->cpu)->vocab;
  float *lg = malloc((size_t)B * (size_t)V * sizeof(float));
  if (!lg) return glq_error(GLQ_ENOMEM, "llama forward: out of memory for %d rows of logits", B);
  rc = glq_llama_forward(b->cpu, c, tokens, B, T, lg, 0);
  for (int s = 0; s < B && !rc; s++) {
    const float *row = lg + (size_t)s * V;
    int64_t best = 0;
    for (int64_t j = 0; j < V && best >= 0; j++) {
      if (row[j] != row[j]) best = -1;
      else if (row[j] > row[best]) best = j;
    }
    if (best < 0) rc = glq_error(GLQ_ENUMERIC, "llama forward: the logits of sequence %d contain NaN", s + 1);
    next[s] = (int32_t)best;
  }
  free(lg);
  return rc;
}

static int cpu_tensor_new(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out) {
  return glq_tensor_new(dt, ndim, shape, out);
}

static const glq_model_backend_vt cpu_vt = {
  "cpu", GLQ_BACKEND_KV_QUANT, GLQ_STORAGE_HEAP, 128, cpu_free, cpu_tensor_new, cpu_sync_layer, cpu_drop_layer,
  cpu_sync_head, cpu_bytes, cpu_embed, cpu_layer, cpu_head, cpu_forward, cpu_kv_new, glq_nll_rows, glq_kl_rows};

int glq_cpu_backend_new(glq_llama *m, glq_model_backend **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return glq_error(GLQ_ENOMEM, "cpu backend: out of memory");
  (*out)->vt = &cpu_vt;
  (*out)->cpu = m;
  return GLQ_OK;
}

/* ---- by name ---- */

int glq_model_backend_new(const char *device, glq_llama *m, const glq_backend_opts *opts, glq_model_backend **out) {
  *out = NULL;
  glq_backend_opts none = {0};
  if (!opts) opts = &none;
  (void)opts; /* read by the CUDA backend only */
  if (!strcmp(device, "cpu")) return glq_cpu_backend_new(m, out);
  if (!strcmp(device, "cuda")) {
#ifdef GLQ_HAVE_CUDA
    return glq_cuda_backend_new(m, opts->dense_bf16, out);
#else
    return glq_error(GLQ_EUNSUPPORTED, "device cuda: this build has no CUDA backend (nvcc was not found at build time)");
#endif
  }
  return glq_error(GLQ_EINVAL, "unknown device \"%s\" (cpu or cuda)", device);
}

void glq_model_backend_free(glq_model_backend *b) {
  if (b) b->vt->free(b);
}

/* backend.cu - the model backend of src/model/backend.h on the GPU: each operation is a call into
 * the device model of cuda/llama.cu (glq_cuda_llama), whose kernels follow llama.c's forward step
 * for step. Hessians are summed on the device (fp64 cuBLAS) and added into the caller's host
 * matrices; the KV cache is the device's f32 cache. */
#include <stdlib.h>
#include <string.h>
#include "model_cuda.h"
extern "C" {
#include "../src/model/backend.h"
}

typedef struct {
  glq_model_backend base;   /* first: a glq_model_backend * is a cuda_backend * */
  glq_cuda_llama *g;
} cuda_backend;

static glq_cuda_llama *dev(const glq_model_backend *b) { return ((const cuda_backend *)b)->g; }

/* ---- KV cache: a glq_cuda_kv ---- */

static glq_cuda_kv *kv_of(const glq_model_kv *kv) { return (glq_cuda_kv *)kv->impl; }
static int gkv_len(const glq_model_kv *kv) { return glq_cuda_kv_len(kv_of(kv)); }
static int gkv_advance(glq_model_kv *kv, int T) { return glq_cuda_kv_advance(kv_of(kv), T); }
static void gkv_reset(glq_model_kv *kv) { glq_cuda_kv_reset(kv_of(kv)); }
static size_t gkv_bytes(const glq_model_kv *kv) { return glq_cuda_kv_bytes(kv_of(kv)); }
static void gkv_free(glq_model_kv *kv) {
  glq_cuda_kv_free(kv_of(kv));
  free(kv);
}
static const glq_model_kv_vt cuda_kv_vt = {gkv_len, gkv_advance, gkv_reset, gkv_bytes, gkv_free};

/* the device cache of kv (NULL for none), or an error when kv belongs to another backend */
static int cuda_cache(glq_model_kv *kv, glq_cuda_kv **out) {
  *out = NULL;
  if (!kv) return GLQ_OK;
  if (kv->vt != &cuda_kv_vt) return glq_error(GLQ_EINVAL, "a %s KV cache cannot serve a model on the GPU", kv->device);
  *out = kv_of(kv);
  return GLQ_OK;
}

static int cuda_kv_new(glq_model_backend *b, const glq_kvcache_config *cfg, glq_model_kv **out) {
  *out = NULL;
  if (cfg->dtype != GLQ_KV_F32)
    return glq_error(GLQ_EUNSUPPORTED, "the GPU KV cache is f32 (--kv-cache %s runs on the CPU only)",
                     cfg->dtype == GLQ_KV_F16 ? "f16" : "int8");
  glq_model_kv *kv = (glq_model_kv *)calloc(1, sizeof *kv);
  if (!kv) return glq_error(GLQ_ENOMEM, "GPU KV cache: out of host memory");
  glq_cuda_kv *c;
  int rc = glq_cuda_kv_new(dev(b), cfg->batch, cfg->max_seq, &c);
  if (rc) {
    free(kv);
    return rc;
  }
  kv->vt = &cuda_kv_vt;
  kv->device = "cuda";
  kv->impl = c;
  *out = kv;
  return GLQ_OK;
}

/* ---- forward ---- */

static void cuda_free(glq_model_backend *b) {
  glq_cuda_llama_free(dev(b));
  free(b);
}
static int cuda_sync_layer(glq_model_backend *b, int l) { return glq_cuda_llama_sync_layer(dev(b), b->cpu, l); }
static void cuda_drop_layer(glq_model_backend *b, int l) { glq_cuda_llama_drop_layer(dev(b), l); }
static int cuda_sync_head(glq_model_backend *b) { return glq_cuda_llama_sync_head(dev(b), b->cpu); }
static size_t cuda_bytes(const glq_model_backend *b) { return glq_cuda_llama_bytes(dev(b)); }

static int cuda_embed(glq_model_backend *b, const int32_t *tokens, int64_t n, float *hidden) {
  return glq_cuda_llama_embed(dev(b), tokens, n, hidden);
}

/* H[i] += the device's sum of this call for every input the caller asked for */
static int add_capture(const glq_cuda_capture *c, glq_llama_capture *cap) {
  for (int i = 0; i < GLQ_CAP_N; i++) {
    if (!cap->H[i]) continue;
    int64_t d = glq_cuda_capture_dim(c, i);
    double *h = (double *)malloc((size_t)d * (size_t)d * sizeof(double));
    if (!h) return glq_error(GLQ_ENOMEM, "GPU capture: out of host memory for a %lld x %lld Hessian", (long long)d, (long long)d);
    int rc = glq_cuda_capture_download(c, i, h);
    for (int64_t k = 0; !rc && k < d * d; k++) cap->H[i][k] += h[k];
    free(h);
    if (rc) return rc;
    cap->rows[i] += glq_cuda_capture_rows(c, i);
  }
  return GLQ_OK;
}

static int cuda_layer(glq_model_backend *b, int l, float *hidden, int B, int T, glq_model_kv *kv, glq_llama_capture *cap,
                      int in_place) {
  glq_cuda_kv *c;
  glq_cuda_capture *gc = NULL;
  int rc = cuda_cache(kv, &c);
  if (!rc && cap) rc = glq_cuda_capture_new(dev(b), &gc);
  if (!rc) rc = glq_cuda_llama_layer(dev(b), l, hidden, B, T, c, gc, in_place);
  if (!rc && gc) rc = add_capture(gc, cap);
  glq_cuda_capture_free(gc);
  return rc;
}

static int cuda_head(glq_model_backend *b, const float *hidden, int64_t n, float *logits) {
  int rc = glq_cuda_llama_head(dev(b), hidden, n, logits);
  return rc ? rc : glq_cuda_llama_sync(dev(b));
}

static int cuda_forward(glq_model_backend *b, glq_model_kv *kv, const int32_t *tokens, int B, int T, float *logits,
                        int all_logits, int32_t *next) {
  glq_cuda_kv *c;
  int rc = cuda_cache(kv, &c);
  if (rc) return rc;
  if (next) return glq_cuda_llama_forward_argmax(dev(b), c, tokens, B, T, next);
  return glq_cuda_llama_forward(dev(b), c, tokens, B, T, logits, all_logits);
}

static const glq_model_backend_vt cuda_vt = {
  "cuda", GLQ_BACKEND_ARGMAX, GLQ_STORAGE_CUDA, 512, cuda_free, glq_cuda_tensor_new, cuda_sync_layer, cuda_drop_layer,
  cuda_sync_head, cuda_bytes, cuda_embed, cuda_layer, cuda_head, cuda_forward, cuda_kv_new, glq_cuda_nll_rows,
  glq_cuda_kl_rows};

extern "C" int glq_cuda_backend_new(glq_llama *cpu, int dense_bf16, glq_model_backend **out) {
  *out = NULL;
  cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
  if (!b) return glq_error(GLQ_ENOMEM, "GPU model: out of host memory");
  int rc = glq_cuda_llama_new(cpu, dense_bf16, &b->g);
  if (rc) {
    free(b);
    return rc;
  }
  b->base.vt = &cuda_vt;
  b->base.cpu = cpu;
  *out = &b->base;
  return GLQ_OK;
}

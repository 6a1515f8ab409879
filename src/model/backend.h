/* backend.h - one model, two devices: the Llama forward pass as a table of operations that the CPU
 * (llama.c + kvcache.c, in backend.c) and the GPU (cuda/backend.cu over cuda/llama.cu) implement.
 *
 * The weights always live in a CPU glq_llama, the source of truth (set_layer, set_head, ...). A
 * backend runs the forward of that model on its device: the CPU backend reads the weights where
 * they are; a device backend holds copies that sync_layer / sync_head refresh and drop_layer frees
 * (a streaming quantizer keeps one decoder layer on the device). Activations and logits are
 * glq_tensors in the backend's memory (`storage`: heap on the CPU, GLQ_STORAGE_CUDA on the GPU);
 * token ids, Hessians and host logits are host memory.
 *
 * The forward pass has one description, followed by both:
 *   embed -> layer 0 .. n-1 (RMSNorm, q/k/v, qk-norm, RoPE, causal GQA attention over the cache,
 *   o, residual, RMSNorm, gate/up, SwiGLU, down, residual) -> head (final RMSNorm, output linear).
 * A layer call without a cache runs its sequences independently (the CPU one at a time, the GPU in
 * chunks), so any number of calibration sequences fits; with a cache, positions follow the cache's
 * length and the caller commits them with kv_advance after the last layer. Hessian capture adds
 * xᵀx (f64) of the four distinct linear inputs (GLQ_CAP_*) into caller-owned host matrices. */
#ifndef GLQ_BACKEND_H
#define GLQ_BACKEND_H
#include "llama.h"

typedef struct glq_model_backend glq_model_backend;
typedef struct glq_model_kv glq_model_kv;

/* Capabilities a caller may choose a path by (everything else behaves the same on every device). */
enum {
  GLQ_BACKEND_ARGMAX = 1 << 0,   /* forward's greedy ids are chosen on the device (no logits copied back) */
  GLQ_BACKEND_KV_QUANT = 1 << 1, /* f16 and INT8 KV caches (else f32 only) */
};

typedef struct glq_model_kv_vt {
  int (*len)(const glq_model_kv *kv);
  int (*advance)(glq_model_kv *kv, int T);
  void (*reset)(glq_model_kv *kv);
  size_t (*bytes)(const glq_model_kv *kv);
  void (*free)(glq_model_kv *kv);
} glq_model_kv_vt;

/* A KV cache of one backend: vt tells whose (a backend takes only caches with its own vt); impl is
 * the device's own cache. */
struct glq_model_kv {
  const glq_model_kv_vt *vt;
  const char *device;
  void *impl;
};

typedef struct glq_model_backend_vt {
  const char *device;             /* "cpu", "cuda" */
  unsigned caps;                  /* GLQ_BACKEND_* */
  glq_storage_kind storage;       /* where activations and logits live */
  int head_rows;                  /* rows of logits a caller best asks head for at once (the GPU amortises launches) */
  void (*free)(glq_model_backend *b);
  /* a new zero-filled contiguous tensor in the backend's memory */
  int (*tensor_new)(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out);
  /* weights: copy layer l / the embedding, final norm and head from the CPU model; free layer l's copy */
  int (*sync_layer)(glq_model_backend *b, int l);
  void (*drop_layer)(glq_model_backend *b, int l);
  int (*sync_head)(glq_model_backend *b);
  size_t (*bytes)(const glq_model_backend *b);   /* bytes of weights the backend holds itself */
  /* hidden (n × dim) = embedding rows of host tokens */
  int (*embed)(glq_model_backend *b, const int32_t *tokens, int64_t n, float *hidden);
  /* decoder layer l on hidden (B × T × dim) at the cache's positions (0 without a cache); in_place = 0
   * leaves hidden unchanged (capture only; not with a cache); cap may be NULL */
  int (*layer)(glq_model_backend *b, int l, float *hidden, int B, int T, glq_model_kv *kv, glq_llama_capture *cap,
               int in_place);
  /* logits (n × vocab) = head(final_norm(hidden (n × dim))) */
  int (*head)(glq_model_backend *b, const float *hidden, int64_t n, float *logits);
  /* whole forward of host tokens (B × T) after the cache's positions, the cache advanced: host logits of each
   * sequence's last position (B × vocab) or of every position (all_logits); with next != NULL instead the
   * greedy token of each sequence (lowest index of the maximum; a NaN row is an error) and logits unused */
  int (*forward)(glq_model_backend *b, glq_model_kv *kv, const int32_t *tokens, int B, int T, float *logits,
                 int all_logits, int32_t *next);
  /* a KV cache for cfg's batch and max_seq (n_layers, kv heads and head_dim are the model's) */
  int (*kv_new)(glq_model_backend *b, const glq_kvcache_config *cfg, glq_model_kv **out);
  /* row statistics of logits in the backend's memory (n × vocab) into host arrays, as evalops.h defines them */
  int (*nll_rows)(const float *logits, int64_t n, int64_t vocab, const int32_t *targets, double *nll);
  int (*kl_rows)(const float *p, const float *q, int64_t n, int64_t vocab, double *kl, uint8_t *agree);
} glq_model_backend_vt;

struct glq_model_backend {
  const glq_model_backend_vt *vt;
  glq_llama *cpu;                 /* the weights (borrowed: outlives the backend) */
};

typedef struct glq_backend_opts {
  int dense_bf16;                 /* cuda: dense projections stored and multiplied in bf16 */
} glq_backend_opts;

/* A backend on `device` ("cpu", "cuda") for the CPU model m (borrowed). "cuda" in a build without
 * CUDA, or on a machine without a GPU, is an error that says so. */
int glq_model_backend_new(const char *device, glq_llama *m, const glq_backend_opts *opts, glq_model_backend **out);
void glq_model_backend_free(glq_model_backend *b);   /* NULL is fine */

/* The CPU backend (backend.c); the CUDA one is glq_cuda_backend_new (cuda/model_cuda.h). */
int glq_cpu_backend_new(glq_llama *m, glq_model_backend **out);

/* The cache's own operations, through its vtable. */
static inline int glq_model_kv_len(const glq_model_kv *kv) { return kv->vt->len(kv); }
static inline int glq_model_kv_advance(glq_model_kv *kv, int T) { return kv->vt->advance(kv, T); }
static inline void glq_model_kv_reset(glq_model_kv *kv) { kv->vt->reset(kv); }
static inline size_t glq_model_kv_bytes(const glq_model_kv *kv) { return kv->vt->bytes(kv); }
static inline void glq_model_kv_free(glq_model_kv *kv) { if (kv) kv->vt->free(kv); }

#endif

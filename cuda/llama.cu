/* llama.cu - the Llama-family forward on the GPU (model_cuda.h): the same pieces and numerics as
 * src/model/llama.c (f32 activations, RMSNorm with a double sum of squares, RoPE from the CPU's
 * own angle tables, softmax with a double sum), with cuBLAS for attention products and Hessians.
 * Reductions run in a fixed order (block trees, no atomics), so results repeat bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common.cuh"
#include "model_cuda.h"
#include "rowops.cuh"
extern "C" {
#include "../src/model/llama.h"
}

#define NLIN 7
#define CHUNK_ROWS 8192                 /* rows per layer call without a cache (bounds the scratch) */
#define SCORE_BYTES ((size_t)1 << 30)   /* attention scores per chunk */

/* ---- device tensors ---- */

static void cuda_storage_free(glq_storage *st) { cudaFree(st->data); }

extern "C" int glq_cuda_tensor_new(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out) {
  memset(out, 0, sizeof *out);
  int rc = glq_shape_check(ndim, shape);
  if (rc) return rc;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  size_t bytes = (size_t)n * glq_dtype_size(dt);
  glq_storage *st = (glq_storage *)calloc(1, sizeof *st);
  if (!st) return glq_error(GLQ_ENOMEM, "device tensor: out of host memory");
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  /* cudaMemset runs on the legacy stream, which the models' non-blocking streams do not wait for:
   * finish it before the tensor is handed out */
  if (e == cudaSuccess) e = cudaMemset(p, 0, bytes ? bytes : 1);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    cudaFree(p);
    free(st);
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO, "device tensor of %zu bytes: %s", bytes,
                     cudaGetErrorString(e));
  }
  st->refcount = 1;
  st->kind = GLQ_STORAGE_CUDA;
  st->data = p;
  st->nbytes = bytes;
  st->free_fn = cuda_storage_free;
  rc = glq_tensor_view(st, 0, dt, ndim, shape, out);
  glq_storage_release(st); /* the view holds the one reference left (or, on failure, none) */
  return rc;
}
extern "C" int glq_cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
  GLQ_CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return GLQ_OK;
}
extern "C" int glq_cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
  GLQ_CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return GLQ_OK;
}

/* ---- model state ---- */

typedef struct {
  float *attn_norm, *ffn_norm, *q_norm, *k_norm;
  glq_cuda_linear *lin[NLIN];   /* q k v o gate up down */
} glayer;

struct glq_cuda_llama {
  glq_llama_config cfg;
  glq_cuda_ctx *ctx;
  cudaStream_t st;
  cudaStream_t side[GLQ_CUDA_LANES - 1]; /* decode: k, v (and up) beside q (and gate), on their own lanes */
  cudaEvent_t fork, join[GLQ_CUDA_LANES - 1];
  int dense_bf16;
  glayer *layers;
  void *emb;                 /* vocab × dim, f32 or bf16 */
  int emb_bf16;
  float *final_norm;
  glq_cuda_linear *head;
  float *rope_cos, *rope_sin;
  void *ws;                  /* layer activations */
  size_t ws_n;
  double *capx;              /* rows converted to f64 for capture */
  size_t capx_n;
  int32_t *tok;
  size_t tok_n;
  float *hid, *logits;       /* forward: hidden states, logits */
  size_t hid_n, logits_n;
  const float **ptrs;        /* pointer arrays of the batched attention GEMMs */
  size_t ptrs_n;
  size_t gen;                /* bumped by every call but a decode step (weights or linear scratch may move) */
  cudaGraphExec_t graph;     /* the captured decode step, valid for (step_kv, step_B, step_gen = gen + dgrow_moves) */
  const glq_cuda_kv *step_kv;
  int step_B;
  size_t step_gen;
};

struct glq_cuda_kv {
  int layers, batch, kvh, hd, max_seq, len;
  float *k, *v;              /* layers × batch × kvh × max_seq × hd */
  int *d_pos;                /* the length as the decode kernels read it (set before each decode step) */
};

struct glq_cuda_capture {
  double *H[GLQ_CAP_N];
  int64_t dim[GLQ_CAP_N], rows[GLQ_CAP_N];
};

static size_t dgrow_moves; /* reallocations so far (any model); a graph is kept only if none happened */

static int dgrow(void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap) return GLQ_OK;
  dgrow_moves++;
  cudaFree(*p);
  *p = NULL;
  *cap = 0;
  cudaError_t e = cudaMalloc(p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); /* reported here; do not leave it for the next launch check */
    *p = NULL;
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO, "GPU scratch of %zu bytes: %s", bytes,
                     cudaGetErrorString(e));
  }
  *cap = bytes;
  return GLQ_OK;
}

static int upload_floats(const float *host, size_t n, float **dev) {
  *dev = NULL;
  if (!host) return GLQ_OK;
  GLQ_CUDA_TRY(cudaMalloc((void **)dev, n * sizeof(float)));
  cudaError_t e = cudaMemcpy(*dev, host, n * sizeof(float), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(*dev);
    *dev = NULL;
    return glq_error(GLQ_EIO, "upload of %zu floats: %s", n, cudaGetErrorString(e));
  }
  return GLQ_OK;
}

static void free_layer(glayer *L) {
  cudaFree(L->attn_norm); cudaFree(L->ffn_norm); cudaFree(L->q_norm); cudaFree(L->k_norm);
  for (int i = 0; i < NLIN; i++) glq_cuda_linear_free(L->lin[i]);
  memset(L, 0, sizeof *L);
}

extern "C" int glq_cuda_llama_new(const glq_llama *cpu, int dense_bf16, glq_cuda_llama **out) {
  *out = NULL;
  glq_cuda_llama *g = (glq_cuda_llama *)calloc(1, sizeof *g);
  if (!g) return glq_error(GLQ_ENOMEM, "GPU model: out of host memory");
  g->cfg = *glq_llama_config_of(cpu);
  g->dense_bf16 = dense_bf16;
  int rc = glq_cuda_ctx_create(&g->ctx);
  if (rc) { free(g); return rc; }
  g->layers = (glayer *)calloc((size_t)g->cfg.n_layers, sizeof *g->layers);
  cudaError_t e = cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&g->fork, cudaEventDisableTiming);
  for (int i = 0; i < GLQ_CUDA_LANES - 1 && e == cudaSuccess; i++) {
    e = cudaStreamCreateWithFlags(&g->side[i], cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&g->join[i], cudaEventDisableTiming);
  }
  if (!g->layers || e != cudaSuccess) {
    glq_cuda_llama_free(g);
    return glq_error(GLQ_ENOMEM, "GPU model: cannot allocate layers or stream");
  }
  const float *cs, *sn;
  glq_llama_rope_tables(cpu, &cs, &sn);
  size_t nrope = (size_t)g->cfg.max_seq * (size_t)(g->cfg.head_dim / 2);
  if ((rc = upload_floats(cs, nrope, &g->rope_cos)) || (rc = upload_floats(sn, nrope, &g->rope_sin))) {
    glq_cuda_llama_free(g);
    return rc;
  }
  *out = g;
  return GLQ_OK;
}

extern "C" void glq_cuda_llama_free(glq_cuda_llama *g) {
  if (!g) return;
  if (g->layers)
    for (int l = 0; l < g->cfg.n_layers; l++) free_layer(&g->layers[l]);
  free(g->layers);
  cudaFree(g->emb); cudaFree(g->final_norm);
  glq_cuda_linear_free(g->head);
  cudaFree(g->rope_cos); cudaFree(g->rope_sin);
  cudaFree(g->ws); cudaFree(g->capx); cudaFree(g->tok); cudaFree(g->hid); cudaFree(g->logits); cudaFree(g->ptrs);
  if (g->graph) cudaGraphExecDestroy(g->graph);
  if (g->st) cudaStreamDestroy(g->st);
  if (g->fork) cudaEventDestroy(g->fork);
  for (int i = 0; i < GLQ_CUDA_LANES - 1; i++) {
    if (g->side[i]) cudaStreamDestroy(g->side[i]);
    if (g->join[i]) cudaEventDestroy(g->join[i]);
  }
  if (g->ctx) glq_cuda_ctx_free(g->ctx);
  free(g);
}

/* Layer l becomes n when rc is GLQ_OK (the old one is freed); otherwise n is freed. Returns rc. */
static int install_layer(glq_cuda_llama *g, int l, glayer *n, int rc) {
  if (rc) {
    free_layer(n);
    return rc;
  }
  free_layer(&g->layers[l]);
  g->layers[l] = *n;
  g->gen++;
  return GLQ_OK;
}

extern "C" int glq_cuda_llama_sync_layer(glq_cuda_llama *g, const glq_llama *cpu, int l) {
  glq_llama_view v;
  int rc = glq_llama_layer_view(cpu, l, &v);
  if (rc) return rc;
  const glq_llama_config *c = &g->cfg;
  glayer n;
  memset(&n, 0, sizeof n);
  glq_linear *lin[NLIN] = {v.q, v.k, v.v, v.o, v.gate, v.up, v.down};
  static const char *names[NLIN] = {"q", "k", "v", "o", "gate", "up", "down"};
  if ((rc = upload_floats(v.attn_norm, (size_t)c->dim, &n.attn_norm)) ||
      (rc = upload_floats(v.ffn_norm, (size_t)c->dim, &n.ffn_norm)) ||
      (rc = upload_floats(c->qk_norm ? v.q_norm : NULL, (size_t)c->head_dim, &n.q_norm)) ||
      (rc = upload_floats(c->qk_norm ? v.k_norm : NULL, (size_t)c->head_dim, &n.k_norm)))
    goto fail;
  for (int i = 0; i < NLIN; i++)
    if ((rc = glq_cuda_linear_upload(g->ctx, lin[i], g->dense_bf16, &n.lin[i]))) {
      glq_error_prefix("layer %d %s", l, names[i]);
      goto fail;
    }
fail:
  return install_layer(g, l, &n, rc);
}

extern "C" void glq_cuda_llama_drop_layer(glq_cuda_llama *g, int l) {
  if (l >= 0 && l < g->cfg.n_layers) free_layer(&g->layers[l]);
  g->gen++;
}

extern "C" int glq_cuda_llama_sync_head(glq_cuda_llama *g, const glq_llama *cpu) {
  const glq_llama_config *c = &g->cfg;
  const glq_tensor *emb = glq_llama_embedding(cpu);
  const float *fn = glq_llama_final_norm(cpu);
  glq_linear *head = glq_llama_head_linear(cpu);
  if (!emb || !fn || !head) return glq_error(GLQ_EINVAL, "GPU model: the CPU model has no embedding, final norm or head yet");
  int bf16 = emb->dtype == GLQ_BF16;
  size_t bytes = (size_t)c->vocab * (size_t)c->dim * (bf16 ? 2 : 4);
  void *e = NULL;
  float *f = NULL;
  glq_cuda_linear *h = NULL;
  int rc;
  GLQ_CUDA_TRY(cudaMalloc(&e, bytes));
  if (cudaMemcpy(e, glq_tensor_data(emb), bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
    rc = glq_error(GLQ_EIO, "GPU model: embedding upload failed");
    goto fail;
  }
  if ((rc = upload_floats(fn, (size_t)c->dim, &f))) goto fail;
  if ((rc = glq_cuda_linear_upload(g->ctx, head, g->dense_bf16, &h))) {
    glq_error_prefix("output head");
    goto fail;
  }
  cudaFree(g->emb); cudaFree(g->final_norm); glq_cuda_linear_free(g->head);
  g->emb = e; g->emb_bf16 = bf16; g->final_norm = f; g->head = h;
  g->gen++;
  return GLQ_OK;
fail:
  cudaFree(e); cudaFree(f);
  return rc;
}

static __global__ void k_fill(float *p, int64_t n, float v) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) p[i] = v;
}

/* bf16 values uniform in [-a, a) from a hash of (seed, i) */
static __global__ void k_random_bf16(__nv_bfloat16 *p, int64_t n, uint64_t seed, float a) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  p[i] = __float2bfloat16(a * (2.0f * (float)(z >> 40) / 16777216.0f - 1.0f));
}

static int ones(int64_t n, float **out) {
  GLQ_CUDA_TRY(cudaMalloc((void **)out, (size_t)n * sizeof(float)));
  k_fill<<<(unsigned)((n + 255) / 256), 256>>>(*out, n, 1.0f);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_llama_random_layer(glq_cuda_llama *g, int l, const char *kind, int bits, uint64_t seed) {
  const glq_llama_config *c = &g->cfg;
  if (l < 0 || l >= c->n_layers) return glq_error(GLQ_EINVAL, "GPU layer %d out of range", l);
  int64_t qd = (int64_t)c->n_heads * c->head_dim, kd = (int64_t)c->n_kv_heads * c->head_dim;
  int64_t shape[NLIN][2] = {{qd, c->dim}, {kd, c->dim}, {kd, c->dim}, {c->dim, qd},
                            {c->ffn_dim, c->dim}, {c->ffn_dim, c->dim}, {c->dim, c->ffn_dim}};
  glayer n;
  memset(&n, 0, sizeof n);
  int rc;
  if ((rc = ones(c->dim, &n.attn_norm)) || (rc = ones(c->dim, &n.ffn_norm)) ||
      (c->qk_norm && ((rc = ones(c->head_dim, &n.q_norm)) || (rc = ones(c->head_dim, &n.k_norm)))))
    goto fail;
  for (int i = 0; i < NLIN; i++)
    if ((rc = glq_cuda_linear_random(g->ctx, kind, bits, shape[i][0], shape[i][1], seed * 7 + (uint64_t)i, &n.lin[i])))
      goto fail;
fail:
  return install_layer(g, l, &n, rc);
}

extern "C" int glq_cuda_llama_random_head(glq_cuda_llama *g, uint64_t seed) {
  const glq_llama_config *c = &g->cfg;
  int64_t n = (int64_t)c->vocab * c->dim;
  __nv_bfloat16 *e = NULL;
  float *f = NULL;
  glq_cuda_linear *h = NULL;
  int rc;
  GLQ_CUDA_TRY(cudaMalloc((void **)&e, (size_t)n * 2));
  k_random_bf16<<<(unsigned)((n + 255) / 256), 256>>>(e, n, seed, 0.05f);
  if ((rc = ones(c->dim, &f)) || (rc = glq_cuda_linear_random(g->ctx, "dense", 16, c->vocab, c->dim, seed + 1, &h))) {
    cudaFree(e); cudaFree(f);
    return rc;
  }
  cudaFree(g->emb); cudaFree(g->final_norm); glq_cuda_linear_free(g->head);
  g->emb = e; g->emb_bf16 = 1; g->final_norm = f; g->head = h;
  g->gen++;
  return GLQ_OK;
}

extern "C" size_t glq_cuda_llama_bytes(const glq_cuda_llama *g) {
  const glq_llama_config *c = &g->cfg;
  size_t n = 0;
  for (int l = 0; l < c->n_layers; l++)
    for (int i = 0; i < NLIN; i++)
      if (g->layers[l].lin[i]) n += glq_cuda_linear_bytes(g->layers[l].lin[i]) + 2 * (size_t)c->dim * sizeof(float);
  if (g->emb) n += (size_t)c->vocab * c->dim * (g->emb_bf16 ? 2 : 4);
  if (g->head) n += glq_cuda_linear_bytes(g->head);
  return n;
}

/* ---- KV cache and capture ---- */

extern "C" int glq_cuda_kv_new(const glq_cuda_llama *g, int batch, int max_seq, glq_cuda_kv **out) {
  *out = NULL;
  const glq_llama_config *c = &g->cfg;
  if (batch < 1 || max_seq < 1 || max_seq > c->max_seq)
    return glq_error(GLQ_EINVAL, "GPU KV cache: batch %d and max_seq %d must be >= 1 and max_seq <= the model's %d", batch,
                     max_seq, c->max_seq);
  glq_cuda_kv *kv = (glq_cuda_kv *)calloc(1, sizeof *kv);
  if (!kv) return glq_error(GLQ_ENOMEM, "GPU KV cache: out of host memory");
  *kv = (glq_cuda_kv){c->n_layers, batch, c->n_kv_heads, c->head_dim, max_seq, 0, NULL, NULL, NULL};
  size_t bytes = (size_t)c->n_layers * batch * c->n_kv_heads * (size_t)max_seq * c->head_dim * sizeof(float);
  if (cudaMalloc((void **)&kv->k, bytes) != cudaSuccess || cudaMalloc((void **)&kv->v, bytes) != cudaSuccess ||
      cudaMalloc((void **)&kv->d_pos, sizeof(int)) != cudaSuccess) {
    glq_cuda_kv_free(kv);
    return glq_error(GLQ_ENOMEM, "GPU KV cache: cannot allocate 2 x %zu bytes", bytes);
  }
  *out = kv;
  return GLQ_OK;
}
extern "C" void glq_cuda_kv_free(glq_cuda_kv *kv) {
  if (!kv) return;
  cudaFree(kv->k); cudaFree(kv->v); cudaFree(kv->d_pos);
  free(kv);
}
extern "C" int glq_cuda_kv_len(const glq_cuda_kv *kv) { return kv->len; }
extern "C" int glq_cuda_kv_batch(const glq_cuda_kv *kv) { return kv->batch; }
extern "C" void glq_cuda_kv_reset(glq_cuda_kv *kv) { kv->len = 0; }
extern "C" size_t glq_cuda_kv_bytes(const glq_cuda_kv *kv) {
  return 2 * (size_t)kv->layers * kv->batch * kv->kvh * (size_t)kv->max_seq * kv->hd * sizeof(float);
}
extern "C" int glq_cuda_kv_advance(glq_cuda_kv *kv, int T) {
  if (T < 0 || T > kv->max_seq - kv->len)
    return glq_error(GLQ_EINVAL, "GPU KV cache: advancing %d positions past %d exceeds max_seq %d", T, kv->len, kv->max_seq);
  kv->len += T;
  return GLQ_OK;
}

static int64_t cap_dim(const glq_llama_config *c, int which) {
  switch (which) {
  case GLQ_CAP_QKV: case GLQ_CAP_GATE_UP: return c->dim;
  case GLQ_CAP_O: return (int64_t)c->n_heads * c->head_dim;
  default: return c->ffn_dim;
  }
}

extern "C" int glq_cuda_capture_new(const glq_cuda_llama *g, glq_cuda_capture **out) {
  *out = NULL;
  glq_cuda_capture *c = (glq_cuda_capture *)calloc(1, sizeof *c);
  if (!c) return glq_error(GLQ_ENOMEM, "GPU capture: out of host memory");
  for (int i = 0; i < GLQ_CAP_N; i++) {
    c->dim[i] = cap_dim(&g->cfg, i);
    size_t bytes = (size_t)c->dim[i] * (size_t)c->dim[i] * sizeof(double);
    if (cudaMalloc((void **)&c->H[i], bytes) != cudaSuccess || cudaMemsetAsync(c->H[i], 0, bytes, g->st) != cudaSuccess) {
      glq_cuda_capture_free(c);
      return glq_error(GLQ_ENOMEM, "GPU capture: cannot allocate a %lld x %lld Hessian", (long long)c->dim[i],
                       (long long)c->dim[i]);
    }
  }
  *out = c;
  return GLQ_OK;
}
extern "C" void glq_cuda_capture_free(glq_cuda_capture *c) {
  if (!c) return;
  for (int i = 0; i < GLQ_CAP_N; i++) cudaFree(c->H[i]);
  free(c);
}
extern "C" int64_t glq_cuda_capture_rows(const glq_cuda_capture *c, int which) {
  return which >= 0 && which < GLQ_CAP_N ? c->rows[which] : -1;
}
extern "C" int64_t glq_cuda_capture_dim(const glq_cuda_capture *c, int which) {
  return which >= 0 && which < GLQ_CAP_N ? c->dim[which] : -1;
}
extern "C" int glq_cuda_capture_download(const glq_cuda_capture *c, int which, double *host) {
  if (which < 0 || which >= GLQ_CAP_N) return glq_error(GLQ_EINVAL, "GPU capture: no input %d", which);
  int64_t d = c->dim[which];
  GLQ_CUDA_TRY(cudaDeviceSynchronize());
  GLQ_CUDA_TRY(cudaMemcpy(host, c->H[which], (size_t)d * d * sizeof(double), cudaMemcpyDeviceToHost));
  /* cuBLAS filled the column-major upper triangle = the row-major lower one (r >= c) */
  for (int64_t r = 0; r < d; r++)
    for (int64_t k = r + 1; k < d; k++) host[r * d + k] = host[k * d + r];
  return GLQ_OK;
}

/* ---- kernels ---- */

#define RED_THREADS 256
static_assert(RED_THREADS == GLQ_RMS_RED, "k_qkv_prep's RMSNorm takes rowops.cuh's reduction shape");

/* Fixed-shape tree sum over the block (RED_THREADS threads); every thread gets the total. */
__device__ double block_sum(double v, double *sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = RED_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}
__device__ float block_max(float v, float *sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = RED_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

static __global__ void k_embed(const int32_t *tok, const void *emb, int bf16, int64_t d, float *out) {
  int64_t row = tok[blockIdx.x];
  float *y = out + blockIdx.x * d;
  if (bf16) {
    const __nv_bfloat16 *e = (const __nv_bfloat16 *)emb + row * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) y[i] = __bfloat162float(e[i]);
  } else {
    const float *e = (const float *)emb + row * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) y[i] = e[i];
  }
}

/* One block per (row n, head slot): q heads are normalised (qk_norm) and rotated in place; k heads
 * are normalised, rotated and written to the cache at (b, kv head, pos0 + t); v heads are copied
 * there. Rows are n = b·T + t. */
static __global__ void k_qkv_prep(float *q, const float *k, const float *v, const float *qn, const float *kn,
                           const float *rc, const float *rs, int nh, int kvh, int hd, int T, int pos0,
                           int interleaved, float eps, float *kc, float *vc, int max_seq, const int *d_pos) {
  __shared__ double sh[RED_THREADS];
  __shared__ float buf[1024];
  int64_t n = blockIdx.x;
  if (d_pos) pos0 = *d_pos;
  int slot = blockIdx.y, b = (int)(n / T), t = (int)(n % T), p = pos0 + t, half = hd / 2;
  const float *src;
  float *dst;
  const float *nw = NULL;
  int rotate = 1;
  if (slot < nh) {
    src = dst = q + (n * nh + slot) * hd;
    nw = qn;
  } else if (slot < nh + kvh) {
    int h = slot - nh;
    src = k + (n * kvh + h) * hd;
    dst = kc + (((int64_t)b * kvh + h) * max_seq + p) * hd;
    nw = kn;
  } else {
    int h = slot - nh - kvh;
    src = v + (n * kvh + h) * hd;
    dst = vc + (((int64_t)b * kvh + h) * max_seq + p) * hd;
    rotate = 0;
  }
  for (int i = threadIdx.x; i < hd; i += blockDim.x) buf[i] = src[i];
  __syncthreads();
  if (rotate && nw) { /* the per-head RMSNorm, rowops.cuh's as every other */
    const float s = glq_rms_scale<RED_THREADS>(buf, hd, eps, sh);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) buf[i] = glq_rms_apply(buf[i], s, nw[i]);
    __syncthreads();
  }
  if (!rotate) {
    for (int i = threadIdx.x; i < hd; i += blockDim.x) dst[i] = buf[i];
    return;
  }
  const float *cs = rc + (int64_t)p * half, *sn = rs + (int64_t)p * half;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
    float a0 = buf[ia], b0 = buf[ib];
    dst[ia] = __fsub_rn(__fmul_rn(a0, cs[j]), __fmul_rn(b0, sn[j]));
    dst[ib] = __fadd_rn(__fmul_rn(a0, sn[j]), __fmul_rn(b0, cs[j]));
  }
}

/* Pointer arrays of the batched attention GEMMs, one entry per (sequence, head). */
static __global__ void k_attn_ptrs(const float **P, const float *q, const float *kc, const float *vc, const float *S,
                            const float *att, int nb, int nh, int kvh, int hd, int T, int L, int max_seq) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= nb * nh) return;
  int b = i / nh, h = i % nh, g = h / (nh / kvh);
  int64_t n = (int64_t)nb * nh;
  P[i] = q + ((int64_t)b * T * nh + h) * hd;                          /* Q rows t, stride nh·hd */
  P[n + i] = kc + ((int64_t)b * kvh + g) * max_seq * hd;              /* K rows j, stride hd */
  P[2 * n + i] = S + (int64_t)i * T * L;                              /* S (T × L) */
  P[3 * n + i] = vc + ((int64_t)b * kvh + g) * max_seq * hd;          /* V rows j */
  P[4 * n + i] = att + ((int64_t)b * T * nh + h) * hd;                /* out rows t, stride nh·hd */
}

/* s[0..valid) <- exp(s - max) in place; returns 1 / their double sum (fixed-order block reductions;
 * every thread sees every write when it returns). */
__device__ float exp_shifted(float *s, int valid, double *sh, float *shf) {
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < valid; j += RED_THREADS) mx = fmaxf(mx, s[j]);
  mx = block_max(mx, shf);
  double sum = 0.0;
  for (int j = threadIdx.x; j < valid; j += RED_THREADS) {
    float e = expf(__fsub_rn(s[j], mx));
    s[j] = e;
    sum += e;
  }
  return (float)(1.0 / block_sum(sum, sh));
}

/* Causal softmax of score rows (already scaled): row r holds query t = r % T at position pos0 + t,
 * which sees keys 0 .. pos0 + t; later keys get 0. */
static __global__ void k_softmax(float *S, int T, int L, int pos0) {
  __shared__ double sh[RED_THREADS];
  __shared__ float shf[RED_THREADS];
  float *s = S + (int64_t)blockIdx.x * L;
  int valid = pos0 + (int)(blockIdx.x % T) + 1;
  float inv = exp_shifted(s, valid, sh, shf);
  for (int j = threadIdx.x; j < L; j += RED_THREADS) s[j] = j < valid ? __fmul_rn(s[j], inv) : 0.0f;
}

/* Attention of one new position per sequence (decode): block (b, h) scores keys 0..pos (pos read
 * from the device, so a captured graph replays at any length), softmaxes them in shared memory and
 * sums the values; every sum runs in a fixed order. */
static __global__ void __launch_bounds__(RED_THREADS, 1) k_attn_decode(const float *q, const float *kc, const float *vc, float *att, int nh, int kvh, int hd,
                              int max_seq, const int *d_pos, float scale) {
  extern __shared__ float sc[];            /* max_seq scores */
  __shared__ double sh[RED_THREADS];
  __shared__ float shf[RED_THREADS];
  __shared__ float qv[1024];
  int b = blockIdx.x / nh, h = blockIdx.x % nh, g = h / (nh / kvh), L = *d_pos + 1;
  const float *K = kc + ((int64_t)b * kvh + g) * max_seq * hd, *V = vc + ((int64_t)b * kvh + g) * max_seq * hd;
  const float *qh = q + ((int64_t)b * nh + h) * hd;
  for (int d = threadIdx.x; d < hd; d += RED_THREADS) qv[d] = qh[d];
  __syncthreads();
  /* The loads of a sum are issued in batches before its FMA chain uses them (the chain's order is unchanged): one
   * load a step made each key's dot product and each output's sum a sequence of memory round trips. */
  const int vec = (hd & 3) == 0; /* key rows of whole float4s (the cache's rows are then 16-byte aligned) */
  for (int j = threadIdx.x; j < L; j += RED_THREADS) {
    const float *k = K + (int64_t)j * hd;
    float s = 0.0f;
    int d = 0;
    for (; vec && d + 64 <= hd; d += 64) { /* 16 float4 in flight */
      float4 kv[16];
#pragma unroll
      for (int u = 0; u < 16; ++u) kv[u] = *reinterpret_cast<const float4 *>(k + d + 4 * u);
#pragma unroll
      for (int u = 0; u < 16; ++u) {
        s = fmaf(qv[d + 4 * u], kv[u].x, s);
        s = fmaf(qv[d + 4 * u + 1], kv[u].y, s);
        s = fmaf(qv[d + 4 * u + 2], kv[u].z, s);
        s = fmaf(qv[d + 4 * u + 3], kv[u].w, s);
      }
    }
    for (; d < hd; d++) s = fmaf(qv[d], k[d], s);
    sc[j] = __fmul_rn(s, scale);
  }
  float inv = exp_shifted(sc, L, sh, shf);
  float *o = att + ((int64_t)b * nh + h) * hd;
  for (int d = threadIdx.x; d < hd; d += RED_THREADS) {
    float a = 0.0f;
    int j = 0;
    for (; j + 32 <= L; j += 32) { /* 32 values in flight */
      float vv[32];
#pragma unroll
      for (int u = 0; u < 32; ++u) vv[u] = V[(int64_t)(j + u) * hd + d];
#pragma unroll
      for (int u = 0; u < 32; ++u) a = fmaf(__fmul_rn(sc[j + u], inv), vv[u], a);
    }
    for (; j < L; j++) a = fmaf(__fmul_rn(sc[j], inv), V[(int64_t)j * hd + d], a);
    o[d] = a;
  }
}

static __global__ void k_to_f64(const float *x, double *y, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i];
}

static unsigned blocks(int64_t n, int t) { return (unsigned)((n + t - 1) / t); }

/* ---- forward pieces ---- */

static int capture(glq_cuda_llama *g, glq_cuda_capture *cap, int which, const float *x, int64_t n) {
  if (!cap) return GLQ_OK;
  int64_t d = cap->dim[which];
  int rc = dgrow((void **)&g->capx, &g->capx_n, (size_t)n * d * sizeof(double));
  if (rc) return rc;
  k_to_f64<<<blocks(n * d, 256), 256, 0, g->st>>>(x, g->capx, n * d);
  GLQ_CUDA_LAUNCHED();
  const double one = 1.0;
  GLQ_CUBLAS_TRY(cublasSetStream(g->ctx->blas, g->st));
  GLQ_CUBLAS_TRY(cublasSetWorkspace(g->ctx->blas, g->ctx->blas_ws, g->ctx->blas_ws_bytes));
  /* column-major: H (d × d) += X (d × n, the row-major rows) · Xᵀ */
  GLQ_CUBLAS_TRY(cublasDsyrk(g->ctx->blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)d, (int)n, &one, g->capx, (int)d,
                             &one, cap->H[which], (int)d));
  cap->rows[which] += n;
  return GLQ_OK;
}

static int lin(glq_cuda_llama *g, glq_cuda_linear *l, const float *x, int64_t n, float *y, int layer, const char *what,
               const glq_cuda_fuse *fu = NULL) {
  int rc = glq_cuda_linear_forward_fused(g->ctx, l, x, n, y, g->st, 0, fu);
  if (rc) glq_error_prefix("layer %d %s", layer, what);
  return rc;
}

/* Whether every layer of ls folds `need` (GLQ_CUDA_FUSE_* bits) at n rows; never while Hessians are captured
 * (they read the normalised inputs). */
static int fusable(const glq_cuda_llama *g, int count, glq_cuda_linear *const *ls, int64_t n, int need, const glq_cuda_capture *cap) {
  if (cap) return 0;
  for (int i = 0; i < count; i++)
    if ((glq_cuda_linear_fusable(g->ctx, ls[i], n) & need) != need) return 0;
  return 1;
}

/* Projections of one input (q, k, v; gate, up): at decode sizes (up to the fused threshold) the
 * first on the model's stream and the others on side streams and scratch lanes, forked and joined
 * through events (graph capture records the branches), so that their latency-bound small kernels
 * overlap; larger batches one after another. Each output is computed as it would be alone. */
static int lin_group(glq_cuda_llama *g, int count, glq_cuda_linear *const *ls, const float *x, int64_t n, float *const *ys,
                     int layer, const char *const *what, const glq_cuda_fuse *fu = NULL) {
  if (n > g->ctx->max_fused_batch) {
    for (int i = 0; i < count; i++) {
      int rc = lin(g, ls[i], x, n, ys[i], layer, what[i], fu);
      if (rc) return rc;
    }
    return GLQ_OK;
  }
  GLQ_CUDA_TRY(cudaEventRecord(g->fork, g->st));
  for (int i = 1; i < count; i++) GLQ_CUDA_TRY(cudaStreamWaitEvent(g->side[i - 1], g->fork, 0));
  int rc = GLQ_OK;
  for (int i = 0; i < count && !rc; i++) {
    rc = glq_cuda_linear_forward_fused(g->ctx, ls[i], x, n, ys[i], i ? g->side[i - 1] : g->st, i, fu);
    if (rc) glq_error_prefix("layer %d %s", layer, what[i]);
  }
  for (int i = 1; i < count; i++) { /* join even after an error, so that a capture can end */
    cudaEventRecord(g->join[i - 1], g->side[i - 1]);
    cudaStreamWaitEvent(g->st, g->join[i - 1], 0);
  }
  return rc;
}

extern "C" int glq_cuda_llama_embed(glq_cuda_llama *g, const int32_t *tokens, int64_t n, float *hidden) {
  const glq_llama_config *c = &g->cfg;
  g->gen++;
  if (!g->emb) return glq_error(GLQ_EINVAL, "GPU embed: no embedding uploaded (sync_head)");
  for (int64_t i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab)
      return glq_error(GLQ_EINVAL, "GPU embed: token %d at index %lld outside [0, %d)", (int)tokens[i], (long long)i, c->vocab);
  int rc = dgrow((void **)&g->tok, &g->tok_n, (size_t)n * sizeof(int32_t));
  if (rc) return rc;
  GLQ_CUDA_TRY(cudaMemcpyAsync(g->tok, tokens, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, g->st));
  k_embed<<<(unsigned)n, 256, 0, g->st>>>(g->tok, g->emb, g->emb_bf16, c->dim, hidden);
  GLQ_CUDA_LAUNCHED();
  GLQ_CUDA_TRY(cudaStreamSynchronize(g->st)); /* the host token array may go away */
  return GLQ_OK;
}

/* ys[i] = ls[i](RMSNorm(h) ⊙ norm_w) for the projections of one normalised input (q, k, v; gate, up): each
 * projection normalises h itself where all can (glq_cuda_fuse), else one RMSNorm into xn (captured as `which`). */
static int normed_group(glq_cuda_llama *g, int l, int count, glq_cuda_linear *const *ls, float *const *ys,
                        const char *const *what, const float *h, const float *norm_w, float *xn, int64_t N, int which,
                        glq_cuda_capture *cap) {
  const glq_llama_config *f = &g->cfg;
  int rc;
  if (fusable(g, count, ls, N, GLQ_CUDA_FUSE_INPUT, cap)) {
    const glq_cuda_fuse norm = {norm_w, f->norm_eps, NULL, 0};
    return lin_group(g, count, ls, h, N, ys, l, what, &norm);
  }
  if ((rc = glq_cuda_rmsnorm_rows(h, norm_w, xn, N, f->dim, f->norm_eps, g->st))) return rc;
  if ((rc = capture(g, cap, which, xn, N))) return rc;
  return lin_group(g, count, ls, xn, N, ys, l, what);
}

/* The rest of a layer after attention: o projection, residual, MLP, residual. At decode sizes the RMSNorm,
 * SwiGLU and residual adds fold into the projections' transforms where they can (glq_cuda_fuse): the same
 * values, five launches fewer a layer. */
static int layer_tail(glq_cuda_llama *g, int l, float *h, int64_t N, float *att, float *tmp, float *xn, float *gt,
                      float *up, glq_cuda_capture *cap) {
  const glq_llama_config *f = &g->cfg;
  glayer *Ly = &g->layers[l];
  int64_t dim = f->dim, ffn = f->ffn_dim;
  cudaStream_t st = g->st;
  int rc;
  if ((rc = capture(g, cap, GLQ_CAP_O, att, N))) return rc;
  const glq_cuda_fuse acc = {NULL, 0.f, NULL, 1};
  if (fusable(g, 1, &Ly->lin[3], N, GLQ_CUDA_FUSE_ACCUMULATE, cap)) {
    if ((rc = lin(g, Ly->lin[3], att, N, h, l, "o", &acc))) return rc;
  } else if ((rc = lin(g, Ly->lin[3], att, N, tmp, l, "o")) || (rc = glq_cuda_add(h, tmp, N * dim, st))) {
    return rc;
  }
  {
    glq_cuda_linear *ls[2] = {Ly->lin[4], Ly->lin[5]};
    float *ys[2] = {gt, up};
    const char *what[2] = {"gate", "up"};
    if ((rc = normed_group(g, l, 2, ls, ys, what, h, Ly->ffn_norm, xn, N, GLQ_CAP_GATE_UP, cap))) return rc;
  }
  const int down_in = fusable(g, 1, &Ly->lin[6], N, GLQ_CUDA_FUSE_INPUT, cap);
  const int down_acc = fusable(g, 1, &Ly->lin[6], N, GLQ_CUDA_FUSE_ACCUMULATE, cap);
  if (!down_in) {
    if ((rc = glq_cuda_swiglu(gt, up, N * ffn, st))) return rc;
    if ((rc = capture(g, cap, GLQ_CAP_DOWN, gt, N))) return rc;
  }
  const glq_cuda_fuse down = {NULL, 0.f, down_in ? gt : NULL, down_acc};
  if ((rc = lin(g, Ly->lin[6], down_in ? up : gt, N, down_acc ? h : tmp, l, "down", &down))) return rc;
  if (!down_acc && (rc = glq_cuda_add(h, tmp, N * dim, st))) return rc;
  return GLQ_OK;
}

/* One layer over nb sequences of T rows at positions pos0.. with keys/values in kc/vc
 * (nb × kvh × max_seq × hd). d_pos (decode, T = 1): the position is read from the device and
 * attention runs in one kernel, so the step can be captured in a graph and replayed. */
static int layer_chunk(glq_cuda_llama *g, int l, float *h, int nb, int T, int pos0, float *kc, float *vc, int max_seq,
                       glq_cuda_capture *cap, const int *d_pos) {
  const glq_llama_config *f = &g->cfg;
  glayer *Ly = &g->layers[l];
  int64_t N = (int64_t)nb * T, dim = f->dim, ffn = f->ffn_dim;
  int nh = f->n_heads, kvh = f->n_kv_heads, hd = f->head_dim, L = pos0 + T;
  int64_t qd = (int64_t)nh * hd, kd = (int64_t)kvh * hd;
  /* the scores S (nb·nh·T·L) only without d_pos: the decode kernel keeps them in shared memory, so a decode
   * step needs the same scratch at every position (a captured graph must never have to grow it) */
  size_t fl = (size_t)N * (2 * dim + 2 * qd + 2 * kd + 2 * ffn) + (d_pos ? 0 : (size_t)nb * nh * T * L);
  int rc = dgrow(&g->ws, &g->ws_n, fl * sizeof(float));
  if (!rc) rc = dgrow((void **)&g->ptrs, &g->ptrs_n, (size_t)5 * nb * nh * sizeof(float *));
  if (rc) return rc;
  float *xn = (float *)g->ws, *q = xn + N * dim, *k = q + N * qd, *v = k + N * kd, *att = v + N * kd;
  float *gt = att + N * qd, *up = gt + N * ffn, *tmp = up + N * ffn, *S = tmp + N * dim;
  cudaStream_t st = g->st;

  {
    glq_cuda_linear *ls[3] = {Ly->lin[0], Ly->lin[1], Ly->lin[2]};
    float *ys[3] = {q, k, v};
    const char *what[3] = {"q", "k", "v"};
    if ((rc = normed_group(g, l, 3, ls, ys, what, h, Ly->attn_norm, xn, N, GLQ_CAP_QKV, cap))) return rc;
  }
  if (hd > 1024) return glq_error(GLQ_EUNSUPPORTED, "GPU forward: head_dim %d > 1024", hd);
  dim3 grid((unsigned)N, (unsigned)(nh + 2 * kvh));
  k_qkv_prep<<<grid, RED_THREADS, 0, st>>>(q, k, v, f->qk_norm ? Ly->q_norm : NULL, f->qk_norm ? Ly->k_norm : NULL,
                                          g->rope_cos, g->rope_sin, nh, kvh, hd, T, pos0,
                                          f->rope_layout == GLQ_ROPE_INTERLEAVED, f->norm_eps, kc, vc, max_seq, d_pos);
  GLQ_CUDA_LAUNCHED();
  int nbh = nb * nh;
  if (d_pos) {
    static size_t smem_set = 48 << 10;  /* dynamic shared memory the decode kernel is allowed */
    size_t smem = (size_t)max_seq * sizeof(float);
    if (smem > smem_set) {
      if (cudaFuncSetAttribute(k_attn_decode, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
        return glq_error(GLQ_EUNSUPPORTED, "GPU decode: a cache of %d positions needs %zu bytes of shared memory", max_seq, smem);
      smem_set = smem;
    }
    k_attn_decode<<<(unsigned)nbh, RED_THREADS, (size_t)max_seq * sizeof(float), st>>>(q, kc, vc, att, nh, kvh, hd, max_seq,
                                                                                      d_pos, 1.0f / sqrtf((float)hd));
    GLQ_CUDA_LAUNCHED();
    return layer_tail(g, l, h, N, att, tmp, xn, gt, up, cap);
  }
  k_attn_ptrs<<<blocks(nbh, 128), 128, 0, st>>>(g->ptrs, q, kc, vc, S, att, nb, nh, kvh, hd, T, L, max_seq);
  GLQ_CUDA_LAUNCHED();
  const float scale = 1.0f / sqrtf((float)hd), one = 1.0f, zero = 0.0f;
  const float **P = g->ptrs;
  cublasHandle_t bl = g->ctx->blas;
  GLQ_CUBLAS_TRY(cublasSetStream(bl, st));
  GLQ_CUBLAS_TRY(cublasSetWorkspace(bl, g->ctx->blas_ws, g->ctx->blas_ws_bytes));
  /* column-major: S_bh (L × T) = K_gᵀ-view (hd × L)ᵀ · Q_bh (hd × T) */
  GLQ_CUBLAS_TRY(cublasSgemmBatched(bl, CUBLAS_OP_T, CUBLAS_OP_N, L, T, hd, &scale, P + nbh, hd, P, (int)qd, &zero,
                                    (float *const *)(P + 2 * nbh), L, nbh));
  k_softmax<<<(unsigned)((int64_t)nbh * T), RED_THREADS, 0, st>>>(S, T, L, pos0);
  GLQ_CUDA_LAUNCHED();
  /* out_bh (hd × T, ld nh·hd) = V_g (hd × L) · P_bh (L × T) */
  GLQ_CUBLAS_TRY(cublasSgemmBatched(bl, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, L, &one, P + 3 * nbh, hd, P + 2 * nbh, L, &zero,
                                    (float *const *)(P + 4 * nbh), (int)qd, nbh));
  return layer_tail(g, l, h, N, att, tmp, xn, gt, up, cap);
}

extern "C" int glq_cuda_llama_layer(glq_cuda_llama *g, int l, float *hidden, int B, int T, glq_cuda_kv *kv,
                                    glq_cuda_capture *cap, int in_place) {
  const glq_llama_config *f = &g->cfg;
  if (l < 0 || l >= f->n_layers) return glq_error(GLQ_EINVAL, "GPU layer: index %d out of range [0, %d)", l, f->n_layers);
  if (!g->layers[l].lin[0]) return glq_error(GLQ_EINVAL, "GPU layer %d: weights not on the device (sync_layer)", l);
  int pos0 = kv ? kv->len : 0;
  if (B < 1 || T < 1 || T > f->max_seq - pos0)
    return glq_error(GLQ_EINVAL, "GPU layer %d: B=%d, T=%d at position %d does not fit max_seq %d", l, B, T, pos0, f->max_seq);
  int64_t dim = f->dim, kvh = f->n_kv_heads, hd = f->head_dim;
  int rc = GLQ_OK;
  if (kv) {
    if (kv->batch != B) return glq_error(GLQ_EINVAL, "GPU layer %d: cache batch %d, tokens batch %d", l, kv->batch, B);
    if (T > kv->max_seq - pos0)
      return glq_error(GLQ_EINVAL, "GPU layer %d: %d new positions after %d exceed the cache's max_seq %d", l, T, pos0, kv->max_seq);
    if (!in_place) return glq_error(GLQ_EINVAL, "GPU layer %d: a cached call must run in place", l);
    size_t lo = (size_t)l * B * kvh * kv->max_seq * hd;
    g->gen++;
    if (T == 1) GLQ_CUDA_TRY(cudaMemcpyAsync(kv->d_pos, &kv->len, sizeof(int), cudaMemcpyHostToDevice, g->st));
    return layer_chunk(g, l, hidden, B, T, pos0, kv->k + lo, kv->v + lo, kv->max_seq, cap, T == 1 ? kv->d_pos : NULL);
  }
  g->gen++;
  /* sequences per chunk: at most CHUNK_ROWS rows and SCORE_BYTES of scores */
  int64_t nb = CHUNK_ROWS / T;
  int64_t by_scores = (int64_t)(SCORE_BYTES / ((size_t)f->n_heads * T * T * sizeof(float)));
  if (nb > by_scores) nb = by_scores;
  if (nb < 1) nb = 1;
  if (nb > B) nb = B;
  /* keys/values of the chunk + (without in_place) a copy of its hidden rows: one extra buffer */
  size_t kvn = (size_t)nb * kvh * T * hd;
  size_t extra = 2 * kvn + (in_place ? 0 : (size_t)nb * T * dim);
  float *buf = NULL;
  GLQ_CUDA_TRY(cudaMalloc((void **)&buf, extra * sizeof(float)));
  for (int64_t b0 = 0; b0 < B && !rc; b0 += nb) {
    int n = (int)(B - b0 < nb ? B - b0 : nb);
    float *h = hidden + b0 * T * dim;
    if (!in_place) {
      float *hc = buf + 2 * kvn;
      if (cudaMemcpyAsync(hc, h, (size_t)n * T * dim * sizeof(float), cudaMemcpyDeviceToDevice, g->st) != cudaSuccess) {
        rc = glq_error(GLQ_EIO, "GPU layer %d: copy failed", l);
        break;
      }
      h = hc;
    }
    rc = layer_chunk(g, l, h, n, T, 0, buf, buf + kvn, T, cap, NULL);
  }
  cudaError_t e = cudaStreamSynchronize(g->st);
  cudaFree(buf);
  if (!rc && e != cudaSuccess) rc = glq_error(GLQ_EIO, "GPU layer %d: %s", l, cudaGetErrorString(e));
  return rc;
}

static int head_impl(glq_cuda_llama *g, const float *hidden, int64_t n, float *logits) {
  const glq_llama_config *c = &g->cfg;
  if (!g->head || !g->final_norm) return glq_error(GLQ_EINVAL, "GPU head: final norm or output head not uploaded (sync_head)");
  int rc = dgrow(&g->ws, &g->ws_n, (size_t)n * c->dim * sizeof(float));
  if (rc) return rc;
  if ((rc = glq_cuda_rmsnorm_rows(hidden, g->final_norm, (float *)g->ws, n, c->dim, c->norm_eps, g->st))) return rc;
  rc = glq_cuda_linear_forward(g->ctx, g->head, (const float *)g->ws, n, logits, g->st);
  if (rc) glq_error_prefix("output head");
  return rc;
}

extern "C" int glq_cuda_llama_head(glq_cuda_llama *g, const float *hidden, int64_t n, float *logits) {
  g->gen++;
  return head_impl(g, hidden, n, logits);
}

/* The work of one decode step on the stream (tokens already in g->tok, the position in kv->d_pos):
 * embedding, every layer, the head into g->logits. No allocation, no host synchronisation. */
static int decode_body(glq_cuda_llama *g, glq_cuda_kv *kv, int B) {
  const glq_llama_config *c = &g->cfg;
  k_embed<<<(unsigned)B, 256, 0, g->st>>>(g->tok, g->emb, g->emb_bf16, c->dim, g->hid);
  GLQ_CUDA_LAUNCHED();
  int rc;
  for (int l = 0; l < c->n_layers; l++) {
    if (!g->layers[l].lin[0]) return glq_error(GLQ_EINVAL, "GPU layer %d: weights not on the device (sync_layer)", l);
    size_t lo = (size_t)l * B * kv->kvh * kv->max_seq * kv->hd;
    if ((rc = layer_chunk(g, l, g->hid, B, 1, kv->len, kv->k + lo, kv->v + lo, kv->max_seq, NULL, kv->d_pos))) return rc;
  }
  return head_impl(g, g->hid, B, g->logits);
}

/* One decode step. The first step after anything else runs eagerly (it also sizes every scratch
 * buffer); the next one is captured as a CUDA graph, and later steps replay it, so a small model
 * is not bound by kernel launches. Anything that may move a buffer (another call, a sync) bumps
 * g->gen and retires the graph. GLQ_CUDA_GRAPHS=0 turns graphs off. */
static int decode_step(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B) {
  const glq_llama_config *c = &g->cfg;
  if (kv->len + 1 > kv->max_seq)
    return glq_error(GLQ_EINVAL, "GPU forward: 1 new position after %d exceeds the cache's max_seq %d", kv->len, kv->max_seq);
  for (int b = 0; b < B; b++)
    if (tokens[b] < 0 || tokens[b] >= c->vocab)
      return glq_error(GLQ_EINVAL, "GPU forward: token %d at index %d outside [0, %d)", (int)tokens[b], b, c->vocab);
  GLQ_CUDA_TRY(cudaMemcpyAsync(g->tok, tokens, (size_t)B * sizeof(int32_t), cudaMemcpyHostToDevice, g->st));
  GLQ_CUDA_TRY(cudaMemcpyAsync(kv->d_pos, &kv->len, sizeof(int), cudaMemcpyHostToDevice, g->st));
  const char *env = getenv("GLQ_CUDA_GRAPHS");
  int graphs = !(env && !strcmp(env, "0"));
  int same = g->step_kv == kv && g->step_B == B && g->step_gen == g->gen + dgrow_moves;
  int rc;
  if (graphs && same && g->graph) {
    GLQ_CUDA_TRY(cudaGraphLaunch(g->graph, g->st));
  } else if (graphs && same) {
    cudaGraph_t gr = NULL;
    GLQ_CUDA_TRY(cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal));
    rc = decode_body(g, kv, B);
    cudaError_t e = cudaStreamEndCapture(g->st, &gr);
    if (rc || e != cudaSuccess) {
      /* the capture failed (a call that cannot be captured, e.g. a buffer that had to grow): drop it and run
       * the step eagerly; a real error shows again there. The next step tries to capture again. */
      if (gr) cudaGraphDestroy(gr);
      (void)cudaGetLastError();
      if ((rc = decode_body(g, kv, B))) return rc;
      g->step_gen = g->gen + dgrow_moves;
      return GLQ_OK;
    }
    e = cudaGraphInstantiate(&g->graph, gr, 0);
    cudaGraphDestroy(gr);
    if (e != cudaSuccess) {
      g->graph = NULL;
      return glq_error(GLQ_EIO, "GPU decode: graph instantiation failed: %s", cudaGetErrorString(e));
    }
    GLQ_CUDA_TRY(cudaGraphLaunch(g->graph, g->st));
  } else {
    if (g->graph) { cudaGraphExecDestroy(g->graph); g->graph = NULL; }
    if ((rc = decode_body(g, kv, B))) return rc;
    g->step_kv = kv;
    g->step_B = B;
    g->step_gen = g->gen + dgrow_moves;
  }
  return GLQ_OK;
}

/* the forward; then either host logits (logits != NULL) or the greedy next token of every sequence */
static int forward(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B, int T, float *logits, int all_logits,
                   int32_t *next) {
  const glq_llama_config *c = &g->cfg;
  if (B < 1 || T < 1) return glq_error(GLQ_EINVAL, "GPU forward: B=%d and T=%d must be >= 1", B, T);
  if (kv && kv->batch != B) return glq_error(GLQ_EINVAL, "GPU forward: cache batch %d, tokens batch %d", kv->batch, B);
  if (!g->head || !g->emb) return glq_error(GLQ_EINVAL, "GPU forward: embedding or head not uploaded (sync_head)");
  int64_t N = (int64_t)B * T, dim = c->dim, rows = all_logits ? N : B;
  int rc = dgrow((void **)&g->hid, &g->hid_n, (size_t)(N + B) * dim * sizeof(float));
  if (!rc) rc = dgrow((void **)&g->logits, &g->logits_n, (size_t)rows * c->vocab * sizeof(float));
  if (!rc) rc = dgrow((void **)&g->tok, &g->tok_n, (size_t)N * sizeof(int32_t));
  if (rc) return rc;
  if (kv && T == 1) {
    if ((rc = decode_step(g, kv, tokens, B))) { g->gen++; return rc; }
  } else {
    float *h = g->hid, *last = h + N * dim;
    if ((rc = glq_cuda_llama_embed(g, tokens, N, h))) return rc;
    for (int l = 0; l < c->n_layers; l++)
      if ((rc = glq_cuda_llama_layer(g, l, h, B, T, kv, NULL, 1))) return rc;
    const float *src = h;
    if (!all_logits) {
      for (int b = 0; b < B; b++)
        GLQ_CUDA_TRY(cudaMemcpyAsync(last + (size_t)b * dim, h + ((int64_t)b * T + T - 1) * dim, (size_t)dim * sizeof(float),
                                     cudaMemcpyDeviceToDevice, g->st));
      src = last;
    }
    if ((rc = glq_cuda_llama_head(g, src, rows, g->logits))) return rc;
  }
  if (kv && (rc = glq_cuda_kv_advance(kv, T))) return rc;
  if (next) { /* B ids instead of B x vocab logits (the token buffer is free again) */
    if ((rc = glq_cuda_argmax_rows(g->logits, B, c->vocab, g->tok, g->st))) return rc;
    GLQ_CUDA_TRY(cudaMemcpyAsync(next, g->tok, (size_t)B * sizeof(int32_t), cudaMemcpyDeviceToHost, g->st));
  } else {
    GLQ_CUDA_TRY(cudaMemcpyAsync(logits, g->logits, (size_t)rows * c->vocab * sizeof(float), cudaMemcpyDeviceToHost, g->st));
  }
  GLQ_CUDA_TRY(cudaStreamSynchronize(g->st));
  for (int b = 0; next && b < B; b++)
    if (next[b] < 0) return glq_error(GLQ_ENUMERIC, "GPU forward: the logits of sequence %d contain NaN", b + 1);
  return GLQ_OK;
}

extern "C" int glq_cuda_llama_forward(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B, int T,
                                      float *logits, int all_logits) {
  return forward(g, kv, tokens, B, T, logits, all_logits, NULL);
}

extern "C" int glq_cuda_llama_forward_argmax(glq_cuda_llama *g, glq_cuda_kv *kv, const int32_t *tokens, int B, int T,
                                             int32_t *next) {
  return forward(g, kv, tokens, B, T, NULL, 0, next);
}

extern "C" int glq_cuda_llama_sync(glq_cuda_llama *g) {
  GLQ_CUDA_TRY(cudaStreamSynchronize(g->st));
  return GLQ_OK;
}

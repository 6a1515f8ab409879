/* ldlq.cu - exact E8 nearest-neighbour search and the LDLQ sweep on the GPU (glq_cuda.h).
 *
 * Search. The nearest entry is a mathematical fact (ties: lowest index), so any exact method returns the
 * CPU's index. Per vector, as on the CPU: if the nearest E8 point is certain (coset decoding plus the
 * Voronoi-cell margin test) and in the table, that is the answer. Otherwise (about 18-36% of vectors at the
 * scales LDLQ uses) the vector goes to a list and is searched exhaustively: the table is split into S ranges,
 * one CTA per (128 listed vectors, range) streams its range through shared memory and keeps, per vector, the
 * f32 key minimum; when no other key lies within the f32 error bound of it the minimum is the range's exact
 * winner, else the entries within the bound are compared exactly (a non-overlapping TwoSum expansion of the
 * key difference). A second kernel merges the S winners with the same exact comparison. The 256-entry book
 * is scanned by each thread from shared memory.
 *
 * Sweep. Rows are independent given L and D, so a thread owns a row; the matrices live column-major on the
 * device (an 8-column block of all rows is then contiguous). Per 8-column block: target + pending in-group
 * feedback (the CPU's f32 multiply/add order), stage-1 search, [residual, stage-2 search], then Q, R, the
 * indices and the row loss (the CPU's f64 order). After each 128-column group the feedback to the columns on
 * its left is one cuBLAS f32 GEMM (CUBLAS_COMPUTE_32F_PEDANTIC: no TF32) - the only step whose summation
 * order differs from the CPU's (OpenBLAS). This file is compiled with -fmad=false so that no multiply/add
 * pair is contracted behind the CPU's back; the f32 key filter uses explicit fmaf (its bound allows it). */
#include "common.cuh"
#include "glq_cuda.h"
extern "C" {
#include "../src/quant/e8.h"
#include "../src/quant/ldlq.h"
#include "../src/quant/trellis.h"
}
#include "../src/quant/e8_exact.h"
#include <math.h>
#include <mutex>
#include <stdlib.h>
#include <string.h>

#define NN_FULL 65536
#define TPB 128       /* threads per CTA of every kernel here */
#define BF_TILE 256   /* table entries per shared-memory tile of the exhaustive search */
#define MAX_SPLIT 64

/* ---------- per-device tables (uploaded once per process) ---------- */

struct nn_tables {
  const int8_t *k8;  /* 65536 x 8: 2c */
  const float *kf;   /* 65536 x 8: 2c as f32 */
  const float *nf;   /* 65536: |c|^2 */
  const glq_e8_hslot *hash; /* e8.c's lookup (e8_exact.h), copied */
};

static std::mutex g_tab_lock;
static nn_tables g_tab[16];
static int g_tab_ok[16];

static int tables_get(nn_tables *out) {
  int dev = 0;
  GLQ_CUDA_TRY(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 16) return glq_error(GLQ_EUNSUPPORTED, "cuda ldlq: device %d (only 0..15 supported)", dev);
  std::lock_guard<std::mutex> lock(g_tab_lock);
  if (g_tab_ok[dev]) {
    *out = g_tab[dev];
    return GLQ_OK;
  }
  const glq_e8_codebook *cb = glq_e8_codebook_get(NN_FULL);
  if (!cb) return GLQ_EINVAL;
  const int8_t *k8 = glq_e8_table_i8(cb);
  float *kf = (float *)malloc(sizeof(float) * 9 * NN_FULL);
  if (!kf) return glq_error(GLQ_ENOMEM, "cuda ldlq: out of host memory for the codebook tables");
  for (int j = 0; j < NN_FULL; j++) {
    int nrm = 0;
    for (int i = 0; i < 8; i++) {
      kf[8 * j + i] = (float)k8[8 * j + i];
      nrm += k8[8 * j + i] * k8[8 * j + i];
    }
    kf[8 * NN_FULL + j] = 0.25f * (float)nrm;
  }
  const size_t hbytes = sizeof(glq_e8_hslot) * GLQ_E8_HASH_SLOTS;
  void *dk8 = NULL, *dkf = NULL, *dh = NULL;
  cudaError_t e = cudaMalloc(&dk8, 8 * NN_FULL);
  if (e == cudaSuccess) e = cudaMalloc(&dkf, sizeof(float) * 9 * NN_FULL);
  if (e == cudaSuccess) e = cudaMalloc(&dh, hbytes);
  if (e == cudaSuccess) e = cudaMemcpy(dk8, k8, 8 * NN_FULL, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(dkf, kf, sizeof(float) * 9 * NN_FULL, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(dh, glq_e8_hash(cb), hbytes, cudaMemcpyHostToDevice);
  free(kf);
  if (e != cudaSuccess) {
    cudaFree(dk8), cudaFree(dkf), cudaFree(dh);
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO, "cuda ldlq: codebook upload: %s", cudaGetErrorString(e));
  }
  nn_tables t = {(const int8_t *)dk8, (const float *)dkf, (const float *)dkf + 8 * NN_FULL, (const glq_e8_hslot *)dh};
  g_tab[dev] = t; /* kept for the life of the process, like the matmul codebook */
  g_tab_ok[dev] = 1;
  *out = t;
  return GLQ_OK;
}

/* ---------- exact comparison ---------- */

/* entry a strictly closer to x than entry b, or equally close with a lower index */
__device__ static bool exact_closer(const float *x, int a, int b, const int8_t *k8) {
  const char2 *pa = reinterpret_cast<const char2 *>(k8 + 8 * (size_t)a), *pb = reinterpret_cast<const char2 *>(k8 + 8 * (size_t)b);
  double t[9];
  int na = 0, nb = 0;
  for (int i = 0; i < 4; i++) {
    const char2 ca = pa[i], cb = pb[i];
    na += ca.x * ca.x + ca.y * ca.y;
    nb += cb.x * cb.x + cb.y * cb.y;
    t[2 * i] = -(double)(ca.x - cb.x) * (double)x[2 * i];
    t[2 * i + 1] = -(double)(ca.y - cb.y) * (double)x[2 * i + 1];
  }
  t[8] = (na - nb) * 0.25;
  const int s = glq_exact_sign(t, 9);
  return s < 0 || (s == 0 && a < b);
}

/* ---------- fast path: the nearest lattice point, when certain ---------- */

/* index (< size) of the table entry that is certainly the nearest lattice point to x, else -1 */
__device__ static int nn_fast(const float *xf, int size, const glq_e8_hslot *hash) {
  double x[8], amax = 0;
  for (int i = 0; i < 8; i++) x[i] = xf[i], amax = fmax(amax, fabs(x[i]));
  if (!(amax <= 4)) return -1; /* the nearest lattice point would have a coordinate > 3 */
  double y0[8], y1[8];
  const double d0 = glq_e8_coset_nearest(x, 0, y0), d1 = glq_e8_coset_nearest(x, 0.5, y1);
  const double *y = d0 <= d1 ? y0 : y1;
  int8_t k[8];
  for (int i = 0; i < 8; i++) {
    if (fabs(y[i]) > 3) return -1;
    k[i] = (int8_t)(2 * y[i]);
  }
  /* x is inside y's Voronoi cell iff <x - y, r> < 1 for each of the 240 roots r */
  const double best = glq_e8_cell_margin(x, y);
  if (!(best < 1 - 0x1p-30)) return -1;
  const int32_t idx = glq_e8_hash_find(hash, glq_e8_nibble_code(k));
  return idx >= 0 && idx < size ? idx : -1;
}

/* ---------- exhaustive search of a table range held in shared memory ---------- */

/* f32 keys |c|^2 - <2c, x> of two entries are misordered by at most twice their error bound, which this is */
__device__ static float key_slack(const float *x) {
  float a = 12;
  for (int i = 0; i < 8; i++) a += 6 * fabsf(x[i]);
  return 0x1p-18f * a;
}
__device__ static bool key_finite(const float *x) {
  bool ok = true;
  for (int i = 0; i < 8; i++) ok &= fabsf(x[i]) < 0x1p60f;
  return ok;
}

__device__ __forceinline__ float key_f32(const float *x, const float *kf, float nrm) {
  const float4 a = *reinterpret_cast<const float4 *>(kf), b = *reinterpret_cast<const float4 *>(kf + 4);
  float k = nrm;
  k = fmaf(-a.x, x[0], k), k = fmaf(-a.y, x[1], k), k = fmaf(-a.z, x[2], k), k = fmaf(-a.w, x[3], k);
  k = fmaf(-b.x, x[4], k), k = fmaf(-b.y, x[5], k), k = fmaf(-b.z, x[6], k), k = fmaf(-b.w, x[7], k);
  return k;
}

/* running state of one vector's search */
struct scan_state {
  float fmin, fmin2; /* smallest and second smallest f32 key */
  int arg;           /* the first entry with fmin */
};

/* pass 1 over `count` entries at s_kf/s_nf (table indices base..) */
__device__ __forceinline__ void scan_keys(const float *x, const float *s_kf, const float *s_nf, int base, int count,
                                          scan_state &st) {
  for (int e = 0; e < count; e++) {
    const float k = key_f32(x, s_kf + 8 * e, s_nf[e]);
    st.fmin2 = fminf(st.fmin2, fmaxf(st.fmin, k));
    if (k < st.fmin) st.arg = base + e;
    st.fmin = fminf(st.fmin, k);
  }
}

/* pass 2: exact champion among the entries whose f32 key is within the slack of fmin (all if !finite) */
__device__ __forceinline__ void scan_exact(const float *x, const float *s_kf, const float *s_nf, int base, int count,
                                           float thr, bool finite, const int8_t *k8, int &champ) {
  for (int e = 0; e < count; e++) {
    if (finite && !(key_f32(x, s_kf + 8 * e, s_nf[e]) <= thr)) continue;
    if (champ < 0 || exact_closer(x, base + e, champ, k8)) champ = base + e;
  }
}

/* whether pass 1 left a single candidate */
__device__ __forceinline__ bool scan_unique(const scan_state &st, float slack, bool finite) {
  return finite && st.fmin2 > st.fmin + slack;
}

/* the 256-entry book, searched by one thread with the table in shared memory */
__device__ static int scan256(const float *x, const float *s_kf, const float *s_nf, const int8_t *k8) {
  const bool fin = key_finite(x);
  const float slack = key_slack(x);
  scan_state st = {INFINITY, INFINITY, 0};
  if (fin) scan_keys(x, s_kf, s_nf, 0, 256, st);
  if (scan_unique(st, slack, fin)) return st.arg;
  int champ = -1;
  scan_exact(x, s_kf, s_nf, 0, 256, st.fmin + slack, fin, k8, champ);
  return champ;
}

__device__ static void load256(float *s_kf, float *s_nf, const nn_tables tb) {
  for (int i = threadIdx.x; i < 256 * 8; i += blockDim.x) s_kf[i] = tb.kf[i];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) s_nf[i] = tb.nf[i];
  __syncthreads();
}

/* Exhaustive search of the listed vectors: CTA (chunk of TPB list entries, range y of the table). */
static __global__ void __launch_bounds__(TPB) k_brute(const float *vec, const int *list, const int *count, int *partial,
                                               int maxn, int range, const nn_tables tb) {
  __shared__ __align__(16) float s_kf[BF_TILE * 8];
  __shared__ float s_nf[BF_TILE];
  const int n = *count, p = blockIdx.x * TPB + threadIdx.x;
  if ((int)(blockIdx.x * TPB) >= n) return; /* the whole CTA: the list is shorter */
  const bool act = p < n;
  float x[8];
  {
    const float4 *v = reinterpret_cast<const float4 *>(vec + 8 * (size_t)(act ? list[p] : list[0]));
    const float4 a = v[0], b = v[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  }
  const bool fin = key_finite(x);
  const float slack = key_slack(x);
  const int lo = blockIdx.y * range;
  scan_state st = {INFINITY, INFINITY, lo};
  auto load_tile = [&](int t0) {
    __syncthreads();
    for (int i = threadIdx.x; i < BF_TILE * 2; i += TPB)
      reinterpret_cast<float4 *>(s_kf)[i] = __ldg(reinterpret_cast<const float4 *>(tb.kf + 8 * (size_t)t0) + i);
    for (int i = threadIdx.x; i < BF_TILE; i += TPB) s_nf[i] = __ldg(tb.nf + t0 + i);
    __syncthreads();
  };
  for (int t0 = lo; t0 < lo + range; t0 += BF_TILE) {
    load_tile(t0);
    if (fin) scan_keys(x, s_kf, s_nf, t0, BF_TILE, st);
  }
  int champ = st.arg;
  const bool again = act && !scan_unique(st, slack, fin);
  if (__syncthreads_or(again)) { /* near ties (or huge inputs): a second, exact pass where needed */
    champ = -1;
    for (int t0 = lo; t0 < lo + range; t0 += BF_TILE) {
      load_tile(t0);
      if (again) scan_exact(x, s_kf, s_nf, t0, BF_TILE, st.fmin + slack, fin, tb.k8, champ);
    }
    if (!again) champ = st.arg;
  }
  if (act) partial[(size_t)blockIdx.y * maxn + p] = champ;
}

/* out[list[p]] = the exact best of the nsplit range winners of listed vector p */
static __global__ void __launch_bounds__(TPB) k_merge(const float *vec, const int *list, const int *count, const int *partial,
                                               int maxn, int nsplit, int *out, const nn_tables tb) {
  const int p = blockIdx.x * TPB + threadIdx.x;
  if (p >= *count) return;
  const int row = list[p];
  float x[8];
  for (int i = 0; i < 8; i++) x[i] = vec[8 * (size_t)row + i];
  int best = partial[p];
  for (int s = 1; s < nsplit; s++) {
    const int c = partial[(size_t)s * maxn + p];
    if (exact_closer(x, c, best, tb.k8)) best = c;
  }
  out[row] = best;
}

/* fast path or scan256 for every vector; 65536-book vectors not settled are listed */
static __global__ void __launch_bounds__(TPB) k_encode(const float *vec, int n, int size, int *out, int *list, int *count,
                                                const nn_tables tb) {
  __shared__ __align__(16) float s_kf[256 * 8];
  __shared__ float s_nf[256];
  if (size == 256) load256(s_kf, s_nf, tb);
  const int i = blockIdx.x * TPB + threadIdx.x;
  if (i >= n) return;
  float x[8];
  for (int j = 0; j < 8; j++) x[j] = vec[8 * (size_t)i + j];
  int idx = nn_fast(x, size, tb.hash);
  if (idx < 0 && size == 256) idx = scan256(x, s_kf, s_nf, tb.k8);
  if (idx >= 0) out[i] = idx;
  else list[atomicAdd(count, 1)] = i;
}

/* ---------- the sweep's per-block kernels (one thread per row; matrices column-major, ld = rows) ---------- */

struct blk_params {
  int rows, n, c, k;      /* block columns c..c+8; k = pending in-group feedback columns (c+8 .. c+8+k) */
  const float *tm, *wr, *l, *d;
  float *r;
  float *t, *res;         /* rows x 8 (vector-major): target, stage-2 input */
  int *i1, *i2;           /* rows: this block's indices */
  int *list, *count;      /* stage 1 list (and list2/count2 right after) */
  int *list2, *count2;
  int size2;
  float rs, inv_rs;
  int *idx1, *idx2;       /* rows x n/8 (row-major, as the CPU's) */
  double *rowloss;        /* rows, or NULL */
};

/* target t = tm[:, c..c+8] (+ R[:, c+8..c+8+k] . L[c+8..c+8+k, c..c+8]) and the stage-1 fast path */
static __global__ void __launch_bounds__(TPB) k_block_target(const blk_params p, const nn_tables tb) {
  const int i = blockIdx.x * TPB + threadIdx.x;
  if (i >= p.rows) return;
  float t[8], acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < 8; j++) t[j] = p.tm[(size_t)(p.c + j) * p.rows + i];
  if (p.k > 0) {
    for (int u = 0; u < p.k; u++) {
      const float rv = p.r[(size_t)(p.c + 8 + u) * p.rows + i];
      const float *lr = p.l + (size_t)(p.c + 8 + u) * p.n + p.c;
      for (int j = 0; j < 8; j++) acc[j] += rv * __ldg(lr + j);
    }
    for (int j = 0; j < 8; j++) t[j] += acc[j];
  }
  float4 *tv = reinterpret_cast<float4 *>(p.t + 8 * (size_t)i);
  tv[0] = make_float4(t[0], t[1], t[2], t[3]);
  tv[1] = make_float4(t[4], t[5], t[6], t[7]);
  const int idx = nn_fast(t, NN_FULL, tb.hash);
  if (idx >= 0) p.i1[i] = idx;
  else p.list[atomicAdd(p.count, 1)] = i;
}

/* stage 2: res = (t - C[i1]) * rs, then its fast path (and the 256 book's scan) */
static __global__ void __launch_bounds__(TPB) k_block_stage2(const blk_params p, const nn_tables tb) {
  __shared__ __align__(16) float s_kf[256 * 8];
  __shared__ float s_nf[256];
  if (p.size2 == 256) load256(s_kf, s_nf, tb);
  const int i = blockIdx.x * TPB + threadIdx.x;
  if (i >= p.rows) return;
  const int8_t *c1 = tb.k8 + 8 * (size_t)p.i1[i];
  float x[8];
  for (int j = 0; j < 8; j++) x[j] = (p.t[8 * (size_t)i + j] - 0.5f * (float)c1[j]) * p.rs;
  float4 *rv = reinterpret_cast<float4 *>(p.res + 8 * (size_t)i);
  rv[0] = make_float4(x[0], x[1], x[2], x[3]);
  rv[1] = make_float4(x[4], x[5], x[6], x[7]);
  int idx = nn_fast(x, p.size2, tb.hash);
  if (idx < 0 && p.size2 == 256) idx = scan256(x, s_kf, s_nf, tb.k8);
  if (idx >= 0) p.i2[i] = idx;
  else p.list2[atomicAdd(p.count2, 1)] = i;
}

/* Q, R = wr - Q, the indices and the row loss F D Fᵀ; resets the list counters for the next block */
static __global__ void __launch_bounds__(TPB) k_block_post(const blk_params p, const nn_tables tb) {
  const int i = blockIdx.x * TPB + threadIdx.x;
  if (i == 0) *p.count = 0, *p.count2 = 0;
  if (i >= p.rows) return;
  const int a1 = p.i1[i], a2 = p.size2 ? p.i2[i] : 0;
  float q[8], f[8];
  for (int j = 0; j < 8; j++) {
    q[j] = 0.5f * (float)tb.k8[8 * (size_t)a1 + j];
    if (p.size2) q[j] = q[j] + p.inv_rs * (0.5f * (float)tb.k8[8 * (size_t)a2 + j]);
    f[j] = p.t[8 * (size_t)i + j] - q[j];
  }
  if (p.rowloss) {
    const float *m = p.d + (size_t)(p.c / 8) * 64;
    double s = 0;
    for (int a = 0; a < 8; a++) {
      double u = 0;
      for (int b = 0; b < 8; b++) u += (double)__ldg(m + a * 8 + b) * f[b];
      s += f[a] * u;
    }
    p.rowloss[i] += s;
  }
  for (int j = 0; j < 8; j++) {
    const size_t o = (size_t)(p.c + j) * p.rows + i;
    p.r[o] = p.wr[o] - q[j];
  }
  const size_t nb = (size_t)p.n / 8;
  if (p.idx1) p.idx1[i * nb + p.c / 8] = a1;
  if (p.idx2 && p.size2) p.idx2[i * nb + p.c / 8] = a2;
}

/* out[i] = 2 sum_{j > i} g[i][j] h[i][j] + g[i][i] h[i][i] in f64: one warp per row, lanes strided over j,
 * then a fixed xor tree */
static __global__ void k_proxy_rows(const float *g, const float *h, int64_t n, double *out) {
  const int64_t i = (int64_t)blockIdx.x * (TPB / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (i >= n) return;
  const float *gi = g + i * n, *hi = h + i * n;
  double r = 0;
  for (int64_t j = i + 1 + lane; j < n; j += 32) r += (double)gi[j] * (double)hi[j];
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xFFFFFFFFu, r, o);
  if (lane == 0) out[i] = 2 * r + (double)gi[i] * (double)hi[i];
}

/* ---------- host side ---------- */

struct glq_cuda_ldlq {
  cudaStream_t st;
  cublasHandle_t blas;
  int sms;
  nn_tables tb;
  /* the factor */
  float *l, *d;
  int64_t fn, fcap;    /* its size, and the size the buffers hold */
  /* buffers, grown on demand */
  int64_t cap_rn, cap_rows, cap_nb;
  float *wr, *tm, *r, *tmp;         /* rows x n */
  float *t, *res;                   /* rows x 8 */
  int *i1, *i2, *list, *list2, *counts, *partial; /* rows; counts: 2; partial: MAX_SPLIT x rows */
  int *idx1, *idx2;                 /* rows x n/8 */
  double *rowloss;
  float *g;                         /* proxy loss: n x n Gram matrix (the factor's buffer holds h) */
  double *prow;                     /*   and n row sums */
  int64_t gcap;
  glq_cuda_trellis *tr;             /* the trellis Viterbi (cuda/trellis.cu) for the code last seen */
  int tr_variant, tr_K;
};

#define DFREE(p) (cudaFree(p), (p) = NULL)

static void bufs_free(glq_cuda_ldlq *q) {
  DFREE(q->wr), DFREE(q->tm), DFREE(q->r), DFREE(q->tmp), DFREE(q->t), DFREE(q->res), DFREE(q->i1), DFREE(q->i2);
  DFREE(q->list), DFREE(q->list2), DFREE(q->counts), DFREE(q->partial), DFREE(q->idx1), DFREE(q->idx2), DFREE(q->rowloss);
  q->cap_rn = q->cap_rows = q->cap_nb = 0;
}

template <class T> static cudaError_t dalloc(T **p, size_t count) { return cudaMalloc((void **)p, sizeof(T) * (count ? count : 1)); }

/* buffers for `rows` vectors (and, with n > 0, a rows x n sweep) */
static int bufs_reserve(glq_cuda_ldlq *q, int64_t rows, int64_t n) {
  const int64_t rn = rows * n, nb = rows * (n / 8);
  if (rows <= q->cap_rows && rn <= q->cap_rn && nb <= q->cap_nb) return GLQ_OK;
  const int64_t R = rows > q->cap_rows ? rows : q->cap_rows, RN = rn > q->cap_rn ? rn : q->cap_rn,
                NB = nb > q->cap_nb ? nb : q->cap_nb;
  GLQ_CUDA_TRY(cudaStreamSynchronize(q->st));
  bufs_free(q);
  cudaError_t e = dalloc(&q->wr, RN);
  if (!e) e = dalloc(&q->tm, RN);
  if (!e) e = dalloc(&q->r, RN);
  if (!e) e = dalloc(&q->tmp, RN);
  if (!e) e = dalloc(&q->t, 8 * R);
  if (!e) e = dalloc(&q->res, 8 * R);
  if (!e) e = dalloc(&q->i1, R);
  if (!e) e = dalloc(&q->i2, R);
  if (!e) e = dalloc(&q->list, R);
  if (!e) e = dalloc(&q->list2, R);
  if (!e) e = dalloc(&q->counts, 2);
  if (!e) e = dalloc(&q->partial, (size_t)MAX_SPLIT * R);
  if (!e) e = dalloc(&q->idx1, NB);
  if (!e) e = dalloc(&q->idx2, NB);
  if (!e) e = dalloc(&q->rowloss, R);
  if (e) {
    bufs_free(q);
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO,
                     "cuda ldlq: device buffers for %lld x %lld: %s", (long long)rows, (long long)n, cudaGetErrorString(e));
  }
  q->cap_rows = R, q->cap_rn = RN, q->cap_nb = NB;
  return GLQ_OK;
}

extern "C" int glq_cuda_ldlq_create(glq_cuda_ldlq **out) {
  *out = NULL;
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)calloc(1, sizeof *q);
  if (!q) return glq_error(GLQ_ENOMEM, "glq_cuda_ldlq_create: out of memory");
  int dev = 0, ndev = 0, rc = GLQ_OK;
  cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev < 1)
    rc = glq_error(GLQ_EUNSUPPORTED, "LDLQ on the GPU: no usable CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
  else if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&q->sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    rc = glq_error(GLQ_EUNSUPPORTED, "LDLQ on the GPU: no usable CUDA device");
  if (!rc) rc = tables_get(&q->tb);
  if (!rc && cudaStreamCreateWithFlags(&q->st, cudaStreamNonBlocking) != cudaSuccess)
    rc = glq_error(GLQ_EIO, "glq_cuda_ldlq_create: cudaStreamCreate failed");
  if (!rc && cublasCreate(&q->blas) != CUBLAS_STATUS_SUCCESS) {
    q->blas = NULL;
    rc = glq_error(GLQ_EIO, "glq_cuda_ldlq_create: cublasCreate failed");
  }
  if (!rc && (cublasSetStream(q->blas, q->st) != CUBLAS_STATUS_SUCCESS ||
              cublasSetMathMode(q->blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS))
    rc = glq_error(GLQ_EIO, "glq_cuda_ldlq_create: cuBLAS setup failed");
  if (rc) {
    glq_cuda_ldlq_free(q);
    return rc;
  }
  *out = q;
  return GLQ_OK;
}

extern "C" void glq_cuda_ldlq_free(glq_cuda_ldlq *q) {
  if (!q) return;
  if (q->st) cudaStreamSynchronize(q->st);
  bufs_free(q);
  glq_cuda_trellis_free(q->tr);
  cudaFree(q->l), cudaFree(q->d), cudaFree(q->g), cudaFree(q->prow);
  if (q->blas) cublasDestroy(q->blas);
  if (q->st) cudaStreamDestroy(q->st);
  free(q);
}

/* ---- the pool of sweep objects behind glq_cuda_ldlq_backend_take / _give ---- */
static std::mutex g_pool_lock;
static glq_cuda_ldlq *g_pool[64];
static int g_pool_n;

extern "C" int glq_cuda_ldlq_backend_take(glq_ldlq_backend *be) {
  memset(be, 0, sizeof *be);
  glq_cuda_ldlq *q = NULL;
  {
    std::lock_guard<std::mutex> lock(g_pool_lock);
    if (g_pool_n > 0) q = g_pool[--g_pool_n];
  }
  if (!q) {
    int rc = glq_cuda_ldlq_create(&q);
    if (rc) return rc;
  }
  be->ctx = q;
  be->set_factor = glq_cuda_ldlq_set_factor;
  be->sweep = glq_cuda_ldlq_sweep;
  be->proxy_sum = glq_cuda_ldlq_proxy_sum;
  be->trellis_viterbi = glq_cuda_ldlq_trellis_viterbi;
  return GLQ_OK;
}

extern "C" void glq_cuda_ldlq_backend_give(glq_ldlq_backend *be) {
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)be->ctx;
  be->ctx = NULL;
  if (!q) return;
  {
    std::lock_guard<std::mutex> lock(g_pool_lock);
    if (g_pool_n < 64) g_pool[g_pool_n++] = q, q = NULL;
  }
  glq_cuda_ldlq_free(q);
}

/* table ranges per listed chunk: enough CTAs for two waves when ~30% of the rows are listed */
static int split_for(const glq_cuda_ldlq *q, int64_t rows) {
  const int64_t chunks = (rows + TPB - 1) / TPB;
  int s = 1;
  while (s < MAX_SPLIT && (double)chunks * s * 0.3 < 2.0 * q->sms) s *= 2;
  return s;
}

/* exhaustive search of the vectors listed in list/count (at most maxn), winners into out[row] */
static int fallback(glq_cuda_ldlq *q, const float *vec, const int *list, const int *count, int64_t maxn, int *out) {
  const int S = split_for(q, maxn);
  const unsigned chunks = (unsigned)((maxn + TPB - 1) / TPB);
  k_brute<<<dim3(chunks, S), TPB, 0, q->st>>>(vec, list, count, q->partial, (int)maxn, NN_FULL / S, q->tb);
  GLQ_CUDA_LAUNCHED();
  k_merge<<<chunks, TPB, 0, q->st>>>(vec, list, count, q->partial, (int)maxn, S, out, q->tb);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_e8_encode(glq_cuda_ldlq *q, const float *x, int64_t n, int size, int32_t *idx) {
  if (!q) return glq_error(GLQ_EINVAL, "cuda e8 encode: no context");
  if (size != 256 && size != NN_FULL) return glq_error(GLQ_EINVAL, "cuda e8 encode: codebook size %d (256 or 65536)", size);
  if (n < 0 || n > INT32_MAX / 8) return glq_error(GLQ_EINVAL, "cuda e8 encode: n = %lld out of range", (long long)n);
  for (int64_t i = 0; i < 8 * n; i++)
    if (!isfinite(x[i]))
      return glq_error(GLQ_EINVAL, "cuda e8 encode: x[%lld] (vector %lld) is not finite", (long long)i, (long long)(i / 8));
  if (n == 0) return GLQ_OK;
  int rc = bufs_reserve(q, n, 0);
  if (rc) return rc;
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->t, x, sizeof(float) * 8 * n, cudaMemcpyHostToDevice, q->st));
  GLQ_CUDA_TRY(cudaMemsetAsync(q->counts, 0, 2 * sizeof(int), q->st));
  k_encode<<<(unsigned)((n + TPB - 1) / TPB), TPB, 0, q->st>>>(q->t, (int)n, size, q->i1, q->list, q->counts, q->tb);
  GLQ_CUDA_LAUNCHED();
  if (size == NN_FULL && (rc = fallback(q, q->t, q->list, q->counts, n, q->i1))) return rc;
  GLQ_CUDA_TRY(cudaMemcpyAsync(idx, q->i1, sizeof(int32_t) * n, cudaMemcpyDeviceToHost, q->st));
  GLQ_CUDA_TRY(cudaStreamSynchronize(q->st));
  return GLQ_OK;
}

/* the factor's buffers for n x n (grown only: freeing device memory synchronises the whole device);
 * invalidates the factor they held */
static int factor_reserve(glq_cuda_ldlq *q, int64_t n) {
  q->fn = 0;
  if (n <= q->fcap) return GLQ_OK;
  DFREE(q->l), DFREE(q->d);
  q->fcap = 0;
  cudaError_t e = dalloc(&q->l, (size_t)(n * n));
  if (!e) e = dalloc(&q->d, (size_t)((n + 7) / 8 * 64));
  if (e) {
    DFREE(q->l), DFREE(q->d);
    return glq_error(GLQ_ENOMEM, "cuda ldlq: device memory for %lld x %lld: %s", (long long)n, (long long)n, cudaGetErrorString(e));
  }
  q->fcap = n;
  return GLQ_OK;
}

extern "C" int glq_cuda_ldlq_set_factor(void *vq, int64_t n, const float *l, const float *d) {
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)vq;
  if (n < 8 || n % 8) return glq_error(GLQ_EINVAL, "cuda ldlq: factor size %lld is not a positive multiple of 8", (long long)n);
  GLQ_CUDA_TRY(cudaStreamSynchronize(q->st));
  int rc = factor_reserve(q, n);
  if (rc) return rc;
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->l, l, sizeof(float) * n * n, cudaMemcpyHostToDevice, q->st));
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->d, d, sizeof(float) * (n / 8) * 64, cudaMemcpyHostToDevice, q->st));
  GLQ_CUDA_TRY(cudaStreamSynchronize(q->st)); /* the host buffers may be freed after this returns */
  q->fn = n;
  return GLQ_OK;
}

/* dst = the transpose of src (rows x cols, row-major): dst[c * rows + r] = src[r * cols + c] */
static __global__ void k_transpose(const float *src, int rows, int cols, float *dst) {
  __shared__ float tile[32][33];
  const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int r = r0 + k, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = src[(size_t)r * cols + c];
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int c = c0 + k, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[(size_t)c * rows + r] = tile[threadIdx.x][k];
  }
}

static int transpose(glq_cuda_ldlq *q, const float *src, int64_t rows, int64_t cols, float *dst) {
  const dim3 grid((unsigned)((cols + 31) / 32), (unsigned)((rows + 31) / 32));
  if (grid.y > 65535) return glq_error(GLQ_EINVAL, "cuda ldlq: %lld rows are too many", (long long)rows);
  k_transpose<<<grid, dim3(32, 8), 0, q->st>>>(src, (int)rows, (int)cols, dst);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_ldlq_sweep(void *vq, const glq_sweep_args *a) {
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)vq;
  const int64_t rows = a->rows, n = a->n, nb = n / 8;
  if (rows < 1 || n < 8 || n % 8 || rows * n > INT32_MAX || rows > INT32_MAX / 8)
    return glq_error(GLQ_EINVAL, "cuda ldlq sweep: shape %lld x %lld unsupported", (long long)rows, (long long)n);
  if (n != q->fn)
    return glq_error(GLQ_EINVAL, "cuda ldlq sweep: n = %lld but the factor is %lld x %lld", (long long)n, (long long)q->fn,
                     (long long)q->fn);
  if (a->size2 != 0 && a->size2 != 256 && a->size2 != NN_FULL)
    return glq_error(GLQ_EINVAL, "cuda ldlq sweep: second codebook size %d", a->size2);
  int rc = bufs_reserve(q, rows, n);
  if (rc) return rc;
  /* wr row-major -> tmp -> column-major wr (and tm, its copy that receives the group feedback) */
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->tmp, a->wr, sizeof(float) * rows * n, cudaMemcpyHostToDevice, q->st));
  if ((rc = transpose(q, q->tmp, rows, n, q->wr))) return rc;
  if (a->feedback) GLQ_CUDA_TRY(cudaMemcpyAsync(q->tm, q->wr, sizeof(float) * rows * n, cudaMemcpyDeviceToDevice, q->st));
  GLQ_CUDA_TRY(cudaMemsetAsync(q->counts, 0, 2 * sizeof(int), q->st));
  if (a->loss) GLQ_CUDA_TRY(cudaMemsetAsync(q->rowloss, 0, sizeof(double) * rows, q->st));

  blk_params p;
  memset(&p, 0, sizeof p);
  p.rows = (int)rows, p.n = (int)n;
  p.tm = a->feedback ? q->tm : q->wr, p.wr = q->wr, p.l = q->l, p.d = q->d, p.r = q->r;
  p.t = q->t, p.res = q->res, p.i1 = q->i1, p.i2 = q->i2;
  p.list = q->list, p.count = q->counts, p.list2 = q->list2, p.count2 = q->counts + 1;
  p.size2 = a->size2, p.rs = a->rs, p.inv_rs = a->inv_rs;
  p.idx1 = q->idx1, p.idx2 = q->idx2;
  p.rowloss = a->loss ? q->rowloss : NULL;
  const unsigned grid = (unsigned)((rows + TPB - 1) / TPB);
  for (int64_t g1 = n, g0; g1 > 0; g1 = g0) {
    g0 = g1 > 128 ? g1 - 128 : 0;
    for (int64_t c = g1 - 8; c >= g0; c -= 8) {
      p.c = (int)c;
      p.k = a->feedback ? (int)(g1 - c - 8) : 0;
      k_block_target<<<grid, TPB, 0, q->st>>>(p, q->tb);
      GLQ_CUDA_LAUNCHED();
      if ((rc = fallback(q, q->t, q->list, q->counts, rows, q->i1))) return rc;
      if (a->size2) {
        k_block_stage2<<<grid, TPB, 0, q->st>>>(p, q->tb);
        GLQ_CUDA_LAUNCHED();
        if (a->size2 == NN_FULL && (rc = fallback(q, q->res, q->list2, q->counts + 1, rows, q->i2))) return rc;
      }
      k_block_post<<<grid, TPB, 0, q->st>>>(p, q->tb);
      GLQ_CUDA_LAUNCHED();
    }
    if (a->feedback && g0 > 0) { /* tm[:, :g0] += R[:, g0:g1] . L[g0:g1, :g0] */
      const float one = 1;
      GLQ_CUBLAS_TRY(cublasGemmEx(q->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)rows, (int)g0, (int)(g1 - g0), &one,
                                  q->r + g0 * rows, CUDA_R_32F, (int)rows, q->l + g0 * n, CUDA_R_32F, (int)n, &one, q->tm,
                                  CUDA_R_32F, (int)rows, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
    }
  }
  /* R column-major -> row-major -> host; indices; row losses added in row order as on the CPU */
  if ((rc = transpose(q, q->r, n, rows, q->tmp))) return rc;
  GLQ_CUDA_TRY(cudaMemcpyAsync(a->r, q->tmp, sizeof(float) * rows * n, cudaMemcpyDeviceToHost, q->st));
  if (a->idx1) GLQ_CUDA_TRY(cudaMemcpyAsync(a->idx1, q->idx1, sizeof(int32_t) * rows * nb, cudaMemcpyDeviceToHost, q->st));
  if (a->idx2 && a->size2)
    GLQ_CUDA_TRY(cudaMemcpyAsync(a->idx2, q->idx2, sizeof(int32_t) * rows * nb, cudaMemcpyDeviceToHost, q->st));
  double *rl = NULL;
  if (a->loss) {
    rl = (double *)malloc(sizeof(double) * rows);
    if (!rl) return glq_error(GLQ_ENOMEM, "cuda ldlq sweep: out of host memory");
    cudaError_t e = cudaMemcpyAsync(rl, q->rowloss, sizeof(double) * rows, cudaMemcpyDeviceToHost, q->st);
    if (e) {
      free(rl);
      return glq_error(GLQ_EIO, "cuda ldlq sweep: %s", cudaGetErrorString(e));
    }
  }
  cudaError_t e = cudaStreamSynchronize(q->st);
  if (e) {
    free(rl);
    return glq_error(GLQ_EIO, "cuda ldlq sweep: %s", cudaGetErrorString(e));
  }
  if (a->loss) {
    double s = 0;
    for (int64_t i = 0; i < rows; i++) s += rl[i];
    *a->loss = s;
  }
  free(rl);
  return GLQ_OK;
}

extern "C" int glq_cuda_ldlq_proxy_sum(void *vq, const float *dw, int64_t rows, int64_t n, const float *h, double *out) {
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)vq;
  if (rows < 1 || n < 1 || rows > INT32_MAX || n > INT32_MAX / 32)
    return glq_error(GLQ_EINVAL, "cuda proxy loss: shape %lld x %lld unsupported", (long long)rows, (long long)n);
  int rc = bufs_reserve(q, rows, n); /* dw goes to tmp (rows x n) */
  if (rc) return rc;
  GLQ_CUDA_TRY(cudaStreamSynchronize(q->st));
  if ((rc = factor_reserve(q, n))) return rc; /* h goes to the factor's buffer: a sweep needs set_factor again */
  if (n > q->gcap) {
    DFREE(q->g), DFREE(q->prow);
    q->gcap = 0;
    cudaError_t e = dalloc(&q->g, (size_t)(n * n));
    if (!e) e = dalloc(&q->prow, (size_t)n);
    if (e) return glq_error(GLQ_ENOMEM, "cuda proxy loss: device memory for %lld x %lld: %s", (long long)n, (long long)n, cudaGetErrorString(e));
    q->gcap = n;
  }
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->tmp, dw, sizeof(float) * rows * n, cudaMemcpyHostToDevice, q->st));
  GLQ_CUDA_TRY(cudaMemcpyAsync(q->l, h, sizeof(float) * n * n, cudaMemcpyHostToDevice, q->st));
  const float one = 1, zero = 0;
  /* column-major: tmp is n x rows, G = tmp . tmpᵀ; its lower triangle is the row-major upper one */
  GLQ_CUBLAS_TRY(cublasSsyrk(q->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)n, (int)rows, &one, q->tmp, (int)n, &zero,
                             q->g, (int)n));
  k_proxy_rows<<<(unsigned)((n + TPB / 32 - 1) / (TPB / 32)), TPB, 0, q->st>>>(q->g, q->l, n, q->prow);
  GLQ_CUDA_LAUNCHED();
  double *rs = (double *)malloc(sizeof(double) * (size_t)n);
  if (!rs) return glq_error(GLQ_ENOMEM, "cuda proxy loss: out of host memory");
  cudaError_t e = cudaMemcpyAsync(rs, q->prow, sizeof(double) * n, cudaMemcpyDeviceToHost, q->st);
  if (e == cudaSuccess) e = cudaStreamSynchronize(q->st);
  if (e != cudaSuccess) {
    free(rs);
    return glq_error(GLQ_EIO, "cuda proxy loss: %s", cudaGetErrorString(e));
  }
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += rs[i];
  free(rs);
  *out = s;
  return GLQ_OK;
}

/* ---------- the trellis codec's Viterbi (glq_ldlq_backend.trellis_viterbi) ---------- */

extern "C" int glq_cuda_ldlq_trellis_viterbi(void *ctx, const struct glq_trellis_code *c, const float *x, int64_t n, int T,
                                             const int32_t *overlap, int32_t *states) {
  glq_cuda_ldlq *q = (glq_cuda_ldlq *)ctx;
  /* a 3inst code is fixed by K and kept; any other lut (hyb: from a stored table) is uploaded per call,
   * cheap next to the searches of a layer's block */
  if (!q->tr || c->variant != GLQ_TRELLIS_3INST || q->tr_variant != (int)GLQ_TRELLIS_3INST || q->tr_K != c->K) {
    glq_cuda_trellis_free(q->tr);
    q->tr = NULL;
    int rc = glq_cuda_trellis_create(c->L, c->K, c->V, c->lut, &q->tr);
    if (rc) return rc;
    q->tr_variant = (int)c->variant, q->tr_K = c->K;
  }
  return glq_cuda_trellis_viterbi(q->tr, x, n, T, overlap, states);
}

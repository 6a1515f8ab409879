/* linear_bench.c - the cost of glq_cuda_linear_forward at small batch, beside what it is made of.
 * For random layers (glq_cuda_linear_random: E8 2 and 4 bits, HiF4, HiF4 with input RHT) on model
 * shapes and batches B (default 1 and 16; or the arguments), in microseconds per call:
 *   forward       glq_cuda_linear_forward (transforms picked by B: one CTA per row up to the
 *                 context's transform threshold)
 *   multi-pass    the same with the threshold at 0 (every transform on the multi-pass kernels)
 *   matmul        the bare kernel on bf16 x (glq_cuda_e8_matmul / glq_cuda_hif4_matmul, AUTO path)
 *   cuBLAS        cublasGemmEx with a bf16 weight of the same shape (f32 accumulate and output)
 * each timed twice: "direct" = ITERS calls on a stream between two CUDA events (launch gaps
 * included), "graph" = one CUDA graph of GRAPH_N captured calls (launch-free). Median of REPS after
 * a warm-up. "transforms" = forward - matmul, both from graphs. Usage: linear_bench [B ...] */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../cuda/glq_cuda.h"
#include "host_util.h"
#include "../../src/core/error.h"
#include "../../src/core/ops.h"
#include "../../src/core/tensor.h"
#include "../../src/quant/e8.h"
#include "../../src/quant/hif4.h"
#include "../../src/quant/rht.h"

enum { ITERS = 50, GRAPH_N = 100, REPS = 11, WARM = 10, MAX_BS = 16, ROW_BATCH = 64 /* the library's default */ };

#define GLQ(x)                                                                             \
  do {                                                                                     \
    if ((x) != 0) {                                                                        \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, glq_errmsg());             \
      exit(2);                                                                             \
    }                                                                                      \
  } while (0)

static glq_cuda_ctx *g_ctx;
static cublasHandle_t g_blas;
static void *g_blas_ws;
static const size_t BLAS_WS = (size_t)32 << 20;

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { return glq_splitmix64(&g_rng); }
static float nrand(void) {
  const double u = ((rnd() >> 11) + 0.5) * 0x1p-53, v = (rnd() >> 11) * 0x1p-53;
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}


/* ---- what is timed ---- */

typedef enum { OP_FORWARD, OP_MATMUL, OP_CUBLAS } op_kind;

typedef struct {
  op_kind kind;
  glq_cuda_linear *lin;
  const glq_cuda_e8 *e8;     /* OP_MATMUL: one of e8, hif4 */
  const glq_cuda_hif4 *hif4;
  int64_t B, m, k;           /* matmul and cuBLAS: y (B x m) = xb (B x k) . W^T */
  const float *x;            /* forward input (B x in) */
  const uint16_t *xb, *w;    /* bf16 matmul input, cuBLAS weight (m x k) */
  float *y;
} op;

static int run_op(const op *o, cudaStream_t st) {
  switch (o->kind) {
    case OP_FORWARD: return glq_cuda_linear_forward(g_ctx, o->lin, o->x, o->B, o->y, st);
    case OP_MATMUL:
      return o->e8 ? glq_cuda_e8_matmul(g_ctx, o->e8, o->xb, NULL, o->B, o->y, 0, GLQ_CUDA_AUTO, st)
                   : glq_cuda_hif4_matmul(g_ctx, o->hif4, o->xb, NULL, o->B, o->y, 0, GLQ_CUDA_AUTO, st);
    case OP_CUBLAS: {
      const float one = 1.f, zero = 0.f;
      cublasStatus_t s = cublasSetStream(g_blas, st);
      if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetWorkspace(g_blas, g_blas_ws, BLAS_WS);
      if (s == CUBLAS_STATUS_SUCCESS) /* column-major: yᵀ (m x B) = W (k x m read transposed) . xbᵀ (k x B) */
        s = cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)o->m, (int)o->B, (int)o->k, &one, o->w, CUDA_R_16BF,
                         (int)o->k, o->xb, CUDA_R_16BF, (int)o->k, &zero, o->y, CUDA_R_32F, (int)o->m,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      return s == CUBLAS_STATUS_SUCCESS ? 0 : glq_error(GLQ_EIO, "cublasGemmEx: status %d", (int)s);
    }
  }
  return glq_error(GLQ_EINVAL, "unknown op");
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median microseconds per call of o: direct calls (graph = 0) or GRAPH_N calls in one graph. */
static double time_op(const op *o, int graph, cudaStream_t st) {
  cudaEvent_t e0, e1;
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  double t[REPS];
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < WARM; i++) GLQ(run_op(o, st));
  if (graph) {
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < GRAPH_N; i++) GLQ(run_op(o, st));
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiateWithFlags(&ge, g, 0));
    CK(cudaGraphLaunch(ge, st));
  }
  CK(cudaStreamSynchronize(st));
  for (int r = 0; r < REPS; r++) {
    CK(cudaEventRecord(e0, st));
    if (graph) CK(cudaGraphLaunch(ge, st));
    else
      for (int i = 0; i < ITERS; i++) GLQ(run_op(o, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t[r] = 1e3 * ms / (graph ? GRAPH_N : ITERS);
  }
  qsort(t, REPS, sizeof t[0], cmp_double);
  if (ge) CK(cudaGraphExecDestroy(ge));
  if (g) CK(cudaGraphDestroy(g));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return t[REPS / 2];
}

/* ---- the bare layers (random contents of the shapes the linear layers hold) ---- */

static glq_cuda_codebook *g_cb;

static glq_cuda_e8 *bare_e8(int bits, int64_t out, int64_t in) {
  const size_t nq = (size_t)(out * in / 8);
  int16_t *q = xmalloc(nq * sizeof(int16_t)), *q2 = bits > 2 ? xmalloc(nq * sizeof(int16_t)) : NULL;
  for (size_t i = 0; i < nq; i++) q[i] = (int16_t)(rnd() & 0xFFFF);
  for (size_t i = 0; q2 && i < nq; i++) q2[i] = (int16_t)(rnd() & (bits == 3 ? 0xFF : 0xFFFF));
  glq_cuda_e8 *l;
  GLQ(glq_cuda_e8_create(g_cb, bits, out, in, q, q2, (float)(1.0 / sqrt((double)in)), 1.f / 3.75f, &l));
  free(q);
  free(q2);
  return l;
}

static glq_cuda_hif4 *bare_hif4(int64_t out, int64_t in) {
  const int64_t units = out * glq_hif4_nblocks(in);
  uint8_t *h = xmalloc((size_t)units * GLQ_HIF4_UNIT_BYTES);
  uint8_t *e6m2 = h, *e1_8 = h + units, *e1_16 = h + 2 * units, *s1p2 = h + 4 * units;
  for (int64_t u = 0; u < units; u++) {
    const uint64_t r = rnd();
    e6m2[u] = (uint8_t)((40 + (int)(r % 17)) << 2 | (int)(r >> 8 & 3));
    e1_8[u] = (uint8_t)(r >> 16);
    e1_16[2 * u] = (uint8_t)(r >> 24);
    e1_16[2 * u + 1] = (uint8_t)(r >> 32);
  }
  for (int64_t i = 0; i < 32 * units; i++) s1p2[i] = (uint8_t)rnd();
  glq_cuda_hif4 *l;
  GLQ(glq_cuda_hif4_create(out, in, e6m2, e1_8, e1_16, s1p2, &l));
  free(h);
  return l;
}

/* ---- one shape ---- */

typedef struct {
  const char *label, *kind;
  int bits;
} layer_kind;

static void bench_shape(const layer_kind *lk, int64_t out, int64_t in, const int64_t *Bs, int nb, cudaStream_t st) {
  const int e8 = !strcmp(lk->kind, "e8");
  /* the matmul's shape inside the layer: E8 pads both sides to multiples of 8, HiF4 its input */
  const int64_t k = e8 || !strcmp(lk->kind, "hif4-rht") ? glq_rht_pad(in) : in, m = e8 ? glq_rht_pad(out) : out;
  const int64_t kb = (k + 7) / 8 * 8, bmax = Bs[nb - 1];
  glq_cuda_linear *lin;
  GLQ(glq_cuda_linear_random(g_ctx, lk->kind, lk->bits, out, in, rnd(), &lin));
  GLQ(glq_cuda_linear_reserve(g_ctx, lin, bmax));
  GLQ(glq_cuda_ctx_reserve(g_ctx, m, kb)); /* the bare matmul's dequantize scratch, if B is past the fused kernels */
  glq_cuda_e8 *l8 = e8 ? bare_e8(lk->bits, m, kb) : NULL;
  glq_cuda_hif4 *l4 = e8 ? NULL : bare_hif4(m, kb);

  float *x, *y;
  uint16_t *xb, *w;
  const int64_t ymax = m > out ? m : out;
  CK(cudaMalloc((void **)&x, (size_t)(bmax * in) * sizeof(float)));
  CK(cudaMalloc((void **)&y, (size_t)(bmax * ymax) * sizeof(float)));
  CK(cudaMalloc((void **)&xb, (size_t)(bmax * kb) * sizeof(uint16_t)));
  CK(cudaMalloc((void **)&w, (size_t)(m * kb) * sizeof(uint16_t)));
  const size_t nh = (size_t)(m * kb) > (size_t)(bmax * in) ? (size_t)(m * kb) : (size_t)(bmax * in);
  float *hf = xmalloc(nh * sizeof(float));
  uint16_t *hb = xmalloc(nh * sizeof(uint16_t));
  for (int64_t i = 0; i < bmax * in; i++) hf[i] = nrand();
  CK(cudaMemcpy(x, hf, (size_t)(bmax * in) * sizeof(float), cudaMemcpyHostToDevice));
  for (size_t i = 0; i < nh; i++) hb[i] = glq_f32_to_bf16(nrand() / 16.f);
  CK(cudaMemcpy(xb, hb, (size_t)(bmax * kb) * sizeof(uint16_t), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(w, hb, (size_t)(m * kb) * sizeof(uint16_t), cudaMemcpyHostToDevice));
  free(hf);
  free(hb);

  for (int i = 0; i < nb; i++) {
    const int64_t B = Bs[i];
    const op fwd = {OP_FORWARD, lin, NULL, NULL, B, m, kb, x, NULL, NULL, y};
    const op mm = {OP_MATMUL, NULL, l8, l4, B, m, kb, NULL, xb, NULL, y};
    const op blas = {OP_CUBLAS, NULL, NULL, NULL, B, m, kb, NULL, xb, w, y};
    double t[8];
    t[0] = time_op(&fwd, 0, st);
    t[1] = time_op(&fwd, 1, st);
    glq_cuda_ctx_set_transform_threshold(g_ctx, 0);
    t[2] = time_op(&fwd, 0, st);
    t[3] = time_op(&fwd, 1, st);
    glq_cuda_ctx_set_transform_threshold(g_ctx, ROW_BATCH);
    t[4] = time_op(&mm, 0, st);
    t[5] = time_op(&mm, 1, st);
    t[6] = time_op(&blas, 0, st);
    t[7] = time_op(&blas, 1, st);
    printf("| %-8s | %5lld x %-5lld | %3lld |", lk->label, (long long)out, (long long)in, (long long)B);
    for (int j = 0; j < 8; j++) printf(" %7.1f |", t[j]);
    printf(" %7.1f |\n", t[1] - t[5]);
    fflush(stdout);
  }
  CK(cudaFree(x));
  CK(cudaFree(y));
  CK(cudaFree(xb));
  CK(cudaFree(w));
  glq_cuda_e8_free(l8);
  glq_cuda_hif4_free(l4);
  glq_cuda_linear_free(lin);
}

int main(int argc, char **argv) {
  int64_t Bs[MAX_BS] = {1, 16};
  int nb = 2;
  if (argc > 1) {
    nb = 0;
    for (int a = 1; a < argc && nb < MAX_BS; a++) {
      const long long b = atoll(argv[a]);
      if (b < 1 || b > 4096 || (nb && b <= Bs[nb - 1])) {
        fprintf(stderr, "usage: linear_bench [B ...] (increasing batches, 1..4096)\n");
        return 2;
      }
      Bs[nb++] = b;
    }
  }
  char dev[256];
  if (glq_cuda_describe(dev, sizeof dev)) {
    printf("linear_bench: no CUDA device (%s); skipped\n", dev);
    return 0;
  }
  GLQ(glq_cuda_ctx_create(&g_ctx));
  glq_cuda_ctx_set_transform_threshold(g_ctx, ROW_BATCH);
  if (cublasCreate(&g_blas) != CUBLAS_STATUS_SUCCESS) {
    fprintf(stderr, "cublasCreate failed\n");
    return 2;
  }
  CK(cudaMalloc(&g_blas_ws, BLAS_WS));
  GLQ(glq_cuda_codebook_create(glq_e8_codebook_get(65536)->table, &g_cb));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

  printf("glq_cuda_linear_forward on %s: microseconds per call, median of %d (direct: %d calls between events;\n"
         "graph: one graph of %d calls). forward: transforms by one CTA per row (B <= %d); multi-pass: threshold 0;\n"
         "matmul: the bare kernel on bf16 x; cuBLAS: bf16 weight, f32 out; transforms = forward - matmul (graphs).\n\n",
         dev, REPS, ITERS, GRAPH_N, (int)ROW_BATCH);
  printf("| layer | out x in | B | forward | graph | multi-pass | graph | matmul | graph | cuBLAS bf16 | graph | transforms |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  const layer_kind kinds[] = {{"e8-2", "e8", 2}, {"e8-4", "e8", 4}, {"hif4", "hif4", 0}, {"hif4-rht", "hif4-rht", 0}};
  const int64_t shapes[][2] = {{4096, 4096}, {4096, 14336}, {14336, 4096}, {576, 1536}, {1536, 576}};
  const char *only = getenv("GLQ_BENCH_LAYERS"); /* e.g. "e8-2,hif4-rht": only those rows */
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (only && !strstr(only, kinds[i].label)) continue;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) bench_shape(&kinds[i], shapes[s][0], shapes[s][1], Bs, nb, st);
  }

  CK(cudaStreamDestroy(st));
  glq_cuda_codebook_free(g_cb);
  CK(cudaFree(g_blas_ws));
  cublasDestroy(g_blas);
  glq_cuda_ctx_free(g_ctx);
  return 0;
}

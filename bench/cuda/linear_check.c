/* linear_check.c - glq_cuda_linear (cuda/linear.cu) against the CPU layers' glq_linear_forward.
 * Run by `make test-gpu` after kernel_bench; prints one line per check, then "N passed, M failed",
 * and exits non-zero on a failure.
 *
 * Every check: a CPU layer with random contents built by the public constructors, uploaded; fresh
 * N(0,1) inputs for B = 1, 3, 16, 33, 77 (up to 16: the fused kernels, then dequantize + cuBLAS); the device
 * output poisoned with NaN before the call (so an unwritten element fails); a second call must give
 * identical bytes, and so must the calls on the other scratch lanes (B <= 16, glq_cuda_linear_forward_lane). The GPU result y is compared with the CPU's r = glq_linear_forward(x):
 *
 * 1. A bound from the precision. Let xt be the matmul input (x, or Hn(SV ⊙ pad(x)) for E8 and rotated
 *    HiF4), W the weight in that domain (W̃ for E8) and A = |xt|·|W|ᵀ. Rounding xt to bf16 (relative
 *    error <= u = 2^-9, round to nearest) changes y by at most u·A elementwise; the E8 dequantize path
 *    (B > 16) also rounds the 3/4-bit weights C1 + C2/rs to bf16, another u·A; a dense f32 weight
 *    multiplied as bf16 likewise. So |y - r| <= (k·u + s)·(A + |bias|) with k the number of bf16
 *    roundings, s = 1e-4 for the f32 arithmetic of both sides (dot products, transforms: about
 *    sqrt(n)·2^-24 < 1e-5 here). E8 layers end with an orthogonal output transform, so there the bound
 *    holds in the 2-norm of each row, ||y_b - r_b|| <= (k·u + s)·||A_b|| (cropping only shrinks it).
 *    Dense f32 on both sides: |y - r| <= 1e-5·(A + |bias|) elementwise (about 170 f32 roundings).
 *    "use" below is the largest ratio error / bound (must be <= 1).
 * 2. A statistical bound: ||y - r||_F / ||r||_F <= 4e-3 for the bf16 paths (independent roundings of
 *    random data give about 2^-9/sqrt(3) = 1.1e-3 per rounding source) and 1e-5 for f32.
 * B <= 33 runs the Hadamard transforms of E8 and rotated HiF4 layers one CTA per row (below the
 * context's transform threshold of 64), B = 77 the multi-pass kernels; both are held to the same bounds.
 * On sm_90, B <= 16 with a one-block plan (4096, 14336, 16384) runs a row over a cluster of 8 CTAs; the
 * same batch with the clusters off (one CTA a row) must give identical bytes. At those batches the RMSNorm,
 * SwiGLU and residual add folded into the layer (glq_cuda_fuse) must give the bytes of the standalone kernels, and at
 * B <= 2 an E8P layer with its input transform in the matmul's prologue (glq_cuda_ctx_set_prologue) the same bytes, and
 * the fused kernels reading x step by step instead of staged in shared memory (glq_cuda_ctx_set_stage_x) too.
 * Then CUDA-graph captures of reserved layers must replay to the bytes of a direct call, and the
 * random layers of glq_cuda_linear_random must run with finite outputs. */
#include <cblas.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../cuda/glq_cuda.h"
#define GLQ_HOST_CHECKS
#include "host_util.h"
#include "../../src/core/error.h"
#include "../../src/core/tensor.h"
#include "../../src/layers/dense_linear.h"
#include "../../src/layers/linear.h"
#include "../../src/quant/e8.h"
#include "../../src/quant/e8p.h"
#include "../../src/layers/e8_linear.h"
#include "../../src/layers/trellis_linear.h"
#include "../../src/quant/hadamard.h"
#include "../../src/quant/hif4.h"
#include "../../src/layers/hif4_linear.h"
#include "../../src/quant/rht.h"

#define U_BF16 (1.0 / 512.0)
#define SLACK 1e-4

static glq_cuda_ctx *g_ctx;




/* ---- one layer under test ---- */
typedef struct {
  char name[200];
  glq_linear *cpu;
  int dense_bf16;
  float *aw;                  /* |W| in the matmul domain: m_t x k, row-major */
  int64_t m_t, k;
  float *sv;                  /* input signs (k) of a rotation xt = H(sv ⊙ pad(x)), or NULL: xt = pad(x) */
  glq_hadamard_kind kind;     /* the rotation's plan kind */
  int rows_norm;              /* 1: 2-norm bound per row (an output transform follows the matmul) */
  int roundings, roundings_dq;/* bf16 roundings for B <= 16 and B > 16 (0: f32 everywhere) */
  int low_bit;                /* E8P / trellis: batches 1, 3, 16, 40 (else 1, 3, 16, 33, 77) */
  const char *gpu_kind;       /* the kind the GPU layer must report, when not the CPU layer's */
} lcase;

static void case_free(lcase *c) {
  glq_linear_free(c->cpu);
  free(c->aw);
  free(c->sv);
  memset(c, 0, sizeof *c);
}

static void absf(float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++) a[i] = fabsf(a[i]);
}

/* n fresh N(0,1) values on the host (*x) and the same on the device (*dx) */
static void random_input(int64_t n, float **x, float **dx) {
  *x = xmalloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) (*x)[i] = nrand();
  CK(cudaMalloc((void **)dx, (size_t)n * sizeof(float)));
  CK(cudaMemcpy(*dx, *x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
}

/* Forward B rows on scratch lane `lane` twice, the output NaN-poisoned before each call: y the first
 * result, y2 the second (identical bytes expected). */
static int forward_twice(glq_cuda_ctx *ctx, glq_cuda_linear *g, const float *dx, int64_t B, int64_t out, float *dy,
                         int lane, float *y, float *y2) {
  int rc = 0;
  for (int rep = 0; rep < 2 && !rc; rep++) {
    CK(cudaMemset(dy, 0xFF, (size_t)(B * out) * sizeof(float))); /* NaN */
    rc = glq_cuda_linear_forward_lane(ctx, g, dx, B, dy, NULL, lane);
    if (!rc) CK(cudaDeviceSynchronize());
    if (!rc) CK(cudaMemcpy(rep ? y2 : y, dy, (size_t)(B * out) * sizeof(float), cudaMemcpyDeviceToHost));
  }
  return rc;
}

/* Whether forward_twice on `lane`, as the context is set now, gives y's bytes both times (*rc: its status). */
static int same_as(glq_cuda_linear *g, const float *dx, int64_t B, int64_t out, float *dy, int lane, const float *y, int *rc) {
  const size_t bytes = (size_t)(B * out) * sizeof(float);
  float *z = xmalloc(bytes), *z2 = xmalloc(bytes);
  *rc = forward_twice(g_ctx, g, dx, B, out, dy, lane, z, z2);
  const int same = !*rc && !memcmp(z, y, bytes) && !memcmp(z2, y, bytes);
  free(z), free(z2);
  return same;
}

/* same_as on lane 0 with a context switch (glq_cuda_ctx_set_prologue, _set_stage_x) on, then off again */
static int same_with(void (*set)(glq_cuda_ctx *, int), glq_cuda_linear *g, const float *dx, int64_t B, int64_t out, float *dy,
                     const float *y, int *rc) {
  set(g_ctx, 1);
  const int same = same_as(g, dx, B, out, dy, 0, y, rc);
  set(g_ctx, 0);
  return same;
}

/* dst (n floats, device) = the n floats at src (device) */
static void dcopy(float *dst, const float *src, int64_t n) {
  CK(cudaMemcpy(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice));
}

/* n floats of device memory to a fresh host buffer */
static float *to_host(const float *d, int64_t n) {
  float *h = xmalloc((size_t)n * sizeof(float));
  CK(cudaMemcpy(h, d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

/* Decode-sized batches, where the layer can fold them (glq_cuda_linear_fusable): the RMSNorm, the SwiGLU and the
 * residual add folded into the forward (glq_cuda_fuse) give the bytes of the standalone kernels around the plain
 * forward, with the cluster transforms on and off. 1 = all the same (or nothing to fold), 0 = a difference,
 * -1 = an error (its message set). */
static int fused_same(glq_cuda_linear *g, const float *dx, int64_t B, int64_t in, int64_t out) {
  int same = 1, rc = 0;
  float *w, *dw, *gh, *dg, *hh, *dh, *dt, *dy, *dref;
  random_input(in, &w, &dw);
  random_input(B * in, &gh, &dg);
  random_input(B * out, &hh, &dh);
  CK(cudaMalloc((void **)&dt, (size_t)(B * in) * sizeof(float)));
  CK(cudaMalloc((void **)&dy, (size_t)(B * out) * sizeof(float)));
  CK(cudaMalloc((void **)&dref, (size_t)(B * out) * sizeof(float)));
  for (int mode = 0; mode < 3 && !rc; mode++) { /* clusters on; off; on with the E8P prologue (B <= 2) */
    const int clusters = mode == 1 ? 0 : 16;
    if (mode == 2 && B > 2) break;
    glq_cuda_ctx_set_cluster_threshold(g_ctx, clusters);
    glq_cuda_ctx_set_prologue(g_ctx, mode == 2);
    const int fl = glq_cuda_linear_fusable(g_ctx, g, B);
    for (int what = 0; what < 3 && !rc; what++) { /* 0: RMSNorm, 1: SwiGLU, 2: residual add */
      if (!(fl & (what < 2 ? GLQ_CUDA_FUSE_INPUT : GLQ_CUDA_FUSE_ACCUMULATE))) continue;
      const glq_cuda_fuse f = {what == 0 ? dw : NULL, 1e-5f, what == 1 ? dg : NULL, what == 2};
      /* the standalone way into dref */
      if (what == 0) rc = glq_cuda_rmsnorm_rows(dx, dw, dt, B, in, 1e-5f, NULL);
      if (what == 1) {
        dcopy(dt, dg, B * in);
        rc = glq_cuda_swiglu(dt, dx, B * in, NULL);
      }
      if (!rc) rc = glq_cuda_linear_forward(g_ctx, g, what < 2 ? dt : dx, B, what < 2 ? dref : dy, NULL);
      if (!rc && what == 2) {
        dcopy(dref, dh, B * out);
        rc = glq_cuda_add(dref, dy, B * out, NULL);
      }
      /* folded into dy */
      if (what == 2) dcopy(dy, dh, B * out);
      else CK(cudaMemset(dy, 0xFF, (size_t)(B * out) * sizeof(float)));
      if (!rc) rc = glq_cuda_linear_forward_fused(g_ctx, g, dx, B, dy, NULL, 0, &f);
      if (!rc) {
        CK(cudaDeviceSynchronize());
        float *a = to_host(dref, B * out), *b = to_host(dy, B * out);
        if (memcmp(a, b, (size_t)(B * out) * sizeof(float))) {
          same = 0;
          fprintf(stderr, "fused %s differs (clusters %s%s)\n", what == 0 ? "RMSNorm" : what == 1 ? "SwiGLU" : "residual add",
                  clusters ? "on" : "off", mode == 2 ? ", prologue" : "");
        }
        free(a), free(b);
      }
    }
  }
  glq_cuda_ctx_set_cluster_threshold(g_ctx, 16);
  glq_cuda_ctx_set_prologue(g_ctx, 0);
  float *dev[] = {dw, dg, dh, dt, dy, dref};
  for (int i = 0; i < 6; i++) CK(cudaFree(dev[i]));
  free(w), free(gh), free(hh);
  return rc ? -1 : same;
}

/* Run the layer on B fresh rows and check it as the header says. */
static void check_batch(const lcase *c, glq_cuda_linear *g, int64_t B) {
  const int64_t in = c->cpu->in, out = c->cpu->out;
  float *x, *dx, *dy, *r = xmalloc((size_t)(B * out) * sizeof(float));
  float *y = xmalloc((size_t)(B * out) * sizeof(float)), *y2 = xmalloc((size_t)(B * out) * sizeof(float));
  random_input(B * in, &x, &dx);
  int rc = glq_linear_forward(c->cpu, x, B, r);
  CK(cudaMalloc((void **)&dy, (size_t)(B * out) * sizeof(float)));
  if (!rc) rc = forward_twice(g_ctx, g, dx, B, out, dy, 0, y, y2);
  /* decode-sized batches may run on the other scratch lanes (parallel branches): the same bytes there */
  int lanes_same = 1;
  for (int lane = 1; !rc && lane < GLQ_CUDA_LANES && B <= 16; lane++) lanes_same &= same_as(g, dx, B, out, dy, lane, y, &rc);
  /* decode-sized batches: the transforms over CTA clusters (on in this check's context) and one CTA a row
   * give the same bytes */
  int cluster_same = 1;
  if (!rc && B <= 16) {
    glq_cuda_ctx_set_cluster_threshold(g_ctx, 0);
    cluster_same = same_as(g, dx, B, out, dy, 0, y, &rc);
    glq_cuda_ctx_set_cluster_threshold(g_ctx, 16);
  }
  /* B <= 2: E8P layers with the input transform in the matmul's prologue, and the fused kernels with x staged in
   * shared memory, give the same bytes */
  int prologue_same = 1, staged_same = 1;
  if (!rc && B <= 2) prologue_same = same_with(glq_cuda_ctx_set_prologue, g, dx, B, out, dy, y, &rc);
  if (!rc && B <= 2) staged_same = same_with(glq_cuda_ctx_set_stage_x, g, dx, B, out, dy, y, &rc);
  int fused = 1;
  if (!rc && B <= 16) {
    fused = fused_same(g, dx, B, in, out);
    if (fused < 0) rc = -1;
  }
  CK(cudaFree(dx));
  CK(cudaFree(dy));
  if (rc) {
    report(0, "%-58s B=%-3lld error: %s", c->name, (long long)B, glq_errmsg());
    free(x), free(r), free(y), free(y2);
    return;
  }
  /* A = |xt| |W|ᵀ (B x m_t) */
  float *xt = xmalloc((size_t)(B * c->k) * sizeof(float)), *A = xmalloc((size_t)(B * c->m_t) * sizeof(float));
  for (int64_t b = 0; b < B; b++)
    for (int64_t j = 0; j < c->k; j++) xt[b * c->k + j] = j < in ? x[b * in + j] * (c->sv ? c->sv[j] : 1.f) : 0.f;
  if (c->sv) {
    const glq_hadamard *h;
    if (glq_hadamard_plan(c->k, c->kind, &h)) {
      fprintf(stderr, "plan %lld: %s\n", (long long)c->k, glq_errmsg());
      exit(2);
    }
    glq_hadamard_apply(h, xt, B, 0);
  }
  absf(xt, B * c->k);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)c->m_t, (int)c->k, 1.f, xt, (int)c->k, c->aw,
              (int)c->k, 0.f, A, (int)c->m_t);
  const int nr = B > 16 ? c->roundings_dq : c->roundings;
  const double tol = nr ? nr * U_BF16 + SLACK : 1e-5, stat = nr ? 4e-3 : 1e-5;
  const float *bias = c->cpu->bias;
  double num = 0, den = 0, use = 0;
  int64_t nonfinite = 0;
  for (int64_t b = 0; b < B; b++) {
    double rowe = 0, rowa = 0;
    for (int64_t j = 0; j < out; j++) {
      const double d = (double)y[b * out + j] - r[b * out + j];
      if (!isfinite(y[b * out + j])) nonfinite++;
      num += d * d;
      den += (double)r[b * out + j] * r[b * out + j];
      rowe += d * d;
      if (!c->rows_norm) {
        const double bnd = tol * ((double)A[b * c->m_t + j] + (bias ? fabs((double)bias[j]) : 0.0));
        const double u = bnd > 0 ? fabs(d) / bnd : (d != 0 ? INFINITY : 0);
        if (!(u <= use)) use = u; /* NaN propagates */
      }
    }
    if (c->rows_norm) {
      for (int64_t j = 0; j < c->m_t; j++) rowa += (double)A[b * c->m_t + j] * A[b * c->m_t + j];
      const double u = sqrt(rowe) / (tol * sqrt(rowa));
      if (!(u <= use)) use = u;
    }
  }
  const double rel = sqrt(num / (den > 0 ? den : 1));
  const int same = memcmp(y, y2, (size_t)(B * out) * sizeof(float)) == 0;
  const int ok = nonfinite == 0 && use <= 1 && rel <= stat && same && lanes_same && cluster_same && prologue_same && staged_same && fused == 1;
  report(ok, "%-58s B=%-3lld rel %.2e (<= %.0e) bound use %.3f (tol %.2e%s)%s%s%s%s%s%s%s", c->name, (long long)B, rel, stat, use,
         tol, c->rows_norm ? ", row 2-norm" : "", same ? "" : " RERUN DIFFERS", lanes_same ? "" : " OTHER LANE DIFFERS",
         cluster_same ? "" : " CLUSTER TRANSFORMS DIFFER", prologue_same ? "" : " PROLOGUE TRANSFORM DIFFERS", staged_same ? "" : " STAGED INPUTS DIFFER",
         fused == 1 ? "" : " FOLDED OPS DIFFER", nonfinite ? " NON-FINITE OUTPUT" : "");
  free(xt), free(A), free(x), free(r), free(y), free(y2);
}

static void run_case(lcase *c) {
  glq_cuda_linear *g = NULL;
  if (!c->cpu) {
    report(0, "%-58s CPU layer: %s", c->name, glq_errmsg());
    case_free(c);
    return;
  }
  if (glq_cuda_linear_upload(g_ctx, c->cpu, c->dense_bf16, &g)) {
    report(0, "%-58s upload: %s", c->name, glq_errmsg());
    case_free(c);
    return;
  }
  const char *want = c->gpu_kind ? c->gpu_kind : c->dense_bf16 && !strcmp(c->cpu->vt->kind, "dense") ? "dense-bf16" : c->cpu->vt->kind;
  const int meta = glq_cuda_linear_in(g) == c->cpu->in && glq_cuda_linear_out(g) == c->cpu->out &&
                   !strcmp(glq_cuda_linear_kind(g), want) && glq_cuda_linear_bytes(g) > 0;
  report(meta, "%-58s kind %s, %lld x %lld, %.2f MB on the device", c->name, glq_cuda_linear_kind(g),
         (long long)glq_cuda_linear_out(g), (long long)glq_cuda_linear_in(g), glq_cuda_linear_bytes(g) / 1e6);
  const int64_t Bs[] = {1, 3, 16, 33, 77}, Bl[] = {1, 3, 16, 40};
  for (int i = 0; i < (c->low_bit ? 4 : 5); i++) check_batch(c, g, c->low_bit ? Bl[i] : Bs[i]);
  glq_cuda_linear_free(g);
  case_free(c);
}

/* ---- layer builders ---- */

static glq_tensor bias_tensor(int64_t out) {
  glq_tensor b;
  if (glq_tensor_new(GLQ_F32, 1, &out, &b)) exit(2);
  float *p = glq_tensor_data(&b);
  for (int64_t i = 0; i < out; i++) p[i] = 0.5f * nrand();
  return b;
}

/* Dense layer of weights N(0, 1/in) stored as cpu_dt; the GPU copy as f32 or bf16. */
static void dense_case(int64_t out, int64_t in, glq_dtype cpu_dt, int dense_bf16, int bias) {
  lcase c = {0};
  const int64_t shape[2] = {out, in};
  glq_tensor w, b = {0};
  if (glq_tensor_new(cpu_dt, 2, shape, &w)) exit(2);
  float *wf = xmalloc((size_t)(out * in) * sizeof(float));
  for (int64_t i = 0; i < out * in; i++) wf[i] = nrand() / sqrtf((float)in);
  glq_convert(wf, GLQ_F32, glq_tensor_data(&w), cpu_dt, out * in);
  glq_convert(glq_tensor_data(&w), cpu_dt, wf, GLQ_F32, out * in); /* the CPU's exact weights */
  if (bias) b = bias_tensor(out);
  if (glq_dense_linear_new(&w, bias ? &b : NULL, &c.cpu)) c.cpu = NULL;
  glq_tensor_release(&w);
  if (bias) glq_tensor_release(&b);
  absf(wf, out * in);
  c.aw = wf;
  c.m_t = out;
  c.k = in;
  c.dense_bf16 = dense_bf16;
  /* bf16 roundings: x, and the weight when an f32 weight goes to bf16 */
  c.roundings = c.roundings_dq = dense_bf16 ? (cpu_dt == GLQ_F32 ? 2 : 1) : 0;
  snprintf(c.name, sizeof c.name, "dense %s->%s %lldx%lld%s", glq_dtype_name(cpu_dt), dense_bf16 ? "bf16" : "f32",
           (long long)out, (long long)in, bias ? " +bias" : "");
  run_case(&c);
}

/* Random indices (stage 2 below 256 at 3 bits), signs and bias for the descriptor d (shapes and bits set); the
 * arrays are the caller's to free. */
static void random_e8_arrays(glq_e8_linear_desc *d, int bias, int16_t **q, int16_t **q2, float **su, float **sv, float **bv) {
  const int64_t nq = d->out_pad * (d->in_pad / 8);
  *q = xmalloc((size_t)nq * sizeof(int16_t)), *q2 = d->bits > 2 ? xmalloc((size_t)nq * sizeof(int16_t)) : NULL;
  *su = xmalloc((size_t)d->out_pad * sizeof(float)), *sv = xmalloc((size_t)d->in_pad * sizeof(float));
  *bv = bias ? xmalloc((size_t)d->out * sizeof(float)) : NULL;
  for (int64_t i = 0; i < nq; i++) (*q)[i] = (int16_t)(rnd() & 0xFFFF);
  for (int64_t i = 0; *q2 && i < nq; i++) (*q2)[i] = (int16_t)(rnd() & (d->bits == 3 ? 0xFF : 0xFFFF));
  for (int64_t i = 0; i < d->out_pad; i++) (*su)[i] = sign();
  for (int64_t i = 0; i < d->in_pad; i++) (*sv)[i] = sign();
  for (int64_t i = 0; bias && i < d->out; i++) (*bv)[i] = 0.5f * nrand();
  d->qidxs = *q, d->qidxs2 = *q2, d->su = *su, d->sv = *sv, d->bias = *bv;
}

/* E8 layer of out x in stored at out_pad x in_pad, random indices and signs, plan kind `kind`. */
static void e8_case(int bits, int64_t out, int64_t in, int64_t out_pad, int64_t in_pad, glq_hadamard_kind kind,
                    int bias, const char *note) {
  lcase c = {0};
  glq_e8_linear_desc d;
  memset(&d, 0, sizeof d);
  d.out = out, d.in = in, d.out_pad = out_pad, d.in_pad = in_pad, d.bits = bits, d.transform = kind;
  d.wscale = (float)((0.75 + 0.5 * urand()) / sqrt((double)in));
  d.inv_rs = bits == 3 ? 0.5f : 1.f / 3.75f;
  const int64_t nb = in_pad / 8;
  int16_t *q, *q2;
  float *su, *sv, *bv;
  random_e8_arrays(&d, bias, &q, &q2, &su, &sv, &bv);
  if (glq_e8_linear_new(&d, &c.cpu)) c.cpu = NULL;
  /* |W̃| (out_pad x in_pad) */
  const glq_e8_codebook *cb = glq_e8_codebook_get(65536);
  float *aw = xmalloc((size_t)(out_pad * in_pad) * sizeof(float));
  int32_t *i1 = xmalloc((size_t)nb * sizeof(int32_t)), *i2 = xmalloc((size_t)nb * sizeof(int32_t));
  for (int64_t r = 0; r < out_pad; r++) {
    for (int64_t j = 0; j < nb; j++) i1[j] = (uint16_t)q[r * nb + j], i2[j] = q2 ? (uint16_t)q2[r * nb + j] : 0;
    float *row = aw + r * in_pad;
    if (q2) glq_e8_decode2(cb, cb, i1, i2, d.inv_rs, nb, row);
    else glq_e8_decode(cb, i1, nb, row);
    for (int64_t j = 0; j < in_pad; j++) row[j] = fabsf(row[j] * d.wscale);
  }
  free(i1), free(i2), free(q), free(q2), free(su), free(bv);
  c.aw = aw;
  c.m_t = out_pad;
  c.k = in_pad;
  c.sv = sv;
  c.kind = kind;
  c.rows_norm = 1;
  c.roundings = 1;
  c.roundings_dq = bits > 2 ? 2 : 1; /* the dequantize path rounds C1 + C2/rs to bf16 */
  const glq_hadamard *hn, *hm;
  int havep = !glq_hadamard_plan(in_pad, kind, &hn) && !glq_hadamard_plan(out_pad, kind, &hm);
  snprintf(c.name, sizeof c.name, "e8-%d %lldx%lld%s%s [in %s | out %s]", bits, (long long)out, (long long)in,
           bias ? " +bias" : "", note, havep ? glq_hadamard_describe(hn) : "?", havep ? glq_hadamard_describe(hm) : "?");
  run_case(&c);
}

/* E8P layer (QuIP#'s codebook; stage 2 E81B at 3 bits, E8P at 4) of out x in stored at out_pad x in_pad. Fused:
 * the stages are exact bf16 values with their own accumulators (x the one rounding); dequantize + cuBLAS rounds
 * 4C1 + inv_rs·4C2 to bf16 at 3/4 bits. */
static void e8p_case(int bits, int64_t out, int64_t in, int64_t out_pad, int64_t in_pad, glq_hadamard_kind kind, int bias,
                     const char *note) {
  lcase c = {0};
  glq_e8_linear_desc d;
  memset(&d, 0, sizeof d);
  d.out = out, d.in = in, d.out_pad = out_pad, d.in_pad = in_pad, d.bits = bits, d.transform = kind;
  d.codebook = GLQ_CODEBOOK_E8P;
  d.wscale = (float)((0.4 + 0.3 * urand()) / sqrt((double)in));
  d.inv_rs = bits == 3 ? 0.5f : 1.f / 3.75f;
  const int64_t nb = in_pad / 8;
  int16_t *q, *q2;
  float *su, *sv, *bv;
  random_e8_arrays(&d, bias, &q, &q2, &su, &sv, &bv);
  if (glq_e8_linear_new(&d, &c.cpu)) c.cpu = NULL;
  /* |W̃| = |wscale (C1 + inv_rs C2)| (out_pad x in_pad) */
  float *aw = xmalloc((size_t)(out_pad * in_pad) * sizeof(float)), *c2 = xmalloc((size_t)in_pad * sizeof(float));
  int32_t *i1 = xmalloc((size_t)nb * sizeof(int32_t)), *i2 = xmalloc((size_t)nb * sizeof(int32_t));
  for (int64_t r = 0; r < out_pad; r++) {
    for (int64_t j = 0; j < nb; j++) i1[j] = (uint16_t)q[r * nb + j], i2[j] = q2 ? (uint16_t)q2[r * nb + j] : 0;
    float *row = aw + r * in_pad;
    glq_e8p_decode(i1, nb, row);
    if (bits == 3) glq_e81b_decode(i2, nb, c2);
    if (bits == 4) glq_e8p_decode(i2, nb, c2);
    for (int64_t j = 0; j < in_pad; j++) row[j] = fabsf(d.wscale * (row[j] + (q2 ? d.inv_rs * c2[j] : 0.f)));
  }
  free(i1), free(i2), free(c2), free(q), free(q2), free(su), free(bv);
  c.aw = aw, c.m_t = out_pad, c.k = in_pad, c.sv = sv, c.kind = kind, c.rows_norm = 1, c.low_bit = 1;
  c.roundings = 1;
  c.roundings_dq = bits > 2 ? 2 : 1;
  snprintf(c.name, sizeof c.name, "e8p-%d %lldx%lld%s%s", bits, (long long)out, (long long)in, bias ? " +bias" : "", note);
  run_case(&c);
}

/* 3inst trellis layer of out x in (padded to multiples of 32) at K bits: random bitstreams (any stream is a
 * path), random signs. Fused: W̃ enters the bf16 MMA exactly (hi + lo), x is the one rounding; dequantize +
 * cuBLAS rounds W̃ to bf16. hyb: a hyb code has no GPU kernel and runs dequantized in f32 (exact bound). */
static void trellis_case(int K, int64_t out, int64_t in, glq_hadamard_kind kind, int bias, int hyb, const char *note) {
  lcase c = {0};
  glq_trellis_artifacts a;
  memset(&a, 0, sizeof a);
  a.variant = hyb ? GLQ_TRELLIS_HYB : GLQ_TRELLIS_3INST, a.K = K, a.m = out, a.n = in, a.transform = kind;
  const int64_t mp = glq_trellis_pad(out), np = glq_trellis_pad(in), one = 1, tshape[2] = {512, 2};
  const int64_t pshape[2] = {(mp / 16) * (np / 16), 16 * K};
  if (glq_tensor_new(GLQ_I16, 2, pshape, &a.packed) || glq_tensor_new(GLQ_F16, 1, &mp, &a.su) ||
      glq_tensor_new(GLQ_F16, 1, &np, &a.sv) || glq_tensor_new(GLQ_F32, 0, &one, &a.wscale) ||
      (hyb && glq_tensor_new(GLQ_F16, 2, tshape, &a.tlut)))
    exit(2);
  int16_t *p = glq_tensor_data(&a.packed);
  for (int64_t i = 0; i < pshape[0] * pshape[1]; i++) p[i] = (int16_t)(rnd() & 0xFFFF);
  uint16_t *su = glq_tensor_data(&a.su), *sv = glq_tensor_data(&a.sv);
  for (int64_t i = 0; i < mp; i++) su[i] = glq_f32_to_f16(sign());
  for (int64_t i = 0; i < np; i++) sv[i] = glq_f32_to_f16(sign());
  for (int64_t i = 0; hyb && i < 1024; i++) ((uint16_t *)glq_tensor_data(&a.tlut))[i] = glq_f32_to_f16(nrand());
  *(float *)glq_tensor_data(&a.wscale) = (float)((0.75 + 0.5 * urand()) / sqrt((double)in));
  glq_tensor bt = {0};
  if (bias) bt = bias_tensor(out);
  if (glq_trellis_linear_new(&a, bias ? glq_tensor_data(&bt) : NULL, &c.cpu)) c.cpu = NULL;
  c.aw = xmalloc((size_t)(mp * np) * sizeof(float));
  if (glq_trellis_decode_rotated(&a, c.aw)) exit(2);
  absf(c.aw, mp * np);
  c.sv = xmalloc((size_t)np * sizeof(float));
  for (int64_t i = 0; i < np; i++) c.sv[i] = glq_f16_to_f32(sv[i]);
  glq_trellis_artifacts_free(&a);
  if (bias) glq_tensor_release(&bt);
  c.m_t = mp, c.k = np, c.kind = kind, c.rows_norm = 1, c.low_bit = 1;
  c.gpu_kind = hyb ? "dense" : NULL;
  c.roundings = hyb ? 0 : 1;
  c.roundings_dq = hyb ? 0 : 2;
  snprintf(c.name, sizeof c.name, "trellis-%s-%d %lldx%lld%s%s", hyb ? "hyb" : "3inst", K, (long long)out, (long long)in,
           bias ? " +bias" : "", note);
  run_case(&c);
}

/* Random packed HiF4 fields of out x in (scales as in kernel_bench), optionally rotated input. */
static void hif4_case(int64_t out, int64_t in, int rht, int bias) {
  lcase c = {0};
  const int64_t shape[2] = {out, in}, units = out * glq_hif4_nblocks(in), np = glq_rht_pad(in);
  glq_hif4_fields f;
  if (glq_hif4_fields_new(2, shape, 1, &f)) exit(2);
  glq_hif4_buf hb = glq_hif4_fields_buf(&f);
  for (int64_t u = 0; u < units; u++) {
    hb.e6m2[u] = (uint8_t)(((40 + rnd() % 17) << 2) | (rnd() & 3));
    hb.e1_8[u] = (uint8_t)rnd();
    hb.e1_16[2 * u] = (uint8_t)rnd();
    hb.e1_16[2 * u + 1] = (uint8_t)rnd();
  }
  for (int64_t i = 0; i < 32 * units; i++) hb.s1p2[i] = (uint8_t)rnd();
  glq_tensor s = {0}, b = {0};
  if (rht) {
    if (glq_tensor_new(GLQ_F32, 1, &np, &s)) exit(2);
    float *p = glq_tensor_data(&s);
    for (int64_t i = 0; i < np; i++) p[i] = sign();
    c.sv = xmalloc((size_t)np * sizeof(float));
    memcpy(c.sv, p, (size_t)np * sizeof(float));
  }
  if (bias) b = bias_tensor(out);
  if (glq_hif4_linear_new(&f, bias ? &b : NULL, rht ? &s : NULL, GLQ_HIF4_KERNEL_AUTO, &c.cpu)) c.cpu = NULL;
  c.k = rht ? np : in;
  c.m_t = out;
  c.aw = xmalloc((size_t)(out * c.k) * sizeof(float));
  glq_hif4_decode(&hb, out, c.k, c.aw, c.k);
  absf(c.aw, out * c.k);
  glq_hif4_fields_release(&f);
  if (rht) glq_tensor_release(&s);
  if (bias) glq_tensor_release(&b);
  c.kind = GLQ_HADAMARD_DEFAULT;
  c.roundings = c.roundings_dq = 1;
  snprintf(c.name, sizeof c.name, "hif4%s %lldx%lld%s", rht ? "+rht" : "", (long long)out, (long long)in,
           bias ? " +bias" : "");
  run_case(&c);
}

/* ---- graph capture of a reserved layer ---- */

/* Direct call vs a captured graph of the same call on a fresh context reserved for B rows: the
 * capture fails if forward allocates, and the replay must give the direct call's bytes. */
static void graph_case(const char *kind, int bits, int64_t out, int64_t in, int64_t B) {
  glq_cuda_ctx *ctx;
  glq_cuda_linear *g;
  if (glq_cuda_ctx_create(&ctx)) {
    report(0, "graph %s-%d %lldx%lld: %s", kind, bits, (long long)out, (long long)in, glq_errmsg());
    return;
  }
  if (glq_cuda_linear_random(ctx, kind, bits, out, in, rnd(), &g)) {
    report(0, "graph %s-%d %lldx%lld: %s", kind, bits, (long long)out, (long long)in, glq_errmsg());
    glq_cuda_ctx_free(ctx);
    return;
  }
  float *x, *dx, *dy, *y1 = xmalloc((size_t)(B * out) * sizeof(float)), *y2 = xmalloc((size_t)(B * out) * sizeof(float));
  random_input(B * in, &x, &dx);
  CK(cudaMalloc((void **)&dy, (size_t)(B * out) * sizeof(float)));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  int rc = glq_cuda_linear_reserve(ctx, g, B);
  if (!rc) rc = glq_cuda_linear_forward(ctx, g, dx, B, dy, st);
  if (!rc) CK(cudaStreamSynchronize(st));
  if (!rc) CK(cudaMemcpy(y1, dy, (size_t)(B * out) * sizeof(float), cudaMemcpyDeviceToHost));
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  if (!rc) {
    CK(cudaMemset(dy, 0xFF, (size_t)(B * out) * sizeof(float)));
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    rc = glq_cuda_linear_forward(ctx, g, dx, B, dy, st);
    cudaError_t e = cudaStreamEndCapture(st, &graph);
    if (!rc && e != cudaSuccess) rc = glq_error(GLQ_EIO, "capture: %s", cudaGetErrorString(e));
  }
  if (!rc) {
    CK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
    CK(cudaGraphLaunch(exec, st));
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(y2, dy, (size_t)(B * out) * sizeof(float), cudaMemcpyDeviceToHost));
  }
  const int same = !rc && memcmp(y1, y2, (size_t)(B * out) * sizeof(float)) == 0;
  report(same, "graph %s%s%.0d %lldx%lld B=%lld: replay %s%s", kind, bits ? "-" : "", bits, (long long)out,
         (long long)in, (long long)B, rc ? "not run: " : same ? "matches the direct call" : "DIFFERS",
         rc ? glq_errmsg() : "");
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  CK(cudaStreamDestroy(st));
  CK(cudaFree(dx));
  CK(cudaFree(dy));
  free(x), free(y1), free(y2);
  glq_cuda_linear_free(g);
  glq_cuda_ctx_free(ctx);
}

/* ---- glq_cuda_linear_random ---- */

static void random_case(const char *kind, int bits, int64_t out, int64_t in) {
  glq_cuda_linear *g;
  if (glq_cuda_linear_random(g_ctx, kind, bits, out, in, rnd(), &g)) {
    report(0, "random %s-%d %lldx%lld: %s", kind, bits, (long long)out, (long long)in, glq_errmsg());
    return;
  }
  const int64_t Bs[] = {1, 77};
  for (int i = 0; i < 2; i++) {
    const int64_t B = Bs[i];
    float *x, *dx, *dy, *y = xmalloc((size_t)(B * out) * sizeof(float)), *y2 = xmalloc((size_t)(B * out) * sizeof(float));
    random_input(B * in, &x, &dx);
    CK(cudaMalloc((void **)&dy, (size_t)(B * out) * sizeof(float)));
    int rc = forward_twice(g_ctx, g, dx, B, out, dy, 0, y, y2);
    int64_t nonfinite = 0;
    double ss = 0;
    for (int64_t j = 0; !rc && j < B * out; j++) {
      if (!isfinite(y[j])) nonfinite++;
      else ss += (double)y[j] * y[j];
    }
    const double rms = rc ? 0 : sqrt(ss / (double)(B * out)); /* x is N(0,1): rms(y) ~ the layer's gain */
    const int same = !rc && memcmp(y, y2, (size_t)(B * out) * sizeof(float)) == 0;
    const char *want = !strcmp(kind, "dense") ? "dense-bf16" : !strcmp(kind, "hif4-rht") ? "hif4" : kind;
    const int ok = !rc && nonfinite == 0 && same && rms > 1e-3 && rms < 1e3 && !strcmp(glq_cuda_linear_kind(g), want);
    report(ok, "random %s%s%.0d %lldx%lld B=%-3lld kind %s, rms(y) %.3f, %.1f MB%s%s%s", kind, bits ? "-" : "", bits,
           (long long)out, (long long)in, (long long)B, glq_cuda_linear_kind(g), rms, glq_cuda_linear_bytes(g) / 1e6,
           rc ? " error: " : "", rc ? glq_errmsg() : "", !rc && !same ? " RERUN DIFFERS" : "");
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    free(x), free(y), free(y2);
  }
  glq_cuda_linear_free(g);
}

int main(void) {
  char dev[256];
  if (glq_cuda_describe(dev, sizeof dev)) {
    fprintf(stderr, "linear_check: %s\n", dev);
    return 2;
  }
  printf("linear_check on %s\n", dev);
  if (glq_cuda_ctx_create(&g_ctx)) {
    fprintf(stderr, "linear_check: %s\n", glq_errmsg());
    return 2;
  }
  glq_cuda_ctx_set_cluster_threshold(g_ctx, 16); /* the cluster transforms on, whatever the default */
  /* dense: f32 and bf16, with and without bias; mixed storage on one shape */
  const int64_t dshape[4][2] = {{576, 1536}, {1536, 576}, {192, 576}, {37, 72}};
  for (int s = 0; s < 4; s++)
    for (int bias = 0; bias < 2; bias++) {
      dense_case(dshape[s][0], dshape[s][1], GLQ_F32, 0, bias);
      dense_case(dshape[s][0], dshape[s][1], GLQ_BF16, 1, bias);
    }
  dense_case(576, 1536, GLQ_F32, 1, 1);
  dense_case(576, 1536, GLQ_BF16, 0, 1);

  /* E8: bits 2/3/4 on model shapes (Kronecker plans: 576 = H36 (x) 16, 1536 = H12 (x) 128,
   * 14336 = H28 (x) 512), 3 bits with a bias; then the row kernels' other factor orders
   * (960 = H60 (x) 16, 2560 = H20 (x) 128, 2816 = H44 (x) 64) */
  const int64_t eshape[7][2] = {{576, 576}, {1536, 576}, {576, 1536}, {192, 576}, {4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (int s = 0; s < 7; s++)
    for (int bits = 2; bits <= 4; bits++)
      e8_case(bits, eshape[s][0], eshape[s][1], glq_rht_pad(eshape[s][0]), glq_rht_pad(eshape[s][1]),
              GLQ_HADAMARD_DEFAULT, bits == 3, "");
  e8_case(2, 960, 2560, 960, 2560, GLQ_HADAMARD_DEFAULT, 1, "");
  e8_case(4, 2560, 960, 2560, 960, GLQ_HADAMARD_DEFAULT, 0, "");
  e8_case(3, 1024, 2816, 1024, 2816, GLQ_HADAMARD_DEFAULT, 0, "");
  /* glq-compat binary blocks (1536 = 1024 + 512, 576 = 512 + 64; 200 = 128 + 64 + 8) */
  e8_case(2, 576, 1536, 576, 1536, GLQ_HADAMARD_GLQ_BLOCKDIAG, 0, " glq-compat");
  e8_case(4, 576, 1536, 576, 1536, GLQ_HADAMARD_GLQ_BLOCKDIAG, 1, " glq-compat");
  e8_case(3, 200, 200, 200, 200, GLQ_HADAMARD_GLQ_BLOCKDIAG, 0, " glq-compat");
  /* glq 0.2.7: dimensions padded to powers of two (72 -> 128, 96 -> 128) */
  e8_case(2, 96, 72, 128, 128, GLQ_HADAMARD_DEFAULT, 0, " pow2-padded");
  e8_case(4, 96, 72, 128, 128, GLQ_HADAMARD_DEFAULT, 1, " pow2-padded");
  /* padding to a multiple of 8 (172 -> 176 = H44 (x) FWHT 4, 100 -> 104 = H52 (x) FWHT 2) */
  e8_case(2, 100, 172, 104, 176, GLQ_HADAMARD_DEFAULT, 0, " padded");
  e8_case(3, 100, 172, 104, 176, GLQ_HADAMARD_DEFAULT, 1, " padded");
  /* the default plan's block-diagonal fallback (184 = 96 + 88) */
  e8_case(4, 184, 184, 184, 184, GLQ_HADAMARD_DEFAULT, 0, " blockdiag");
  /* chunks longer than the multi-pass tile (two passes at B = 77): FWHT 16384, H12 (x) FWHT 8192
   * (98304: a row too long for the row kernel, multi-pass at every B) */
  e8_case(2, 512, 16384, 512, 16384, GLQ_HADAMARD_DEFAULT, 0, " long FWHT");
  e8_case(3, 16384, 512, 16384, 512, GLQ_HADAMARD_DEFAULT, 1, " long FWHT");
  e8_case(2, 64, 98304, 64, 98304, GLQ_HADAMARD_DEFAULT, 0, " long Kronecker");

  /* E8P at 2/3/4 bits: model shapes, padding to multiples of 8, glq-compat blocks, an 8B-sized layer */
  const int64_t pshape[3][2] = {{576, 1536}, {1536, 576}, {4096, 4096}};
  for (int s = 0; s < 3; s++)
    for (int bits = 2; bits <= 4; bits++)
      e8p_case(bits, pshape[s][0], pshape[s][1], glq_rht_pad(pshape[s][0]), glq_rht_pad(pshape[s][1]), GLQ_HADAMARD_DEFAULT,
               bits == 3, "");
  e8p_case(2, 100, 172, 104, 176, GLQ_HADAMARD_DEFAULT, 1, " padded");
  e8p_case(4, 100, 172, 104, 176, GLQ_HADAMARD_DEFAULT, 0, " padded");
  e8p_case(3, 200, 200, 200, 200, GLQ_HADAMARD_GLQ_BLOCKDIAG, 0, " glq-compat");
  e8p_case(2, 4096, 14336, 4096, 14336, GLQ_HADAMARD_DEFAULT, 0, "");
  /* trellis 3inst at 2/3/4 bits: model shapes, sides padded to multiples of 32 (172 -> 192, 100 -> 128), glq's
   * blocks, an 8B-sized layer; a hyb code (dequantized fallback) */
  const int64_t tshape[3][2] = {{576, 1536}, {1536, 576}, {4096, 4096}};
  for (int s = 0; s < 3; s++)
    for (int K = 2; K <= 4; K++) trellis_case(K, tshape[s][0], tshape[s][1], GLQ_HADAMARD_DEFAULT, K == 3, 0, "");
  trellis_case(2, 172, 64, GLQ_HADAMARD_DEFAULT, 1, 0, " padded");
  trellis_case(3, 100, 200, GLQ_HADAMARD_DEFAULT, 0, 0, " padded");
  trellis_case(4, 576, 1536, GLQ_HADAMARD_GLQ_BLOCKDIAG, 0, 0, " glq-compat");
  trellis_case(2, 4096, 14336, GLQ_HADAMARD_DEFAULT, 0, 0, "");
  trellis_case(2, 192, 256, GLQ_HADAMARD_DEFAULT, 1, 1, "");

  /* HiF4 without and with RHT signs (4096 x 14336: the input transform H28 (x) FWHT 512) */
  const int64_t hshape[4][2] = {{576, 1536}, {1536, 576}, {64, 100}, {4096, 14336}};
  for (int s = 0; s < 4; s++)
    for (int rht = 0; rht < 2; rht++) hif4_case(hshape[s][0], hshape[s][1], rht, s == 2);

  /* graph capture after reserve, on a fresh context: multi-pass transforms (B = 77), row kernels */
  graph_case("e8", 3, 4096, 14336, 77);
  graph_case("e8", 4, 14336, 4096, 77);
  graph_case("hif4", 0, 4096, 14336, 77);
  graph_case("dense", 0, 576, 1536, 77);
  graph_case("e8", 2, 4096, 14336, 1);
  graph_case("e8", 2, 14336, 4096, 16);
  graph_case("hif4-rht", 0, 4096, 14336, 1);
  graph_case("e8p", 2, 4096, 14336, 1);
  graph_case("e8p", 3, 14336, 4096, 16);
  graph_case("trellis", 2, 4096, 14336, 1);
  graph_case("trellis", 4, 14336, 4096, 16);
  graph_case("trellis", 3, 576, 1536, 77);

  /* random layers for end-to-end benchmarks */
  random_case("dense", 0, 4096, 14336);
  for (int bits = 2; bits <= 4; bits++) random_case("e8", bits, 4096, 14336);
  for (int bits = 2; bits <= 4; bits++) random_case("e8p", bits, 4096, 14336);
  for (int bits = 2; bits <= 4; bits++) random_case("trellis", bits, 4096, 14336);
  random_case("hif4", 0, 4096, 14336);
  random_case("hif4-rht", 0, 4096, 14336);

  glq_cuda_ctx_free(g_ctx);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}

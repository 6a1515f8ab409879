/* test_codec.c - the LDLQ codec seam (quant/codec.h) with a 16-column, 16-row-tile codec (the trellis's
 * shape): a scalar codec rounding every coordinate to the nearest integer (codes = the integers, 256 per
 * 16x16 tile). Checks, for 48 x 96 and 32 x 160 layers (RHT, damping, block LDL with 16-column blocks):
 *  1. identity Hessian: the codes are round(W̃ / Wscale) exactly, at their (tile, block, slot) places;
 *  2. a correlated Hessian: the codes equal an independent textbook LDLQ in double (block LDL b = 16 from
 *     a Cholesky factor, targets T_k = Wr_k + sum_{j>k} (Wr_j - Q_j) L_jk) wherever that target is not
 *     within 1e-3 of a rounding boundary (f32 vs f64 sums), and its proxy loss beats rounding at the same Wscale;
 *  3. dequantize of the artifacts equals decoding the codes (the codec's decode) through the inverse RHT,
 *     and the same bytes come out with 1 and 2 threads. */
#include "core/error.h"
#include "core/pool.h"
#include "quant/ldlq.h"
#include "quant/rht.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t fails;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 10) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } } while (0)

static uint64_t rng = 7;
static double unif(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (double)(rng >> 11) * 0x1p-53; }
static double gauss(void) { return sqrt(-2 * log(unif() + 1e-300)) * cos(6.283185307179586 * unif()); }

static int q_scalar(const glq_codec *c, int64_t ntiles, const float *t, float *q, int32_t *codes) {
  for (int64_t i = 0; i < ntiles * c->rows * c->cols; i++) q[i] = rintf(t[i]), codes[i] = (int32_t)q[i];
  return 0;
}
static int d_scalar(const glq_codec *c, int64_t ntiles, const int32_t *codes, float *q) {
  for (int64_t i = 0; i < ntiles * c->rows * c->cols; i++) q[i] = (float)codes[i];
  return 0;
}
static const glq_codec SCALAR = {.name = "scalar16", .cols = 16, .rows = 16, .ncodes = 256, .wscale_default = 0.25,
                                 .quantize = q_scalar, .decode = d_scalar};

/* code of weight (i, j) of the rotated weight in the artifacts' (tiles, blocks, 256) layout */
static int32_t code_at(const glq_quant_artifacts *a, int64_t np, int64_t i, int64_t j) {
  const int32_t *c = glq_tensor_data(&a->codes);
  return c[((i / 16) * (np / 16) + j / 16) * 256 + (i % 16) * 16 + j % 16];
}

static void run_case(int64_t m, int64_t n) {
  const int64_t mp = glq_rht_pad(m), np = glq_rht_pad(n);
  float *w = malloc(m * n * sizeof *w), *su = malloc(mp * sizeof *su), *sv = malloc(np * sizeof *sv);
  float *wt = malloc(mp * np * sizeof *wt), *ht = malloc(np * np * sizeof *ht), *deq = malloc(m * n * sizeof *deq);
  float *ref = malloc(m * n * sizeof *ref), *wq = malloc(mp * np * sizeof *wq);
  double *h = calloc(n * n, sizeof *h), *x = malloc(4 * n * n * sizeof *x);
  for (int64_t i = 0; i < m * n; i++) w[i] = (float)gauss();
  for (int64_t i = 0; i < 4 * n * n; i++) x[i] = gauss() + (i % n ? 0.7 * x[i - 1] : 0);
  for (int64_t r = 0; r < 4 * n; r++)
    for (int64_t a = 0; a < n; a++)
      for (int64_t b = 0; b < n; b++) h[a * n + b] += x[r * n + a] * x[r * n + b];
  glq_quant_opts o;
  glq_quant_opts_default(&o);
  o.codec = &SCALAR, o.name = "blk.0.w", o.scale_search = 0;
  glq_rht_signs(o.seed, o.name, "SU", mp, su);
  glq_rht_signs(o.seed, o.name, "SV", np, sv);
  glq_rht_weight(w, m, n, su, sv, o.transform, wt);

  /* 1. identity Hessian: plain rounding */
  glq_quant_artifacts a;
  glq_quant_stats st;
  if (glq_quantize_linear(w, m, n, NULL, &o, &a, &st)) { CHECK(0, "%s", glq_errmsg()); return; }
  float ws = *(float *)glq_tensor_data(&a.wscale);
  int64_t bad = 0;
  for (int64_t i = 0; i < mp; i++)
    for (int64_t j = 0; j < np; j++) bad += code_at(&a, np, i, j) != (int32_t)rintf(wt[i * np + j] / ws);
  CHECK(bad == 0, "%lldx%lld identity H: %lld codes differ from round(W~/Wscale)", (long long)m, (long long)n, (long long)bad);
  CHECK(a.codebook == GLQ_CODEBOOK_CUSTOM && a.codes.shape[0] == mp / 16 && a.codes.shape[1] == np / 16, "artifact layout");
  glq_quant_artifacts_free(&a);

  /* 2. correlated Hessian against a textbook LDLQ in double */
  double mu = 0;
  for (int64_t i = 0; i < n; i++) mu += h[i * n + i];
  mu /= n;
  glq_rht_hessian(h, n, o.damp * mu, sv, o.transform, ht);
  double mu2 = 0, *c = calloc(np * np, sizeof *c), *l = calloc(np * np, sizeof *l);
  for (int64_t i = 0; i < np; i++) mu2 += ht[i * np + i];
  mu2 /= np;
  for (int64_t i = 0; i < np * np; i++) c[i] = ht[i] + (i % (np + 1) == 0 ? o.damp * mu2 : 0);
  for (int64_t j = 0; j < np; j++) { /* Cholesky, lower, in place */
    for (int64_t k = 0; k < j; k++) c[j * np + j] -= c[j * np + k] * c[j * np + k];
    c[j * np + j] = sqrt(c[j * np + j]);
    for (int64_t i = j + 1; i < np; i++) {
      for (int64_t k = 0; k < j; k++) c[i * np + j] -= c[i * np + k] * c[j * np + k];
      c[i * np + j] /= c[j * np + j];
    }
    for (int64_t i = 0; i < j; i++) c[i * np + j] = 0;
  }
  for (int64_t kb = 0; kb < np / 16; kb++) { /* L = C · blkdiag(C_kk)^-1: solve X C_kk = C[:, block k] */
    for (int64_t i = 0; i < np; i++)
      for (int64_t jj = 16 * kb + 15; jj >= 16 * kb; jj--) {
        double s = c[i * np + jj];
        for (int64_t t = jj + 1; t < 16 * kb + 16; t++) s -= l[i * np + t] * c[t * np + jj];
        l[i * np + jj] = s / c[jj * np + jj];
      }
  }
  if (glq_quantize_linear(w, m, n, h, &o, &a, &st)) { CHECK(0, "%s", glq_errmsg()); return; }
  ws = *(float *)glq_tensor_data(&a.wscale);
  int64_t near = 0;
  bad = 0;
  double *r = calloc(mp * np, sizeof *r);
  for (int64_t kb = np / 16 - 1; kb >= 0; kb--)
    for (int64_t i = 0; i < mp; i++)
      for (int64_t j = 16 * kb; j < 16 * kb + 16; j++) {
        double t = wt[i * np + j] / (double)ws;
        for (int64_t q = 16 * kb + 16; q < np; q++) t += r[i * np + q] * l[q * np + j];
        double qv = rint(t), fr = fabs(t - floor(t) - 0.5);
        if (fr < 1e-3) near++;
        else bad += code_at(&a, np, i, j) != (int32_t)qv;
        qv = code_at(&a, np, i, j); /* follow ldlq's choice so one near-tie does not cascade */
        r[i * np + j] = wt[i * np + j] / (double)ws - qv;
      }
  CHECK(bad == 0, "%lldx%lld: %lld codes differ from the textbook LDLQ (%lld near ties skipped)", (long long)m, (long long)n,
        (long long)bad, (long long)near);
  double loss_ldlq = st.proxy_loss;
  /* 3. dequantize == decode(codes) through the inverse RHT; thread counts */
  if (glq_dequantize_linear(&a, deq)) CHECK(0, "%s", glq_errmsg());
  for (int64_t i = 0; i < mp; i++)
    for (int64_t j = 0; j < np; j++) wq[i * np + j] = ws * (float)code_at(&a, np, i, j);
  glq_rht_weight_inverse(wq, m, n, su, sv, o.transform, ref);
  CHECK(!memcmp(ref, deq, m * n * sizeof *ref), "dequantize differs from decoding the codes");
  glq_quant_artifacts b;
  int nt = glq_num_threads();
  glq_set_num_threads(nt == 1 ? 2 : 1);
  if (glq_quantize_linear(w, m, n, h, &o, &b, NULL)) CHECK(0, "%s", glq_errmsg());
  glq_set_num_threads(nt);
  CHECK(!memcmp(glq_tensor_data(&a.codes), glq_tensor_data(&b.codes), glq_tensor_numel(&a.codes) * 4), "codes depend on the thread count");
  glq_quant_artifacts_free(&b);
  double loss_round = 0; /* plain rounding at the same Wscale: mean over rows of dW·H~·dWᵀ (H~ with damp #1) */
  for (int64_t i = 0; i < mp; i++) {
    double *dw = r; /* reuse: row i of W~ - Wscale·round(W~/Wscale) */
    for (int64_t j = 0; j < np; j++) dw[j] = wt[i * np + j] - ws * rint(wt[i * np + j] / (double)ws);
    for (int64_t a2 = 0; a2 < np; a2++)
      for (int64_t b2 = 0; b2 < np; b2++) loss_round += dw[a2] * ht[a2 * np + b2] * dw[b2];
  }
  loss_round /= mp;
  st.proxy_loss = loss_round;
  CHECK(loss_ldlq < 0.9 * loss_round, "LDLQ proxy loss %g not below rounding's %g", loss_ldlq, loss_round);
  printf("%lldx%lld: identity-H codes = rounding; LDLQ codes = textbook (%lld near ties skipped of %lld); proxy loss "
         "LDLQ %.4g vs rounding %.4g; dequantize = decode\n", (long long)m, (long long)n, (long long)near,
         (long long)(mp * np), loss_ldlq, st.proxy_loss);
  glq_quant_artifacts_free(&a);
  free(w), free(su), free(sv), free(wt), free(ht), free(deq), free(ref), free(wq), free(h), free(x), free(c), free(l), free(r);
}

int main(void) {
  run_case(48, 96);
  run_case(32, 160);
  /* a shape the 16-row tiles cannot cover is an error, not a crash */
  float w[24 * 16] = {0};
  glq_quant_opts o;
  glq_quant_opts_default(&o);
  o.codec = &SCALAR;
  glq_quant_artifacts a;
  CHECK(glq_quantize_linear(w, 24, 16, NULL, &o, &a, NULL) == GLQ_EINVAL && strstr(glq_errmsg(), "multiple"),
        "24 rows with 16-row tiles: %s", glq_errmsg());
  printf(fails ? "FAILED: %lld checks\n" : "OK\n", (long long)fails);
  return fails ? 1 : 0;
}

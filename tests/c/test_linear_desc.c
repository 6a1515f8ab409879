/* test_linear_desc.c - the accessors other implementations of the layers read (cuda/linear.cu):
 * the blocks of a Hadamard plan rebuild glq_hadamard_apply (both kinds, both directions, in double),
 * glq_hif4_linear_fields_of returns the packed fields the layer was built from, glq_e8_linear_desc_of
 * and glq_dense_linear_weight_of return the layer's own data, and each refuses another kind. */
#include "../../src/layers/dense_linear.h"
#include "../../src/core/ops.h"
#include "../../src/layers/e8_linear.h"
#include "../../src/quant/hadamard.h"
#include "../../src/layers/hif4_linear.h"
#include "../../src/quant/rht.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static uint64_t rng = 99;

/* y = H x (or Hᵀ x) from the plan's blocks alone, in double */
static void apply_blocks(const glq_hadamard *h, const float *x, int transpose, double *y) {
  const int64_t n = glq_hadamard_dim(h);
  for (int64_t i = 0; i < n; i++) y[i] = x[i];
  double *t = malloc(sizeof(double) * (size_t)n);
  for (int i = 0; i < glq_hadamard_nblocks(h); i++) {
    glq_hadamard_block b;
    glq_hadamard_block_at(h, i, &b);
    double *v = y + b.off;
    for (int64_t c = 0; c < b.p; c++) /* FWHT of each chunk */
      for (int64_t s = 1; s < b.L; s <<= 1)
        for (int64_t a = 0; a < b.L; a++)
          if (!(a & s)) {
            double u = v[c * b.L + a], w = v[c * b.L + a + s];
            v[c * b.L + a] = u + w, v[c * b.L + a + s] = u - w;
          }
    if (b.p > 1) {
      const float *S = transpose ? b.st : b.s;
      for (int64_t r = 0; r < b.p; r++)
        for (int64_t a = 0; a < b.L; a++) {
          double s = 0;
          for (int64_t k = 0; k < b.p; k++) s += S[r * b.p + k] * v[k * b.L + a];
          t[r * b.L + a] = s;
        }
      memcpy(v, t, sizeof(double) * (size_t)b.len);
    }
    for (int64_t j = 0; j < b.len; j++) v[j] /= sqrt((double)b.len);
  }
  free(t);
}

static void check_plan(int64_t n, glq_hadamard_kind kind) {
  const glq_hadamard *h;
  if (glq_hadamard_plan(n, kind, &h)) { CHECK(0, "plan %lld: %s", (long long)n, glq_errmsg()); return; }
  int64_t next = 0;
  for (int i = 0; i < glq_hadamard_nblocks(h); i++) {
    glq_hadamard_block b;
    glq_hadamard_block_at(h, i, &b);
    CHECK(b.off == next && b.len == b.p * b.L && b.L > 0 && !(b.L & (b.L - 1)) && (b.p == 1) == (b.s == NULL),
          "n=%lld block %d: off %lld len %lld L %lld p %d", (long long)n, i, (long long)b.off, (long long)b.len,
          (long long)b.L, b.p);
    next = b.off + b.len;
  }
  CHECK(next == n, "n=%lld: blocks cover %lld", (long long)n, (long long)next);
  float *x = malloc(sizeof(float) * (size_t)n), *ref = malloc(sizeof(float) * (size_t)n);
  double *y = malloc(sizeof(double) * (size_t)n);
  for (int tr = 0; tr < 2; tr++) {
    double nx = 0, err = 0;
    for (int64_t i = 0; i < n; i++) x[i] = (float)((double)(glq_splitmix64(&rng) >> 11) / 9007199254740992.0 - 0.5), nx += (double)x[i] * x[i];
    memcpy(ref, x, sizeof(float) * (size_t)n);
    glq_hadamard_apply(h, ref, 1, tr);
    apply_blocks(h, x, tr, y);
    for (int64_t i = 0; i < n; i++) err += (y[i] - ref[i]) * (y[i] - ref[i]);
    CHECK(sqrt(err / nx) < 1e-6, "n=%lld kind %d transpose %d (%s): blocks give rel err %g", (long long)n, (int)kind, tr,
          glq_hadamard_describe(h), sqrt(err / nx));
  }
  free(x), free(ref), free(y);
}

static void check_hif4(int64_t out, int64_t in, int rht) {
  int64_t shape[2] = {out, in}, units = out * glq_hif4_nblocks(in), np = glq_rht_pad(in);
  glq_hif4_fields f;
  glq_hif4_fields_new(2, shape, 1, &f);
  glq_hif4_buf b = glq_hif4_fields_buf(&f);
  for (int64_t u = 0; u < units; u++) {
    uint64_t r = glq_splitmix64(&rng);
    b.e6m2[u] = (uint8_t)(r % 250), b.e1_8[u] = (uint8_t)(r >> 8), b.e1_16[2 * u] = (uint8_t)(r >> 16);
    b.e1_16[2 * u + 1] = (uint8_t)(r >> 24);
  }
  for (int64_t i = 0; i < 32 * units; i++) b.s1p2[i] = (uint8_t)glq_splitmix64(&rng);
  glq_tensor s = {0};
  if (rht) {
    glq_tensor_new(GLQ_F32, 1, &np, &s);
    glq_rht_signs(7, "x", "SV", np, glq_tensor_data(&s));
  }
  glq_linear *l;
  CHECK(glq_hif4_linear_new(&f, NULL, rht ? &s : NULL, GLQ_HIF4_KERNEL_AUTO, &l) == 0, "hif4 new: %s", glq_errmsg());
  glq_hif4_linear_desc d;
  CHECK(glq_hif4_linear_desc_of(l, &d) == 0 && d.out == out && d.in == in && d.nb == glq_hif4_nblocks(in) && !d.bias &&
            (rht ? d.signs && !memcmp(d.signs, glq_tensor_data(&s), sizeof(float) * (size_t)np) : !d.signs),
        "hif4 desc %lldx%lld rht %d", (long long)out, (long long)in, rht);
  uint8_t *o = malloc((size_t)(36 * units));
  glq_hif4_buf ob = {o, o + units, o + 2 * units, o + 4 * units};
  CHECK(glq_hif4_linear_fields_of(l, &ob) == 0, "fields_of: %s", glq_errmsg());
  int same = !memcmp(ob.e6m2, b.e6m2, (size_t)units) && !memcmp(ob.e1_8, b.e1_8, (size_t)units) &&
             !memcmp(ob.e1_16, b.e1_16, (size_t)(2 * units));
  for (int64_t i = 0; i < 32 * units; i++)
    for (int h = 0; h < 2; h++) {
      int c = b.s1p2[i] >> (4 * h) & 15, g = ob.s1p2[i] >> (4 * h) & 15;
      if (g != (c == 8 ? 0 : c)) same = 0; /* "-0" comes back as +0 */
    }
  CHECK(same, "hif4 %lldx%lld rht %d: fields_of differs from the fields", (long long)out, (long long)in, rht);
  glq_e8_linear_desc e;
  CHECK(glq_e8_linear_desc_of(l, &e) == GLQ_EINVAL, "e8 desc_of accepted a hif4 layer");
  glq_linear_free(l);
  free(o);
  glq_hif4_fields_release(&f);
  glq_tensor_release(&s);
}

static void check_e8(int bits, glq_hadamard_kind kind) {
  glq_e8_linear_desc d = {.out = 20, .in = 30, .out_pad = 24, .in_pad = 32, .bits = bits, .inv_rs = 0.25f,
                          .wscale = 0.5f, .transform = kind};
  int16_t q[24 * 4], q2[24 * 4];
  float su[24], sv[32], bias[20];
  for (int i = 0; i < 96; i++) q[i] = (int16_t)glq_splitmix64(&rng), q2[i] = (int16_t)(glq_splitmix64(&rng) & 0xFF);
  for (int i = 0; i < 24; i++) su[i] = i % 3 ? 1.f : -1.f;
  for (int i = 0; i < 32; i++) sv[i] = i % 5 ? -1.f : 1.f;
  for (int i = 0; i < 20; i++) bias[i] = 0.1f * (float)i;
  d.qidxs = q, d.qidxs2 = bits > 2 ? q2 : NULL, d.su = su, d.sv = sv, d.bias = bias;
  glq_linear *l;
  CHECK(glq_e8_linear_new(&d, &l) == 0, "e8 new: %s", glq_errmsg());
  glq_e8_linear_desc g;
  CHECK(glq_e8_linear_desc_of(l, &g) == 0, "e8 desc_of: %s", glq_errmsg());
  CHECK(g.out == 20 && g.in == 30 && g.out_pad == 24 && g.in_pad == 32 && g.bits == bits && g.wscale == 0.5f &&
            g.inv_rs == (bits > 2 ? 0.25f : 0.f) && g.transform == kind && !memcmp(g.qidxs, q, sizeof q) &&
            (bits > 2 ? !memcmp(g.qidxs2, q2, sizeof q2) : !g.qidxs2) && !memcmp(g.su, su, sizeof su) &&
            !memcmp(g.sv, sv, sizeof sv) && !memcmp(g.bias, bias, sizeof bias),
        "e8 desc_of (bits %d kind %d) differs from the descriptor", bits, (int)kind);
  const void *w;
  glq_dtype dt;
  CHECK(glq_dense_linear_weight_of(l, &w, &dt) == GLQ_EINVAL, "dense weight_of accepted an e8 layer");
  glq_linear_free(l);
}

static void check_dense(glq_dtype wdt) {
  glq_tensor w32, w;
  int64_t ws[2] = {5, 7};
  glq_randn(GLQ_F32, 2, ws, 4, &w32);
  glq_tensor_to(&w32, wdt, &w);
  glq_linear *l;
  CHECK(glq_dense_linear_new(&w, NULL, &l) == 0, "dense new: %s", glq_errmsg());
  const void *p;
  glq_dtype dt;
  CHECK(glq_dense_linear_weight_of(l, &p, &dt) == 0 && dt == wdt &&
            !memcmp(p, glq_tensor_data(&w), 35 * glq_dtype_size(wdt)),
        "dense weight_of %s", glq_dtype_name(wdt));
  glq_hif4_linear_desc hd;
  CHECK(glq_hif4_linear_desc_of(l, &hd) == GLQ_EINVAL, "hif4 desc_of accepted a dense layer");
  glq_linear_free(l);
  glq_tensor_release(&w32);
  glq_tensor_release(&w);
}

int main(void) {
  const int64_t ns[] = {1, 4, 8, 24, 56, 104, 176, 184, 200, 576, 1536, 2688, 4096, 8200, 11008, 14336};
  for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
    if (ns[i] % 8 == 0 || !(ns[i] & (ns[i] - 1))) check_plan(ns[i], GLQ_HADAMARD_DEFAULT);
    check_plan(ns[i], GLQ_HADAMARD_GLQ_BLOCKDIAG);
  }
  for (int rht = 0; rht < 2; rht++) {
    check_hif4(3, 100, rht);
    check_hif4(2, 128, rht);
  }
  for (int bits = 2; bits <= 4; bits++) {
    check_e8(bits, GLQ_HADAMARD_DEFAULT);
    check_e8(bits, GLQ_HADAMARD_GLQ_BLOCKDIAG);
  }
  check_dense(GLQ_F32);
  check_dense(GLQ_BF16);
  printf("%s (%d failures)\n", fails ? "FAIL" : "ok", fails);
  return fails != 0;
}

/* codec.c - the builtin 8-column codecs (codec.h): E8 shell and E8P, one or two stages. */
#include "codec.h"
#include "e8.h"
#include "e8p.h"
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"

/* fitted defaults (ldlq.c's search steps ±5% around them): E8 shell from bench/quant_bench.c data. E8P: glq
 * 0.8.16's Wscale = rms / 1.03 (and residual scale 3.45 at 4 bits) sit below what our LDLQ wants (its feedback
 * widens the targets): on SmolLM2 layers 0/15/29 Wscale 1.10·rms gave 2.6% lower proxy loss at 2 and 3 bits
 * than 1/1.03 (up to 31% on layer 0 q), and 4 bits prefer residual scales at the top of 3.45's range. */
static const double e8_wscale[5] = {0, 0, 1.05, 1.05, 1.10}, e8_rs[5] = {0, 0, 1.0, 2.0, 3.75};
static const double e8p_wscale[5] = {0, 0, 1.10, 1.10, 1.10}, e8p_rs[5] = {0, 0, 1.0, 2.04, 3.75};

typedef int (*enc_fn)(const float *, int64_t, int32_t *);
typedef void (*dec_fn)(const int32_t *, int64_t, float *);

static int e8_enc1(const float *x, int64_t n, int32_t *i) { return glq_e8_encode(glq_e8_codebook_get(65536), x, n, i); }
static int e8_enc256(const float *x, int64_t n, int32_t *i) { return glq_e8_encode(glq_e8_codebook_get(256), x, n, i); }
static void e8_dec(const int32_t *i, int64_t n, float *q) { glq_e8_decode(glq_e8_codebook_get(65536), i, n, q); }

typedef struct { enc_fn enc1, enc2; dec_fn dec1, dec2; } stages;
static const stages ST[2][5] = {
    {{0}, {0}, {e8_enc1, NULL, e8_dec, NULL}, {e8_enc1, e8_enc256, e8_dec, e8_dec}, {e8_enc1, e8_enc1, e8_dec, e8_dec}},
    {{0}, {0}, {glq_e8p_encode, NULL, glq_e8p_decode, NULL}, {glq_e8p_encode, glq_e81b_encode, glq_e8p_decode, glq_e81b_decode},
     {glq_e8p_encode, glq_e8p_encode, glq_e8p_decode, glq_e8p_decode}}};

/* q = C1[i1] (+ inv_rs·C2[i2] where i2 = nearest to (t - C1[i1])·rs), codes interleaved (i1, i2) per row */
static int quantize(const glq_codec *c, int64_t rows, const float *t, float *q, int32_t *codes) {
  const stages *s = c->ctx;
  const int two = s->enc2 != NULL;
  int32_t *i1 = malloc((size_t)rows * sizeof *i1), *i2 = two ? malloc((size_t)rows * sizeof *i2) : NULL;
  float *res = two ? malloc((size_t)rows * 8 * sizeof *res) : NULL;
  int rc = i1 && (!two || (i2 && res)) ? 0 : glq_error(GLQ_ENOMEM, "%s codec: out of memory (%lld rows)", c->name, (long long)rows);
  if (!rc) rc = s->enc1(t, rows, i1);
  if (!rc) {
    s->dec1(i1, rows, q);
    if (two) {
      for (int64_t i = 0; i < rows * 8; i++) res[i] = (t[i] - q[i]) * c->rs;
      rc = s->enc2(res, rows, i2);
    }
  }
  if (!rc && two) {
    s->dec2(i2, rows, res);
    for (int64_t i = 0; i < rows * 8; i++) q[i] = q[i] + c->inv_rs * res[i];
  }
  for (int64_t i = 0; !rc && i < rows; i++) {
    codes[i * c->ncodes] = i1[i];
    if (two) codes[i * 2 + 1] = i2[i];
  }
  free(i1), free(i2), free(res);
  return rc;
}

static int decode(const glq_codec *c, int64_t rows, const int32_t *codes, float *q) {
  const stages *s = c->ctx;
  float v[8];
  for (int64_t i = 0; i < rows; i++) {
    s->dec1(codes + i * c->ncodes, 1, q + 8 * i);
    if (!s->dec2) continue;
    s->dec2(codes + i * 2 + 1, 1, v);
    for (int k = 0; k < 8; k++) q[8 * i + k] = q[8 * i + k] + c->inv_rs * v[k];
  }
  return 0;
}

int glq_codec_builtin(int codebook, int bits, double rs, glq_codec *out) {
  memset(out, 0, sizeof *out);
  if (codebook != GLQ_CODEBOOK_E8 && codebook != GLQ_CODEBOOK_E8P)
    return glq_error(GLQ_EINVAL, "unknown codebook id %d (e8 = 0, e8p = 1)", codebook);
  if (bits < 2 || bits > 4) return glq_error(GLQ_EINVAL, "bits must be 2, 3 or 4, got %d", bits);
  const int e8p = codebook == GLQ_CODEBOOK_E8P;
  int rc = e8p ? glq_e8p_init() : (glq_e8_codebook_get(65536) && glq_e8_codebook_get(256) ? 0 : GLQ_ENOMEM);
  if (rc) return rc;
  if (rs <= 0) rs = (e8p ? e8p_rs : e8_rs)[bits];
  out->name = e8p ? "e8p" : "e8";
  out->codebook = codebook;
  out->cols = 8, out->rows = 1, out->ncodes = bits > 2 ? 2 : 1, out->bits = bits;
  out->rs = bits > 2 ? (float)rs : 0;
  out->inv_rs = bits > 2 ? (float)(1.0 / rs) : 0;
  out->wscale_default = (e8p ? e8p_wscale : e8_wscale)[bits];
  out->ctx = &ST[e8p][bits];
  out->quantize = quantize;
  out->decode = decode;
  return 0;
}

int glq_codebook_from_name(const char *name) {
  if (!name || !strcmp(name, "e8") || !strcmp(name, "e8_shell")) return GLQ_CODEBOOK_E8;
  if (!strcmp(name, "e8p")) return GLQ_CODEBOOK_E8P;
  return -1;
}

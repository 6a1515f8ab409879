/* ldlq_check.c - the GPU E8 search and LDLQ sweep (cuda/ldlq.cu) against the CPU (src/quant/e8.c, ldlq.c).
 * Run by `make test-gpu` after linear_check; prints one line per check, then "N passed, M failed", and
 * exits 1 on a failure (also when there is no CUDA device: this program only runs on a GPU machine).
 *
 * 1. glq_cuda_e8_encode vs glq_e8_encode, both codebooks (65536, 256): every set must agree index for
 *    index (the search is exact, lowest index on ties). Sets: N(0, s^2) at s = 0.3 .. 3.0; extreme
 *    magnitudes (1e-30 .. 1e6, denormals, zeros, -0, and separately up to FLT_MAX); exact ties
 *    (midpoints of random pairs and of neighbouring pairs C_a, C_a + root) and the same moved by +-1 ulp
 *    in one coordinate; repeated |x_i|; the codebook entries themselves.
 * 2. glq_quantize_linear with o.backend = the GPU vs the CPU path. n_pad <= 128 (one 128-column group,
 *    no GEMM): artifacts byte-identical, statistics (except seconds) identical. Larger n: only the f32
 *    group GEMM sums in another order, so we require index agreement >= MIN_AGREE (both stages of an
 *    8-block equal) and |proxy_loss ratio GPU/CPU - 1| <= MAX_DLOSS; both numbers are printed.
 * 3. Determinism: the same GPU quantization twice on one object and once on a fresh one: same bytes.
 * 4. Errors: size 100, non-finite inputs (GLQ_EINVAL like the CPU, the message naming the vector). */
#include <cblas.h>
#include <float.h>
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
#include "../../src/quant/e8.h"
#include "../../src/quant/ldlq.h"
#include "../../src/quant/rht.h"

#define MIN_AGREE 0.99  /* n_pad > 128: fraction of 8-blocks whose indices agree */
#define MAX_DLOSS 0.002 /* n_pad > 128: |proxy_loss_gpu / proxy_loss_cpu - 1| */

static glq_cuda_ldlq *g_q;


/* ---- 1. exact search ---- */

/* one set: GPU vs CPU index for index; the detail names the first mismatch */
static void encode_set(const char *what, int size, const float *x, int64_t n) {
  const glq_e8_codebook *cb = glq_e8_codebook_get(size);
  int32_t *ic = xmalloc((size_t)n * sizeof *ic), *ig = xmalloc((size_t)n * sizeof *ig);
  if (!cb || glq_e8_encode(cb, x, n, ic)) {
    report(0, "encode %-5d %-34s CPU encode failed: %s", size, what, glq_errmsg());
    free(ic), free(ig);
    return;
  }
  memset(ig, 0xFF, (size_t)n * sizeof *ig);
  if (glq_cuda_e8_encode(g_q, x, n, size, ig)) {
    report(0, "encode %-5d %-34s GPU error: %s", size, what, glq_errmsg());
    free(ic), free(ig);
    return;
  }
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; i++)
    if (ic[i] != ig[i] && bad++ == 0) first = i;
  if (!bad) {
    report(1, "encode %-5d %-34s %lld vectors identical", size, what, (long long)n);
  } else {
    const float *v = x + 8 * first;
    report(0, "encode %-5d %-34s %lld of %lld differ; first: vector %lld (%.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g) "
           "CPU %d, GPU %d", size, what, (long long)bad, (long long)n, (long long)first, v[0], v[1], v[2], v[3],
           v[4], v[5], v[6], v[7], ic[first], ig[first]);
  }
  free(ic), free(ig);
}

/* |x| log-uniform in [lo, hi], random sign */
static float logu(double lo, double hi) { return sign() * (float)exp(log(lo) + urand() * (log(hi) - log(lo))); }

static void extreme_fill(float *x, int64_t n, int flt_max) {
  for (int64_t i = 0; i < n; i++) {
    float *v = x + 8 * i;
    const int mode = flt_max ? 5 : (int)(rnd() % 5);
    for (int j = 0; j < 8; j++) {
      switch (mode) {
      case 0: v[j] = logu(1e-30, 1e6); break;                 /* mixed over 36 decades */
      case 1: v[j] = logu(1e3, 1e6); break;                   /* huge */
      case 2: v[j] = logu(1e-44, 1e-3); break;                /* tiny, denormals included */
      case 3: { /* zeros, -0, huge, tiny and ordinary values in one vector */
        const int k = (int)(rnd() % 5);
        v[j] = k == 0 ? 0.f : k == 1 ? -0.f : k == 2 ? logu(1e4, 1e6) : k == 3 ? logu(1e-30, 1e-20) : (float)gauss();
        break;
      }
      case 4: v[j] = (rnd() % 4) ? ((rnd() & 1) ? 0.f : -0.f) : logu(1e-30, 1e6); break; /* mostly (signed) zeros */
      default: v[j] = (rnd() % 3) ? logu(1e30, FLT_MAX) : (float)gauss(); break;
      }
    }
  }
}

static void encode_checks(int size) {
  const int64_t ng = size == 65536 ? 200000 : 50000, ns = 50000;
  float *x = xmalloc((size_t)(ng * 8) * sizeof *x), *y = xmalloc((size_t)(3 * ns * 8) * sizeof *y);
  const float *tab = glq_e8_codebook_get(65536)->table;
  char what[64];
  static const double sig[6] = {0.3, 0.8, 0.95, 1.1, 1.5, 3.0};
  for (int s = 0; s < 6; s++) {
    for (int64_t i = 0; i < ng * 8; i++) x[i] = (float)(sig[s] * gauss());
    snprintf(what, sizeof what, "gauss sigma %.2f", sig[s]);
    encode_set(what, size, x, ng);
  }
  extreme_fill(x, ns, 0);
  encode_set("extreme 1e-44 .. 1e6, zeros, -0", size, x, ns);
  extreme_fill(x, 2000, 1);
  encode_set("extreme up to FLT_MAX", size, x, 2000);

  /* ties: midpoints of random pairs (first half) and of C_a, C_b = nearest(C_a + root) (second half) */
  int32_t *b = xmalloc((size_t)ns * sizeof *b);
  for (int64_t i = 0; i < ns; i++) {
    const float *ca = tab + 8 * (rnd() % (uint64_t)size);
    float *v = x + 8 * i;
    if (i < ns / 2) {
      const float *cb = tab + 8 * (rnd() % (uint64_t)size);
      for (int j = 0; j < 8; j++) v[j] = ca[j], y[8 * i + j] = cb[j];
    } else { /* a root of E8: +-e_p +-e_q, or (+-1/2)^8 with an even number of minus signs */
      float r[8] = {0};
      if (rnd() & 1) {
        const int p = (int)(rnd() % 8), q = (p + 1 + (int)(rnd() % 7)) % 8;
        r[p] = sign(), r[q] = sign();
      } else {
        int neg = 0;
        for (int j = 0; j < 8; j++) r[j] = 0.5f * sign(), neg += r[j] < 0;
        if (neg & 1) r[7] = -r[7];
      }
      for (int j = 0; j < 8; j++) v[j] = ca[j], y[8 * i + j] = ca[j] + r[j];
    }
  }
  /* the second element of each pair: given (first half) or the CPU's nearest entry to C_a + root */
  glq_e8_encode(glq_e8_codebook_get(size), y + 8 * (ns / 2), ns - ns / 2, b + ns / 2);
  for (int64_t i = 0; i < ns; i++)
    for (int j = 0; j < 8; j++) {
      const float c2 = i < ns / 2 ? y[8 * i + j] : tab[8 * (size_t)b[i] + j];
      x[8 * i + j] = (x[8 * i + j] + c2) * 0.5f; /* exact: multiples of 1/4 */
    }
  encode_set("tie midpoints (random, root pairs)", size, x, ns);
  for (int64_t i = 0; i < ns; i++) /* the same moved by one ulp up and down in one coordinate */
    for (int k = 0; k < 2; k++) {
      float *v = y + 8 * (2 * i + k);
      memcpy(v, x + 8 * i, 8 * sizeof *v);
      const int j = (int)(rnd() % 8);
      v[j] = nextafterf(v[j], k ? -INFINITY : INFINITY);
    }
  encode_set("tie midpoints +-1 ulp", size, y, 2 * ns);

  /* repeated magnitudes: each coordinate one of k <= 3 values, random signs, a few scales */
  static const float mags[8] = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f, 1.5f, 2};
  static const float scales[6] = {1, 0.5f, 2, 1.0f / 3, 0.999f, 1.001f};
  for (int64_t i = 0; i < ns; i++) {
    const int k = 1 + (int)(rnd() % 3);
    float v[3];
    for (int a = 0; a < k; a++) v[a] = mags[rnd() % 8];
    const float s = scales[rnd() % 6];
    for (int j = 0; j < 8; j++) x[8 * i + j] = sign() * s * v[rnd() % (uint64_t)k];
  }
  encode_set("repeated |x_i|", size, x, ns);
  encode_set("codebook entries (all 65536)", size, tab, 65536);
  free(x), free(y), free(b);
}

/* ---- 2./3. quantization through glq_quantize_linear ---- */

typedef struct {
  int64_t m, n;
  float *w;
  double *h; /* NULL: identity */
} layer;

/* W: N(0,1) with column scales exp(0.5 N); H = XᵀX/s + ridge, X (s x n) AR(1) across columns, a common
 * row factor and column scales (strongly correlated, ill-conditioned but SPD) */
static layer make_layer(int64_t m, int64_t n, int hess) {
  layer L = {m, n, xmalloc((size_t)(m * n) * sizeof(float)), NULL};
  double *cs = xmalloc((size_t)n * sizeof *cs);
  for (int64_t j = 0; j < n; j++) cs[j] = exp(0.5 * gauss());
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) L.w[i * n + j] = (float)(0.02 * cs[j] * gauss());
  if (hess) {
    const int64_t s = 2 * n + 16;
    double *x = xmalloc((size_t)(s * n) * sizeof *x);
    for (int64_t j = 0; j < n; j++) cs[j] = exp(0.7 * gauss());
    for (int64_t t = 0; t < s; t++) {
      const double f = gauss();
      double prev = 0;
      for (int64_t j = 0; j < n; j++) {
        prev = 0.6 * prev + gauss();
        x[t * n + j] = cs[j] * (prev + 0.5 * f);
      }
    }
    L.h = xmalloc((size_t)(n * n) * sizeof *L.h);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)s, 1.0 / (double)s, x, (int)n, 0.0, L.h, (int)n);
    double mu = 0;
    for (int64_t i = 0; i < n; i++) mu += L.h[i * n + i] / (double)n;
    for (int64_t i = 0; i < n; i++) {
      L.h[i * n + i] += 1e-4 * mu;
      for (int64_t j = 0; j < i; j++) L.h[i * n + j] = L.h[j * n + i];
    }
    free(x);
  }
  free(cs);
  return L;
}

static void layer_free(layer *L) { free(L->w), free(L->h); }

/* byte offset of the first difference of two tensors, -1 if equal (-2: dtype/shape/presence differ) */
static int64_t tensor_diff(const glq_tensor *a, const glq_tensor *b) {
  if (!a->st || !b->st) return (!a->st && !b->st) ? -1 : -2;
  if (a->dtype != b->dtype || a->ndim != b->ndim) return -2;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return -2;
  const unsigned char *p = glq_tensor_data(a), *q = glq_tensor_data(b);
  const int64_t nb = glq_tensor_numel(a) * (int64_t)glq_dtype_size(a->dtype);
  for (int64_t i = 0; i < nb; i++)
    if (p[i] != q[i]) return i;
  return -1;
}

/* "" when byte-identical, else which tensor differs first and where */
static void artifacts_diff(const glq_quant_artifacts *a, const glq_quant_artifacts *b, char *out, size_t len) {
  const glq_tensor *ta[6] = {&a->qidxs, &a->qidxs2, &a->su, &a->sv, &a->wscale, &a->inv_resid_scale};
  const glq_tensor *tb[6] = {&b->qidxs, &b->qidxs2, &b->su, &b->sv, &b->wscale, &b->inv_resid_scale};
  static const char *names[6] = {"Qidxs", "Qidxs2", "SU", "SV", "Wscale", "inv_resid_scale"};
  out[0] = 0;
  if (a->bits != b->bits || a->m != b->m || a->n != b->n || a->transform != b->transform) {
    snprintf(out, len, "header fields differ");
    return;
  }
  for (int k = 0; k < 6; k++) {
    const int64_t d = tensor_diff(ta[k], tb[k]);
    if (d == -1) continue;
    if (d == -2) snprintf(out, len, "%s: dtype/shape/presence differ", names[k]);
    else snprintf(out, len, "%s differs at byte %lld (element %lld)", names[k], (long long)d,
                  (long long)(d / (int64_t)glq_dtype_size(ta[k]->dtype)));
    return;
  }
}

static int stats_equal(const glq_quant_stats *a, const glq_quant_stats *b) {
  return a->sqnr_db == b->sqnr_db && a->proxy_loss == b->proxy_loss && a->proxy_loss_orig == b->proxy_loss_orig &&
         a->bpw == b->bpw && a->damp_used == b->damp_used && a->fallback == b->fallback &&
         a->wscale_rel == b->wscale_rel && a->resid_scale == b->resid_scale;
}

/* fraction of 8-blocks whose stage-1 and (3/4 bits) stage-2 indices both agree */
static double agreement(const glq_quant_artifacts *a, const glq_quant_artifacts *b) {
  const int64_t nv = glq_tensor_numel(&a->qidxs);
  const int16_t *a1 = glq_tensor_data(&a->qidxs), *b1 = glq_tensor_data(&b->qidxs);
  const int16_t *a2 = a->qidxs2.st ? glq_tensor_data(&a->qidxs2) : NULL, *b2 = a2 ? glq_tensor_data(&b->qidxs2) : NULL;
  int64_t same = 0;
  for (int64_t i = 0; i < nv; i++) same += a1[i] == b1[i] && (!a2 || a2[i] == b2[i]);
  return nv ? (double)same / (double)nv : 1.0;
}

static int quant_run(const layer *L, const glq_quant_opts *base, glq_cuda_ldlq *q, glq_quant_artifacts *a,
                     glq_quant_stats *st) {
  glq_ldlq_backend be = {q, glq_cuda_ldlq_set_factor, glq_cuda_ldlq_sweep, glq_cuda_ldlq_proxy_sum,
                         glq_cuda_ldlq_trellis_viterbi};
  glq_quant_opts o = *base;
  o.backend = q ? &be : NULL;
  return glq_quantize_linear(L->w, L->m, L->n, L->h, &o, a, st);
}

/* exact: n_pad <= 128, byte-identical artifacts and equal stats; else the agreement / loss-ratio bounds */
static void quant_case(int64_t m, int64_t n, int bits, int hess, int feedback, int search, int tune) {
  layer L = make_layer(m, n, hess);
  glq_quant_opts o;
  glq_quant_opts_default(&o);
  o.bits = bits, o.feedback = feedback, o.scale_search = search, o.tune_iters = tune, o.name = "ldlq_check";
  glq_quant_artifacts ac, ag;
  glq_quant_stats sc, sg;
  char name[128], diff[160];
  snprintf(name, sizeof name, "quant %4lldx%-4lld %d bits%s%s%s%s", (long long)m, (long long)n, bits,
           hess ? "" : " H=I", feedback ? "" : " no-feedback", search ? "" : " no-search", tune ? " tune=1" : "");
  const int exact = glq_rht_pad(n) <= 128;
  if (quant_run(&L, &o, NULL, &ac, &sc)) {
    report(0, "%s: CPU failed: %s", name, glq_errmsg());
  } else if (quant_run(&L, &o, g_q, &ag, &sg)) {
    report(0, "%s: GPU failed: %s", name, glq_errmsg());
    glq_quant_artifacts_free(&ac);
  } else {
    artifacts_diff(&ac, &ag, diff, sizeof diff);
    const double agree = agreement(&ac, &ag), ratio = sg.proxy_loss / sc.proxy_loss;
    if (exact) {
      const int ok = !diff[0] && stats_equal(&sc, &sg);
      report(ok, "%s: %s%s (agree %.5f, loss %.9g vs %.9g, wscale_rel %g vs %g, rs %g vs %g)", name,
             diff[0] ? diff : "artifacts identical", stats_equal(&sc, &sg) ? ", stats equal" : ", STATS DIFFER", agree,
             sc.proxy_loss, sg.proxy_loss, sc.wscale_rel, sg.wscale_rel, sc.resid_scale, sg.resid_scale);
    } else {
      const int ok = agree >= MIN_AGREE && fabs(ratio - 1) <= MAX_DLOSS;
      report(ok, "%s: agree %.5f (>= %.2f), loss ratio %.6f (|r-1| <= %.2g), wscale_rel %g vs %g, rs %g vs %g%s; "
             "CPU %.2fs GPU %.2fs", name, agree, MIN_AGREE, ratio, MAX_DLOSS, sc.wscale_rel, sg.wscale_rel,
             sc.resid_scale, sg.resid_scale, diff[0] ? "" : ", identical", sc.seconds, sg.seconds);
    }
    glq_quant_artifacts_free(&ac);
    glq_quant_artifacts_free(&ag);
  }
  layer_free(&L);
}

/* the same GPU quantization on g_q twice and on a fresh object: byte-identical artifacts */
static void determinism_case(int64_t m, int64_t n, int bits) {
  layer L = make_layer(m, n, 1);
  glq_quant_opts o;
  glq_quant_opts_default(&o);
  o.bits = bits, o.name = "ldlq_check";
  glq_quant_artifacts a[3];
  glq_quant_stats st[3];
  glq_cuda_ldlq *fresh = NULL;
  int rc = 0, done = 0;
  char d1[160] = "", d2[160] = "";
  for (; done < 3 && !rc; done++) {
    if (done == 2 && (rc = glq_cuda_ldlq_create(&fresh))) break;
    rc = quant_run(&L, &o, done < 2 ? g_q : fresh, &a[done], &st[done]);
    if (rc) break;
  }
  if (!rc) {
    artifacts_diff(&a[0], &a[1], d1, sizeof d1);
    artifacts_diff(&a[0], &a[2], d2, sizeof d2);
  }
  const int same = !rc && !d1[0] && !d2[0] && stats_equal(&st[0], &st[1]) && stats_equal(&st[0], &st[2]);
  report(same, "determinism %lldx%lld %d bits: %s%s | rerun: %s | fresh object: %s", (long long)m, (long long)n, bits,
         rc ? "error: " : "", rc ? glq_errmsg() : "", rc ? "-" : d1[0] ? d1 : "identical",
         rc ? "-" : d2[0] ? d2 : "identical");
  for (int i = 0; i < done; i++) glq_quant_artifacts_free(&a[i]);
  glq_cuda_ldlq_free(fresh);
  layer_free(&L);
}

/* ---- 4. error paths ---- */

static void error_checks(void) {
  float x[5 * 8];
  int32_t ic[5], ig[5];
  for (int i = 0; i < 40; i++) x[i] = (float)gauss();
  glq_error(GLQ_OK, "%s", "");
  int rc = glq_cuda_e8_encode(g_q, x, 5, 100, ig);
  report(rc != 0 && glq_errmsg()[0], "error: size 100 -> rc %d, \"%s\"", rc, glq_errmsg());
  rc = glq_cuda_e8_encode(g_q, x, 0, 65536, ig);
  report(rc == 0, "error: n = 0 is a no-op -> rc %d %s", rc, rc ? glq_errmsg() : "");
  static const struct { int vec, coord; float v; } bad[3] = {{3, 2, NAN}, {0, 7, INFINITY}, {4, 0, -INFINITY}};
  for (int k = 0; k < 3; k++) {
    float y[5 * 8];
    memcpy(y, x, sizeof y);
    y[8 * bad[k].vec + bad[k].coord] = bad[k].v;
    const int rcc = glq_e8_encode(glq_e8_codebook_get(65536), y, 5, ic);
    glq_error(GLQ_OK, "%s", "");
    rc = glq_cuda_e8_encode(g_q, y, 5, 65536, ig);
    char want[32];
    snprintf(want, sizeof want, "vector %d", bad[k].vec);
    report(rc == GLQ_EINVAL && rc == rcc && strstr(glq_errmsg(), want),
           "error: %g at vector %d -> rc %d (CPU %d), \"%s\" (must name \"%s\")", bad[k].v, bad[k].vec, rc, rcc,
           glq_errmsg(), want);
  }
}

int main(void) {
  char dev[256];
  g_rng = 0x5DEECE66Dull;
  if (glq_cuda_describe(dev, sizeof dev)) {
    fprintf(stderr, "ldlq_check: needs a CUDA GPU: %s\n", dev);
    return 1;
  }
  printf("ldlq_check on %s\n", dev);
  if (glq_cuda_ldlq_create(&g_q)) {
    fprintf(stderr, "ldlq_check: %s\n", glq_errmsg());
    return 1;
  }
  encode_checks(65536);
  encode_checks(256);

  /* n_pad <= 128: byte-identical (n = 117, m = 17 exercise the padding of both dimensions) */
  for (int bits = 2; bits <= 4; bits++) {
    quant_case(40, 64, bits, 1, 1, 1, 0);
    quant_case(24, 128, bits, 1, 1, 1, 0);
    quant_case(17, 117, bits, 1, 1, 1, 0);
    quant_case(64, 128, bits, 1, 1, 0, 0);
    quant_case(64, 128, bits, 1, 0, 1, 0);
    quant_case(40, 64, bits, 0, 1, 1, 0);
  }
  quant_case(40, 120, 3, 1, 1, 1, 1); /* refinement pass after the GPU sweep (it stays on the CPU) */
  /* larger n: the group GEMM sums in another order */
  for (int bits = 2; bits <= 4; bits++) {
    quant_case(128, 512, bits, 1, 1, 1, 0);
    quant_case(96, 1024, bits, 1, 1, 1, 0);
  }
  quant_case(96, 1024, 3, 0, 1, 1, 0);
  determinism_case(96, 1024, 4);
  error_checks();

  glq_cuda_ldlq_free(g_q);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}

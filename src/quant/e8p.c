/* e8p.c - E8P and E81B codebooks (layout in e8p.h) and their exact nearest-codeword searches.
 *
 * E8P search. With C = σ⊙a + δ·1 (δ = ±1/4, σ signs of the right parity), the key
 *   ||C||² - 2<C,x> = ||a||² + 1/2 - 2δ·Σx - 2·Σ σ_i a_i (x_i - δ)
 * is smallest for σ_i = sign(x_i - δ); if that pattern has the wrong parity for a, the cheapest fix flips
 * the coordinate with the smallest a_i·|x_i - δ| (cost 4·a_i·|x_i - δ|; free when some x_i = δ).
 * So 2 x 256 closed-form keys in double give every (δ, A)'s best; those within the rounding bound of the
 * minimum are rebuilt exactly (signs from exact comparisons, the flipped coordinate by exact sums) as
 * the lowest index of their optimal patterns, and decided against each other exactly (Shewchuk
 * expansion of the key difference: every product 4c·x is exact in double). */
#include "e8p.h"
#include "e8_exact.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../core/pool.h"

#define NA 256
static const int SHUF[8] = {0, 4, 1, 5, 2, 6, 3, 7};    /* coordinate i's sign is bit SHUF[i] */
static const int PERM[8] = {0, 2, 4, 6, 1, 3, 5, 7};    /* nibble k holds coordinate PERM[k] */

static struct {
  pthread_once_t once;
  int status;
  int8_t abs2[NA][8];        /* 2·a: odd, 1..7 */
  int odd[NA];               /* sum(a) odd: coordinate 7 stored negative */
  double ad[8][NA], an[NA];  /* a by coordinate, ||a||² */
  uint32_t packed[NA];
  int8_t *t4;                /* 65536 x 8: 4·C */
  float *planes;             /* 9 x 65536: 4·C by coordinate, then ||C||² (brute force) */
  int8_t e81b[GLQ_E81B_SIZE][8]; /* 2·c */
  int8_t e81b4[GLQ_E81B_SIZE][8]; /* 4·c */
  double bd[8][GLQ_E81B_SIZE], bn[GLQ_E81B_SIZE];
} G = {.once = PTHREAD_ONCE_INIT};

/* ---------- tables ---------- */

static const int8_t NORM12[29][8] = { /* QuIP#'s 29 norm² 12 vectors, times 2 */
    {3, 1, 1, 1, 3, 3, 3, 3}, {1, 3, 1, 1, 3, 3, 3, 3}, {1, 1, 3, 1, 3, 3, 3, 3}, {1, 1, 1, 3, 3, 3, 3, 3},
    {3, 3, 3, 1, 3, 3, 1, 1}, {3, 3, 3, 1, 3, 1, 3, 1}, {3, 3, 3, 1, 1, 3, 3, 1}, {3, 3, 3, 1, 3, 1, 1, 3},
    {3, 3, 3, 1, 1, 3, 1, 3}, {3, 3, 3, 1, 1, 1, 3, 3}, {3, 3, 1, 3, 3, 3, 1, 1}, {3, 3, 1, 3, 3, 1, 3, 1},
    {3, 3, 1, 3, 1, 3, 3, 1}, {3, 3, 1, 3, 3, 1, 1, 3}, {3, 3, 1, 3, 1, 3, 1, 3}, {3, 3, 1, 3, 1, 1, 3, 3},
    {3, 1, 3, 3, 3, 3, 1, 1}, {3, 1, 3, 3, 3, 1, 3, 1}, {3, 1, 3, 3, 1, 3, 3, 1}, {3, 1, 3, 3, 3, 1, 1, 3},
    {3, 1, 3, 3, 1, 3, 1, 3}, {1, 3, 3, 3, 1, 1, 3, 3}, {1, 3, 3, 3, 3, 3, 1, 1}, {1, 3, 3, 3, 3, 1, 3, 1},
    {1, 3, 3, 3, 1, 3, 3, 1}, {1, 3, 3, 3, 3, 1, 1, 3}, {1, 3, 3, 3, 1, 3, 1, 3}, {1, 1, 3, 3, 1, 3, 3, 3},
    {3, 3, 1, 1, 3, 3, 3, 1}};

static void decode_packed(uint32_t idx, int8_t *k4) {
  const uint32_t s0 = idx & 255, code = G.packed[(idx >> 8) & 255];
  const uint32_t p = (uint32_t)__builtin_parity(s0), s = s0 ^ p;
  for (int i = 0; i < 8; i++) {
    const int b = SHUF[i];
    int v = 2 * ((int)((code >> (4 * b)) & 15) - 8); /* 4·(nibble - 8)/2 */
    if ((s >> b) & 1) v = -v;
    k4[i] = (int8_t)(v + (p ? -1 : 1));
  }
}

static void init_once(void) {
  int na = 0;
  for (int c = 0; c < 65536; c++) { /* 2a in {1,3,5,7}^8 in lexicographic order (first coordinate slowest) */
    int8_t v[8];
    int n2 = 0;
    for (int i = 0; i < 8; i++) { v[i] = (int8_t)(2 * ((c >> (2 * (7 - i))) & 3) + 1); n2 += v[i] * v[i]; }
    if (n2 <= 40) memcpy(G.abs2[na++], v, 8);
  }
  if (na != 227) { G.status = glq_error(GLQ_ENUMERIC, "e8p: %d absolute vectors of norm² <= 10, expected 227", na); return; }
  for (int r = 0; r < 29; r++) memcpy(G.abs2[227 + r], NORM12[r], 8);
  for (int a = 0; a < NA; a++) {
    int sum2 = 0, n2 = 0;
    for (int i = 0; i < 8; i++) sum2 += G.abs2[a][i], n2 += G.abs2[a][i] * G.abs2[a][i];
    G.odd[a] = (sum2 / 2) & 1; /* sum(a) = sum2 / 2 (sum2 is even: 8 odd terms) */
    G.an[a] = n2 / 4.0;
    uint32_t code = 0;
    for (int k = 0; k < 8; k++) {
      int v = G.abs2[a][PERM[k]];
      if (k == 7 && G.odd[a]) v = -v;
      code |= (uint32_t)(v + 8) << (4 * k);
    }
    G.packed[a] = code;
    for (int i = 0; i < 8; i++) G.ad[i][a] = G.abs2[a][i] / 2.0;
  }
  G.t4 = malloc((size_t)GLQ_E8P_SIZE * 8);
  G.planes = malloc((size_t)GLQ_E8P_SIZE * 9 * sizeof(float));
  if (!G.t4 || !G.planes) { G.status = glq_error(GLQ_ENOMEM, "e8p: out of memory for the tables"); return; }
  for (uint32_t c = 0; c < GLQ_E8P_SIZE; c++) {
    int8_t *k = G.t4 + 8 * (size_t)c;
    decode_packed(c, k);
    int n2 = 0;
    for (int i = 0; i < 8; i++) G.planes[(size_t)i * GLQ_E8P_SIZE + c] = k[i], n2 += k[i] * k[i];
    G.planes[(size_t)8 * GLQ_E8P_SIZE + c] = n2 / 16.0f;
  }
  /* E81B: integer points of norm² <= 2, then half-integer ones with an even sum, lexicographic; norm² 4 axes */
  int nb = 0; /* coordinates within norm² 2 are -1, 0, 1 (integers) or -1/2, 1/2: lexicographic over those */
  for (int c = 0; c < 6561; c++) {
    int8_t v[8];
    int n2 = 0, sum2 = 0, r = c;
    for (int i = 7; i >= 0; i--, r /= 3) v[i] = (int8_t)(2 * (r % 3 - 1)), n2 += v[i] * v[i], sum2 += v[i];
    if (n2 <= 8 && (sum2 / 2) % 2 == 0) memcpy(G.e81b[nb++], v, 8);
  }
  for (int c = 0; c < 256; c++) {
    int8_t v[8];
    int sum2 = 0;
    for (int i = 0; i < 8; i++) v[i] = (int8_t)((c >> (7 - i)) & 1 ? 1 : -1), sum2 += v[i];
    if ((sum2 / 2) % 2 == 0) memcpy(G.e81b[nb++], v, 8); /* sum = sum2 / 2, an integer */
  }
  for (int r = 0; r < 15; r++) {
    memset(G.e81b[nb], 0, 8);
    G.e81b[nb++][r % 8] = (int8_t)(r < 8 ? 4 : -4);
  }
  if (nb != GLQ_E81B_SIZE) { G.status = glq_error(GLQ_ENUMERIC, "e81b: %d entries, expected 256", nb); return; }
  for (int j = 0; j < GLQ_E81B_SIZE; j++) {
    int n2 = 0;
    for (int i = 0; i < 8; i++) G.bd[i][j] = G.e81b[j][i] / 2.0, n2 += G.e81b[j][i] * G.e81b[j][i], G.e81b4[j][i] = (int8_t)(2 * G.e81b[j][i]);
    G.bn[j] = n2 / 4.0;
  }
}

int glq_e8p_init(void) {
  pthread_once(&G.once, init_once);
  return G.status ? glq_error(G.status, "e8p: the codebook tables could not be built") : 0;
}

const uint32_t *glq_e8p_packed_abs(void) { return G.t4 ? G.packed : NULL; }
const int8_t *glq_e81b_table_i8(void) { return G.t4 ? &G.e81b[0][0] : NULL; }
const int8_t *glq_e8p_table4(void) { return G.t4; }
const int8_t *glq_e81b_table4(void) { return G.t4 ? &G.e81b4[0][0] : NULL; }

void glq_e8p_decode_one(uint32_t idx, float *out) {
  int8_t k[8];
  decode_packed(idx & 0xFFFF, k);
  for (int i = 0; i < 8; i++) out[i] = 0.25f * k[i];
}

void glq_e8p_decode(const int32_t *idx, int64_t n, float *out) {
  for (int64_t v = 0; v < n; v++) {
    const int8_t *k = G.t4 + 8 * (size_t)(idx[v] & 0xFFFF);
    for (int i = 0; i < 8; i++) out[8 * v + i] = 0.25f * k[i];
  }
}

void glq_e81b_decode(const int32_t *idx, int64_t n, float *out) {
  for (int64_t v = 0; v < n; v++)
    for (int i = 0; i < 8; i++) out[8 * v + i] = 0.5f * G.e81b[idx[v] & 0xFF][i];
}

/* ---------- exact decisions ---------- */

/* 1 if the point ka (4·C, int8) is strictly closer to x than kb, or equally close and ia < ib */
static int exact_closer(const float *x, const int8_t *ka, int32_t ia, const int8_t *kb, int32_t ib) {
  double t[9];
  int na = 0, nb = 0;
  for (int i = 0; i < 8; i++) {
    na += ka[i] * ka[i], nb += kb[i] * kb[i];
    t[i] = -0.5 * (double)(ka[i] - kb[i]) * (double)x[i];
  }
  t[8] = (na - nb) / 16.0;
  int s = glq_exact_sign(t, 9);
  return s < 0 || (s == 0 && ia < ib);
}

/* sign of a_i·|x_i - δ| - a_j·|x_j - δ|, exactly (x_i, x_j != δ) */
static int cost_cmp(const float *x, int A, double delta, int i, int j) {
  const double si = (double)x[i] > delta ? 1 : -1, sj = (double)x[j] > delta ? 1 : -1;
  const double ai = G.ad[i][A], aj = G.ad[j][A];
  double t[4] = {si * ai * x[i], -si * ai * delta, -sj * aj * x[j], sj * aj * delta};
  return glq_exact_sign(t, 4);
}

/* the lowest index among the optimal sign patterns of (p, A) */
static int32_t canonical(const float *x, int p, int A) {
  const double delta = p ? -0.25 : 0.25;
  uint32_t raw = 0, freeb = 0;
  for (int i = 0; i < 8; i++) {
    const int b = SHUF[i];
    const double xi = x[i];
    if (xi == delta) { freeb |= 1u << b; continue; }
    const uint32_t bit = (uint32_t)(xi < delta) ^ (uint32_t)(i == 7 && G.odd[A]) ^ (uint32_t)(b == 0 && p);
    raw |= bit << b;
  }
  if ((uint32_t)__builtin_parity(raw) != (uint32_t)p) {
    if (freeb) {
      raw |= freeb & -freeb; /* a free coordinate: no cost, lowest bit */
    } else {
      uint32_t tied = 0;
      int best = -1;
      for (int i = 0; i < 8; i++) {
        int c = best < 0 ? -1 : cost_cmp(x, A, delta, i, best);
        if (c < 0) best = i, tied = 1u << SHUF[i];
        else if (c == 0) tied |= 1u << SHUF[i];
      }
      uint32_t ones = tied & raw; /* clearing the highest set bit lowers the index most, else set the lowest */
      raw ^= ones ? 1u << (31 - __builtin_clz(ones)) : tied & -tied;
    }
  }
  return (int32_t)((uint32_t)A << 8 | raw);
}

/* ---------- E8P search ---------- */

static int32_t e8p_encode_one(const float *xf) {
  double x[8], sx = 0, sax = 0;
  for (int i = 0; i < 8; i++) x[i] = xf[i], sx += x[i], sax += fabs(x[i]);
  /* each key's rounding error is far below 2^-44·(64 + 16·Σ|x|) */
  const double tol = 0x1p-40 * (64 + 16 * sax);
  double key[2][NA], best = INFINITY;
  for (int p = 0; p < 2; p++) {
    const double delta = p ? -0.25 : 0.25;
    double u[8], S[NA], M[NA];
    int neg = 0;
    for (int i = 0; i < 8; i++) u[i] = fabs(x[i] - delta), neg ^= x[i] < delta;
    for (int a = 0; a < NA; a++) S[a] = 0, M[a] = INFINITY;
    for (int i = 0; i < 8; i++)
      for (int a = 0; a < NA; a++) {
        double t = G.ad[i][a] * u[i];
        S[a] += t;
        M[a] = t < M[a] ? t : M[a];
      }
    const double base = 0.5 - 2 * delta * sx;
    for (int a = 0; a < NA; a++) {
      double k = G.an[a] - 2 * S[a] + base + (G.odd[a] != neg ? 4 * M[a] : 0);
      key[p][a] = k;
      best = k < best ? k : best;
    }
  }
  int32_t champ = -1;
  for (int p = 0; p < 2; p++)
    for (int a = 0; a < NA; a++) {
      if (!(key[p][a] <= best + 2 * tol)) continue;
      int32_t c = canonical(xf, p, a);
      if (champ < 0 || exact_closer(xf, G.t4 + 8 * (size_t)c, c, G.t4 + 8 * (size_t)champ, champ)) champ = c;
    }
  return champ;
}

/* ---------- E81B search: all 256 keys in double, exact among the near-minimal ---------- */

static int32_t e81b_encode_one(const float *xf) {
  double x[8], sax = 0, key[GLQ_E81B_SIZE], best = INFINITY;
  for (int i = 0; i < 8; i++) x[i] = xf[i], sax += fabs(x[i]);
  const double tol = 0x1p-40 * (64 + 16 * sax);
  for (int j = 0; j < GLQ_E81B_SIZE; j++) key[j] = G.bn[j];
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < GLQ_E81B_SIZE; j++) key[j] -= 2 * G.bd[i][j] * x[i];
  for (int j = 0; j < GLQ_E81B_SIZE; j++) best = key[j] < best ? key[j] : best;
  int32_t champ = -1;
  int8_t kc[8], kj[8];
  for (int j = 0; j < GLQ_E81B_SIZE; j++) {
    if (!(key[j] <= best + 2 * tol)) continue;
    for (int i = 0; i < 8; i++) kj[i] = (int8_t)(2 * G.e81b[j][i]);
    if (champ < 0 || exact_closer(xf, kj, j, kc, champ)) champ = j, memcpy(kc, kj, 8);
  }
  return champ;
}

/* ---------- batch drivers ---------- */

typedef struct {
  const float *x;
  int32_t *idx;
  int32_t (*one)(const float *);
} job;

static void range(void *ctx, int64_t lo, int64_t hi) {
  const job *j = ctx;
  for (int64_t i = lo; i < hi; i++) j->idx[i] = j->one(j->x + 8 * i);
}

static int check_input(const float *x, int64_t n, const char *fn) {
  int rc = glq_e8p_init();
  if (rc) return rc;
  if (n < 0) return glq_error(GLQ_EINVAL, "%s: n = %lld is negative", fn, (long long)n);
  for (int64_t i = 0; i < 8 * n; i++)
    if (!isfinite(x[i]))
      return glq_error(GLQ_EINVAL, "%s: x[%lld] (vector %lld) is not finite", fn, (long long)i, (long long)(i / 8));
  return 0;
}

static int run(const float *x, int64_t n, int32_t *idx, int32_t (*one)(const float *), int64_t chunk, const char *fn) {
  int rc = check_input(x, n, fn);
  if (rc) return rc;
  job j = {x, idx, one};
  glq_parallel_for(n, chunk, range, &j);
  return 0;
}

int glq_e8p_encode(const float *x, int64_t n, int32_t *idx) { return run(x, n, idx, e8p_encode_one, 256, "e8p encode"); }
int glq_e81b_encode(const float *x, int64_t n, int32_t *idx) { return run(x, n, idx, e81b_encode_one, 256, "e81b encode"); }

/* ---------- glq 0.8.16's packed layouts ---------- */

static int pack_shape(int64_t m, int64_t nb, int e8p, const char *fn) {
  if (m < 0 || nb < 0 || (e8p && m % 16) || nb % 8)
    return glq_error(GLQ_EINVAL, "%s: %lld x %lld indices: rows must be a multiple of %d and index columns of 8", fn,
                     (long long)m, (long long)nb, e8p ? 16 : 1);
  return 0;
}

int glq_e8p_pack(const int32_t *idx, int64_t m, int64_t nb, int64_t *packed) {
  int rc = pack_shape(m, nb, 1, "e8p pack");
  for (int64_t i = 0; !rc && i < m / 2; i++)
    for (int64_t j = 0; j < nb / 2; j++) {
      uint64_t w = 0;
      for (int k = 0; k < 4; k++) {
        const uint32_t v = (uint32_t)idx[(2 * i + (k & 1)) * nb + 2 * j + (k >> 1)] & 0xFFFF;
        w |= (uint64_t)(v >> 8) << (8 * k);
        for (int s = 0; s < 8; s++) w |= (uint64_t)((v >> s) & 1) << (32 + 4 * s + k);
      }
      packed[((i / 8 * (nb / 8) + j / 4) * 8 + i % 8) * 4 + j % 4] = (int64_t)w;
    }
  return rc;
}

int glq_e8p_unpack(const int64_t *packed, int64_t m, int64_t nb, int32_t *idx) {
  int rc = pack_shape(m, nb, 1, "e8p unpack");
  for (int64_t i = 0; !rc && i < m / 2; i++)
    for (int64_t j = 0; j < nb / 2; j++) {
      const uint64_t w = (uint64_t)packed[((i / 8 * (nb / 8) + j / 4) * 8 + i % 8) * 4 + j % 4];
      for (int k = 0; k < 4; k++) {
        uint32_t v = (uint32_t)((w >> (8 * k)) & 255) << 8;
        for (int s = 0; s < 8; s++) v |= (uint32_t)((w >> (32 + 4 * s + k)) & 1) << s;
        idx[(2 * i + (k & 1)) * nb + 2 * j + (k >> 1)] = (int32_t)v;
      }
    }
  return rc;
}

int glq_e81b_pack(const int32_t *idx, int64_t m, int64_t nb, int64_t *packed) {
  int rc = pack_shape(m, nb, 0, "e81b pack");
  for (int64_t i = 0; !rc && i < m * nb; i++)
    if ((uint32_t)idx[i] >= GLQ_E81B_SIZE)
      rc = glq_error(GLQ_EINVAL, "e81b pack: index %lld is %d, not below 256", (long long)i, idx[i]);
  for (int64_t r = 0; !rc && r < m; r++)
    for (int64_t k = 0; k < nb / 8; k++) {
      uint64_t w = 0;
      for (int i = 0; i < 8; i++) w |= (uint64_t)idx[r * nb + 8 * k + i] << (8 * i);
      packed[r * (nb / 8) + k] = (int64_t)w;
    }
  return rc;
}

int glq_e81b_unpack(const int64_t *packed, int64_t m, int64_t nb, int32_t *idx) {
  int rc = pack_shape(m, nb, 0, "e81b unpack");
  for (int64_t r = 0; !rc && r < m; r++)
    for (int64_t k = 0; k < nb / 8; k++)
      for (int i = 0; i < 8; i++) idx[r * nb + 8 * k + i] = (int32_t)(((uint64_t)packed[r * (nb / 8) + k] >> (8 * i)) & 255);
  return rc;
}

/* ---------- brute-force references (tests) ---------- */

__attribute__((optimize("tree-vectorize")))
static float keys_f32(const float *x, float *keyf) {
  const float *pl = G.planes, *nrm = G.planes + (size_t)8 * GLQ_E8P_SIZE;
  float h[8], m = INFINITY;
  for (int i = 0; i < 8; i++) h[i] = 0.5f * x[i];
  for (int j = 0; j < GLQ_E8P_SIZE; j++) keyf[j] = nrm[j];
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < GLQ_E8P_SIZE; j++) keyf[j] -= pl[(size_t)i * GLQ_E8P_SIZE + j] * h[i];
  for (int j = 0; j < GLQ_E8P_SIZE; j++) m = keyf[j] < m ? keyf[j] : m;
  return m;
}

static int32_t e8p_brute_one(const float *xf, float *keyf) {
  double sax = 0;
  for (int i = 0; i < 8; i++) sax += fabs((double)xf[i]);
  /* float keys: each within 2^-20·(16 + 8·Σ|x|) of the truth; skipped when that could overflow */
  float thr = INFINITY;
  if (sax < 0x1p60) thr = keys_f32(xf, keyf) + (float)(0x1p-17 * (16 + 8 * sax));
  const double tol = 0x1p-40 * (64 + 16 * sax);
  double best = INFINITY;
  int32_t champ = -1;
  for (int32_t j = 0; j < GLQ_E8P_SIZE; j++) {
    if (thr < INFINITY && !(keyf[j] <= thr)) continue;
    const int8_t *k = G.t4 + 8 * (size_t)j;
    double s = 0;
    int n2 = 0;
    for (int i = 0; i < 8; i++) s += k[i] * (double)xf[i], n2 += k[i] * k[i];
    double key = n2 / 16.0 - 0.5 * s;
    if (champ < 0 || key < best - tol) champ = j, best = key;
    else if (key <= best + tol && exact_closer(xf, k, j, G.t4 + 8 * (size_t)champ, champ)) champ = j, best = key;
  }
  return champ;
}

static void brute_range(void *ctx, int64_t lo, int64_t hi) {
  const job *j = ctx;
  float *keyf = malloc(GLQ_E8P_SIZE * sizeof *keyf);
  for (int64_t i = lo; i < hi; i++) j->idx[i] = keyf ? e8p_brute_one(j->x + 8 * i, keyf) : -1;
  free(keyf);
}

int glq_e8p_encode_bruteforce(const float *x, int64_t n, int32_t *idx) {
  int rc = check_input(x, n, "e8p brute force");
  if (rc) return rc;
  job j = {x, idx, NULL};
  glq_parallel_for(n, 64, brute_range, &j);
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0) return glq_error(GLQ_ENOMEM, "e8p brute force: out of memory");
  return 0;
}

static int32_t e81b_brute_one(const float *xf) {
  double sax = 0;
  for (int i = 0; i < 8; i++) sax += fabs((double)xf[i]);
  const double tol = 0x1p-40 * (64 + 16 * sax);
  double best = INFINITY;
  int32_t champ = -1;
  int8_t kj[8], kc[8];
  for (int32_t j = 0; j < GLQ_E81B_SIZE; j++) {
    double s = 0;
    int n2 = 0;
    for (int i = 0; i < 8; i++) kj[i] = (int8_t)(2 * G.e81b[j][i]), s += kj[i] * (double)xf[i], n2 += kj[i] * kj[i];
    double key = n2 / 16.0 - 0.5 * s;
    if (champ < 0 || key < best - tol) champ = j, best = key, memcpy(kc, kj, 8);
    else if (key <= best + tol && exact_closer(xf, kj, j, kc, champ)) champ = j, best = key, memcpy(kc, kj, 8);
  }
  return champ;
}

int glq_e81b_encode_bruteforce(const float *x, int64_t n, int32_t *idx) {
  return run(x, n, idx, e81b_brute_one, 64, "e81b brute force");
}

/* hadamard.c - padding-free orthonormal Hadamard transforms.
 *
 * Construction for dimension n (docs/hadamard.md has the table):
 *   n = 2^k                 Sylvester FWHT, H[i][j] = (-1)^popcount(i&j) / sqrt(n).
 *   n = p * 2^k, 8 | n      H_p (x) H_{2^k} / sqrt(n), where H_p is a +-1 Hadamard matrix of order p
 *                           (smallest p = 2^j * odd(n), j >= 2, p <= MAX_DENSE) built by Paley I
 *                           (q = p-1 prime power, q = 3 mod 4), Paley II (q = p/2-1 prime power,
 *                           q = 1 mod 4) or a Kronecker product of two such matrices.
 *   otherwise (8 | n)       block-diagonal: two Kronecker blocks of sizes as equal as possible,
 *                           else the binary decomposition into powers of two (glq >= 0.2.9).
 * Kind GLQ_HADAMARD_GLQ_BLOCKDIAG (glq >= 0.2.9's transform, for checkpoints it reads): always the
 *                           binary decomposition, n = 2^a + 2^b + ... (a > b > ...), blocks in that
 *                           order from offset 0, each a normalised FWHT; n = 2^k gives the FWHT.
 * Index layout of the Kronecker form: element b*L + a (b < p, a < L = 2^k), so the FWHT runs on
 * contiguous chunks and the dense stage adds whole chunks, both vectorisable.
 * The dense matrices hold exact +-1, the FWHT only adds, and one final multiply scales, so the
 * AVX2 and portable paths run identical IEEE operations in identical order (bit-identical). */
#include "hadamard.h"
#include "../core/error.h"
#include "../core/pool.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DENSE 1024   /* largest dense factor: cost p adds per element */
#define MAX_N ((int64_t)1 << 26)

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

typedef struct factor {
  int p;
  const char *how;       /* "Paley I", "Paley II", "Kronecker" */
  float *s, *st;         /* p x p, entries +-1, and its transpose */
  int symmetric;
  struct factor *next;
} factor;

typedef struct {
  int64_t off, len, L;   /* len = p * L */
  const factor *f;       /* NULL: pure FWHT */
} block;

struct glq_hadamard {
  int64_t n;
  glq_hadamard_kind kind;
  int nblocks;
  block *blocks;
  int symmetric;
  char desc[160];
  struct glq_hadamard *next;
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static glq_hadamard *plans;
static factor *factors;
static int use_avx2 = -1; /* set at first plan; GLQ_NO_AVX2=1 forces the portable path (tests compare both) */

/* ---- finite fields GF(q), q = p^e, only as far as Paley needs: subtraction and squares ---- */

static int prime_power(int64_t q, int *p, int *e) {
  if (q < 2) return 0;
  int64_t d = 2;
  while (d * d <= q && q % d) d++;
  if (q % d) d = q;
  int k = 0;
  while (q % d == 0) q /= d, k++;
  if (q != 1) return 0;
  *p = (int)d, *e = k;
  return 1;
}

/* digits of x in base p (e digits) */
static void digits(int x, int p, int e, int *dg) {
  for (int i = 0; i < e; i++) dg[i] = x % p, x /= p;
}

/* r = a * b mod f over GF(p); polys of degree < e, f monic of degree e (f[e] implied 1) */
static void polymul(const int *a, const int *b, const int *f, int p, int e, int *r) {
  int t[64] = {0};
  for (int i = 0; i < e; i++)
    for (int j = 0; j < e; j++) t[i + j] = (t[i + j] + a[i] * b[j]) % p;
  for (int d = 2 * e - 2; d >= e; d--) {
    int c = t[d];
    if (!c) continue;
    for (int i = 0; i < e; i++) t[d - e + i] = ((t[d - e + i] - c * f[i]) % p + p) % p;
    t[d] = 0;
  }
  memcpy(r, t, (size_t)e * sizeof *r);
}

/* 1 if the monic polynomial g (degree dg) divides the monic f (degree e) over GF(p) */
static int divides(const int *g, int dg, const int *f, int e, int p) {
  int t[33];
  memcpy(t, f, (size_t)e * sizeof *t);
  t[e] = 1;
  for (int d = e; d >= dg; d--) {
    int c = t[d];
    if (!c) continue;
    for (int i = 0; i <= dg; i++) t[d - dg + i] = ((t[d - dg + i] - c * (i == dg ? 1 : g[i])) % p + p) % p;
  }
  for (int i = 0; i < dg; i++)
    if (t[i]) return 0;
  return 1;
}

/* first monic irreducible polynomial of degree e (coefficients f[0..e-1]) by trial division */
static void irreducible(int p, int e, int *f) {
  int64_t count = 1;
  for (int i = 0; i < e; i++) count *= p;
  for (int64_t c = 0; c < count; c++) {
    digits((int)c, p, e, f);
    int ok = f[0] != 0;
    for (int dg = 1; ok && 2 * dg <= e; dg++) {
      int64_t gc = 1;
      for (int i = 0; i < dg; i++) gc *= p;
      for (int64_t x = 0; ok && x < gc; x++) {
        int gd[32];
        digits((int)x, p, dg, gd);
        if (divides(gd, dg, f, e, p)) ok = 0;
      }
    }
    if (ok) return;
  }
}

/* chi[x] for x in GF(q) encoded base p: 0 at 0, +1 on squares, -1 otherwise; NULL on ENOMEM */
static signed char *quadratic_character(int q, int p, int e) {
  signed char *chi = calloc((size_t)q, 1);
  if (!chi) return NULL;
  int f[32] = {0}, a[32], r[32];
  if (e > 1) irreducible(p, e, f);
  for (int x = 1; x < q; x++) chi[x] = -1;
  for (int x = 1; x < q; x++) {
    int sq;
    if (e == 1) {
      sq = (int)((int64_t)x * x % p);
    } else {
      digits(x, p, e, a);
      polymul(a, a, f, p, e, r);
      sq = 0;
      for (int i = e - 1; i >= 0; i--) sq = sq * p + r[i];
    }
    chi[sq] = 1;
  }
  return chi;
}

static int gf_sub(int a, int b, int p, int e) {
  int r = 0, mul = 1;
  for (int i = 0; i < e; i++) {
    int d = ((a % p) - (b % p) + p) % p;
    r += d * mul;
    mul *= p, a /= p, b /= p;
  }
  return r;
}

/* ---- dense +-1 Hadamard factors ---- */

static int paley_kind(int p) {
  int pp, e;
  if (prime_power(p - 1, &pp, &e) && (p - 1) % 4 == 3) return 1;
  if (p % 2 == 0 && prime_power(p / 2 - 1, &pp, &e) && (p / 2 - 1) % 4 == 1) return 2;
  return 0;
}

/* a split p = a*b with both Paley-constructible (a <= b), or 0 */
static int kron_split(int p) {
  for (int a = 12; a * a <= p; a += 4)
    if (p % a == 0 && paley_kind(a) && paley_kind(p / a)) return a;
  return 0;
}

static int constructible(int p) { return p <= MAX_DENSE && (paley_kind(p) || kron_split(p)); }

/* fill s (p x p) with a Paley matrix; returns 0 or GLQ_ENOMEM */
static int build_paley(int p, int kind, signed char *s) {
  int q = kind == 1 ? p - 1 : p / 2 - 1, pp = 0, e = 0;
  prime_power(q, &pp, &e);
  signed char *chi = quadratic_character(q, pp, e);
  if (!chi) return GLQ_ENOMEM;
  int c = q + 1; /* core matrix order */
  for (int i = 0; i < c; i++)
    for (int j = 0; j < c; j++) {
      int v;
      if (i == 0 && j == 0) v = 0;
      else if (i == 0) v = 1;
      else if (j == 0) v = kind == 1 ? -1 : 1;
      else v = chi[gf_sub(i - 1, j - 1, pp, e)];
      if (kind == 1) {
        s[i * p + j] = (signed char)(v + (i == j)); /* I + S, S skew */
      } else {
        /* 0 -> [[1,-1],[-1,-1]], +-1 -> +-[[1,1],[1,-1]] */
        for (int a = 0; a < 2; a++)
          for (int b = 0; b < 2; b++)
            s[(2 * i + a) * p + 2 * j + b] =
                (signed char)(v ? v * (a && b ? -1 : 1) : (a || b ? -1 : 1));
      }
    }
  free(chi);
  return 0;
}

/* s s^T == p I checked exactly on two pseudo-random integer vectors (guards the field code) */
static int verify(const signed char *s, int p) {
  int64_t v[MAX_DENSE], w[MAX_DENSE];
  for (int t = 0; t < 2; t++) {
    for (int i = 0; i < p; i++) v[i] = (int64_t)((i * 2654435761u + t * 97u) % 1000u) - 500;
    for (int j = 0; j < p; j++) {
      int64_t acc = 0;
      for (int i = 0; i < p; i++) acc += s[i * p + j] * v[i];
      w[j] = acc;
    }
    for (int i = 0; i < p; i++) {
      int64_t acc = 0;
      for (int j = 0; j < p; j++) acc += s[i * p + j] * w[j];
      if (acc != (int64_t)p * v[i]) return 0;
    }
  }
  return 1;
}

static int build_signs(int p, signed char *s, const char **how) {
  int kind = paley_kind(p), rc;
  if (kind) {
    *how = kind == 1 ? "Paley I" : "Paley II";
    return build_paley(p, kind, s);
  }
  int a = kron_split(p), b = p / a;
  signed char *sa = malloc((size_t)a * a), *sb = malloc((size_t)b * b);
  const char *dummy;
  rc = (!sa || !sb) ? GLQ_ENOMEM : build_signs(a, sa, &dummy);
  if (!rc) rc = build_signs(b, sb, &dummy);
  if (!rc)
    for (int i = 0; i < p; i++)
      for (int j = 0; j < p; j++) s[i * p + j] = (signed char)(sa[(i / b) * a + j / b] * sb[(i % b) * b + j % b]);
  free(sa);
  free(sb);
  *how = "Kronecker";
  return rc;
}

/* cached factor of order p (cache_mu held) */
static int get_factor(int p, const factor **out) {
  for (factor *f = factors; f; f = f->next)
    if (f->p == p) return *out = f, 0;
  factor *f = calloc(1, sizeof *f);
  signed char *s = malloc((size_t)p * p);
  int rc = GLQ_ENOMEM;
  if (f && s) {
    f->s = malloc((size_t)p * p * sizeof(float));
    f->st = malloc((size_t)p * p * sizeof(float));
    rc = (f->s && f->st) ? build_signs(p, s, &f->how) : GLQ_ENOMEM;
  }
  if (!rc && !verify(s, p)) rc = glq_error(GLQ_ENUMERIC, "hadamard: internal error: order-%d construction is not Hadamard", p);
  else if (rc) glq_error(rc, "hadamard: out of memory building the order-%d factor", p);
  if (rc) {
    if (f) free(f->s), free(f->st);
    free(f);
    free(s);
    return rc;
  }
  f->p = p;
  f->symmetric = 1;
  for (int i = 0; i < p; i++)
    for (int j = 0; j < p; j++) {
      f->s[i * p + j] = s[i * p + j];
      f->st[j * p + i] = s[i * p + j];
      if (s[i * p + j] != s[j * p + i]) f->symmetric = 0;
    }
  free(s);
  f->next = factors;
  factors = f;
  *out = f;
  return 0;
}

/* ---- planning ---- */

/* Kronecker form of len: dense order *p (1 = pure FWHT) times 2^k; 0 if none */
static int kron_form(int64_t len, int *p) {
  if (len < 1) return 0;
  int64_t odd = len, pw = 1;
  while (odd % 2 == 0) odd /= 2, pw *= 2;
  if (odd == 1) return *p = 1, 1;
  for (int64_t c = odd * 4; c <= MAX_DENSE && pw * odd % c == 0 && c <= len; c *= 2)
    if (constructible((int)c)) return *p = (int)c, 1;
  return 0;
}

static int supported(int64_t len) {
  int p;
  return len > 0 && kron_form(len, &p);
}

/* Split n into 2 or 3 Kronecker-constructible blocks (multiples of 8) with the largest smallest
 * block; returns the count (0 if none within a bounded search) and the sizes, largest first. */
static int split(int64_t n, int64_t *sz) {
  int64_t best2 = 0, budget = (int64_t)1 << 18; /* size checks; keeps planning of huge sizes bounded */
  for (int64_t c = (n / 2 + 7) / 8 * 8; c < n && !best2 && budget > 0; c += 8, budget--)
    if (supported(c) && supported(n - c)) sz[0] = c, sz[1] = best2 = n - c;
  for (int64_t c = n / 3 / 8 * 8; c > best2 && budget > 0; c -= 8, budget--) /* c: the smallest of three */
    if (supported(c))
      for (int64_t b = c; b <= (n - c) / 2 && budget > 0; b += 8, budget--)
        if (supported(b) && supported(n - c - b)) {
          sz[0] = n - c - b, sz[1] = b, sz[2] = c;
          return 3;
        }
  return best2 ? 2 : 0;
}

static int add_block(glq_hadamard *h, int64_t off, int64_t len) {
  int p;
  kron_form(len, &p);
  block *b = &h->blocks[h->nblocks++];
  b->off = off, b->len = len, b->L = len / p, b->f = NULL;
  if (p > 1) return get_factor(p, &b->f);
  return 0;
}

static void describe(glq_hadamard *h) {
  size_t o = 0;
  for (int i = 0; i < h->nblocks && o < sizeof h->desc; i++) {
    const block *b = &h->blocks[i];
    const char *sep = i ? " + " : (h->nblocks > 1 ? "blockdiag " : "");
    if (b->f)
      o += (size_t)snprintf(h->desc + o, sizeof h->desc - o, "%sH%d (%s) (x) FWHT %lld", sep, b->f->p, b->f->how,
                            (long long)b->L);
    else
      o += (size_t)snprintf(h->desc + o, sizeof h->desc - o, "%sFWHT %lld", sep, (long long)b->L);
  }
}

static int make_plan(int64_t n, glq_hadamard_kind kind, glq_hadamard **out) {
  glq_hadamard *h = calloc(1, sizeof *h);
  int p, rc = 0;
  if (!h || !(h->blocks = calloc(64, sizeof(block)))) {
    free(h);
    return glq_error(GLQ_ENOMEM, "hadamard: out of memory planning n=%lld", (long long)n);
  }
  h->n = n;
  h->kind = kind;
  if (kind == GLQ_HADAMARD_GLQ_BLOCKDIAG) {
    int64_t off = 0;
    for (int64_t pw = (int64_t)1 << 62; pw >= 1 && !rc; pw >>= 1)
      if (n & pw) rc = add_block(h, off, pw), off += pw;
  } else if (kron_form(n, &p)) {
    rc = add_block(h, 0, n);
  } else {
    int64_t sz[3], off = 0;
    int nb = split(n, sz);
    for (int i = 0; i < nb && !rc; off += sz[i], i++) rc = add_block(h, off, sz[i]);
    for (int64_t pw = (int64_t)1 << 62; !nb && pw >= 8 && !rc; pw >>= 1)
      if ((n - off) & pw) rc = add_block(h, off, pw), off += pw;
  }
  if (rc) {
    free(h->blocks);
    free(h);
    return rc;
  }
  h->symmetric = 1;
  for (int i = 0; i < h->nblocks; i++)
    if (h->blocks[i].f && !h->blocks[i].f->symmetric) h->symmetric = 0;
  describe(h);
  *out = h;
  return 0;
}


int glq_hadamard_plan(int64_t n, glq_hadamard_kind kind, const glq_hadamard **out) {
  if (kind != GLQ_HADAMARD_DEFAULT && kind != GLQ_HADAMARD_GLQ_BLOCKDIAG)
    return glq_error(GLQ_EINVAL, "hadamard: unknown transform kind %d", (int)kind);
  if (kind == GLQ_HADAMARD_GLQ_BLOCKDIAG && (n < 1 || n > MAX_N))
    return glq_error(GLQ_EUNSUPPORTED, "hadamard: block-diagonal size %lld is outside 1 .. 2^26", (long long)n);
  if (kind == GLQ_HADAMARD_DEFAULT && (n < 1 || n > MAX_N || ((n & (n - 1)) && n % 8)))
    return glq_error(GLQ_EUNSUPPORTED,
                     "hadamard: size %lld is neither a power of two nor a multiple of 8 up to 2^26 (pad to a multiple of 8)",
                     (long long)n);
  pthread_mutex_lock(&cache_mu);
  if (use_avx2 < 0) {
    const char *e = getenv("GLQ_NO_AVX2");
    use_avx2 = __builtin_cpu_supports("avx2") && !(e && *e == '1');
  }
  glq_hadamard *h = plans;
  while (h && (h->n != n || h->kind != kind)) h = h->next;
  int rc = 0;
  if (!h && !(rc = make_plan(n, kind, &h))) {
    h->next = plans;
    plans = h;
  }
  pthread_mutex_unlock(&cache_mu);
  if (!rc) *out = h;
  return rc;
}

int64_t glq_hadamard_dim(const glq_hadamard *h) { return h->n; }
int glq_hadamard_is_symmetric(const glq_hadamard *h) { return h->symmetric; }
const char *glq_hadamard_describe(const glq_hadamard *h) { return h->desc; }
int glq_hadamard_nblocks(const glq_hadamard *h) { return h->nblocks; }

void glq_hadamard_block_at(const glq_hadamard *h, int i, glq_hadamard_block *out) {
  const block *b = &h->blocks[i];
  out->off = b->off, out->len = b->len, out->L = b->L;
  out->p = b->f ? b->f->p : 1;
  out->s = b->f ? b->f->s : NULL;
  out->st = b->f ? b->f->st : NULL;
}

double glq_hadamard_coherence(const glq_hadamard *h) {
  int64_t mn = h->n;
  for (int i = 0; i < h->nblocks; i++)
    if (h->blocks[i].len < mn) mn = h->blocks[i].len;
  return sqrt((double)h->n / (double)mn);
}

/* ---- kernels (one body, compiled for the baseline and for AVX2) ---- */

/* unaligned access through a vector type (GCC lets vectors alias their element type) */
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define VEC(p) (*(v8u *)(p))

/* unnormalised Sylvester FWHT of x[0..L) */
static inline __attribute__((always_inline)) void fwht(float *x, int64_t L) {
  if (L < 8) {
    for (int64_t h = 1; h < L; h <<= 1)
      for (int64_t i = 0; i < L; i += 2 * h)
        for (int64_t j = i; j < i + h; j++) {
          float a = x[j], b = x[j + h];
          x[j] = a + b, x[j + h] = a - b;
        }
    return;
  }
  const v8 s1 = {1, -1, 1, -1, 1, -1, 1, -1}, s2 = {1, 1, -1, -1, 1, 1, -1, -1}, s4 = {1, 1, 1, 1, -1, -1, -1, -1};
  const v8i lo1 = {0, 0, 2, 2, 4, 4, 6, 6}, hi1 = {1, 1, 3, 3, 5, 5, 7, 7};
  const v8i lo2 = {0, 1, 0, 1, 4, 5, 4, 5}, hi2 = {2, 3, 2, 3, 6, 7, 6, 7};
  const v8i lo4 = {0, 1, 2, 3, 0, 1, 2, 3}, hi4 = {4, 5, 6, 7, 4, 5, 6, 7};
  for (int64_t i = 0; i < L; i += 8) {
    v8 v = VEC(x + i);
    v = __builtin_shuffle(v, lo1) + __builtin_shuffle(v, hi1) * s1;
    v = __builtin_shuffle(v, lo2) + __builtin_shuffle(v, hi2) * s2;
    v = __builtin_shuffle(v, lo4) + __builtin_shuffle(v, hi4) * s4;
    VEC(x + i) = v;
  }
  for (int64_t h = 8; h < L; h <<= 1)
    for (int64_t i = 0; i < L; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 8) {
        v8 a = VEC(x + j), b = VEC(x + j + h);
        VEC(x + j) = a + b;
        VEC(x + j + h) = a - b;
      }
}

/* x[b*L + a] <- sum_b' S[b][b'] x[b'*L + a] for all a: tiles of 16 columns (each broadcast of S
 * serves two vectors, four rows of S at a time), then tiles of up to 8; every element sums over b' in the same order */
static inline __attribute__((always_inline)) void dense(float *x, int64_t L, int p, const float *S) {
  v8 in[MAX_DENSE], in2[MAX_DENSE];
  int64_t a = 0;
  for (; a + 16 <= L; a += 16) {
    for (int b = 0; b < p; b++) in[b] = VEC(x + b * L + a), in2[b] = VEC(x + b * L + a + 8);
    for (int b = 0; b < p; b += 4) { /* p is a multiple of 4; eight sums in flight hide the add latency */
      const float *r0 = S + (int64_t)b * p, *r1 = r0 + p, *r2 = r1 + p, *r3 = r2 + p;
      v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, d0 = {0}, d1 = {0}, d2 = {0}, d3 = {0};
      for (int k = 0; k < p; k++) {
        v8 v = in[k], u = in2[k];
        c0 += r0[k] * v, c1 += r1[k] * v, c2 += r2[k] * v, c3 += r3[k] * v;
        d0 += r0[k] * u, d1 += r1[k] * u, d2 += r2[k] * u, d3 += r3[k] * u;
      }
      VEC(x + b * L + a) = c0, VEC(x + b * L + a + 8) = d0;
      VEC(x + (b + 1) * L + a) = c1, VEC(x + (b + 1) * L + a + 8) = d1;
      VEC(x + (b + 2) * L + a) = c2, VEC(x + (b + 2) * L + a + 8) = d2;
      VEC(x + (b + 3) * L + a) = c3, VEC(x + (b + 3) * L + a + 8) = d3;
    }
  }
  int w = L < 8 ? (int)L : 8;
  for (; a < L; a += w) {
    for (int b = 0; b < p; b++) {
      in[b] = (v8){0};
      memcpy(&in[b], x + b * L + a, (size_t)w * sizeof(float));
    }
    for (int b = 0; b < p; b += 4) { /* p is a multiple of 4 */
      const float *r0 = S + (int64_t)b * p, *r1 = r0 + p, *r2 = r1 + p, *r3 = r2 + p;
      v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
      for (int k = 0; k < p; k++) {
        v8 v = in[k];
        c0 += r0[k] * v, c1 += r1[k] * v, c2 += r2[k] * v, c3 += r3[k] * v;
      }
      memcpy(x + b * L + a, &c0, (size_t)w * sizeof(float));
      memcpy(x + (b + 1) * L + a, &c1, (size_t)w * sizeof(float));
      memcpy(x + (b + 2) * L + a, &c2, (size_t)w * sizeof(float));
      memcpy(x + (b + 3) * L + a, &c3, (size_t)w * sizeof(float));
    }
  }
}

static inline __attribute__((always_inline)) void rows_body(const glq_hadamard *h, float *x, int64_t r0, int64_t r1,
                                                            int transpose) {
  for (int64_t r = r0; r < r1; r++)
    for (int i = 0; i < h->nblocks; i++) {
      const block *b = &h->blocks[i];
      float *y = x + r * h->n + b->off;
      int p = b->f ? b->f->p : 1;
      for (int c = 0; c < p; c++) fwht(y + c * b->L, b->L);
      if (b->f) dense(y, b->L, p, transpose ? b->f->st : b->f->s);
      /* 8 at a time (a scalar loop here took a third of a 576-wide transform); the same product per element */
      const int64_t len = b->len;
      const float sc = (float)(1.0 / sqrt((double)len));
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) VEC(y + j) *= sc;
      for (; j < len; j++) y[j] *= sc;
    }
}

static void rows_portable(const glq_hadamard *h, float *x, int64_t r0, int64_t r1, int tr) {
  rows_body(h, x, r0, r1, tr);
}
__attribute__((target("avx2,fma"))) static void rows_avx2(const glq_hadamard *h, float *x, int64_t r0, int64_t r1,
                                                           int tr) {
  rows_body(h, x, r0, r1, tr);
}

typedef struct {
  const glq_hadamard *h;
  float *x;
  int transpose;
  int avx2;
} apply_ctx;

static void apply_range(void *vc, int64_t r0, int64_t r1) {
  apply_ctx *c = vc;
  if (c->avx2) rows_avx2(c->h, c->x, r0, r1, c->transpose);
  else rows_portable(c->h, c->x, r0, r1, c->transpose);
}

void glq_hadamard_apply(const glq_hadamard *h, float *x, int64_t rows, int transpose) {
  apply_ctx c = {h, x, transpose, use_avx2};
  int64_t min_rows = 32768 / h->n + 1;
  glq_parallel_for(rows, min_rows, apply_range, &c);
}

int glq_hadamard_transform(float *x, int64_t rows, int64_t n, glq_hadamard_kind kind, int transpose) {
  const glq_hadamard *h;
  int rc = glq_hadamard_plan(n, kind, &h);
  if (rc) return rc;
  glq_hadamard_apply(h, x, rows, transpose);
  return 0;
}

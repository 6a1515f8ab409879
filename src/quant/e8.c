/* e8.c - glq's E8 shell codebook: generation (../shared/docs/glq-spec.md §1.2-1.3) and exact nearest-neighbour coding.
 *
 * Distance definition: the exact real value ||x - C_j||^2 with x taken as its exact float value;
 * ties go to the lowest index. Equivalently argmin of key_j = ||C_j||^2 - <2C_j, x> (2C_j is an
 * integer vector). Keys are evaluated in double with a rigorous error bound; whenever two keys are
 * closer than the bound, the sign of their difference is decided exactly (every product 2c·x is exact
 * in double, and the sum is done as a Shewchuk expansion). So the result is exact for every finite x.
 *
 * Encoding (65536): (1) closest E8 point y by Conway-Sloane rounding of D8 and D8+1/2; if y is a table
 * entry and x is strictly inside y's Voronoi cell (margin against the 240 roots), y is the answer.
 * (2) Otherwise the best point of the complete shells 0-5 comes in closed form from the 19 orbits of
 * signed permutations (sort |x|); if it is certainly unique only the 8655 shell-6 entries can beat it,
 * else all entries are candidates. (3) A depth-first search of a trie of the candidates, coordinate by
 * coordinate, pruned by the partial key plus lower bounds for the unvisited coordinates: per-coordinate
 * grid rounding with the lattice's parity, a Lagrangian term for the norm limit, and a Cauchy-Schwarz
 * bound from the subtree's norm range (which keeps points far outside the table cheap).
 * Encoding (256): float keys of all 256 entries (AVX2 or portable) select the candidates within the
 * float error bound; those are decided as above. */
#include "e8.h"
#include "e8_exact.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../core/pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define E8_X86 1
#endif

#define NFULL 65536
#define NSHELL 7
#define HEMPTY GLQ_E8_HASH_EMPTY
#define NLAMBDA 2

/* one trie edge: coordinate value v = 2c; rem / remlo = max / min over the leaves below of
 * sum_{i>level} (2c_i)^2; then either the child's edges [first, first+count) or, at level 7, the
 * table index in first */
typedef struct {
  int8_t v;
  uint8_t rem, remlo, count;
  int32_t first;
} tnode;

typedef struct {
  tnode *nodes;
  int32_t root_count;
} trie;

typedef struct {
  glq_e8_codebook pub;
  trie tr, s6; /* the full book only: all entries, and the shell-6 ones (56881..65535) */
} book;

static struct {
  pthread_once_t once;
  int status;
  char msg[256];
  float *table;        /* NFULL x 8 */
  float *norms;        /* NFULL */
  int8_t *t8;          /* 2*table */
  glq_e8_hslot *hash;  /* nibble code (§1.9) -> index, open addressing (e8_exact.h) */
  book full, small;
  float *planes;       /* 9 x NFULL: the 8 coordinate planes of 2c, then the norms (brute-force scans) */
  double radius[49];   /* sqrt(rem) / 2: the norm of unvisited coordinates whose sum of (2c)^2 is rem */
} G = {.once = PTHREAD_ONCE_INIT};


/* ---------- enumeration (§1.2) ---------- */

typedef struct {
  double mu[8][8], B[8];
  int8_t (*z)[8];
  int n, cap;
  int8_t cur[8];
} fp_enum;

static void fp_level(fp_enum *e, int l, double budget) {
  if (budget < -1e-12) return;
  double c = 0;
  for (int i = l + 1; i < 8; i++) c -= e->cur[i] * e->mu[i][l];
  double r = sqrt(fmax(budget / e->B[l], 0));
  int lo = (int)ceil(c - r), hi = (int)floor(c + r);
  for (int z = lo; z <= hi; z++) {
    double nb = budget - (z - c) * (z - c) * e->B[l];
    if (nb < -1e-10) continue;
    e->cur[l] = (int8_t)z;
    if (l > 0) {
      fp_level(e, l - 1, nb);
    } else {
      if (e->n < e->cap) memcpy(e->z[e->n], e->cur, 8);
      e->n++;
    }
  }
}

static void e8_basis(double M[8][8]) {
  memset(M, 0, 64 * sizeof(double));
  M[0][0] = 2;
  for (int i = 1; i <= 6; i++) { M[i][i] = 1; M[i][i - 1] = -1; }
  for (int j = 0; j < 8; j++) M[7][j] = 0.5;
}

/* ---------- libstdc++ std::sort replica (§1.3): compares only the key ---------- */

typedef struct { double key; int32_t pos; } kv;

static void kv_swap(kv *a, kv *b) { kv t = *a; *a = *b; *b = t; }

static void median_to_first(kv *res, kv *a, kv *b, kv *c) {
  kv *m;
  if (a->key < b->key) m = b->key < c->key ? b : (a->key < c->key ? c : a);
  else m = a->key < c->key ? a : (b->key < c->key ? c : b);
  kv_swap(res, m);
}

static kv *unguarded_partition(kv *first, kv *last, const kv *pivot) {
  for (;;) {
    while (first->key < pivot->key) ++first;
    --last;
    while (pivot->key < last->key) --last;
    if (!(first < last)) return first;
    kv_swap(first, last);
    ++first;
  }
}

/* the heapsort fallback of libstdc++ is not reproduced: it never triggers for this input */
static int introsort_loop(kv *first, kv *last, int depth) {
  while (last - first > 16) {
    if (depth == 0) return glq_error(GLQ_EUNSUPPORTED, "e8 codebook: introsort depth limit reached");
    --depth;
    median_to_first(first, first + 1, first + (last - first) / 2, last - 1);
    kv *cut = unguarded_partition(first + 1, last, first);
    int rc = introsort_loop(cut, last, depth);
    if (rc) return rc;
    last = cut;
  }
  return GLQ_OK;
}

static void linear_insert(kv *last) {
  kv v = *last, *next = last - 1;
  while (v.key < next->key) { *last = *next; last = next; --next; }
  *last = v;
}

static void insertion_sort(kv *first, kv *last) {
  for (kv *i = first + 1; i < last; ++i) {
    if (i->key < first->key) {
      kv v = *i;
      memmove(first + 1, first, (size_t)(i - first) * sizeof *first);
      *first = v;
    } else {
      linear_insert(i);
    }
  }
}

static int std_sort(kv *a, int64_t n) {
  int lg = 0;
  while ((n >> (lg + 1)) > 0) lg++;
  int rc = introsort_loop(a, a + n, 2 * lg);
  if (rc) return rc;
  if (n > 16) {
    insertion_sort(a, a + 16);
    for (kv *i = a + 16; i < a + n; ++i) linear_insert(i);
  } else {
    insertion_sort(a, a + n);
  }
  return GLQ_OK;
}

/* ---------- lookup structures ---------- */

static uint32_t nibble_code(const int8_t *k) { return glq_e8_nibble_code(k); }
static uint32_t hslot(uint32_t code) { return glq_e8_hash_slot(code); }
static int32_t hash_find(uint32_t code) { return glq_e8_hash_find(G.hash, code); }

static const int8_t *t8_sort_base;

static int lex_cmp(const void *a, const void *b) {
  const int8_t *p = t8_sort_base + 8 * (size_t)*(const int32_t *)a;
  const int8_t *q = t8_sort_base + 8 * (size_t)*(const int32_t *)b;
  for (int i = 0; i < 8; i++)
    if (p[i] != q[i]) return p[i] < q[i] ? -1 : 1;
  return 0;
}

static void trie_build_level(tnode *nodes, int32_t *used, const int32_t *ord, int32_t lo, int32_t hi, int l,
                             int32_t *first, uint8_t *count) {
  const int8_t *t8 = G.t8;
  int32_t base = *used, cnt = 0;
  for (int32_t i = lo; i < hi; cnt++) {
    int8_t v = t8[8 * ord[i] + l];
    while (i < hi && t8[8 * ord[i] + l] == v) i++;
  }
  *used += cnt;
  *first = base;
  *count = (uint8_t)cnt;
  for (int32_t i = lo, g = 0; i < hi; g++) {
    int8_t v = t8[8 * ord[i] + l];
    int32_t j = i;
    int rem = 0, remlo = 255;
    for (; j < hi && t8[8 * ord[j] + l] == v; j++) {
      int r = 0;
      for (int m = l + 1; m < 8; m++) r += t8[8 * ord[j] + m] * t8[8 * ord[j] + m];
      if (r > rem) rem = r;
      if (r < remlo) remlo = r;
    }
    tnode *nd = &nodes[base + g];
    nd->v = v;
    nd->rem = (uint8_t)rem;
    nd->remlo = (uint8_t)remlo;
    if (l == 7) { nd->first = ord[i]; nd->count = 0; }
    else trie_build_level(nodes, used, ord, i, j, l + 1, &nd->first, &nd->count);
    i = j;
  }
}

static int trie_build(trie *tr, int lo, int hi) {
  int size = hi - lo;
  int32_t *ord = malloc((size_t)size * sizeof *ord);
  tr->nodes = malloc((size_t)size * 8 * sizeof *tr->nodes);
  if (!ord || !tr->nodes) { free(ord); return glq_error(GLQ_ENOMEM, "e8 codebook: out of memory"); }
  for (int i = 0; i < size; i++) ord[i] = lo + i;
  t8_sort_base = G.t8;
  qsort(ord, (size_t)size, sizeof *ord, lex_cmp);
  int32_t used = 0, first;
  uint8_t cnt;
  trie_build_level(tr->nodes, &used, ord, 0, size, 0, &first, &cnt);
  tr->root_count = cnt;
  free(ord);
  return GLQ_OK;
}

/* ---------- building the tables ---------- */

static int build_all(void) {
  double M[8][8], bs[8][8];
  e8_basis(M);
  fp_enum e;
  memset(&e, 0, sizeof e);
  for (int i = 0; i < 8; i++) {
    for (int k = 0; k < 8; k++) bs[i][k] = M[i][k];
    for (int j = 0; j < i; j++) {
      double d = 0;
      for (int k = 0; k < 8; k++) d += M[i][k] * bs[j][k];
      e.mu[i][j] = d / e.B[j];
      for (int k = 0; k < 8; k++) bs[i][k] -= e.mu[i][j] * bs[j][k];
    }
    e.B[i] = 0;
    for (int k = 0; k < 8; k++) e.B[i] += bs[i][k] * bs[i][k];
  }
  e.cap = 131072;
  e.z = malloc((size_t)e.cap * sizeof *e.z);
  kv *keys = malloc((size_t)e.cap * sizeof *keys);
  if (!e.z || !keys) { free(e.z); free(keys); return glq_error(GLQ_ENOMEM, "e8 codebook: out of memory"); }
  fp_level(&e, 7, 12.5);
  int rc = GLQ_OK;
  if (e.n > e.cap) { rc = glq_error(GLQ_EFORMAT, "e8 codebook: enumeration gave %d points", e.n); goto out; }
  for (int p = 0; p < e.n; p++) {
    double k = 0;
    for (int j = 0; j < 8; j++) {
      double v = 0;
      for (int i = 0; i < 8; i++) v += e.z[p][i] * M[i][j];
      k += v * v;
    }
    keys[p].key = k;
    keys[p].pos = p;
  }
  if ((rc = std_sort(keys, e.n))) goto out;
  static const int shell[NSHELL] = {1, 240, 2160, 6720, 17520, 30240, 60480};
  int cnt[NSHELL] = {0};
  for (int p = 0; p < e.n; p++) {
    int s = (int)(keys[p].key / 2);
    if (s < NSHELL && keys[p].key == 2 * s) cnt[s]++;
  }
  for (int s = 0; s < NSHELL; s++)
    if (cnt[s] != shell[s]) { rc = glq_error(GLQ_EFORMAT, "e8 codebook: shell %d has %d points", s, cnt[s]); goto out; }
  G.table = malloc((size_t)NFULL * 8 * sizeof(float));
  G.norms = malloc((size_t)NFULL * sizeof(float));
  G.t8 = malloc((size_t)NFULL * 8);
  G.hash = malloc(sizeof(glq_e8_hslot) * GLQ_E8_HASH_SLOTS);
  G.planes = malloc((size_t)NFULL * 9 * sizeof(float));
  if (!G.table || !G.norms || !G.t8 || !G.hash || !G.planes) { rc = glq_error(GLQ_ENOMEM, "e8 codebook: out of memory"); goto out; }
  for (uint32_t s = 0; s < GLQ_E8_HASH_SLOTS; s++) G.hash[s].code = HEMPTY;
  for (int r = 0; r < NFULL; r++) {
    const int8_t *z = e.z[keys[r].pos];
    for (int j = 0; j < 8; j++) {
      double v = 0;
      for (int i = 0; i < 8; i++) v += z[i] * M[i][j];
      G.table[8 * r + j] = (float)v;
      G.t8[8 * r + j] = (int8_t)(2 * v);
    }
    G.norms[r] = (float)keys[r].key;
    for (int j = 0; j < 8; j++) G.planes[(size_t)j * NFULL + r] = G.t8[8 * r + j];
    G.planes[(size_t)8 * NFULL + r] = G.norms[r];
    uint32_t code = nibble_code(G.t8 + 8 * r), s = hslot(code);
    while (G.hash[s].code != HEMPTY) s = (s + 1) & (GLQ_E8_HASH_SLOTS - 1);
    G.hash[s].code = code;
    G.hash[s].idx = r;
  }
  for (int r = 0; r < 49; r++) G.radius[r] = 0.5 * sqrt((double)r);
  if ((rc = trie_build(&G.full.tr, 0, NFULL)) || (rc = trie_build(&G.full.s6, 56881, NFULL))) goto out;
  book *bk[2] = {&G.full, &G.small};
  for (int b = 0; b < 2; b++) {
    bk[b]->pub.size = b ? 256 : NFULL;
    bk[b]->pub.table = G.table;
    bk[b]->pub.norms = G.norms;
    bk[b]->pub.priv = bk[b];
  }
out:
  free(e.z);
  free(keys);
  return rc;
}

static void init_once(void) {
  G.status = build_all();
  if (G.status) snprintf(G.msg, sizeof G.msg, "%s", glq_errmsg());
}

const glq_e8_codebook *glq_e8_codebook_get(int size) {
  if (size != NFULL && size != 256) {
    glq_error(GLQ_EINVAL, "e8 codebook: size must be 65536 or 256, got %d", size);
    return NULL;
  }
  pthread_once(&G.once, init_once);
  if (G.status) { glq_error(G.status, "%s", G.msg); return NULL; }
  return size == NFULL ? &G.full.pub : &G.small.pub;
}

const int8_t *glq_e8_table_i8(const glq_e8_codebook *cb) { (void)cb; return G.t8; }

const glq_e8_hslot *glq_e8_hash(const glq_e8_codebook *cb) { (void)cb; return G.hash; }

/* ---------- exact comparison ---------- */

/* 1 if entry a is strictly closer to x than entry b, or equally close with a lower index */
static int exact_closer(const float *x, int32_t a, int32_t b) {
  const int8_t *ka = G.t8 + 8 * (size_t)a, *kb = G.t8 + 8 * (size_t)b;
  double t[9];
  int na = 0, nb = 0;
  for (int i = 0; i < 8; i++) {
    na += ka[i] * ka[i];
    nb += kb[i] * kb[i];
    t[i] = -(double)(ka[i] - kb[i]) * (double)x[i];
  }
  t[8] = (na - nb) * 0.25;
  int s = glq_exact_sign(t, 9);
  return s < 0 || (s == 0 && a < b);
}

/* ---------- lattice fast path ---------- */

/* index of the table entry that is the unique nearest lattice point, or -1 if that is not certain */
static int32_t lattice_fast(const double *x, int size) {
  double y0[8], y1[8];
  double d0 = glq_e8_coset_nearest(x, 0, y0), d1 = glq_e8_coset_nearest(x, 0.5, y1);
  const double *y = d0 <= d1 ? y0 : y1;
  int8_t k[8];
  for (int i = 0; i < 8; i++) {
    if (fabs(y[i]) > 3) return -1;
    k[i] = (int8_t)(2 * y[i]);
  }
  uint32_t code = nibble_code(k);
  __builtin_prefetch(&G.hash[hslot(code)]); /* the margin test below overlaps the load */
  /* x is inside y's Voronoi cell iff <x - y, r> < 1 for the 240 roots r */
  double best = glq_e8_cell_margin(x, y);
  if (!(best < 1 - 0x1p-30)) return -1;
  int32_t idx = hash_find(code);
  return idx < size ? idx : -1;
}

/* ---------- exact trie search ---------- */

typedef struct {
  const float *xf;
  double x[8], sx[9], tol, best;
  /* lower bounds of the key over coordinates l..7 on the grid Z + h/2: best values (base), their
   * sum of 2c mod 4 (par), and the cheapest switch of one coordinate to the other parity (flip) */
  double lambda[NLAMBDA], base[NLAMBDA][2][9], flip[NLAMBDA][2][9];
  int par[NLAMBDA][2][9];
  int32_t champ;
  uint32_t ocode;
  const tnode *nodes;
} tsearch;

/* lower bound of ||c||^2 - 2<c, x> over lo <= ||c|| <= hi, with sx = ||x|| */
static double rest_bound(double sx, double lo, double hi) {
  return sx <= lo ? lo * (lo - 2 * sx) : (sx <= hi ? -sx * sx : hi * (hi - 2 * sx));
}

/* champ < 0: best is the key of the table point with nibble code ocode (index looked up when needed),
 * or only a bound when ocode is HEMPTY */
static int32_t champion(tsearch *s) {
  if (s->champ < 0 && s->ocode != HEMPTY) s->champ = hash_find(s->ocode);
  return s->champ;
}

static void leaf(tsearch *s, int32_t idx, double key) {
  if (key < s->best - s->tol ||
      (key <= s->best + s->tol && (champion(s) < 0 || exact_closer(s->xf, idx, s->champ)))) {
    s->best = key;
    s->champ = idx;
  }
}

static void trie_visit(tsearch *s, const tnode *kids, int count, int l, double partial, int s2) {
  double xl = s->x[l], sxr = s->sx[l + 1], any = rest_bound(sxr, 0, G.radius[48]);
  for (int m = 0; m < NLAMBDA; m++)
    any = glq_dmax(any, glq_dmin(s->base[m][0][l + 1], s->base[m][1][l + 1]) - s->lambda[m] * 12);
  int hi = 0;
  while (hi < count && 0.5 * kids[hi].v < xl) hi++;
  int lo = hi - 1;
  while (lo >= 0 || hi < count) {
    int k = (hi >= count || (lo >= 0 && xl - 0.5 * kids[lo].v <= 0.5 * kids[hi].v - xl)) ? lo-- : hi++;
    double c = 0.5 * kids[k].v, p = partial + c * (c - 2 * xl), lim = s->best + s->tol;
    if (p + any > lim) break; /* the nearer frontier child fails, so every later one does */
    int h = kids[k].v & 1, t2 = (s2 + kids[k].v) & 3;
    double rb = rest_bound(sxr, G.radius[kids[k].remlo], G.radius[kids[k].rem]);
    for (int m = 0; m < NLAMBDA; m++)
      rb = glq_dmax(rb, s->base[m][h][l + 1] + (((t2 + s->par[m][h][l + 1]) & 3) ? s->flip[m][h][l + 1] : 0) -
                        s->lambda[m] * 0.25 * kids[k].rem);
    if (p + rb > lim) continue;
    if (l == 7) leaf(s, kids[k].first, p);
    else trie_visit(s, s->nodes + kids[k].first, kids[k].count, l + 1, p, t2);
  }
}

/* min over c on the grid Z + h/2 within [-3, 3] of q(c) = w c^2 - 2cx (iw = 1/w), the extra cost of the
 * best c of the other parity (one grid step away), and 2c of the minimiser */
static double coset_cost(double x, int h, double w, double iw, int *c2, double *flip) {
  double off = 0.5 * h, lim = 3 - off, r = glq_dmin(glq_dmax(nearbyint(x * iw - off) + off, -lim), lim);
  double g = w * r - x; /* q(r + s) - q(r) = w + 2sg for a step s = +-1; s = -sign(g) is cheaper if allowed */
  int ok = fabs(r - copysign(1.0, g)) <= lim; /* branch-free: the sign of g is unpredictable */
  *flip = w - 2 * fabs(g) * (double)(2 * ok - 1);
  *c2 = (int)(2 * r);
  return r * (w * r - 2 * x);
}

/* doubled coordinates, sorted decreasingly, of every pattern whose orbit under permutations and sign
 * changes (even/odd for half-integer patterns, as E8 requires) is a whole shell part; shells 0-5 */
static const int8_t orbit_pat[19][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0}, {2, 2, 0, 0, 0, 0, 0, 0}, {1, 1, 1, 1, 1, 1, 1, 1}, {4, 0, 0, 0, 0, 0, 0, 0},
    {2, 2, 2, 2, 0, 0, 0, 0}, {3, 1, 1, 1, 1, 1, 1, 1}, {4, 2, 2, 0, 0, 0, 0, 0}, {2, 2, 2, 2, 2, 2, 0, 0},
    {3, 3, 1, 1, 1, 1, 1, 1}, {4, 4, 0, 0, 0, 0, 0, 0}, {4, 2, 2, 2, 2, 0, 0, 0}, {2, 2, 2, 2, 2, 2, 2, 2},
    {3, 3, 3, 1, 1, 1, 1, 1}, {5, 1, 1, 1, 1, 1, 1, 1}, {6, 2, 0, 0, 0, 0, 0, 0}, {4, 4, 2, 2, 0, 0, 0, 0},
    {4, 2, 2, 2, 2, 2, 2, 0}, {3, 3, 3, 3, 1, 1, 1, 1}, {5, 3, 1, 1, 1, 1, 1, 1}};

/* The table point of smallest key over the orbits of shells 0-5 (all in the table): pairing sorted |c| with
 * sorted |x| and the signs of x is optimal; a half-integer point with the wrong sign parity flips its
 * smallest coordinate. Returns that key. *idx gets the point's index when it is the unique best of
 * shells 0-5 by more than 2 tol (next orbit, and within its orbit a swap of two ranks or a sign change,
 * which costs at least the smallest gap between sorted |x_i| or 2 min |x_i|), else *code = HEMPTY.
 * The point is returned as its nibble code, its hash slot prefetched: the index is rarely needed early. */
static double orbit_best(const double *x, double tol, uint32_t *code) {
  double a[8];
  int r[8], neg = 0;
  for (int i = 0; i < 8; i++) {
    a[i] = fabs(x[i]);
    r[i] = i;
    neg += x[i] < 0;
  }
  static const int8_t net[19][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}, {0, 4}, {1, 5}, {2, 6}, {3, 7}, {0, 1}, {2, 3},
                                     {4, 5}, {6, 7}, {2, 4}, {3, 5}, {1, 4}, {3, 6}, {1, 2}, {3, 4}, {5, 6}};
  for (int c = 0; c < 19; c++) { /* sorting network, decreasing, without branches */
    int i = net[c][0], j = net[c][1], sw = a[j] > a[i];
    double hi = glq_dmax(a[i], a[j]), lo = glq_dmin(a[i], a[j]);
    int ri = sw ? r[j] : r[i], rj = sw ? r[i] : r[j];
    a[i] = hi, a[j] = lo, r[i] = ri, r[j] = rj;
  }
  double best = INFINITY, second = INFINITY, gap = 2 * a[7];
  int bp = 0;
  for (int i = 0; i < 7; i++) gap = glq_dmin(gap, a[i] - a[i + 1]);
  for (int p = 0; p < 19; p++) {
    const int8_t *k = orbit_pat[p];
    int n = 0, sum = 0;
    double dot = 0;
    for (int i = 0; i < 8; i++) { n += k[i] * k[i]; sum += k[i]; dot += k[i] * a[i]; }
    double key = 0.25 * n - dot;
    if ((k[7] & 1) && ((neg ^ (sum / 2)) & 1)) key += 2 * a[7];
    second = glq_dmin(second, glq_dmax(best, key));
    bp = key < best ? p : bp;
    best = glq_dmin(best, key);
  }
  *code = HEMPTY;
  if (glq_dmin(gap, second - best) > 2 * tol) {
    const int8_t *k = orbit_pat[bp];
    int8_t c[8];
    int sum = 0;
    for (int i = 0; i < 8; i++) { c[r[i]] = (int8_t)(x[r[i]] < 0 ? -k[i] : k[i]); sum += k[i]; }
    if ((k[7] & 1) && ((neg ^ (sum / 2)) & 1)) c[r[7]] = (int8_t)-c[r[7]];
    *code = nibble_code(c);
    __builtin_prefetch(&G.hash[hslot(*code)]);
  }
  return best;
}

static int32_t trie_search(const book *b, const float *xf) {
  tsearch s;
  s.xf = xf;
  double e = 100;
  for (int i = 0; i < 8; i++) { s.x[i] = xf[i]; e += 16 * fabs(s.x[i]); }
  double acc = 0;
  s.sx[8] = 0;
  for (int i = 7; i >= 0; i--) { acc += s.x[i] * s.x[i]; s.sx[i] = sqrt(acc); }
  /* lambda = 0 is the plain per-coordinate bound; the others trade off the norm limit (Lagrangian) */
  s.lambda[0] = 0;
  s.lambda[1] = glq_dmax(0, s.sx[0] / G.radius[48] - 1);
  for (int m = 0; m < NLAMBDA; m++) {
    double w = 1 + s.lambda[m], iw = 1 / w;
    for (int h = 0; h < 2; h++) {
      s.base[m][h][8] = 0;
      s.par[m][h][8] = 0;
      s.flip[m][h][8] = INFINITY;
      for (int i = 7; i >= 0; i--) {
        int c2;
        double f, cost = coset_cost(s.x[i], h, w, iw, &c2, &f);
        s.base[m][h][i] = s.base[m][h][i + 1] + cost;
        s.par[m][h][i] = (s.par[m][h][i + 1] + c2) & 3;
        s.flip[m][h][i] = glq_dmin(s.flip[m][h][i + 1], f);
      }
    }
  }
  s.tol = 0x1p-40 * e; /* >= 2x the rounding error of any key or bound (all are O(e) * 20u) */
  /* start from the best of shells 0-5; if it is certainly unique only the shell-6 part of the table can win */
  s.best = orbit_best(s.x, s.tol, &s.ocode);
  s.champ = -1;
  const trie *tr = s.ocode != HEMPTY ? &b->s6 : &b->tr;
  s.nodes = tr->nodes;
  trie_visit(&s, tr->nodes, tr->root_count, 0, 0, 0);
  return champion(&s);
}

/* float keys n_j - <2c_j, x> of entries [lo, hi) (hi - lo a multiple of 8) into keyf; returns their minimum.
 * Needs max |x_i| < 2^60. Error of each key <= 9 * 2^-24 * (12 + 6 sum |x_i|) (either path). */
static float keys_f32_portable(const float *x, int lo, int hi, float *keyf) {
  float mn = INFINITY;
  for (int j = lo; j < hi; j++) {
    float acc = G.planes[(size_t)8 * NFULL + j];
    for (int i = 0; i < 8; i++) acc -= G.planes[(size_t)i * NFULL + j] * x[i];
    keyf[j - lo] = acc;
    mn = acc < mn ? acc : mn;
  }
  return mn;
}

#ifdef E8_X86
__attribute__((target("avx2,fma"))) static float keys_f32_avx2(const float *x, int lo, int hi, float *keyf) {
  __m256 nx[8], mn = _mm256_set1_ps(INFINITY);
  for (int i = 0; i < 8; i++) nx[i] = _mm256_set1_ps(-x[i]);
  const float *P = G.planes;
  int j = lo;
  for (; j + 16 <= hi; j += 16) { /* two independent chains hide the FMA latency */
    __m256 a0 = _mm256_loadu_ps(P + (size_t)8 * NFULL + j), a1 = _mm256_loadu_ps(P + (size_t)8 * NFULL + j + 8);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(P + (size_t)i * NFULL + j), nx[i], a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(P + (size_t)i * NFULL + j + 8), nx[i], a1);
    }
    _mm256_storeu_ps(keyf + (j - lo), a0);
    _mm256_storeu_ps(keyf + (j - lo) + 8, a1);
    mn = _mm256_min_ps(mn, _mm256_min_ps(a0, a1));
  }
  for (; j < hi; j += 8) {
    __m256 acc = _mm256_loadu_ps(P + (size_t)8 * NFULL + j);
    for (int i = 0; i < 8; i++) acc = _mm256_fmadd_ps(_mm256_loadu_ps(P + (size_t)i * NFULL + j), nx[i], acc);
    _mm256_storeu_ps(keyf + (j - lo), acc);
    mn = _mm256_min_ps(mn, acc);
  }
  float m[8], r = INFINITY;
  _mm256_storeu_ps(m, mn);
  for (int i = 0; i < 8; i++) r = m[i] < r ? m[i] : r;
  return r;
}
#endif

static float keys_f32(const float *x, int lo, int hi, float *keyf, int avx2) {
#ifdef E8_X86
  if (avx2) return keys_f32_avx2(x, lo, hi, keyf);
#endif
  (void)avx2;
  return keys_f32_portable(x, lo, hi, keyf);
}

/* AVX2 kernels unless the CPU lacks them or GLQ_NO_AVX2 is set (results are the same either way) */
static int use_avx2(void) {
#ifdef E8_X86
  const char *no = getenv("GLQ_NO_AVX2");
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(no && *no && *no != '0');
#else
  return 0;
#endif
}

/* float keys of two entries can be misordered by at most twice the error bound above */
static float key_slack(const float *x) {
  float a = 12;
  for (int i = 0; i < 8; i++) a += 6 * fabsf(x[i]);
  return 0x1p-18f * a;
}

static int finite_range(const float *x) {
  for (int i = 0; i < 8; i++)
    if (!(fabsf(x[i]) < 0x1p60f)) return 0;
  return 1;
}

/* exhaustive exact search of the first n entries (n <= 256): float keys filter, exact decision */
static int32_t scan_search(int n, const float *xf, int avx2) {
  tsearch s;
  float keyf[256];
  float thr = INFINITY;
  if (finite_range(xf)) thr = keys_f32(xf, 0, n, keyf, avx2) + key_slack(xf);
  double e = 100;
  for (int i = 0; i < 8; i++) { s.x[i] = xf[i]; e += 16 * fabs(s.x[i]); }
  s.xf = xf;
  s.tol = 0x1p-40 * e;
  s.best = INFINITY;
  s.champ = -1;
  s.ocode = HEMPTY;
  for (int j = 0; j < n; j++) {
    if (thr < INFINITY && !(keyf[j] <= thr)) continue;
    double key = 0;
    for (int i = 0; i < 8; i++) { double c = 0.5 * G.t8[8 * j + i]; key += c * (c - 2 * s.x[i]); }
    leaf(&s, j, key);
  }
  return s.champ;
}

static int32_t encode_one(const book *b, const float *xf, int avx2) {
  double x[8], amax = 0;
  for (int i = 0; i < 8; i++) { x[i] = xf[i]; if (fabs(x[i]) > amax) amax = fabs(x[i]); }
  if (amax <= 4) { /* beyond that the nearest lattice point has a coordinate > 3: not in the table */
    int32_t idx = lattice_fast(x, b->pub.size);
    if (idx >= 0) return idx;
  }
  return b->pub.size == NFULL ? trie_search(b, xf) : scan_search(b->pub.size, xf, avx2);
}

typedef struct {
  const book *b;
  const float *x;
  int32_t *idx;
  int avx2;
} enc_job;

static void encode_range(void *ctx, int64_t lo, int64_t hi) {
  const enc_job *j = ctx;
  for (int64_t i = lo; i < hi; i++) j->idx[i] = encode_one(j->b, j->x + 8 * i, j->avx2);
}

static int check_input(const glq_e8_codebook *cb, const float *x, int64_t n, const char *fn) {
  if (!cb || cb->priv == NULL) return glq_error(GLQ_EINVAL, "%s: codebook is NULL", fn);
  if (n < 0) return glq_error(GLQ_EINVAL, "%s: n = %lld is negative", fn, (long long)n);
  for (int64_t i = 0; i < 8 * n; i++)
    if (!isfinite(x[i]))
      return glq_error(GLQ_EINVAL, "%s: x[%lld] (vector %lld) is not finite", fn, (long long)i, (long long)(i / 8));
  return GLQ_OK;
}

int glq_e8_encode(const glq_e8_codebook *cb, const float *x, int64_t n, int32_t *idx) {
  int rc = check_input(cb, x, n, "e8 encode");
  if (rc) return rc;
  enc_job j = {cb->priv, x, idx, use_avx2()};
  glq_parallel_for(n, 1024, encode_range, &j);
  return GLQ_OK;
}

void glq_e8_decode(const glq_e8_codebook *cb, const int32_t *idx, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) memcpy(out + 8 * i, cb->table + 8 * (size_t)(idx[i] & 0xFFFF), 8 * sizeof(float));
}

void glq_e8_decode2(const glq_e8_codebook *cb, const glq_e8_codebook *cb2, const int32_t *idx, const int32_t *idx2,
                    float inv_rs, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) {
    const float *a = cb->table + 8 * (size_t)(idx[i] & 0xFFFF), *b = cb2->table + 8 * (size_t)(idx2[i] & 0xFFFF);
    for (int k = 0; k < 8; k++) out[8 * i + k] = a[k] + inv_rs * b[k];
  }
}

/* ---------- brute-force reference (tests) ---------- */

/* keys in double, strict < so ties keep the lowest index; entries with keyf > thr skipped (keyf may be NULL) */
static void brute_double(const float *xf, int lo, int hi, const float *keyf, float thr, double *best, int32_t *arg) {
  double x[8];
  for (int i = 0; i < 8; i++) x[i] = xf[i];
  for (int j = lo; j < hi; j++) {
    if (keyf && !(keyf[j - lo] <= thr)) continue;
    const int8_t *k = G.t8 + 8 * (size_t)j;
    double sum = 0;
    for (int i = 0; i < 8; i++) sum += k[i] * x[i];
    double key = (double)G.norms[j] - sum;
    if (key < *best) { *best = key; *arg = j; }
  }
}

typedef struct {
  int size;
  const float *x;
  int32_t *idx;
  int avx2;
} bf_job;

#define BF_BLOCK 1024
#define BF_VEC 64

/* the 65536 book: float keys (cache-blocked) give each vector's minimum, then a second blocked pass
 * re-evaluates in double every entry whose float key is within the error bound of that minimum */
static void bf_range(void *ctx, int64_t lo, int64_t hi) {
  const bf_job *j = ctx;
  float keyf[BF_BLOCK], fmin[BF_VEC];
  double best[BF_VEC];
  for (int64_t v0 = lo; v0 < hi; v0 += BF_VEC) {
    int nv = hi - v0 < BF_VEC ? (int)(hi - v0) : BF_VEC;
    for (int v = 0; v < nv; v++) {
      fmin[v] = finite_range(j->x + 8 * (v0 + v)) ? INFINITY : NAN;
      best[v] = INFINITY;
      j->idx[v0 + v] = 0;
    }
    for (int pass = 0; pass < 2; pass++)
      for (int b = 0; b < j->size; b += BF_BLOCK) {
        int e = b + BF_BLOCK < j->size ? b + BF_BLOCK : j->size;
        for (int v = 0; v < nv; v++) {
          const float *x = j->x + 8 * (v0 + v);
          if (isnan(fmin[v]) || j->size <= 256) {
            if (pass == 1) brute_double(x, b, e, NULL, 0, &best[v], &j->idx[v0 + v]);
          } else if (pass == 0) {
            float m = keys_f32(x, b, e, keyf, j->avx2);
            fmin[v] = m < fmin[v] ? m : fmin[v];
          } else {
            keys_f32(x, b, e, keyf, j->avx2);
            brute_double(x, b, e, keyf, fmin[v] + key_slack(x), &best[v], &j->idx[v0 + v]);
          }
        }
      }
  }
}

int glq_e8_encode_bruteforce(const glq_e8_codebook *cb, const float *x, int64_t n, int32_t *idx) {
  int rc = check_input(cb, x, n, "e8 brute force");
  if (rc) return rc;
  bf_job j = {cb->size, x, idx, use_avx2()};
  glq_parallel_for(n, BF_VEC, bf_range, &j);
  return GLQ_OK;
}

/* e8_exact.h - the pieces of the exact E8 search that the CPU (e8.c) and the GPU (cuda/ldlq.cu) share:
 * the exact sign of a sum of doubles, the nearest point of a D8 coset, and the Voronoi-cell test of the
 * nearest lattice point. Header-only; host and device functions under nvcc. */
#ifndef GLQ_E8_EXACT_H
#define GLQ_E8_EXACT_H
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GLQ_HD __host__ __device__
#else
#define GLQ_HD
#endif

static inline GLQ_HD double glq_dmin(double a, double b) { return a < b ? a : b; }
static inline GLQ_HD double glq_dmax(double a, double b) { return a > b ? a : b; }

/* Lookup of a lattice point (2c, int8 per coordinate, |2c| <= 6) in the table: its nibble code (the packed
 * form of ../shared/docs/glq-spec.md §1.9) hashed into GLQ_E8_HASH_SLOTS open-addressed slots {code, index} (empty: code
 * GLQ_E8_HASH_EMPTY), built by e8.c and uploaded as is by the GPU search. */
#define GLQ_E8_HASH_BITS 17
#define GLQ_E8_HASH_SLOTS (1u << GLQ_E8_HASH_BITS)
#define GLQ_E8_HASH_EMPTY 0xFFFFFFFFu

typedef struct glq_e8_hslot_s {
  uint32_t code;
  int32_t idx;
} glq_e8_hslot;

static inline GLQ_HD uint32_t glq_e8_nibble_code(const int8_t *k) {
  uint32_t c = 0;
  for (int i = 0; i < 8; i++) c |= (uint32_t)(k[i] + 6) << (4 * i);
  return c;
}

static inline GLQ_HD uint32_t glq_e8_hash_slot(uint32_t code) { return (code * 0x9E3779B1u) >> (32 - GLQ_E8_HASH_BITS); }

/* the index of the entry with this nibble code, or -1 */
static inline GLQ_HD int32_t glq_e8_hash_find(const glq_e8_hslot *h, uint32_t code) {
  for (uint32_t s = glq_e8_hash_slot(code);; s = (s + 1) & (GLQ_E8_HASH_SLOTS - 1)) {
    if (h[s].code == code) return h[s].idx;
    if (h[s].code == GLQ_E8_HASH_EMPTY) return -1;
  }
}

/* sign of t[0] + ... + t[n-1] (n <= 16), exactly: grow a non-overlapping expansion with TwoSum */
static inline GLQ_HD int glq_exact_sign(const double *t, int n) {
  double e[16];
  int m = 0;
  for (int i = 0; i < n; i++) {
    double q = t[i];
    int k = 0;
    for (int j = 0; j < m; j++) {
      double s = q + e[j], bv = s - q, err = (q - (s - bv)) + (e[j] - bv);
      if (err != 0) e[k++] = err;
      q = s;
    }
    if (q != 0) e[k++] = q;
    m = k;
  }
  return m == 0 ? 0 : (e[m - 1] > 0 ? 1 : -1);
}

/* closest point y of D8 + s (s = 0 or 1/2) to x; returns the squared distance */
static inline GLQ_HD double glq_e8_coset_nearest(const double *x, double s, double *y) {
  double u[8], werr = -1;
  long sum = 0;
  int worst = 0;
  for (int i = 0; i < 8; i++) {
    u[i] = x[i] - s;
    y[i] = rint(u[i]);
    sum += (long)y[i];
    double err = fabs(u[i] - y[i]);
    int more = err > werr; /* selects, not branches: these comparisons are unpredictable */
    worst = more ? i : worst;
    werr = more ? err : werr;
  }
  y[worst] += (double)(sum & 1) * copysign(1.0, u[worst] - y[worst]);
  double d = 0;
  for (int i = 0; i < 8; i++) {
    y[i] += s;
    d += (x[i] - y[i]) * (x[i] - y[i]);
  }
  return d;
}

/* max over the 240 roots r of <x - y, r>: x lies strictly inside the Voronoi cell of the lattice point y
 * iff this is below 1 */
static inline GLQ_HD double glq_e8_cell_margin(const double *x, const double *y) {
  double a1 = 0, a2 = 0, sum = 0, amin = INFINITY;
  int neg = 0;
  for (int i = 0; i < 8; i++) {
    double t = x[i] - y[i], a = fabs(t);
    neg ^= t < 0;
    sum += a;
    amin = glq_dmin(amin, a);
    a2 = glq_dmax(a2, glq_dmin(a1, a));
    a1 = glq_dmax(a1, a);
  }
  double half = 0.5 * sum - (neg ? amin : 0);
  return a1 + a2 > half ? a1 + a2 : half;
}

#endif

/* test_e8p.c - E8P / E81B codebooks (quant/e8p.h):
 *  1. decode: the 65536 entries are exactly {y ± 1/4 : y in D8 + 1/2, even sum, |y| in the 256 absolute
 *     vectors}, each once, each sign pattern of the right parity per (absolute vector, shift), rebuilt here
 *     from that definition; and they equal glq 0.8.16's (spec/fixtures/e8p/glq0816_e8p.txt: packed grid,
 *     sampled entries, a fingerprint of all 65536, the E81B table, glq's own quantize on 2000 vectors).
 *  2. search: glq_e8p_encode == glq_e8p_encode_bruteforce (and E81B likewise) on N(0, s²) vectors at
 *     scales 1e-30 .. 1e30, eighth-grid points (exact ties, coordinates equal to ±1/4) and mixed magnitudes.
 *  3. glq 0.8.16's packed layouts (spec/fixtures/e8p/glq0816_pack.txt, made by its own maybe_pack_idxs and
 *     pack_e81b): pack equals its words, unpack gives the indices back.
 * Run from the repository root: build/tests/test_e8p [vectors per case] (default 12000: ~10^5 in all). */
#include "core/ops.h"
#include "core/pool.h"
#include "core/error.h"
#include "quant/e8p.h"
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t fails;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 10) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } } while (0)

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static double unif(void) { return (double)(next() >> 11) * 0x1p-53; }
static double gauss(void) { double u = unif() + 1e-300, v = unif(); return sqrt(-2 * log(u)) * cos(6.283185307179586 * v); }

static int cmp8(const void *a, const void *b) { return memcmp(a, b, 8); }

static void check_decode(void) {
  /* rebuild: every 4y in {±1,±3,±5,±7}^8 with norm² of y <= 10 or one of the 29 norm-12 absolute vectors,
   * even sum of y, then ±1 (= ±1/4 shifted, times 4) */
  static int8_t ref[65536][8], got[65536][8];
  int nref = 0;
  const uint32_t *pk = glq_e8p_packed_abs();
  /* absolute vectors from the decoder's own packed grid are checked against the fixture below;
   * here the set: norm² <= 10 ones are all such vectors, so the count and membership pin it down */
  int n12 = 0;
  for (int a = 0; a < 256; a++) {
    int v2[8], s2 = 0, n2 = 0;
    for (int k = 0; k < 8; k++) { int nib = (int)((pk[a] >> (4 * k)) & 15) - 8; v2[k] = abs(nib); s2 += v2[k]; n2 += v2[k] * v2[k]; }
    CHECK(n2 <= 40 || n2 == 48, "abs vector %d has norm² %g", a, n2 / 4.0);
    n12 += n2 == 48;
    for (int k = 0; k < 8; k++) CHECK(v2[k] % 2 == 1, "abs vector %d coordinate %d is not half-odd", a, k);
    int neg7 = ((pk[a] >> 28) & 15) < 8;
    CHECK(neg7 == ((s2 / 2) & 1), "abs vector %d: nibble 7 sign %d but sum parity %d", a, neg7, (s2 / 2) & 1);
    for (int s = 0; s < 256; s++) {
      int sum = 0;
      for (int i = 0; i < 8; i++) sum += ((s >> i) & 1) ? -v2[i] : v2[i]; /* 2·sum(y) with coordinate order free */
      if ((sum / 2) % 2 != 0) continue;
      for (int sh = -1; sh <= 1; sh += 2) {
        if (nref >= 65536) { nref++; continue; }
        /* coordinates in y order: nibble k holds coordinate PERM[k] */
        static const int PERM[8] = {0, 2, 4, 6, 1, 3, 5, 7};
        for (int k = 0; k < 8; k++) ref[nref][PERM[k]] = (int8_t)(2 * (((s >> k) & 1) ? -v2[k] : v2[k]) + sh);
        nref++;
      }
    }
  }
  CHECK(n12 == 29, "%d absolute vectors of norm² 12, expected 29", n12);
  CHECK(nref == 65536, "the definition gives %d entries, expected 65536", nref);
  for (uint32_t c = 0; c < 65536; c++) {
    float v[8];
    glq_e8p_decode_one(c, v);
    for (int i = 0; i < 8; i++) got[c][i] = (int8_t)(4 * v[i]);
    int32_t ci = (int32_t)c;
    float w[8];
    glq_e8p_decode(&ci, 1, w);
    CHECK(!memcmp(v, w, sizeof v), "decode_one and decode differ at %u", c);
  }
  qsort(ref, 65536, 8, cmp8);
  static int8_t gs[65536][8];
  memcpy(gs, got, sizeof gs);
  qsort(gs, 65536, 8, cmp8);
  int dup = 0;
  for (int c = 1; c < 65536; c++) dup += !memcmp(gs[c], gs[c - 1], 8);
  CHECK(dup == 0, "%d duplicate entries", dup);
  CHECK(!memcmp(ref, gs, sizeof gs), "decoded entries differ from the set rebuilt from the definition");
  /* the index layout: A = idx >> 8 picks the absolute vector, parity of the sign byte the shift */
  for (uint32_t c = 0; c < 65536; c += 7) {
    int sh = __builtin_parity(c & 255) ? -1 : 1;
    for (int i = 0; i < 8; i++) {
      int y = got[c][i] - sh, nib = (int)((pk[c >> 8] >> (4 * (i % 2 ? 4 + i / 2 : i / 2))) & 15) - 8;
      CHECK(abs(y) == 2 * abs(nib), "entry %u coordinate %d: |4y| %d, grid %d", c, i, abs(y), 2 * abs(nib));
    }
  }
  /* glq 0.8.16 fixture */
  FILE *f = fopen("spec/fixtures/e8p/glq0816_e8p.txt", "r");
  CHECK(f, "spec/fixtures/e8p/glq0816_e8p.txt not found (run from the repository root)");
  if (!f) return;
  char tag[16];
  int nq = 0, qbad = 0, npk = 0, nb = 0, ne = 0, nfp = 0;
  const int8_t *e81b = glq_e81b_table_i8();
  float *qx = malloc(2000 * 8 * sizeof *qx);
  int32_t *qi = malloc(2000 * sizeof *qi), *qo = malloc(2000 * sizeof *qo);
  while (fscanf(f, "%15s", tag) == 1) {
    if (!strcmp(tag, "packed")) {
      unsigned i; unsigned long v;
      if (fscanf(f, "%u %lu", &i, &v) != 2) break;
      CHECK(pk[i] == (uint32_t)v, "packed[%u] = %08x, glq %08lx", i, pk[i], v);
      npk++;
    } else if (!strcmp(tag, "e81b") || !strcmp(tag, "e8p")) {
      int e8p = tag[1] == '8' && tag[2] == 'p', i, k[8];
      if (fscanf(f, "%d %d %d %d %d %d %d %d %d", &i, k, k + 1, k + 2, k + 3, k + 4, k + 5, k + 6, k + 7) != 9) break;
      for (int j = 0; j < 8; j++)
        CHECK((e8p ? got[i][j] : e81b[8 * i + j]) == k[j], "%s entry %d coordinate %d: %d, glq %d", tag, i, j,
              e8p ? got[i][j] : e81b[8 * i + j], k[j]);
      e8p ? ne++ : nb++;
    } else if (!strcmp(tag, "fp")) {
      long n; unsigned long v;
      if (fscanf(f, "%ld %lu", &n, &v) != 2) break;
      uint64_t s = 0;
      for (int c = 0; c < 65536; c++) {
        int64_t t = 0;
        for (int i = 0; i < 8; i++) t += (i + 1) * got[c][i];
        s += (uint64_t)((int64_t)(c + 1) * t);
      }
      CHECK((uint32_t)s == (uint32_t)v, "fingerprint of all entries %u, glq %lu", (uint32_t)s, v);
      nfp++;
    } else if (!strcmp(tag, "q")) {
      int k, idx;
      float *x = qx + 8 * nq;
      if (fscanf(f, "%d %f %f %f %f %f %f %f %f %d", &k, x, x + 1, x + 2, x + 3, x + 4, x + 5, x + 6, x + 7, &idx) != 10) break;
      qi[nq++] = idx;
    } else {
      CHECK(0, "unknown fixture line tag %s", tag);
      break;
    }
  }
  fclose(f);
  CHECK(npk == 256 && nb == 256 && ne > 600 && nfp == 1 && nq == 2000, "fixture incomplete: %d %d %d %d %d", npk, nb, ne, nfp, nq);
  if (glq_e8p_encode(qx, nq, qo)) CHECK(0, "%s", glq_errmsg());
  for (int i = 0; i < nq; i++) qbad += qo[i] != qi[i];
  CHECK(qbad == 0, "%d of %d vectors: our nearest differs from glq 0.8.16's quantize", qbad, nq);
  printf("decode: 65536 entries match the definition; glq 0.8.16 fixture: grid, %d entries, fingerprint, E81B, "
         "quantize %d/%d equal\n", ne, nq - qbad, nq);
  free(qx), free(qi), free(qo);
}

static void compare(const float *x, int64_t n, const char *what) {
  int32_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c), *d = malloc(n * sizeof *d);
  if (glq_e8p_encode(x, n, a) || glq_e8p_encode_bruteforce(x, n, b) || glq_e81b_encode(x, n, c) ||
      glq_e81b_encode_bruteforce(x, n, d)) {
    CHECK(0, "%s", glq_errmsg());
    return;
  }
  int64_t bad = 0, bad2 = 0;
  for (int64_t i = 0; i < n; i++) {
    if (a[i] != b[i]) { bad++; CHECK(0, "%s vector %lld: e8p encode %d, brute force %d", what, (long long)i, a[i], b[i]); }
    if (c[i] != d[i]) { bad2++; CHECK(0, "%s vector %lld: e81b encode %d, brute force %d", what, (long long)i, c[i], d[i]); }
  }
  printf("%-22s %6lld vectors: e8p %lld, e81b %lld mismatches\n", what, (long long)n, (long long)bad, (long long)bad2);
  free(a), free(b), free(c), free(d);
}

static void check_pack(void) {
  FILE *f = fopen("spec/fixtures/e8p/glq0816_pack.txt", "r");
  CHECK(f, "spec/fixtures/e8p/glq0816_pack.txt not found (run from the repository root)");
  if (!f) return;
  enum { M = 32, NB = 16 };
  int32_t idx[M * NB], e81b[M * NB], back[M * NB];
  int64_t want[M * NB / 4], want2[M * NB / 8], got[M * NB / 4];
  char tag[16];
  int ok = fscanf(f, "%15s", tag) == 1 && !strcmp(tag, "idx");
  for (int i = 0; ok && i < M * NB; i++) ok = fscanf(f, "%d", &idx[i]) == 1;
  ok = ok && fscanf(f, "%15s", tag) == 1 && !strcmp(tag, "e81b");
  for (int i = 0; ok && i < M * NB; i++) ok = fscanf(f, "%d", &e81b[i]) == 1;
  int d[4];
  ok = ok && fscanf(f, "%15s %d %d %d %d", tag, d, d + 1, d + 2, d + 3) == 5 && d[0] == M / 16 && d[1] == NB / 8;
  for (int i = 0; ok && i < M * NB / 4; i++) ok = fscanf(f, "%" SCNd64, &want[i]) == 1;
  ok = ok && fscanf(f, "%15s %d %d", tag, d, d + 1) == 3 && d[0] == M && d[1] == NB / 8;
  for (int i = 0; ok && i < M * NB / 8; i++) ok = fscanf(f, "%" SCNd64, &want2[i]) == 1;
  fclose(f);
  CHECK(ok, "glq0816_pack.txt: unexpected contents");
  if (!ok) return;
  int bad = 0;
  CHECK(!glq_e8p_pack(idx, M, NB, got), "%s", glq_errmsg());
  for (int i = 0; i < M * NB / 4; i++) bad += got[i] != want[i];
  CHECK(bad == 0, "e8p pack: %d of %d words differ from glq 0.8.16's", bad, M * NB / 4);
  CHECK(!glq_e8p_unpack(want, M, NB, back) && !memcmp(back, idx, sizeof idx), "e8p unpack does not give the indices back");
  bad = 0;
  CHECK(!glq_e81b_pack(e81b, M, NB, got), "%s", glq_errmsg());
  for (int i = 0; i < M * NB / 8; i++) bad += got[i] != want2[i];
  CHECK(bad == 0, "e81b pack: %d of %d words differ from glq 0.8.16's", bad, M * NB / 8);
  CHECK(!glq_e81b_unpack(want2, M, NB, back) && !memcmp(back, e81b, sizeof e81b), "e81b unpack does not give the indices back");
  CHECK(glq_e8p_pack(idx, 24, NB, got) == GLQ_EINVAL, "24 rows must be refused");
  printf("packed layouts: Qidxs_e8p and Qidxs2_e81b words equal glq 0.8.16's, unpack round trips\n");
}

int main(int argc, char **argv) {
  int64_t n = argc > 1 ? atoll(argv[1]) : 12000;
  if (glq_e8p_init()) { printf("%s\n", glq_errmsg()); return 2; }
  check_decode();
  check_pack();
  float *x = malloc((size_t)n * 8 * sizeof *x);
  static const double scales[] = {1e-30, 0.25, 1, 1.5, 4, 1e30};
  char what[64];
  for (int s = 0; s < 6; s++) {
    for (int64_t i = 0; i < 8 * n; i++) x[i] = (float)(scales[s] * gauss());
    snprintf(what, sizeof what, "N(0, %g²)", scales[s]);
    compare(x, n, what);
  }
  for (int64_t i = 0; i < 8 * n; i++) x[i] = (float)((int)(next() % 41) - 20) / 8; /* ties, x_i = ±1/4 */
  compare(x, n, "eighth grid [-2.5, 2.5]");
  for (int64_t i = 0; i < 8 * n; i++) x[i] = (float)((int)(next() % 9) - 4) / 8;
  compare(x, n, "eighth grid [-0.5, 0.5]");
  for (int64_t i = 0; i < 8 * n; i++) {
    int k = (int)(next() % 4);
    x[i] = k == 0 ? (float)(0.25 + 1e-9 * gauss()) : k == 1 ? (float)(1e-35 * gauss()) : k == 2 ? -0.25f : (float)gauss();
  }
  compare(x, n, "near ±1/4, tiny");
  free(x);
  printf(fails ? "FAILED: %lld checks\n" : "OK\n", (long long)fails);
  return fails ? 1 : 0;
}

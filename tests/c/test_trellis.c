/* test_trellis.c - the trellis codec (src/quant/trellis.h) against brute force and glq 0.8.16's fixtures.
 * 1. Viterbi optimality: tiny trellises (L 4..6, K 1..2, V 1..2, 2..6 steps, free / constrained ends)
 *    against enumeration of every state path (same f32 summation order, so costs compare exactly).
 * 2. The 3inst table (all 65536 states) and the hyb lut's checksum against glq's decode; the AVX2 3inst decode of the
 *    fused CPU forward (quant/trellis_avx2.h) against the scalar one on all 65536 states.
 * 3. glq's packed layers (spec/fixtures/trellis) decoded bit for bit; unpack -> pack gives the same bytes.
 * 4. glq's own Viterbi states for the fixture tiles reproduced by ours (fp16-rounded targets as glq feeds them).
 * 5. Encode -> pack -> unpack -> decode equals the decode of the chosen states; SSE4 and AVX2 give equal bytes.
 * Run from the repository root: build/tests/test_trellis. Prints the Viterbi speed (weights/s). */
#include "core/error.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "quant/trellis.h"
#include "quant/trellis_avx2.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FIX "spec/fixtures/trellis/"
static int failures = 0;
#define CHECK(c, ...)                          \
  do {                                         \
    if (!(c)) {                                \
      failures++;                              \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                     \
      printf("\n");                            \
    }                                          \
  } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) {
  uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static float unif(void) { return (float)((next_u64() >> 40) * 0x1p-24) * 2.0f - 1.0f; }
static float gauss(void) {
  double u = ((next_u64() >> 11) + 0.5) * 0x1p-53, v = ((next_u64() >> 11) + 0.5) * 0x1p-53;
  return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    printf("cannot open %s (run from the repository root)\n", path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = malloc((size_t)n + 1);
  if (fread(p, 1, (size_t)n, f) != (size_t)n) exit(2);
  ((char *)p)[n] = 0;
  fclose(f);
  *len = (size_t)n;
  return p;
}

/* ---- 1. brute force ---- */
static void brute(const glq_trellis_code *c, const float *x, int steps, int sov, int eov, float *best, int *unique,
                  uint16_t *path) {
  const int KV = c->K * c->V, V = c->V;
  const int64_t S = 1 << c->L, G = S >> KV, nb = 1 << KV;
  int64_t total = S;
  for (int i = 1; i < steps; i++) total *= nb;
  *best = INFINITY;
  *unique = 0;
  uint16_t st[16];
  for (int64_t code = 0; code < total; code++) {
    int64_t r = code;
    st[0] = (uint16_t)(r % S);
    r /= S;
    for (int i = 1; i < steps; i++) {
      st[i] = (uint16_t)(((st[i - 1] << KV) & (S - 1)) | (r % nb));
      r /= nb;
    }
    if (sov >= 0 && (st[0] >> KV) != sov) continue;
    if (eov >= 0 && (st[steps - 1] & (G - 1)) != eov) continue;
    float cost = 0;
    for (int i = 0; i < steps; i++) {
      float d0 = c->lut[st[i] * V] - x[i * V], e = d0 * d0;
      if (V == 2) {
        float d1 = c->lut[st[i] * V + 1] - x[i * V + 1];
        e = d0 * d0 + d1 * d1;
      }
      cost = i == 0 ? e : e + cost;
    }
    if (cost < *best) {
      *best = cost;
      *unique = 1;
      memcpy(path, st, sizeof(uint16_t) * (size_t)steps);
    } else if (cost == *best) {
      *unique = 0;
    }
  }
}

static void test_bruteforce(void) {
  int cases = 0, compared = 0;
  for (int L = 4; L <= 6; L++)
    for (int V = 1; V <= 2; V++)
      for (int K = 1; K <= 2; K++) {
        if (K * V >= L) continue;
        glq_trellis_code c;
        float lut[128];
        for (int i = 0; i < (V << L); i++) lut[i] = unif();
        if (glq_trellis_code_lut(&c, L, K, V, lut)) exit(2);
        const int KV = K * V;
        for (int steps = 2; steps <= 6; steps++) {
          if ((double)(1 << L) * pow(1 << KV, steps - 1) > 3e5) continue;
          for (int rep = 0; rep < 8; rep++) {
            float x[16];
            for (int i = 0; i < steps * V; i++) x[i] = unif() * 1.2f;
            for (int mode = 0; mode < 3; mode++) {
              int G = 1 << (L - KV), ov = (int)(next_u64() % (uint64_t)G);
              int sov = mode >= 1 ? ov : -1, eov = mode == 2 ? ov : (mode == 1 ? (int)(next_u64() % (uint64_t)G) : -1);
              float bc, vc;
              int uniq;
              uint16_t bp[16], vp[16];
              brute(&c, x, steps, sov, eov, &bc, &uniq, bp);
              if (isinf(bc)) continue; /* no path: too short for the constraints */
              if (glq_trellis_viterbi(&c, x, steps, sov, eov, vp, &vc)) {
                printf("viterbi: %s\n", glq_errmsg());
                exit(2);
              }
              cases++;
              CHECK(vc == bc, "L%d K%d V%d steps %d mode %d: viterbi cost %.9g, brute force %.9g", L, K, V, steps, mode,
                    vc, bc);
              if (uniq) {
                compared++;
                CHECK(!memcmp(vp, bp, sizeof(uint16_t) * (size_t)steps), "L%d K%d V%d steps %d: path differs", L, K,
                      V, steps);
              }
            }
          }
        }
        glq_trellis_code_free(&c);
      }
  printf("brute force: %d cases (%d unique-optimum paths compared)\n", cases, compared);
}

/* ---- 2.-4. fixtures ---- */
static uint32_t fnv1a(const void *p, size_t n) {
  uint32_t h = 0x811C9DC5u;
  for (size_t i = 0; i < n; i++) h = (h ^ ((const uint8_t *)p)[i]) * 16777619u;
  return h;
}

/* the fused CPU decode's vector 3inst equals glq_trellis_3inst on every state */
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma,f16c"))) static int bad_3inst_avx2(void) {
  int bad = 0;
  for (uint32_t s0 = 0; s0 < 65536; s0 += 8) {
    float v[8];
    _mm256_storeu_ps(v, glq_trellis_3inst_avx2(_mm256_add_epi32(_mm256_set1_epi32((int)s0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))));
    for (uint32_t i = 0; i < 8; i++) {
      const float r = glq_trellis_3inst(s0 + i);
      if (memcmp(&v[i], &r, 4) && bad++ < 3) printf("  3inst state %u: vector %.9g, scalar %.9g\n", s0 + i, v[i], r);
    }
  }
  return bad;
}
#endif

static void check_3inst_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("f16c")) {
    printf("  (no AVX2 + F16C: the vector 3inst decode is not checked)\n");
    return;
  }
  const int bad = bad_3inst_avx2();
  CHECK(!bad, "the AVX2 3inst decode differs from glq_trellis_3inst on %d of 65536 states", bad);
#endif
}

static void test_fixtures(void) {
  size_t len;
  char *man = slurp(FIX "manifest.json", &len);
  uint16_t *lut3 = slurp(FIX "3inst_lut.u16", &len);
  CHECK(len == 131072, "3inst_lut.u16 size");
  int bad = 0;
  for (uint32_t s = 0; s < 65536; s++) {
    float a = glq_trellis_3inst(s), b = glq_f16_to_f32(lut3[s]);
    if (memcmp(&a, &b, 4) && bad++ < 3) printf("  3inst state %u: ours %.9g, glq %.9g\n", s, a, b);
  }
  CHECK(!bad, "3inst decode differs from glq on %d of 65536 states", bad);
  free(lut3);
  check_3inst_avx2();

  uint16_t *t16 = slurp(FIX "hyb_tlut.f16", &len);
  float tlut[1024];
  for (int i = 0; i < 1024; i++) tlut[i] = glq_f16_to_f32(t16[i]);
  free(t16);
  glq_trellis_code hyb;
  if (glq_trellis_code_hyb(&hyb, 2, tlut)) exit(2);
  const char *h = strstr(man, "\"hyb_lut_fnv1a32\":");
  CHECK(h && fnv1a(hyb.lut, 65536 * 2 * 4) == (uint32_t)strtoul(h + 18, NULL, 10), "hyb lut checksum differs from glq's");
  glq_trellis_code_free(&hyb);

  /* the cases, in manifest order */
  const char *names[] = {"3inst_k2_64x32", "3inst_k3_32x64", "3inst_k4_32x32", "hyb_k2_32x64"};
  const int Ks[] = {2, 3, 4, 2}, ms[] = {64, 32, 32, 32}, ns[] = {32, 64, 32, 64};
  for (int ci = 0; ci < 4; ci++) {
    CHECK(strstr(man, names[ci]) != NULL, "manifest lacks %s", names[ci]);
    glq_trellis_code c;
    int hybc = names[ci][0] == 'h';
    if (hybc ? glq_trellis_code_hyb(&c, Ks[ci], tlut) : glq_trellis_code_3inst(&c, Ks[ci])) exit(2);
    int64_t m = ms[ci], n = ns[ci], nt = m * n / 256, steps = 256 / c.V, wpt = 16 * Ks[ci];
    char path[256];
    snprintf(path, sizeof path, FIX "%s.packed.i16", names[ci]);
    int16_t *packed = slurp(path, &len);
    CHECK((int64_t)len == nt * wpt * 2, "%s packed size", names[ci]);
    snprintf(path, sizeof path, FIX "%s.decoded.f32", names[ci]);
    float *ref = slurp(path, &len), *w = malloc(sizeof(float) * (size_t)(m * n));
    CHECK(!glq_trellis_decode_layer(&c, packed, m, n, 1, w), "decode_layer: %s", glq_errmsg());
    CHECK(!memcmp(w, ref, sizeof(float) * (size_t)(m * n)), "%s: decode_layer differs from glq's", names[ci]);
    /* unpack every tile (from the natural layout) and pack the layer again: the same bytes */
    uint8_t *nat = malloc(len);
    glq_trellis_kernel_flip((const uint8_t *)packed, nat, m, n, Ks[ci], 0);
    uint16_t *st = malloc(sizeof(uint16_t) * (size_t)(nt * steps));
    for (int64_t t = 0; t < nt; t++) glq_trellis_unpack(&c, (uint16_t *)nat + t * wpt, (int)steps, st + t * steps);
    int16_t *again = malloc(sizeof(int16_t) * (size_t)(nt * wpt));
    CHECK(!glq_trellis_pack_layer(&c, st, m, n, 1, again), "pack_layer: %s", glq_errmsg());
    CHECK(!memcmp(again, packed, sizeof(int16_t) * (size_t)(nt * wpt)), "%s: unpack -> pack changed bytes", names[ci]);
    /* glq's Viterbi on its fp16-rounded tiles */
    snprintf(path, sizeof path, FIX "%s.seq.f32", names[ci]);
    float *seq = slurp(path, &len);
    snprintf(path, sizeof path, FIX "%s.states.u16", names[ci]);
    uint16_t *gst = slurp(path, &len), ours[256];
    int ntile = (int)(m / 16), same = 0;
    for (int t = 0; t < ntile; t++) {
      CHECK(!glq_trellis_quantize_seq(&c, seq + t * 256, (int)steps, ours), "quantize_seq: %s", glq_errmsg());
      same += !memcmp(ours, gst + t * steps, sizeof(uint16_t) * (size_t)steps);
    }
    CHECK(same == ntile, "%s: our Viterbi reproduced glq's states on %d of %d tiles", names[ci], same, ntile);
    printf("fixture %s: decode, repack and %d/%d Viterbi tiles equal glq's\n", names[ci], same, ntile);
    free(seq);
    free(gst);
    free(again);
    free(st);
    free(nat);
    free(w);
    free(ref);
    free(packed);
    glq_trellis_code_free(&c);
  }
  free(man);
}

/* ---- 5. round trip, ISA equality, speed ---- */
static void test_roundtrip(void) {
  for (int K = 2; K <= 4; K++) {
    glq_trellis_code c;
    if (glq_trellis_code_3inst(&c, K)) exit(2);
    const int64_t m = 64, n = 32, rows = m;
    float *w = malloc(sizeof(float) * m * n), *rec = malloc(sizeof(float) * m * n), *dec = malloc(sizeof(float) * m * n);
    for (int64_t i = 0; i < m * n; i++) w[i] = gauss() / (float)c.opt_scale; /* glq's normalisation */
    uint16_t *st = malloc(sizeof(uint16_t) * m * n), *st2 = malloc(sizeof(uint16_t) * m * n);
    /* column blocks of 16: states of tile (row tile r, column tile b) at ((r * n/16) + b) * 256 */
    uint16_t *blk = malloc(sizeof(uint16_t) * rows / 16 * 256);
    const int prev = glq_trellis_set_vector(1), top = glq_trellis_vector();
    float *rec2 = malloc(sizeof(float) * m * n);
    for (int lvl = top; lvl >= 0; lvl--) { /* AVX2 first (where present); the portable step must give its states */
      glq_trellis_set_vector(lvl);
      for (int b = 0; b < n / 16; b++) {
        CHECK(!glq_trellis_quantize_block(&c, w + b * 16, rows, n, (lvl == top ? rec : rec2) + b * 16, n, blk), "%s",
              glq_errmsg());
        for (int r = 0; r < rows / 16; r++) memcpy((lvl == top ? st : st2) + (r * (n / 16) + b) * 256, blk + r * 256, 512);
      }
      CHECK(lvl == top || !memcmp(st, st2, sizeof(uint16_t) * m * n), "K%d: the Viterbi steps %d and %d give different states",
            K, top, lvl);
    }
    glq_trellis_set_vector(prev);
    int16_t *packed = malloc(sizeof(int16_t) * m * n * K / 16);
    CHECK(!glq_trellis_pack_layer(&c, st, m, n, 1, packed), "%s", glq_errmsg());
    CHECK(!glq_trellis_decode_layer(&c, packed, m, n, 1, dec), "%s", glq_errmsg());
    CHECK(!memcmp(dec, rec, sizeof(float) * m * n), "K%d: encode -> pack -> decode differs from the chosen states", K);
    double e = 0, s = 0;
    for (int64_t i = 0; i < m * n; i++) {
      double d = (double)w[i] - rec[i];
      e += d * d, s += (double)w[i] * w[i];
    }
    printf("round trip K%d: ok; gaussian SQNR %.2f dB\n", K, 10 * log10(s / e));
    free(w), free(rec), free(rec2), free(dec), free(st), free(st2), free(blk), free(packed);
    glq_trellis_code_free(&c);
  }
  /* speed: 3inst K=2, 64 tiles */
  glq_trellis_code c;
  glq_trellis_code_3inst(&c, 2);
  const int64_t rows = 16 * 16;
  float *w = malloc(sizeof(float) * rows * 16), *rec = malloc(sizeof(float) * rows * 16);
  uint16_t *st = malloc(sizeof(uint16_t) * rows * 16);
  for (int64_t i = 0; i < rows * 16; i++) w[i] = gauss() / (float)c.opt_scale;
  const int prev = glq_trellis_set_vector(1), top = glq_trellis_vector();
  static const char *isa_name[2] = {"portable", "avx2"};
  for (int isa = 0; isa <= top; isa++) {
    glq_trellis_set_vector(isa);
    double t0 = now();
    glq_trellis_quantize_block(&c, w, rows, 16, rec, 16, st);
    double dt = now() - t0;
    printf("viterbi speed (%s, %d threads, 3inst K2, two passes per tile): %.0f weights/s\n", isa_name[isa],
           glq_num_threads(), rows * 16 / dt);
  }
  glq_trellis_set_vector(prev);
  free(w), free(rec), free(st);
  glq_trellis_code_free(&c);
}

int main(void) {
  test_bruteforce();
  test_fixtures();
  test_roundtrip();
  printf("%s (%d failures)\n", failures ? "FAILED" : "all trellis checks passed", failures);
  return failures ? 1 : 0;
}

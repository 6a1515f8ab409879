/* test_dense.c - dense linear: matches a double reference, rows are bit-identical whatever the
 * batch size (one row and batches take different register tiles), and bf16 weights agree with their
 * f32 expansion; the Q8_0 matvec gives the f32 path's bits on ggml's dequantized weights. Prints
 * GFLOP/s as information. */
#include "../../src/layers/dense_linear.h"
#include "../../src/core/ops.h"
#include "../../src/core/pool.h"
#include "../../src/io/ggml_quants.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check_shape(int64_t B, int64_t out, int64_t in, glq_dtype wdt) {
  glq_tensor w32, w, x, b;
  int64_t ws[2] = {out, in}, xs[2] = {B, in}, bs[1] = {out};
  glq_randn(GLQ_F32, 2, ws, 1, &w32);
  glq_tensor_to(&w32, wdt, &w);
  glq_randn(GLQ_F32, 2, xs, 2, &x);
  glq_randn(GLQ_F32, 1, bs, 3, &b);
  glq_linear *l;
  CHECK(glq_dense_linear_new(&w, &b, &l) == 0, "new: %s", glq_errmsg());
  float *y = malloc(sizeof(float) * B * out), *y1 = malloc(sizeof(float) * out);
  float *wf = malloc(sizeof(float) * out * in);
  glq_linear_forward(l, glq_tensor_data(&x), B, y);
  l->vt->dequantize(l, wf);
  const float *xf = glq_tensor_data(&x), *bf = glq_tensor_data(&b);
  double maxerr = 0;
  int same = 1;
  for (int64_t i = 0; i < B; i++) {
    glq_linear_forward(l, xf + i * in, 1, y1);
    if (memcmp(y1, y + i * out, sizeof(float) * out)) same = 0;
    for (int64_t j = 0; j < out; j++) {
      double s = bf[j], a = 0;
      for (int64_t k = 0; k < in; k++) { s += (double)xf[i * in + k] * wf[j * in + k]; a += fabs((double)xf[i * in + k] * wf[j * in + k]); }
      double e = fabs(s - y[i * out + j]) / (a + 1);
      if (e > maxerr) maxerr = e;
    }
  }
  CHECK(maxerr < 1e-6, "B=%lld out=%lld in=%lld %s: rel err %g", (long long)B, (long long)out, (long long)in, glq_dtype_name(wdt), maxerr);
  CHECK(same, "B=%lld out=%lld in=%lld %s: batched rows differ from B=1", (long long)B, (long long)out, (long long)in, glq_dtype_name(wdt));
  glq_linear_free(l);
  free(y); free(y1); free(wf);
  glq_tensor_release(&w32); glq_tensor_release(&w); glq_tensor_release(&x); glq_tensor_release(&b);
}

/* Q8_0 blocks with random scales (incl. a zero, subnormal-range and large ones) and every int8 value:
 * glq_gemv_q8_0 over any row range equals glq_gemm_nt on the dequantized f32 rows bit for bit. */
static void check_q8_0(int64_t out, int64_t in, unsigned seed) {
  int64_t nb = in / 32;
  size_t bytes = (size_t)out * (size_t)nb * 34;
  uint8_t *blk = malloc(bytes);
  float *w = malloc(sizeof(float) * out * in), *x = malloc(sizeof(float) * in);
  float *y = malloc(sizeof(float) * out), *yq = malloc(sizeof(float) * out);
  srand(seed);
  for (size_t b = 0; b < bytes / 34; b++) {
    uint16_t h = (uint16_t)(rand() & 0x7fff) | (uint16_t)(rand() & 1) << 15;
    if ((h & 0x7c00) == 0x7c00) h &= 0xbfff;  /* no inf/nan scales */
    if (b % 97 == 0) h = 0;
    blk[b * 34] = (uint8_t)h;
    blk[b * 34 + 1] = (uint8_t)(h >> 8);
    for (int k = 0; k < 32; k++) blk[b * 34 + 2 + k] = (uint8_t)(rand() & 0xff);
  }
  for (int64_t k = 0; k < in; k++) x[k] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
  CHECK(glq_ggml_dequantize(GLQ_GGML_Q8_0, blk, w, out * in) == 0, "q8_0 dequantize: %s", glq_errmsg());
  glq_gemm_nt(x, in, 1, w, GLQ_F32, in, out, in, NULL, y, out);
  for (int64_t i = 0; i < out; i++) yq[i] = NAN;
  int64_t cut = out / 3 + 1; /* two ranges, neither a multiple of the kernel's 4-row step */
  glq_gemv_q8_0(x, blk, 0, cut, in, yq);
  glq_gemv_q8_0(x, blk, cut, out, in, yq);
  CHECK(!memcmp(y, yq, sizeof(float) * out), "q8_0 %lld x %lld: matvec differs from the f32 path", (long long)out, (long long)in);
  free(blk); free(w); free(x); free(y); free(yq);
}

static void bench(int64_t B, int64_t out, int64_t in, glq_dtype wdt) {
  glq_tensor w32, w, x;
  int64_t ws[2] = {out, in}, xs[2] = {B, in};
  glq_randn(GLQ_F32, 2, ws, 1, &w32);
  glq_tensor_to(&w32, wdt, &w);
  glq_randn(GLQ_F32, 2, xs, 2, &x);
  glq_linear *l;
  glq_dense_linear_new(&w, NULL, &l);
  float *y = malloc(sizeof(float) * B * out);
  int reps = 0;
  double t0 = now(), t;
  do { glq_linear_forward(l, glq_tensor_data(&x), B, y); reps++; } while ((t = now() - t0) < 0.3);
  printf("  %-4s B=%-4lld %5lldx%-5lld %7.2f ms  %6.1f GFLOP/s  %6.1f GB/s(w)\n", glq_dtype_name(wdt),
         (long long)B, (long long)out, (long long)in, 1e3 * t / reps, 2.0 * B * out * in * reps / t * 1e-9,
         (double)out * in * glq_dtype_size(wdt) * reps / t * 1e-9);
  glq_linear_free(l);
  free(y);
  glq_tensor_release(&w32); glq_tensor_release(&w); glq_tensor_release(&x);
}

int main(int argc, char **argv) {
  (void)argv;
  /* B=1 takes 8-row tiles, batches 3- and 2-row tiles; {2, 1031, 577}: rows long enough to prefetch,
   * split in chunks with a short last one */
  int64_t shapes[][3] = {{1, 7, 5}, {2, 13, 17}, {3, 64, 64}, {5, 130, 67}, {10, 172, 64}, {7, 576, 576}, {33, 300, 1000},
                         {2, 1031, 577}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    check_shape(shapes[s][0], shapes[s][1], shapes[s][2], GLQ_F32);
    check_shape(shapes[s][0], shapes[s][1], shapes[s][2], GLQ_BF16);
  }
  check_q8_0(1, 32, 1);
  check_q8_0(7, 64, 2);
  check_q8_0(1031, 576, 3);
  check_q8_0(130, 4096, 4);
  /* an f16 weight is converted to an owned f32 copy */
  {
    glq_tensor w, w16; int64_t ws[2] = {3, 9};
    glq_randn(GLQ_F32, 2, ws, 4, &w); glq_tensor_to(&w, GLQ_F16, &w16);
    glq_linear *l; CHECK(glq_dense_linear_new(&w16, NULL, &l) == 0, "f16 new");
    CHECK(l->vt->stored_bytes(l) == 3 * 9 * 4, "f16 copy stored as f32");
    glq_linear_free(l); glq_tensor_release(&w); glq_tensor_release(&w16);
  }
  if (argc > 1) {
    printf("dense linear throughput (%d threads):\n", glq_num_threads());
    bench(1, 1536, 576, GLQ_F32); bench(1, 1536, 576, GLQ_BF16);
    bench(1, 49152, 576, GLQ_F32); bench(1, 49152, 576, GLQ_BF16);
    bench(512, 1536, 576, GLQ_F32); bench(512, 1536, 576, GLQ_BF16);
    bench(512, 576, 1536, GLQ_F32);
  }
  printf(fails ? "test_dense: %d FAILED\n" : "test_dense: ok\n", fails);
  return fails != 0;
}

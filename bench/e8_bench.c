/* e8_bench.c - E8 codebook: exact encodings per second on N(0, s^2) 8-vectors (the 65536 and 256 books),
 * and the E8-RHT linear forward at batch 1 and 64 against OpenBLAS sgemv/sgemm on the dense f32 weight.
 * Each thread count runs in its own forked process (the pool size is fixed at first use); OpenBLAS gets
 * the same number of threads.
 * Build: make && gcc -std=c11 -O2 -march=x86-64-v2 -D_GNU_SOURCE -Isrc bench/e8_bench.c build/libglq.a \
 *          -lopenblas -llapacke -lpcre2-8 -lm -lpthread -ldl -o build/e8_bench
 * Run: build/e8_bench [out in]   (default 4096 4096) */
#include "core/ops.h"
#include "core/pool.h"
#include "quant/e8.h"
#include "layers/e8_linear.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSCALE 3
#define NRES (2 * NSCALE + 8)

static const double scales[NSCALE] = {0.5, 1, 2};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double best_of(int reps, void (*fn)(void *), void *ctx) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    fn(ctx);
    double t = now() - t0;
    if (t < best) best = t;
  }
  return best;
}

typedef struct {
  const glq_e8_codebook *cb;
  const float *x;
  int64_t n;
  int32_t *idx;
} enc_ctx;

static void run_encode(void *p) {
  enc_ctx *c = p;
  if (glq_e8_encode(c->cb, c->x, c->n, c->idx)) { fprintf(stderr, "%s\n", glq_errmsg()); exit(1); }
}

typedef struct {
  glq_linear *l;
  const float *w, *x;
  float *y;
  int64_t B, out, in;
} lin_ctx;

static void run_linear(void *p) {
  lin_ctx *c = p;
  if (glq_linear_forward(c->l, c->x, c->B, c->y)) { fprintf(stderr, "%s\n", glq_errmsg()); exit(1); }
}

static void run_blas(void *p) {
  lin_ctx *c = p;
  if (c->B == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->out, (int)c->in, 1, c->w, (int)c->in, c->x, 1, 0, c->y, 1);
  else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->B, (int)c->out, (int)c->in, 1, c->x, (int)c->in,
                   c->w, (int)c->in, 0, c->y, (int)c->out);
}

/* res: encodings/s for (65536, 256) x scales, then per batch (1, 64): blas, e8 2/3/4 bits (seconds) */
static void measure(int threads, int64_t out, int64_t in, double *res) {
  glq_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const int64_t n = 400000;
  int32_t *idx = calloc((size_t)n, sizeof *idx);
  for (int b = 0; b < 2; b++)
    for (int s = 0; s < NSCALE; s++) {
      glq_tensor x;
      int64_t shape[2] = {n, 8};
      glq_tensor t;
      glq_randn(GLQ_F32, 2, shape, 1 + (uint64_t)s, &t);
      glq_scale(&t, scales[s], &x);
      glq_tensor_release(&t);
      enc_ctx c = {glq_e8_codebook_get(b ? 256 : 65536), glq_tensor_data(&x), n, idx};
      res[b * NSCALE + s] = n / best_of(3, run_encode, &c);
      glq_tensor_release(&x);
    }
  free(idx);
  int64_t nb = in / 8, shape_w[2] = {out, in}, shape_x[2] = {64, in};
  int16_t *q = malloc((size_t)(out * nb) * 2), *q2 = malloc((size_t)(out * nb) * 2);
  float *su = malloc((size_t)out * 4), *sv = malloc((size_t)in * 4), *y = malloc((size_t)(64 * out) * 4);
  uint64_t st = 7;
  for (int64_t i = 0; i < out * nb; i++) {
    q[i] = (int16_t)glq_splitmix64(&st);
    q2[i] = (int16_t)glq_splitmix64(&st);
  }
  for (int64_t i = 0; i < out; i++) su[i] = (glq_splitmix64(&st) & 1) ? 1.0f : -1.0f;
  for (int64_t i = 0; i < in; i++) sv[i] = (glq_splitmix64(&st) & 1) ? 1.0f : -1.0f;
  glq_tensor w, x;
  glq_randn(GLQ_F32, 2, shape_w, 11, &w);
  glq_randn(GLQ_F32, 2, shape_x, 12, &x);
  for (int bi = 0; bi < 2; bi++) {
    int64_t B = bi ? 64 : 1;
    double *r = res + 2 * NSCALE + 4 * bi;
    lin_ctx c = {NULL, glq_tensor_data(&w), glq_tensor_data(&x), y, B, out, in};
    r[0] = best_of(10, run_blas, &c);
    for (int bits = 2; bits <= 4; bits++) {
      int16_t *q2b = bits == 2 ? NULL : q2;
      if (bits == 3)
        for (int64_t i = 0; i < out * nb; i++) q2[i] &= 255;
      glq_e8_linear_desc d = {out, in, out, in, bits, q, q2b, 1.0f / 3, 0.01f, su, sv, NULL};
      if (glq_e8_linear_new(&d, &c.l)) { fprintf(stderr, "%s\n", glq_errmsg()); exit(1); }
      r[bits - 1] = best_of(10, run_linear, &c);
      glq_linear_free(c.l);
    }
  }
  glq_tensor_release(&w);
  glq_tensor_release(&x);
  free(q), free(q2), free(su), free(sv), free(y);
}

int main(int argc, char **argv) {
  int64_t out = argc > 2 ? atoll(argv[1]) : 4096, in = argc > 2 ? atoll(argv[2]) : 4096;
  if (out < 8 || in < 8 || in % 8) { fprintf(stderr, "usage: e8_bench [out in], in a multiple of 8\n"); return 1; }
  double res[2][NRES];
  for (int t = 0; t < 2; t++) {
    int fd[2];
    if (pipe(fd)) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(fd[0]);
      measure(t + 1, out, in, res[t]);
      ssize_t w = write(fd[1], res[t], sizeof res[t]);
      _exit(w == (ssize_t)sizeof res[t] ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], res[t], sizeof res[t]);
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof res[t] || status) { fprintf(stderr, "measurement child failed\n"); return 1; }
  }
  printf("exact E8 encoding, N(0, s^2) coordinates, 400k vectors (M vectors/s)\n");
  printf("| book  | scale | 1 thread | 2 threads |\n|-------|-------|----------|-----------|\n");
  for (int b = 0; b < 2; b++)
    for (int s = 0; s < NSCALE; s++)
      printf("| %5d | %5.2f | %8.2f | %9.2f |\n", b ? 256 : 65536, scales[s], res[0][b * NSCALE + s] / 1e6,
             res[1][b * NSCALE + s] / 1e6);
  printf("\nE8-RHT linear %lld x %lld forward vs OpenBLAS on the f32 weight (ms; speed-up in brackets)\n",
         (long long)out, (long long)in);
  printf("| batch | threads | sgemv/sgemm | e8 2 bits     | e8 3 bits     | e8 4 bits     |\n");
  printf("|-------|---------|-------------|---------------|---------------|---------------|\n");
  for (int bi = 0; bi < 2; bi++)
    for (int t = 0; t < 2; t++) {
      const double *r = res[t] + 2 * NSCALE + 4 * bi;
      printf("| %5d | %7d | %11.3f |", bi ? 64 : 1, t + 1, r[0] * 1e3);
      for (int k = 1; k <= 3; k++) printf(" %6.3f (%4.2fx) |", r[k] * 1e3, r[0] / r[k]);
      printf("\n");
    }
  return 0;
}

/* host_util.h - what the host-side CUDA test and benchmark programs share (kernel_bench, linear_check,
 * ldlq_check, linear_bench): exit with a message (status 2) on a failed CUDA call or allocation; with
 * GLQ_HOST_CHECKS defined first, the pass/fail counter and the random numbers of the check programs.
 * Header-only. */
#ifndef GLQ_BENCH_CUDA_HOST_UTIL_H
#define GLQ_BENCH_CUDA_HOST_UTIL_H
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
      exit(2);                                                                             \
    }                                                                                      \
  } while (0)

static inline void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1); /* (C++ callers cast the result) */
  if (!p) {
    fprintf(stderr, "out of host memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}

#ifdef GLQ_HOST_CHECKS
#include <math.h>
#include <stdarg.h>
#include <stdint.h>

static int n_pass, n_fail;

/* one "ok"/"FAIL" line, counted */
static inline void report(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "ok  " : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
  if (ok) n_pass++;
  else n_fail++;
}

/* SplitMix64; a program may reseed g_rng before drawing */
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static inline uint64_t rnd(void) {
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static inline double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }
static inline double gauss(void) { return sqrt(-2.0 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }
static inline float nrand(void) { return (float)gauss(); }
static inline float sign(void) { return (rnd() & 1) ? -1.f : 1.f; }
#endif

#endif

/* test_pool.c - the thread pool: glq_parallel_for and glq_parallel_chunks call fn on disjoint ranges
 * that cover [0, n) exactly once, with the documented boundaries (chunks: multiples of `chunk`
 * whatever the pool size), for pool sizes 1..8, nested calls, and many short loops in a row (the
 * claim protocol must not lose, repeat or mix up parts when threads arrive late). */
#include "../../src/core/pool.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

#define MAXN 5000

typedef struct {
  _Atomic int hits[MAXN];  /* calls that covered index i */
  _Atomic int starts[MAXN]; /* calls that began at index i */
  int64_t chunk;            /* > 0: every range must be [k*chunk, min(n, (k+1)*chunk)) */
  int64_t n;
  _Atomic int bad;          /* ranges with wrong boundaries */
  int nested;               /* run a small nested loop inside every range */
} rec_t;

static void count_inner(void *ctx, int64_t b, int64_t e) {
  _Atomic int *c = ctx;
  atomic_fetch_add(c, (int)(e - b));
}

static void record(void *ctx, int64_t b, int64_t e) {
  rec_t *r = ctx;
  if (b < 0 || e > r->n || b >= e) { atomic_fetch_add(&r->bad, 1); return; }
  if (r->chunk > 0 && (b % r->chunk || e != (b + r->chunk < r->n ? b + r->chunk : r->n))) atomic_fetch_add(&r->bad, 1);
  atomic_fetch_add(&r->starts[b], 1);
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&r->hits[i], 1);
  if (r->nested) {
    _Atomic int inner = 0;
    glq_parallel_chunks(10, 3, count_inner, &inner); /* runs on this thread, all 10 indices */
    if (atomic_load(&inner) != 10) atomic_fetch_add(&r->bad, 1);
  }
}

static int covered_once(const rec_t *r) {
  for (int64_t i = 0; i < r->n; i++)
    if (atomic_load(&r->hits[i]) != 1) return 0;
  return 1;
}

static void run(int threads, int64_t n, int64_t chunk, int dynamic, int nested) {
  static rec_t r;
  memset(&r, 0, sizeof r);
  r.n = n;
  r.chunk = dynamic ? chunk : 0;
  r.nested = nested;
  if (dynamic) glq_parallel_chunks(n, chunk, record, &r);
  else glq_parallel_for(n, chunk, record, &r);
  CHECK(covered_once(&r) && atomic_load(&r.bad) == 0, "%d threads, n=%lld, %s %lld%s: ranges do not cover [0, n) once",
        threads, (long long)n, dynamic ? "chunk" : "min_chunk", (long long)chunk, nested ? ", nested" : "");
  if (!dynamic) {
    /* glq_parallel_for: at most one range per thread, equal sizes but the last */
    int64_t parts = 0;
    for (int64_t i = 0; i < n; i++) parts += atomic_load(&r.starts[i]);
    CHECK(parts <= threads, "%d threads, n=%lld: %lld ranges", threads, (long long)n, (long long)parts);
  }
}

int main(void) {
  int sizes[] = {1, 2, 3, 8};
  for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
    glq_set_num_threads(sizes[t]);
    CHECK(glq_num_threads() == sizes[t], "pool size %d, asked %d", glq_num_threads(), sizes[t]);
    int64_t ns[] = {1, 2, 7, 64, 1000, MAXN};
    int64_t chunks[] = {1, 3, 16, 5000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
      for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
        for (int dyn = 0; dyn < 2; dyn++) run(sizes[t], ns[a], chunks[c], dyn, 0);
    run(sizes[t], 1000, 7, 1, 1);
    run(sizes[t], 1000, 7, 0, 1);
    /* many short loops back to back: late workers meet newer jobs */
    for (int i = 0; i < 20000; i++) {
      int64_t n = 1 + (i * 7919) % 97, chunk = 1 + i % 5;
      static rec_t r;
      memset(&r, 0, sizeof r);
      r.n = n;
      r.chunk = i % 2 ? chunk : 0;
      if (i % 2) glq_parallel_chunks(n, chunk, record, &r);
      else glq_parallel_for(n, chunk, record, &r);
      if (!covered_once(&r) || atomic_load(&r.bad)) {
        CHECK(0, "%d threads, loop %d (n=%lld, chunk %lld): wrong ranges", sizes[t], i, (long long)n, (long long)chunk);
        break;
      }
    }
  }
  printf(fails ? "test_pool: %d FAILED\n" : "test_pool: ok\n", fails);
  return fails != 0;
}

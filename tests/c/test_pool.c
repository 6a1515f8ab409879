/* test_pool.c - the thread pool: glq_parallel_for calls fn on disjoint ranges that cover [0, n)
 * exactly once, at most one per thread, with boundaries that depend only on n, min_chunk and the
 * pool size; for pool sizes 1..8, nested calls, and many short loops in a row (parts are claimed
 * at run time: a late thread must not lose, repeat or mix up parts of different loops). */
#include "../../src/core/pool.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

#define MAXN 5000

typedef struct {
  _Atomic int hits[MAXN]; /* calls that covered index i */
  int64_t n, chunk;       /* every range must be [k*chunk, min(n, (k+1)*chunk)) */
  _Atomic int calls, bad; /* calls, and calls with wrong boundaries */
  int nested;             /* run a small nested loop inside every range */
} rec_t;

static void count_inner(void *ctx, int64_t b, int64_t e) {
  _Atomic int *c = ctx;
  atomic_fetch_add(c, (int)(e - b));
}

static void record(void *ctx, int64_t b, int64_t e) {
  rec_t *r = ctx;
  atomic_fetch_add(&r->calls, 1);
  if (b < 0 || e > r->n || b >= e || b % r->chunk || e != (b + r->chunk < r->n ? b + r->chunk : r->n)) {
    atomic_fetch_add(&r->bad, 1);
    return;
  }
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&r->hits[i], 1);
  if (r->nested) {
    _Atomic int inner = 0;
    glq_parallel_for(10, 1, count_inner, &inner); /* runs on this thread, all 10 indices */
    if (atomic_load(&inner) != 10) atomic_fetch_add(&r->bad, 1);
  }
}

/* one loop; 1 when its ranges are the documented ones */
static int run(int threads, int64_t n, int64_t min_chunk, int nested) {
  static rec_t r;
  memset(&r, 0, sizeof r);
  int64_t chunk = (n + threads - 1) / threads;
  if (chunk < min_chunk) chunk = min_chunk;
  r.n = n;
  r.chunk = chunk < n ? chunk : n;
  r.nested = nested;
  glq_parallel_for(n, min_chunk, record, &r);
  for (int64_t i = 0; i < n; i++)
    if (atomic_load(&r.hits[i]) != 1) return 0;
  return atomic_load(&r.bad) == 0 && atomic_load(&r.calls) == (n + r.chunk - 1) / r.chunk;
}

int main(void) {
  int sizes[] = {1, 2, 3, 8};
  for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
    int th = sizes[t];
    glq_set_num_threads(th);
    CHECK(glq_num_threads() == th, "pool size %d, asked %d", glq_num_threads(), th);
    int64_t ns[] = {1, 2, 7, 64, 1000, MAXN}, mins[] = {0, 1, 3, 16, 5000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
      for (size_t c = 0; c < sizeof mins / sizeof mins[0]; c++)
        CHECK(run(th, ns[a], mins[c], 0), "%d threads, n=%lld, min_chunk %lld: wrong ranges", th, (long long)ns[a],
              (long long)mins[c]);
    CHECK(run(th, 1000, 7, 1), "%d threads: nested loops", th);
    /* many short loops back to back: workers that arrive late meet newer loops */
    for (int i = 0; i < 20000; i++) {
      int64_t n = 1 + (i * 7919) % 97, min_chunk = 1 + i % 5;
      if (!run(th, n, min_chunk, 0)) {
        CHECK(0, "%d threads, loop %d (n=%lld, min_chunk %lld): wrong ranges", th, i, (long long)n, (long long)min_chunk);
        break;
      }
    }
  }
  printf(fails ? "test_pool: %d FAILED\n" : "test_pool: ok\n", fails);
  return fails != 0;
}

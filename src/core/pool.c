/* pool.c - fixed worker threads running data-parallel loops.
 * A loop is cut into at most one part per thread; the split of [0, n) depends only on n, min_chunk
 * and the pool size, and each index is processed by exactly one call, so independent iterations give
 * identical bytes for any size. Every thread, the caller included, claims the next unclaimed part
 * from one atomic ticket until none is left: which thread runs a part is decided at run time, and
 * the caller never waits for a worker that has not claimed one (on a machine shared with other
 * processes a descheduled worker costs nothing: the caller runs its part too).
 * Workers and the caller spin briefly before sleeping: a decode step dispatches hundreds of
 * small loops, and a condition-variable round trip costs tens of microseconds each time. */
#include "pool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_THREADS 256
#define SPIN 4000 /* pause iterations (~0.1 ms on a Zen 4) before blocking */

typedef struct {
  glq_range_fn fn;
  void *ctx;
  int64_t n, chunk;
} job_t;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  pthread_t th[MAX_THREADS];
  int nthreads;            /* total workers including the caller */
  int started;
  _Atomic unsigned long gen; /* job generation; bumped after the job is written */
  unsigned long base_gen;  /* generation when the current workers were started */
  _Atomic uint64_t ticket; /* nparts << 32 | next unclaimed part; P.job is stable while a part is claimed */
  _Atomic int64_t finished; /* parts of the current job completed */
  _Atomic int quit;
  job_t job;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER; /* one parallel loop at a time */
static _Thread_local int in_parallel;

/* Claim and run parts of the posted job until none is left. The ticket carries the job's part count,
 * so a late thread can only claim a part of the job that is posted now (claims past the end cannot
 * carry into the count: each thread makes one before it stops, and parts <= MAX_THREADS). */
static void run_parts(void) {
  for (;;) {
    uint64_t t = atomic_fetch_add(&P.ticket, 1);
    uint64_t nparts = t >> 32, part = t & 0xffffffffu;
    if (part >= nparts) return;
    const job_t *j = &P.job;
    int64_t b = (int64_t)part * j->chunk, e = b + j->chunk < j->n ? b + j->chunk : j->n;
    j->fn(j->ctx, b, e);
    if (atomic_fetch_add(&P.finished, 1) + 1 == (int64_t)nparts) {
      pthread_mutex_lock(&P.mu);
      pthread_cond_signal(&P.done);
      pthread_mutex_unlock(&P.mu);
    }
  }
}

static void *worker(void *arg) {
  (void)arg;
  in_parallel = 1;
  unsigned long seen = P.base_gen; /* never run a job posted before this worker existed */
  for (;;) {
    for (int i = 0; i < SPIN && atomic_load(&P.gen) == seen && !atomic_load(&P.quit); i++) cpu_relax();
    if (atomic_load(&P.gen) == seen && !atomic_load(&P.quit)) {
      pthread_mutex_lock(&P.mu);
      while (!atomic_load(&P.quit) && atomic_load(&P.gen) == seen) pthread_cond_wait(&P.go, &P.mu);
      pthread_mutex_unlock(&P.mu);
    }
    if (atomic_load(&P.quit)) break;
    seen = atomic_load(&P.gen);
    run_parts();
  }
  return NULL;
}

static int default_threads(void) {
  const char *s = getenv("GLQ_THREADS");
  if (s && *s) {
    int n = atoi(s);
    if (n > 0) return n > MAX_THREADS ? MAX_THREADS : n;
  }
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c < 1 ? 1 : (c > MAX_THREADS ? MAX_THREADS : (int)c);
}

static void stop_workers(void) {
  pthread_mutex_lock(&P.mu);
  atomic_store(&P.quit, 1);
  pthread_cond_broadcast(&P.go);
  pthread_mutex_unlock(&P.mu);
  for (int i = 1; i < P.nthreads; i++) pthread_join(P.th[i], NULL);
  atomic_store(&P.quit, 0);
  P.started = 0;
}

static void start_workers(int n) {
  P.base_gen = atomic_load(&P.gen);
  P.nthreads = 1;
  for (int i = 1; i < n; i++) {
    if (pthread_create(&P.th[i], NULL, worker, (void *)(intptr_t)i) != 0) break;
    P.nthreads = i + 1;
  }
  P.started = 1;
}

static void ensure_started(void) {
  if (!P.started) start_workers(default_threads());
}

int glq_num_threads(void) {
  pthread_mutex_lock(&run_mu);
  ensure_started();
  int n = P.nthreads;
  pthread_mutex_unlock(&run_mu);
  return n;
}

void glq_set_num_threads(int n) {
  pthread_mutex_lock(&run_mu);
  if (n <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c < 1 ? 1 : (int)c;
  }
  if (n > MAX_THREADS) n = MAX_THREADS;
  if (P.started) stop_workers();
  start_workers(n);
  pthread_mutex_unlock(&run_mu);
}

/* Post n indices in parts of `chunk` (run_mu held), claim parts on the calling thread too, wait
 * until every part has finished, release run_mu. */
static void dispatch(int64_t n, int64_t chunk, glq_range_fn fn, void *ctx) {
  int64_t nparts = (n + chunk - 1) / chunk;
  P.job = (job_t){fn, ctx, n, chunk};
  atomic_store(&P.finished, 0);
  atomic_store(&P.ticket, (uint64_t)nparts << 32);
  pthread_mutex_lock(&P.mu);
  atomic_fetch_add(&P.gen, 1); /* wakes the workers (seq_cst, after the job and ticket) */
  pthread_cond_broadcast(&P.go);
  pthread_mutex_unlock(&P.mu);
  in_parallel = 1;
  run_parts();
  in_parallel = 0;
  for (int i = 0; i < SPIN && atomic_load(&P.finished) < nparts; i++) cpu_relax();
  if (atomic_load(&P.finished) < nparts) {
    pthread_mutex_lock(&P.mu);
    while (atomic_load(&P.finished) < nparts) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
  }
  pthread_mutex_unlock(&run_mu);
}

void glq_parallel_for(int64_t n, int64_t min_chunk, glq_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (min_chunk < 1) min_chunk = 1;
  if (in_parallel || n <= min_chunk) { fn(ctx, 0, n); return; }
  pthread_mutex_lock(&run_mu);
  ensure_started();
  int parts = P.nthreads;
  int64_t chunk = (n + parts - 1) / parts;
  if (chunk < min_chunk) chunk = min_chunk;
  if (chunk >= n) {
    pthread_mutex_unlock(&run_mu);
    fn(ctx, 0, n);
    return;
  }
  dispatch(n, chunk, fn, ctx);
}

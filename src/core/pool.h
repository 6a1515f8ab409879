/* pool.h - a small fixed thread pool for data-parallel C loops.
 * Work is split into contiguous index ranges fixed before the loop runs (threads only decide who
 * runs which range), so a loop whose iterations are independent produces identical bytes for any
 * thread count. Size: GLQ_THREADS, default all cores. */
#ifndef GLQ_POOL_H
#define GLQ_POOL_H
#include <stdint.h>

/* fn(ctx, begin, end) is called on disjoint ranges covering [0, n); min_chunk bounds how
 * finely the range is split (use it to keep tiny loops on one thread). Nested calls run serially. */
typedef void (*glq_range_fn)(void *ctx, int64_t begin, int64_t end);
void glq_parallel_for(int64_t n, int64_t min_chunk, glq_range_fn fn, void *ctx);

int glq_num_threads(void);        /* current pool size */
void glq_set_num_threads(int n);  /* resize (n <= 0: all cores); not while a loop runs */

#endif

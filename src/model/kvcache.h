/* kvcache.h - per-layer key/value cache for B sequences that advance together (one length).
 * Storage is f32, f16, or INT8 in the KIVI arrangement: keys are quantized per channel (each
 * channel of a group of `group` tokens shares a scale and minimum), values per token (each
 * token's head_dim channels share a scale and minimum), both asymmetric 8-bit; the newest
 * `residual` to `residual + group - 1` tokens stay in f32 and are quantized a group at a time
 * as they leave that window. Readers get dequantized f32 rows. */
#ifndef GLQ_KVCACHE_H
#define GLQ_KVCACHE_H
#include <stddef.h>
#include <stdint.h>

typedef enum { GLQ_KV_F32, GLQ_KV_F16, GLQ_KV_INT8 } glq_kv_dtype;

typedef struct glq_kvcache_config {
  int n_layers, batch, n_kv_heads, head_dim, max_seq;
  glq_kv_dtype dtype;
  int residual;   /* INT8 only: tokens kept in f32 (default 128 when < 0) */
  int group;      /* INT8 only: tokens per key-quantization group (default 32 when <= 0) */
} glq_kvcache_config;

typedef struct glq_kvcache glq_kvcache;

/* Allocate an empty cache. */
int glq_kvcache_new(const glq_kvcache_config *cfg, glq_kvcache **out);
/* Free the cache (NULL is fine). */
void glq_kvcache_free(glq_kvcache *c);
/* The configuration the cache was built with (defaults filled in). */
const glq_kvcache_config *glq_kvcache_config_of(const glq_kvcache *c);
/* Number of positions stored (the same for every sequence and layer). */
int glq_kvcache_len(const glq_kvcache *c);
/* Forget every position (memory is kept). */
void glq_kvcache_reset(glq_kvcache *c);
/* Bytes the cache has allocated for keys, values, scales and the f32 window. */
size_t glq_kvcache_bytes(const glq_kvcache *c);
/* Store positions [len, len+T) of `layer`: k and v are (batch × T × n_kv_heads × head_dim) f32.
 * Every layer stores the same T positions, then glq_kvcache_advance(c, T) commits them. */
int glq_kvcache_write(glq_kvcache *c, int layer, int T, const float *k, const float *v);
/* Commit T positions written to every layer. */
int glq_kvcache_advance(glq_kvcache *c, int T);
/* Dequantize positions [0, n) (n <= len) of one layer, sequence and kv head into k, v (n × head_dim). */
void glq_kvcache_read(const glq_kvcache *c, int layer, int b, int kvh, int n, float *k, float *v);
/* f32 caches only: the stored rows of one layer, sequence and kv head in place (position p at
 * row p, head_dim floats each), including positions written but not yet committed. Returns 0 and
 * leaves k, v untouched for the other dtypes. */
int glq_kvcache_rows_f32(const glq_kvcache *c, int layer, int b, int kvh, const float **k, const float **v);

#endif

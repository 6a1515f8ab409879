/* e8.h - glq's E8 shell codebook (65536 x 8, and its 256-row prefix) and exact nearest-neighbour coding.
 * Table order is identical, index for index, to glq 0.2.7's bundled table (../shared/docs/glq-spec.md §1). */
#ifndef GLQ_E8_H
#define GLQ_E8_H
#include <stdint.h>

typedef struct glq_e8_codebook {
  int size;              /* 65536 or 256 */
  const float *table;    /* size x 8, row-major */
  const float *norms;    /* size: squared norms */
  const void *priv;      /* search acceleration structures (owned by the module) */
} glq_e8_codebook;

/* The cached codebook of the given size (65536 or 256); built on first use, thread-safe.
 * Returns NULL and sets the error message for another size. */
const glq_e8_codebook *glq_e8_codebook_get(int size);

/* idx[i] = argmin_j ||x_i - C_j||^2 over the codebook (ties: lowest index), for n vectors of 8 floats.
 * Exact: the distance is the real value for x_i as given, for every finite input (see e8.c); a
 * non-finite coordinate is an error naming it. Multithreaded; identical for any thread count. */
int glq_e8_encode(const glq_e8_codebook *cb, const float *x, int64_t n, int32_t *idx);

/* out[i] = C[idx[i] & 0xFFFF] (indices masked as glq stores them, int16 bit patterns accepted). */
void glq_e8_decode(const glq_e8_codebook *cb, const int32_t *idx, int64_t n, float *out);

/* Two-stage (RVQ) decode: out[i] = C[idx[i] & 0xFFFF] + inv_rs * C2[idx2[i] & 0xFFFF], in f32.
 * The 256 table is the prefix of the 65536 one, so an index >= 256 with the 256 book reads the full table. */
void glq_e8_decode2(const glq_e8_codebook *cb, const glq_e8_codebook *cb2, const int32_t *idx, const int32_t *idx2,
                    float inv_rs, int64_t n, float *out);

/* The table as int8 coordinates times two (65536 x 8, values in [-6, 6]); the 256 book is its prefix. */
const int8_t *glq_e8_table_i8(const glq_e8_codebook *cb);
/* The lookup of a lattice point's index (GLQ_E8_HASH_SLOTS slots; e8_exact.h has the layout and the probe). */
struct glq_e8_hslot_s;
const struct glq_e8_hslot_s *glq_e8_hash(const glq_e8_codebook *cb);

/* Test reference: plain exhaustive argmin of ||C_j||^2 - <2C_j, x> evaluated in double (strict <, so
 * ties keep the lowest index). Equals the exact definition whenever those double sums are exact, e.g. when
 * every nonzero |x_i| lies in [2^-20, 16) (then all terms are multiples of 2^-43 below 2^10). */
int glq_e8_encode_bruteforce(const glq_e8_codebook *cb, const float *x, int64_t n, int32_t *idx);

#endif

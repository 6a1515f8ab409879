/* trellis.h - QTIP bitshift-trellis codes (arXiv 2406.11235) in glq 0.8.16's storage layout.
 *
 * A code has L-bit states (L <= 16), K bits per weight and V weights per step (K·V < L). Step i's
 * state is s_i = ((s_{i-1} << KV) mod 2^L) | (KV new bits); state s decodes to V values lut[s·V + v].
 * Codes: "3inst" (V = 1, lookup-free: two fp16 halves of an LCG output added in fp16) and "hyb"
 * (V = 2, glq's quantlut_sym over a stored 512 x 2 table).
 *
 * A 16x16 tile of the rotated weight (row-major, tile[r·16 + c]) is coded as the sequence
 * seq[i] = tile[glq_trellis_perm[i]] (glq's MMA-fragment order) of 256 weights = 256/V steps.
 * Tail-biting: the last state's low L-KV bits equal the first state's high L-KV bits, so a tile packs
 * into 256·K bits = 16·K uint16 words (MSB first): s_0's L bits, KV bits per later step, minus the last
 * L-KV bits. A layer stores [(m/16)·(n/16)] tiles (row-major over the tile grid) of 16·K int16, the
 * bytes then shuffled by glq's kernel_tile_flip (needs m, n multiples of 32).
 *
 * Encoder (Viterbi): minimum sum of squared errors in f32, fixed order (docs/trellis.md): for V = 2 an
 * error is d0·d0 + d1·d1; cost_i(s) = err_i(s) + min over predecessors (lowest predecessor on ties);
 * the final state is the lowest-index minimum. Tail-biting uses glq's two passes: an unconstrained
 * Viterbi over the sequence rotated by half, whose state at the original step 0 fixes the overlap bits,
 * then a Viterbi constrained at both ends to that overlap. SSE4 and AVX2 paths give identical bytes. */
#ifndef GLQ_TRELLIS_H
#define GLQ_TRELLIS_H
#include <stdint.h>

#define GLQ_TRELLIS_TD 16    /* tile side */
#define GLQ_TRELLIS_TILE 256 /* weights per tile */
#define GLQ_TRELLIS_HYB_TLUT 512

typedef enum { GLQ_TRELLIS_3INST = 1, GLQ_TRELLIS_HYB = 2, GLQ_TRELLIS_CUSTOM = 3 } glq_trellis_variant;

typedef struct glq_trellis_code glq_trellis_code;
/* The Viterbi of n sequences of T values at once on another device (the GPU: cuda/trellis.cu): states
 * (n x T/V) must be what glq_trellis_viterbi returns for each sequence, with start_ov = end_ov = overlap[i]
 * (overlap NULL: -1, free ends). */
typedef int (*glq_trellis_viterbi_fn)(void *ctx, const glq_trellis_code *c, const float *x, int64_t n, int T,
                                      const int32_t *overlap, int32_t *states);

struct glq_trellis_code {
  glq_trellis_variant variant;
  int L, K, V;
  float *lut;       /* 2^L x V, state-major (owned) */
  double opt_scale; /* glq's Wscale factor: 1 / (0.9 · rms of the lut values) */
  glq_trellis_viterbi_fn viterbi_batch; /* NULL: the CPU's search; else glq_trellis_quantize_block uses it */
  void *viterbi_ctx;
};

/* MMA-fragment order of a tile: sequence position i holds tile element glq_trellis_perm[i]. */
extern const uint16_t glq_trellis_perm[GLQ_TRELLIS_TILE];

/* The 3inst value of a 16-bit state, exactly glq's decode_3inst (fp16 sum rounded to nearest even). */
float glq_trellis_3inst(uint32_t s);
/* A 3inst code (L 16, V 1) at K bits (1..4). */
int glq_trellis_code_3inst(glq_trellis_code *c, int K);
/* A hyb code (L 16, V 2, quantlut_sym) at K bits (1..7) from tlut (512 x 2 f32). */
int glq_trellis_code_hyb(glq_trellis_code *c, int K, const float *tlut);
/* Any code from an explicit lut (2^L x V), for tests: 1 <= L <= 16, K·V < L. */
int glq_trellis_code_lut(glq_trellis_code *c, int L, int K, int V, const float *lut);
/* Release the lut (safe on a zeroed struct). */
void glq_trellis_code_free(glq_trellis_code *c);

/* Minimum-squared-error states for x (steps·V values): start_ov >= 0 forces s_0 >> KV == start_ov,
 * end_ov >= 0 forces s_last mod 2^(L-KV) == end_ov (-1: free); *cost (may be NULL) gets the f32 path
 * cost. x must be finite. Single-threaded. */
int glq_trellis_viterbi(const glq_trellis_code *c, const float *x, int steps, int32_t start_ov, int32_t end_ov,
                        uint16_t *states, float *cost);
/* Tail-biting states for x (steps·V values, steps even) by glq's two passes (see above). */
int glq_trellis_quantize_seq(const glq_trellis_code *c, const float *x, int steps, uint16_t *states);

/* Words (uint16, MSB first) needed for a tail-biting sequence of steps states. */
int64_t glq_trellis_packed_words(const glq_trellis_code *c, int steps);
/* Pack a tail-biting state sequence; an inconsistent sequence (not a trellis path) is an error. */
int glq_trellis_pack(const glq_trellis_code *c, const uint16_t *states, int steps, uint16_t *words);
/* Unpack words into the steps states (inverse of glq_trellis_pack). */
void glq_trellis_unpack(const glq_trellis_code *c, const uint16_t *words, int steps, uint16_t *states);

/* glq's kernel_tile_flip of a packed m x n layer at K bits: forward (natural -> kernel) or inverse;
 * in and out are nbytes = m·n·K/8 bytes, distinct buffers; m, n multiples of 32. */
int glq_trellis_kernel_flip(const uint8_t *in, uint8_t *out, int64_t m, int64_t n, int K, int forward);

/* Quantize the 16x16 tiles of a rows x 16 block (row stride ld; rows a multiple of 16): per tile the
 * tail-biting Viterbi of its permuted sequence; recon (row stride ldr) gets the decoded values,
 * states (rows/16 x 256/V) the chosen states. Multithreaded over tiles; identical for any thread count. */
int glq_trellis_quantize_block(const glq_trellis_code *c, const float *target, int64_t rows, int64_t ld,
                               float *recon, int64_t ldr, uint16_t *states);
/* Decode one tile's states into the 16x16 natural-order tile (row-major). */
void glq_trellis_decode_tile(const glq_trellis_code *c, const uint16_t *states, float *tile);

/* packed (m/16·n/16 x 16K int16 in glq's kernel layout, or natural with kernel_layout 0) from the
 * states of every tile (tile t = (row tile)·n/16 + column tile, 256/V states each). */
int glq_trellis_pack_layer(const glq_trellis_code *c, const uint16_t *states, int64_t m, int64_t n,
                           int kernel_layout, int16_t *packed);
/* w (m x n f32) = glq's decode_layer of packed: the rotated weight in codebook units (no Wscale). */
int glq_trellis_decode_layer(const glq_trellis_code *c, const int16_t *packed, int64_t m, int64_t n,
                             int kernel_layout, float *w);

/* The Viterbi step in use: 0 portable C, 1 AVX2 (runtime dispatch: AVX2 where the CPU has it; the environment
 * variable GLQ_TRELLIS_VECTOR=0 forces the portable step). Both give the same states bit for bit. */
int glq_trellis_vector(void);
/* Use at most `level` (clamped to what the CPU has); returns the previous level. For tests and benchmarks. */
int glq_trellis_set_vector(int level);

#endif

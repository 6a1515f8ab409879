/* codec.h - what the LDLQ sweep (ldlq.c) needs of a codebook, so that codebooks with other block shapes
 * (the trellis: 16x16 tiles) reuse the same RHT + block LDL + error feedback.
 * The sweep visits blocks of `cols` columns right to left; for each it hands the codec the targets of
 * all rows, as tiles of `rows` consecutive rows (row-major inside a tile, tile after tile), and gets the
 * reconstruction and `ncodes` int32 codes per tile back. The block LDL uses blocks of `cols` too. */
#ifndef GLQ_CODEC_H
#define GLQ_CODEC_H
#include <stdint.h>

enum { GLQ_CODEBOOK_E8 = 0, GLQ_CODEBOOK_E8P = 1, GLQ_CODEBOOK_CUSTOM = 99 };

typedef struct glq_codec glq_codec;
struct glq_codec {
  const char *name;   /* recorded in the artifacts: "e8", "e8p", ... */
  int codebook;       /* GLQ_CODEBOOK_* */
  int cols;           /* columns per block: a multiple of 8 dividing 128 */
  int rows;           /* rows per tile (1: every row coded alone); the padded row count must be a multiple */
  int ncodes;         /* int32 codes per tile and block */
  int bits;           /* 2, 3 or 4 for the builtin codebooks */
  float rs, inv_rs;   /* builtin two-stage codebooks: the residual scale and its f32 inverse (else 0) */
  double wscale_default; /* default Wscale / rms of the rotated weight (the search steps around it) */
  const void *ctx;    /* the codec's own data */
  /* q = the reconstruction nearest t for ntiles tiles (rows x cols floats each), codes (ntiles x ncodes);
   * deterministic for any thread count */
  int (*quantize)(const glq_codec *c, int64_t ntiles, const float *t, float *q, int32_t *codes);
  /* q (ntiles x rows x cols) = the reconstruction of codes (ntiles x ncodes), as quantize returned it */
  int (*decode)(const glq_codec *c, int64_t ntiles, const int32_t *codes, float *q);
};

/* The builtin codec of a codebook (GLQ_CODEBOOK_E8 or _E8P) at 2, 3 or 4 bits with residual scale rs
 * (ignored at 2 bits; <= 0: the codebook's default): 8 columns, single rows, codes (idx1[, idx2]).
 * E8: the shell book, stage 2 its 256 prefix (3 bits) or itself (4). E8P: stage 2 E81B (3) or E8P (4). */
int glq_codec_builtin(int codebook, int bits, double rs, glq_codec *out);
/* The codebook id of a name ("e8" or its checkpoint name "e8_shell", "e8p"), or -1. */
int glq_codebook_from_name(const char *name);

#endif

/* hif4.h - HiFloat4 (HiF4): quantize, dequantize, pack and unpack, bit-exact with the user's
 * reference (docs/hif4.md). A unit is 64 consecutive values of the last dimension (zero-padded):
 * one E6M2 scale, 8 E1_8 bits, 16 E1_16 bits and 64 S1P2 codes = 36 bytes (4.5 bits/value). */
#ifndef GLQ_HIF4_H
#define GLQ_HIF4_H
#include <stdint.h>
#include "../core/tensor.h"

#define GLQ_HIF4_BLOCK 64
#define GLQ_HIF4_UNIT_BYTES 36
#define GLQ_HIF4_NAN_CODE 0xFF

/* quantize flags */
#define GLQ_HIF4_NONFINITE_NAN 1u /* a unit holding NaN/Inf gets scale 0xFF instead of an error */

/* The four fields of a quantized tensor of original shape (..., K), nb = ceil(K/64), all u8 and
 * contiguous. Packed form: e1_8 (..., nb, 1), e1_16 (..., nb, 2), s1p2 (..., nb, 32).
 * Unpacked form (one byte per bit/code): e1_8 (..., nb, 8), e1_16 (..., nb, 16), s1p2 (..., nb, 64).
 * e6m2 is (..., nb) in both. Owns one reference per tensor. */
typedef struct glq_hif4_fields {
  glq_tensor e6m2, e1_8, e1_16, s1p2;
  int ndim;                     /* original tensor: 1..3 dims */
  int64_t shape[GLQ_MAX_DIMS];
} glq_hif4_fields;

/* Raw packed units: n units occupy n, n, 2n and 32n bytes. Borrowed pointers. */
typedef struct glq_hif4_buf {
  uint8_t *e6m2, *e1_8, *e1_16, *s1p2;
} glq_hif4_buf;

/* The scales of one unit as the reference chooses them, and the rounding they imply. */
typedef struct glq_hif4_scales {
  uint8_t e6m2;      /* scale code */
  uint8_t e1_8;      /* bit g: group of 8 number g is halved */
  uint16_t e1_16;    /* bit j: group of 4 number j is halved */
  float rec;         /* bf16(1 / E6M2 value) */
} glq_hif4_scales;

/* Number of units along a last dimension of k values. */
static inline int64_t glq_hif4_nblocks(int64_t k) { return (k + GLQ_HIF4_BLOCK - 1) / GLQ_HIF4_BLOCK; }

/* Round f to bfloat16 (nearest-even), kept as f32; finite values past the bf16 range become inf. */
static inline float glq_hif4_bf16(float f) {
  union { float f; uint32_t u; } v = {f};
  v.u = (v.u + 0x7FFFu + ((v.u >> 16) & 1u)) & 0xFFFF0000u;
  return v.f;
}

/* Value of an E6M2 code: 2^(E-48) (1 + m/4); NaN for 0xFF. */
float glq_hif4_e6m2_value(uint8_t code);
/* Scales of one unit from its 64 bf16-rounded, finite-or-inf values (reference steps 2-6). */
void glq_hif4_unit_scales(const float *x, glq_hif4_scales *s);
/* S1P2 code (sign bit 3, magnitude 0..7) of the bf16-rounded value x at position i (0..63) of a unit (step 7). */
uint8_t glq_hif4_round(float x, const glq_hif4_scales *s, int i);
/* Code c at position i times its micro-scale, in quarter steps (-28..28); value = E6M2/4 * this. */
int glq_hif4_qvalue(uint8_t c, int i, uint8_t e1_8, uint16_t e1_16);

/* Quantize rows × k values (f32, bf16 or f16; row i at x + i*ld elements) into rows × nb units.
 * Multithreaded, deterministic. On non-finite input without GLQ_HIF4_NONFINITE_NAN returns
 * GLQ_ENUMERIC with *bad = the first offending (row*k + col) index and no message. */
int glq_hif4_encode(const void *x, glq_dtype dt, int64_t rows, int64_t k, int64_t ld, unsigned flags,
                    const glq_hif4_buf *out, int64_t *bad);
/* Dequantize rows × nb units into rows × k f32 values (row i at y + i*ld). Multithreaded. */
void glq_hif4_decode(const glq_hif4_buf *in, int64_t rows, int64_t k, float *y, int64_t ld);

/* Quantize tensor x (1..3 dims, f32/bf16/f16); name is used in error messages. */
int glq_hif4_quantize(const glq_tensor *x, const char *name, unsigned flags, glq_hif4_fields *out);
/* Dequantize packed fields into a new f32 tensor of the original shape. */
int glq_hif4_dequantize(const glq_hif4_fields *p, glq_tensor *out);
/* Check the fields' dtypes and shapes against p->shape (packed != 0: packed form); names the field. */
int glq_hif4_fields_check(const glq_hif4_fields *p, int packed);
/* Packed fields -> unpacked fields (new tensors). */
int glq_hif4_unpack(const glq_hif4_fields *p, glq_hif4_fields *out);
/* Unpacked fields -> packed fields (new tensors); bits must be 0/1 and codes 0..15. */
int glq_hif4_pack(const glq_hif4_fields *u, glq_hif4_fields *out);
/* Allocate zeroed fields for a tensor of the given shape (packed != 0: packed form). */
int glq_hif4_fields_new(int ndim, const int64_t *shape, int packed, glq_hif4_fields *out);
/* Raw view of packed fields (they must be contiguous, i.e. pass glq_hif4_fields_check). */
glq_hif4_buf glq_hif4_fields_buf(const glq_hif4_fields *p);
/* Drop the four references and clear *p. */
void glq_hif4_fields_release(glq_hif4_fields *p);

#endif

/* e8p.h - QuIP#'s E8P codebook (2^16 entries) and the E81B 256-entry residual codebook, with exact
 * nearest-codeword search. Index layout identical to glq 0.8.16 (codebook_e8p.py), so its indices decode
 * to the same vectors:
 *   idx (16 bits) = A << 8 | s: A picks one of 256 absolute vectors a (half-odd coordinates, the 227 of norm²
 *   <= 10 in lexicographic order, then 29 of norm² 12), s the 8 sign bits; p = parity of s. Coordinate i is
 *   negated when bit SHUF[i] of s ^ p (bit 0 only) is set, coordinate 7 additionally when sum(a) is odd
 *   (SHUF = 0,4,1,5,2,6,3,7); then every coordinate gets -1/4 if p else +1/4.
 * So entries are y ± 1/4 for y in D8 + 1/2 with an even coordinate sum; every sign pattern of the right
 * parity occurs once per (A, p).
 * E81B: glq 0.8.16's get_e81bgrid order: the 241 E8 points of norm² <= 2 (integer ones, then half-integer
 * ones, each in lexicographic order) and 15 points of norm² 4 (2e_0..2e_7, -2e_0..-2e_6).
 * Nearest: the exact real ||x - C_j||² for x as given (finite floats); ties go to the lowest index. */
#ifndef GLQ_E8P_H
#define GLQ_E8P_H
#include <stdint.h>

#define GLQ_E8P_SIZE 65536
#define GLQ_E81B_SIZE 256

/* Builds the tables (thread-safe, once); 0 or an error code with the message set. */
int glq_e8p_init(void);
/* glq 0.8.16's grid_packed_abs: 256 int32, nibble k = 2·(absolute vector, columns 0,2,4,6,1,3,5,7)[k] + 8,
 * nibble 7 negative when the vector's sum is odd (as its kernels read it). NULL before glq_e8p_init. */
const uint32_t *glq_e8p_packed_abs(void);
/* out (8 floats) = E8P entry idx & 0xFFFF, decoded from the packed grid (no 2 MB table). */
void glq_e8p_decode_one(uint32_t idx, float *out);
/* out[8i..8i+8) = E8P entry idx[i] & 0xFFFF, n vectors. */
void glq_e8p_decode(const int32_t *idx, int64_t n, float *out);
/* idx[i] = exact nearest E8P entry to x_i (8 floats each), lowest index on ties. Multithreaded,
 * identical for any thread count; a non-finite coordinate is an error naming it. */
int glq_e8p_encode(const float *x, int64_t n, int32_t *idx);
/* Test reference: every entry's key (float filter, then double and the exact comparison near the
 * minimum); exact for every finite input. */
int glq_e8p_encode_bruteforce(const float *x, int64_t n, int32_t *idx);

/* glq 0.8.16's tensor-core packing of E8P indices (its checkpoints' Qidxs_e8p): idx (m x nb, 16-bit patterns)
 * <-> packed (m/16, nb/8, 8, 4) int64. Word [I][J][r][c] holds rows 2i, 2i+1 and index columns 2j, 2j+1
 * (i = 8I + r, j = 4J + c); entry k = a + 2b of (row 2i+a, column 2j+b) has its absolute index in byte k and
 * sign bit s in bit 32 + 4s + k. m must be a multiple of 16 and nb of 8 (else GLQ_EINVAL). */
int glq_e8p_pack(const int32_t *idx, int64_t m, int64_t nb, int64_t *packed);
int glq_e8p_unpack(const int64_t *packed, int64_t m, int64_t nb, int32_t *idx);
/* glq 0.8.16's E81B packing (Qidxs2_e81b): idx (m x nb, < 256) <-> (m, nb/8) int64, byte i of word k = column
 * 8k + i; nb a multiple of 8. */
int glq_e81b_pack(const int32_t *idx, int64_t m, int64_t nb, int64_t *packed);
int glq_e81b_unpack(const int64_t *packed, int64_t m, int64_t nb, int32_t *idx);

/* The E8P table as 4x coordinates (65536 x 8 int8, 512 KB). NULL before glq_e8p_init. */
const int8_t *glq_e8p_table4(void);
/* The E81B table as 4x coordinates (256 x 8 int8), for kernels sharing E8P's scale. NULL before init. */
const int8_t *glq_e81b_table4(void);
/* The E81B table as 2x coordinates (256 x 8 int8). NULL before glq_e8p_init. */
const int8_t *glq_e81b_table_i8(void);
/* out[8i..8i+8) = E81B entry idx[i] & 0xFF. */
void glq_e81b_decode(const int32_t *idx, int64_t n, float *out);
/* idx[i] = exact nearest E81B entry (lowest index on ties); multithreaded, deterministic. */
int glq_e81b_encode(const float *x, int64_t n, int32_t *idx);
/* Test reference: all 256 keys in double (strict <) then the exact comparison of near-ties. */
int glq_e81b_encode_bruteforce(const float *x, int64_t n, int32_t *idx);

#endif

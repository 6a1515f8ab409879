/* lowbit.cuh - the E8P and trellis matmuls on the GPU (cuda/lowbit.cu; internal, C++ linkage: linear.cu and
 * bench/cuda/kernel_bench.cu use it). y (B x out, f32 or bf16) = x (B x in, bf16) . W̃ᵀ for the rotated weight W̃
 * of an E8P or 3inst-trellis layer; the Hadamard transforms, SU/SV and the bias are linear.cu's (as for E8).
 * path: GLQ_CUDA_AUTO takes FUSED up to ctx->max_fused_batch rows, else DEQUANT (decode to the context's bf16
 * scratch, glq_cuda_ctx_reserve(ctx, out, in), then cuBLAS), as the E8 and HiF4 matmuls do.
 *
 * E8P (QuIP#'s codebook, src/quant/e8p.h): the index planes are a glq_cuda_e8 made by glq_cuda_e8_create with a
 * NULL codebook (3-bit stage-2 indices < 256, E81B); the decode tables (256 absolute vectors, 256 E81B entries)
 * live in glq_cuda_e8p_tables, 8 KB, copied into every CTA's shared memory. Fused: fused_mma.cuh's kernel with
 * a format whose unpack applies the 8 sign bits and the parity shift to a table row; the stages keep separate
 * accumulators, y = wscale/4 · (acc1 + inv_rs · acc2) with both stages in units of 1/4 (exact in bf16).
 *
 * Trellis (QTIP 3inst, L = 16, V = 1, K = 2..4; src/quant/trellis.h): one 16x16 tile of W̃ is exactly one
 * m16n8k16 A operand: glq's sequence order is the MMA fragment order, so lane l decodes states 8l .. 8l+7 of
 * the tile (16-bit windows of the tile's bitstream at bit 8lK + jK, read from three 32-bit words gathered by
 * shuffles) and they are its four A registers. A 3inst value is an fp16 (11 significant bits): it enters the
 * bf16 MMA as hi + lo (two bf16 values, exact), so the fused product is x_bf16 · W̃ in f32.
 * x_lo (both formats): NULL, or the bf16 remainders of a split input, as in glq_cuda_e8_matmul. */
#ifndef GLQ_CUDA_LOWBIT_CUH
#define GLQ_CUDA_LOWBIT_CUH
#include "common.cuh"

struct glq_cuda_e8p_tables;
/* packed_abs: glq_e8p_packed_abs()'s 256 words (nibble SHUF[i] = 2·|a_i| + 8, nibble 7 negative for an odd sum);
 * e81b4: the 256 x 8 E81B entries times 4 (glq_e81b_table4()). Values must be what E8P has (|4a| <= 14, 4c of
 * E81B in {-8..8}); others are GLQ_EINVAL. */
int glq_cuda_e8p_tables_create(const uint32_t *packed_abs, const int8_t *e81b4, glq_cuda_e8p_tables **out);
void glq_cuda_e8p_tables_free(glq_cuda_e8p_tables *t);
/* l: glq_cuda_e8_create(NULL, bits, out, in, Qidxs, Qidxs2, wscale, inv_rs) of an E8P layer. */
int glq_cuda_e8p_matmul(glq_cuda_ctx *ctx, const glq_cuda_e8p_tables *t, const glq_cuda_e8 *l, const uint16_t *x,
                        const uint16_t *x_lo, int64_t B, void *y, int y_bf16, glq_cuda_path path, cudaStream_t st);

struct FusedRot;
/* The same at B <= 2 with the input transform in the kernel's prologue (fused_mma.cuh, FusedRot): rot's f32 rows are
 * rotated and split (split != 0: hi + lo, as the split-input path) inside each CTA instead of by a launch before. */
int glq_cuda_e8p_matmul_rot(glq_cuda_ctx *ctx, const glq_cuda_e8p_tables *t, const glq_cuda_e8 *l, const FusedRot *rot,
                            int split, int64_t B, void *y, int y_bf16, cudaStream_t st);

struct glq_cuda_tr_layer;
/* A 3inst trellis layer of m x n (multiples of 16) at K bits: words holds the (m/16)·(n/16) tiles (row-major over
 * the tile grid) of 16K uint16 each in glq's natural layout (MSB first; trellis.h), wscale its scale. */
int glq_cuda_tr_layer_create(int K, int64_t m, int64_t n, const uint16_t *words, float wscale, glq_cuda_tr_layer **out);
void glq_cuda_tr_layer_free(glq_cuda_tr_layer *l);
size_t glq_cuda_tr_layer_bytes(const glq_cuda_tr_layer *l);
int glq_cuda_tr_layer_matmul(glq_cuda_ctx *ctx, const glq_cuda_tr_layer *l, const uint16_t *x, const uint16_t *x_lo,
                             int64_t B, void *y,
                            int y_bf16, glq_cuda_path path, cudaStream_t st);

#endif

/* ggml_quants.h - ggml tensor types as stored in GGUF files, and exact block dequantization.
 * Type ids and block layouts are the file format's (llama.cpp's ggml); dequantization follows
 * ggml's reference definitions operation for operation, so results are bit-identical. */
#ifndef GLQ_GGML_QUANTS_H
#define GLQ_GGML_QUANTS_H
#include <stddef.h>
#include <stdint.h>

/* ids of the ggml types that matter to glq (the rest are known only by size) */
enum {
  GLQ_GGML_F32 = 0, GLQ_GGML_F16 = 1, GLQ_GGML_Q4_0 = 2, GLQ_GGML_Q4_1 = 3,
  GLQ_GGML_Q5_0 = 6, GLQ_GGML_Q5_1 = 7, GLQ_GGML_Q8_0 = 8,
  GLQ_GGML_Q4_K = 12, GLQ_GGML_Q5_K = 13, GLQ_GGML_Q6_K = 14,
  GLQ_GGML_I8 = 24, GLQ_GGML_I16 = 25, GLQ_GGML_I32 = 26, GLQ_GGML_I64 = 27, GLQ_GGML_F64 = 28,
  GLQ_GGML_BF16 = 30
};

/* Lower-case name of a type id ("q4_k", "bf16"); NULL if the id is unknown. */
const char *glq_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block of a type; GLQ_EFORMAT naming the id if unknown. */
int glq_ggml_type_block(uint32_t type, int64_t *block_elems, size_t *block_bytes);
/* Dequantize n elements (a whole number of blocks) from src to f32; multithreaded over blocks,
 * identical output for any thread count. GLQ_EUNSUPPORTED / GLQ_EINVAL on other types or n. */
int glq_ggml_dequantize(uint32_t type, const void *src, float *dst, int64_t n);
/* Quantize n elements (a multiple of 32) to Q8_0 blocks as ggml's reference quantizer does (d = amax/127
 * stored as f16, q = round(x/d)); re-quantizing dequantized Q8_0 blocks gives the same bytes. */
int glq_ggml_quantize_q8_0(const float *src, uint8_t *dst, int64_t n);

#endif

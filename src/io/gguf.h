/* gguf.h - read GGUF v2/v3 files (llama.cpp's model format): metadata, tensor infos, tensors.
 *
 * The file is mapped read-only; metadata strings and number arrays point into the mapping.
 * Shapes: GGUF lists dimensions fastest-first (ne[0] = columns). glq is row-major, so
 * glq_gguf_tensor_shape() reverses them: a weight with ne = [in, out] is an (out x in) matrix.
 * Tensors: f32/f16/bf16/f64/i8..i64 come back as zero-copy views of the mapping in their own
 * dtype (copies in the rare file whose alignment is below the element size); quantized types
 * (q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k) are dequantized to a new f32 tensor, exactly as ggml does.
 * Every malformed input is reported with GLQ_EFORMAT and a message that names the file. */
#ifndef GLQ_GGUF_H
#define GLQ_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include "../core/tensor.h"

/* metadata value types (ids are the file format's) */
typedef enum {
  GLQ_GGUF_U8 = 0, GLQ_GGUF_I8 = 1, GLQ_GGUF_U16 = 2, GLQ_GGUF_I16 = 3, GLQ_GGUF_U32 = 4,
  GLQ_GGUF_I32 = 5, GLQ_GGUF_F32 = 6, GLQ_GGUF_BOOL = 7, GLQ_GGUF_STRING = 8, GLQ_GGUF_ARRAY = 9,
  GLQ_GGUF_U64 = 10, GLQ_GGUF_I64 = 11, GLQ_GGUF_F64 = 12
} glq_gguf_type;

typedef struct glq_gguf_value {
  glq_gguf_type type;
  glq_gguf_type elem_type;      /* arrays: the element type */
  uint64_t len;                 /* strings: bytes; arrays: elements */
  const uint8_t *data;          /* scalar bytes, string bytes (not NUL-terminated), or packed numbers */
  struct glq_gguf_value *items; /* arrays of strings or arrays: one value per element; else NULL */
} glq_gguf_value;

typedef struct {
  char *key; /* NUL-terminated copy */
  glq_gguf_value value;
} glq_gguf_kv;

typedef struct {
  char *name;       /* NUL-terminated copy */
  uint32_t type;    /* ggml type id (see ggml_quants.h) */
  int ndim;
  int64_t ne[4];    /* as stored: ne[0] is the fastest-varying dimension; unused entries are 1 */
  uint64_t offset;  /* from the start of the data section */
  uint64_t nbytes;
} glq_gguf_tensor_info;

typedef struct {
  char *path;       /* the name used in messages */
  glq_storage *st;  /* the whole file */
  uint32_t version;
  uint32_t alignment;
  uint64_t data_offset;
  uint64_t n_kv, n_tensors;
  glq_gguf_kv *kv;
  glq_gguf_tensor_info *tensors;
  uint32_t *kv_hash, *tensor_hash; /* internal: open-addressing name lookup (index + 1; 0 = empty) */
  uint64_t kv_mask, tensor_mask;
} glq_gguf;

/* Map and parse a file. */
int glq_gguf_open(const char *path, glq_gguf **out);
/* Parse a file already in memory (st holds all its bytes; retained); name is used in messages. */
int glq_gguf_open_storage(glq_storage *st, const char *name, glq_gguf **out);
/* Release the file (tensor views made from it stay valid). NULL is ignored. */
void glq_gguf_close(glq_gguf *g);

/* The value of a metadata key, or NULL. */
const glq_gguf_value *glq_gguf_get(const glq_gguf *g, const char *key);
/* Element i of an integer/bool array, or the scalar when i == 0; GLQ_EINVAL if not integral. */
int glq_gguf_value_int(const glq_gguf_value *v, uint64_t i, int64_t *out);
/* Element i of a numeric array (or scalar) as a double; GLQ_EINVAL if not numeric. */
int glq_gguf_value_num(const glq_gguf_value *v, uint64_t i, double *out);
/* Element i of a string array (or the string when i == 0): bytes and length; GLQ_EINVAL otherwise. */
int glq_gguf_value_str(const glq_gguf_value *v, uint64_t i, const char **s, size_t *len);

/* The tensor info with this name, or NULL. */
const glq_gguf_tensor_info *glq_gguf_find_tensor(const glq_gguf *g, const char *name);
/* Row-major shape (dims reversed from the file's ne); returns ndim. */
int glq_gguf_tensor_shape(const glq_gguf_tensor_info *ti, int64_t shape[4]);
/* The tensor: a zero-copy view for plain dtypes, a dequantized f32 tensor for quantized ones. */
int glq_gguf_tensor(const glq_gguf *g, const glq_gguf_tensor_info *ti, glq_tensor *out);
/* Pointer to a tensor's raw bytes in the file (ti->nbytes of them). */
const void *glq_gguf_tensor_data(const glq_gguf *g, const glq_gguf_tensor_info *ti);

#endif

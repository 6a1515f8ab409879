/* tensor.h - dtypes, reference-counted storage and strided tensor views (up to 4-D).
 * A glq_tensor is a small value (shape, strides, offset, dtype) plus one reference to a
 * glq_storage. Copying the struct does not add a reference: use glq_tensor_retain/release. */
#ifndef GLQ_TENSOR_H
#define GLQ_TENSOR_H
#include <stddef.h>
#include <stdint.h>
#include "error.h"

#define GLQ_MAX_DIMS 4

typedef enum {
  GLQ_F64, GLQ_F32, GLQ_F16, GLQ_BF16, GLQ_I64, GLQ_I32, GLQ_I16, GLQ_I8, GLQ_U8, GLQ_BOOL,
  GLQ_NDTYPES
} glq_dtype;

typedef enum { GLQ_STORAGE_HEAP, GLQ_STORAGE_MMAP, GLQ_STORAGE_CUDA, GLQ_STORAGE_EXTERNAL } glq_storage_kind;

typedef struct glq_storage {
  int refcount;
  glq_storage_kind kind;
  void *data;          /* first byte of the usable region */
  size_t nbytes;
  void *map_base;      /* mmap: page-aligned base and length to munmap */
  size_t map_len;
  int readonly;        /* mmap'd files are read-only */
  void (*free_fn)(struct glq_storage *); /* external/cuda storage release hook (may be NULL) */
  void *owner;         /* for free_fn */
} glq_storage;

typedef struct glq_tensor {
  glq_storage *st;     /* NULL only for the empty/invalid tensor */
  size_t offset;       /* in bytes from st->data */
  glq_dtype dtype;
  int ndim;            /* 0 (scalar) .. 4 */
  int64_t shape[GLQ_MAX_DIMS];
  int64_t stride[GLQ_MAX_DIMS]; /* in elements */
} glq_tensor;

/* dtype facts */
size_t glq_dtype_size(glq_dtype dt);                 /* bytes per element */
const char *glq_dtype_name(glq_dtype dt);            /* "f32", "bf16", ... */
int glq_dtype_from_name(const char *name, glq_dtype *out); /* GLQ_EINVAL if unknown */
int glq_dtype_is_float(glq_dtype dt);

/* storage */
int glq_storage_alloc(size_t nbytes, glq_storage **out);          /* zero-filled heap, refcount 1 */
int glq_storage_mmap(const char *path, glq_storage **out);        /* read-only map of a whole file */
void glq_storage_retain(glq_storage *st);
void glq_storage_release(glq_storage *st);

/* construction */
int glq_tensor_new(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out); /* zeros, contiguous */
int glq_tensor_view(glq_storage *st, size_t offset, glq_dtype dt, int ndim, const int64_t *shape,
                    glq_tensor *out); /* contiguous view; retains st; checks bounds */
void glq_tensor_retain(const glq_tensor *t);
void glq_tensor_release(glq_tensor *t); /* drops the storage reference and clears *t */

/* queries */
int64_t glq_tensor_numel(const glq_tensor *t);
int glq_tensor_is_contiguous(const glq_tensor *t);
static inline void *glq_tensor_data(const glq_tensor *t) { return (char *)t->st->data + t->offset; }
int glq_shape_check(int ndim, const int64_t *shape); /* 0..4 dims, sizes >= 0, numel fits */

/* views (share storage; out holds its own reference) */
int glq_tensor_reshape(const glq_tensor *t, int ndim, const int64_t *shape, glq_tensor *out); /* contiguous only; one -1 allowed */
int glq_tensor_narrow(const glq_tensor *t, int dim, int64_t start, int64_t len, glq_tensor *out);
int glq_tensor_transpose(const glq_tensor *t, int d0, int d1, glq_tensor *out);

/* copies and conversion */
int glq_tensor_contiguous(const glq_tensor *t, glq_tensor *out); /* new ref to t if already contiguous */
int glq_tensor_to(const glq_tensor *t, glq_dtype dt, glq_tensor *out); /* new contiguous tensor */
int glq_tensor_copy_(glq_tensor *dst, const glq_tensor *src); /* same shape; converts dtype */

/* element access as double (slow; for tests, printing, small tables) */
double glq_tensor_get(const glq_tensor *t, const int64_t *idx);
int glq_tensor_set(glq_tensor *t, const int64_t *idx, double v);

/* exact scalar conversions (round-to-nearest-even) */
float glq_bf16_to_f32(uint16_t h);
uint16_t glq_f32_to_bf16(float f);
float glq_f16_to_f32(uint16_t h);
uint16_t glq_f32_to_f16(float f);
/* bulk contiguous conversions between any two dtypes (float->int truncates toward zero, saturating) */
void glq_convert(const void *src, glq_dtype sdt, void *dst, glq_dtype ddt, int64_t n);

/* raw file I/O of a contiguous tensor's bytes (little-endian host assumed) */
int glq_tensor_tofile(const glq_tensor *t, const char *path);   /* atomic: tmp + rename */
int glq_tensor_fromfile(const char *path, glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out);

/* atomic file writing used by every writer: write to "<path>.tmp.<pid>" then rename; an existing character
 * device or FIFO (/dev/null, a pipe) is written in place instead, any other non-regular path refused */
typedef struct glq_atomic_file glq_atomic_file;
int glq_atomic_open(const char *path, glq_atomic_file **out);
int glq_atomic_write(glq_atomic_file *f, const void *buf, size_t n);
int glq_atomic_commit(glq_atomic_file *f);  /* fsync, rename into place, free */
void glq_atomic_abort(glq_atomic_file *f);  /* remove temp, free */
/* 64-bit checksum of a regular file's bytes (FNV-1a over little-endian 8-byte words, then the tail bytes):
 * detects flipped or truncated bytes in files we wrote earlier (not a cryptographic hash) */
int glq_file_checksum(const char *path, uint64_t *out);

#endif

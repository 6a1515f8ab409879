/* safetensors.h - read (zero-copy, mmap) and write (atomic) safetensors files, and load sharded
 * checkpoints through model.safetensors.index.json.
 * Format: 8-byte little-endian header length N, N bytes of JSON object header, then the data
 * section. Each header member "name": {"dtype","shape","data_offsets":[begin,end]} gives a byte
 * range relative to the start of the data section; "__metadata__" is a string->string map.
 * Readers validate everything and never crash on malformed files. */
#ifndef GLQ_SAFETENSORS_H
#define GLQ_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "core/tensor.h"

/* Headers longer than this are refused (the reference implementation uses the same limit). */
#define GLQ_SAFETENSORS_MAX_HEADER 100000000u

typedef struct {
  char *name;
  glq_dtype dtype;
  int ndim;
  int64_t shape[GLQ_MAX_DIMS];
  uint64_t begin, end;   /* data_offsets: byte range relative to the file's data section */
} glq_st_entry;

typedef struct {
  size_t n;              /* tensors, in header order (index order for a sharded set) */
  glq_st_entry *entries;
  glq_tensor *tensors;   /* one per entry; NULL when only the header was read */
  size_t n_meta;
  char **meta;           /* n_meta pairs: meta[2k] key, meta[2k+1] value */
  uint64_t data_start;   /* file offset of the data section (8 + header length); 0 for a sharded set */
} glq_safetensors;

/* Parse and validate the header of a safetensors file whose first len bytes are buf (at least
 * the 8-byte length and the whole JSON header) and whose total size is file_size; fname is used
 * in messages. Fills entries and meta only. */
int glq_safetensors_parse(const void *buf, size_t len, uint64_t file_size, const char *fname,
                          glq_safetensors **out);
/* Parse a whole file held in st and make every tensor a view of st (copied only when its bytes
 * are misaligned for its dtype). */
int glq_safetensors_from_storage(glq_storage *st, const char *fname, glq_safetensors **out);
/* mmap path read-only and return zero-copy views of all its tensors plus __metadata__. */
int glq_safetensors_load(const char *path, glq_safetensors **out);
/* Read and validate only the header of path (names, dtypes, shapes, offsets; tensors NULL). */
int glq_safetensors_info(const char *path, glq_safetensors **out);
/* Load a sharded checkpoint from an index JSON file (or a directory holding
 * model.safetensors.index.json): the tensors of weight_map, each shard mapped once; meta holds
 * the index's "metadata" strings and integers (as decimal text). */
int glq_safetensors_load_index(const char *path, glq_safetensors **out);
/* Release tensors, names and metadata (NULL is fine). */
void glq_safetensors_free(glq_safetensors *s);

/* Write n tensors and n_meta metadata pairs (meta[2k] key, meta[2k+1] value) atomically to path.
 * Tensors are stored in order of decreasing element size, then by name (bytewise), with the
 * header members in the same order after "__metadata__"; with no holes between tensors every
 * tensor starts at a multiple of its element size, and the header is space-padded so the data
 * section starts at a multiple of 8. Non-contiguous tensors are written contiguously. */
int glq_safetensors_save(const char *path, size_t n, const char *const *names, const glq_tensor *tensors,
                         size_t n_meta, const char *const *meta);

#endif

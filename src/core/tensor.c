/* tensor.c - storage, strided views, dtype conversion and raw file I/O. */
#include "tensor.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes ---- */

static const struct { const char *name; size_t size; int is_float; } DT[GLQ_NDTYPES] = {
  [GLQ_F64] = {"f64", 8, 1},  [GLQ_F32] = {"f32", 4, 1}, [GLQ_F16] = {"f16", 2, 1},
  [GLQ_BF16] = {"bf16", 2, 1}, [GLQ_I64] = {"i64", 8, 0}, [GLQ_I32] = {"i32", 4, 0},
  [GLQ_I16] = {"i16", 2, 0},  [GLQ_I8] = {"i8", 1, 0},   [GLQ_U8] = {"u8", 1, 0},
  [GLQ_BOOL] = {"bool", 1, 0},
};

size_t glq_dtype_size(glq_dtype dt) { return (unsigned)dt < GLQ_NDTYPES ? DT[dt].size : 0; }
const char *glq_dtype_name(glq_dtype dt) { return (unsigned)dt < GLQ_NDTYPES ? DT[dt].name : "?"; }
int glq_dtype_is_float(glq_dtype dt) { return (unsigned)dt < GLQ_NDTYPES && DT[dt].is_float; }

int glq_dtype_from_name(const char *name, glq_dtype *out) {
  for (int i = 0; i < GLQ_NDTYPES; i++)
    if (strcmp(name, DT[i].name) == 0) { *out = (glq_dtype)i; return GLQ_OK; }
  return glq_error(GLQ_EINVAL, "unknown dtype '%s' (expected f64, f32, f16, bf16, i64, i32, i16, i8, u8 or bool)", name);
}

/* ---- scalar conversions ---- */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float glq_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t glq_f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN, keep sign/payload top */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

float glq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0x1f) return u2f(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    float v = (float)m * 0x1p-24f; /* exact: m < 1024 */
    return sign ? -v : v;
  }
  return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t glq_f32_to_f16(float f) {
  uint32_t x = f2u(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) {                                  /* f16 subnormal range */
    float n = nearbyintf(u2f(ax) * 0x1p24f);               /* exact scaling, RNE */
    return (uint16_t)(sign | (uint32_t)n);
  }
  uint32_t r = ax - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return (uint16_t)(sign | (r >> 13));
}

/* read element i of a contiguous buffer as double / write double */
static double load_d(const void *p, glq_dtype dt, int64_t i) {
  switch (dt) {
  case GLQ_F64: return ((const double *)p)[i];
  case GLQ_F32: return ((const float *)p)[i];
  case GLQ_F16: return glq_f16_to_f32(((const uint16_t *)p)[i]);
  case GLQ_BF16: return glq_bf16_to_f32(((const uint16_t *)p)[i]);
  case GLQ_I64: return (double)((const int64_t *)p)[i];
  case GLQ_I32: return ((const int32_t *)p)[i];
  case GLQ_I16: return ((const int16_t *)p)[i];
  case GLQ_I8: return ((const int8_t *)p)[i];
  case GLQ_U8: return ((const uint8_t *)p)[i];
  case GLQ_BOOL: return ((const uint8_t *)p)[i] != 0;
  default: return 0;
  }
}

static int64_t sat_i(double v, double lo, double hi) {
  if (v != v) return 0;
  if (v <= lo) return (int64_t)lo;
  if (v >= hi) return (int64_t)hi;
  return (int64_t)v; /* truncation toward zero */
}

static void store_d(void *p, glq_dtype dt, int64_t i, double v) {
  switch (dt) {
  case GLQ_F64: ((double *)p)[i] = v; break;
  case GLQ_F32: ((float *)p)[i] = (float)v; break;
  case GLQ_F16: ((uint16_t *)p)[i] = glq_f32_to_f16((float)v); break;
  case GLQ_BF16: ((uint16_t *)p)[i] = glq_f32_to_bf16((float)v); break;
  case GLQ_I64: ((int64_t *)p)[i] = sat_i(v, -9223372036854775808.0, 9223372036854774784.0); break;
  case GLQ_I32: ((int32_t *)p)[i] = (int32_t)sat_i(v, -2147483648.0, 2147483647.0); break;
  case GLQ_I16: ((int16_t *)p)[i] = (int16_t)sat_i(v, -32768.0, 32767.0); break;
  case GLQ_I8: ((int8_t *)p)[i] = (int8_t)sat_i(v, -128.0, 127.0); break;
  case GLQ_U8: ((uint8_t *)p)[i] = (uint8_t)sat_i(v, 0.0, 255.0); break;
  case GLQ_BOOL: ((uint8_t *)p)[i] = (v != 0); break;
  default: break;
  }
}

void glq_convert(const void *src, glq_dtype sdt, void *dst, glq_dtype ddt, int64_t n) {
  if (sdt == ddt) { memcpy(dst, src, (size_t)n * glq_dtype_size(sdt)); return; }
  if (sdt == GLQ_F32 && ddt == GLQ_BF16) {
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = glq_f32_to_bf16(((const float *)src)[i]);
  } else if (sdt == GLQ_BF16 && ddt == GLQ_F32) {
    for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = glq_bf16_to_f32(((const uint16_t *)src)[i]);
  } else if (sdt == GLQ_F32 && ddt == GLQ_F16) {
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = glq_f32_to_f16(((const float *)src)[i]);
  } else if (sdt == GLQ_F16 && ddt == GLQ_F32) {
    for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = glq_f16_to_f32(((const uint16_t *)src)[i]);
  } else if (sdt == GLQ_I64 && ddt != GLQ_F64 && ddt != GLQ_F32 && ddt != GLQ_F16 && ddt != GLQ_BF16) {
    /* integer -> integer without a trip through double (exact for all i64) */
    for (int64_t i = 0; i < n; i++) {
      int64_t v = ((const int64_t *)src)[i];
      store_d(dst, ddt, i, v > 9007199254740992LL ? 9007199254740992.0 : v < -9007199254740992LL ? -9007199254740992.0 : (double)v);
    }
  } else if (ddt == GLQ_I64 && !glq_dtype_is_float(sdt)) {
    for (int64_t i = 0; i < n; i++) ((int64_t *)dst)[i] = (int64_t)load_d(src, sdt, i);
  } else if (sdt == GLQ_F64 && (ddt == GLQ_F16 || ddt == GLQ_BF16)) {
    /* double -> half types: round once through float (documented double rounding) */
    for (int64_t i = 0; i < n; i++) store_d(dst, ddt, i, ((const double *)src)[i]);
  } else {
    for (int64_t i = 0; i < n; i++) store_d(dst, ddt, i, load_d(src, sdt, i));
  }
}

/* ---- storage ---- */

static char empty_region[8];

int glq_storage_alloc(size_t nbytes, glq_storage **out) {
  glq_storage *st = calloc(1, sizeof *st);
  if (!st) return glq_error(GLQ_ENOMEM, "out of memory allocating tensor storage");
  st->data = nbytes ? aligned_alloc(64, (nbytes + 63) & ~(size_t)63) : empty_region;
  if (!st->data) { free(st); return glq_error(GLQ_ENOMEM, "out of memory allocating %zu bytes", nbytes); }
  if (nbytes) memset(st->data, 0, nbytes);
  st->refcount = 1;
  st->kind = GLQ_STORAGE_HEAP;
  st->nbytes = nbytes;
  *out = st;
  return GLQ_OK;
}

int glq_storage_mmap(const char *path, glq_storage **out) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* O_NONBLOCK: a FIFO is refused below, not waited on */
  if (fd < 0) return glq_error(GLQ_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return glq_error(GLQ_EIO, "%s: not a regular file", path);
  }
  glq_storage *st = calloc(1, sizeof *st);
  if (!st) { close(fd); return glq_error(GLQ_ENOMEM, "out of memory"); }
  size_t len = (size_t)sb.st_size;
  if (len) {
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      close(fd);
      free(st);
      return glq_error(GLQ_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    st->map_base = p;
    st->map_len = len;
    st->data = p;
  } else {
    st->data = empty_region;
  }
  close(fd);
  st->refcount = 1;
  st->kind = GLQ_STORAGE_MMAP;
  st->nbytes = len;
  st->readonly = 1;
  *out = st;
  return GLQ_OK;
}

void glq_storage_retain(glq_storage *st) {
  if (st) atomic_fetch_add_explicit((_Atomic int *)&st->refcount, 1, memory_order_relaxed);
}

void glq_storage_release(glq_storage *st) {
  if (!st) return;
  if (atomic_fetch_sub_explicit((_Atomic int *)&st->refcount, 1, memory_order_acq_rel) != 1) return;
  switch (st->kind) {
  case GLQ_STORAGE_HEAP: if (st->data != empty_region) free(st->data); break;
  case GLQ_STORAGE_MMAP: if (st->map_base) munmap(st->map_base, st->map_len); break;
  default: if (st->free_fn) st->free_fn(st); break;
  }
  free(st);
}

/* ---- tensors ---- */

int glq_shape_check(int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > GLQ_MAX_DIMS)
    return glq_error(GLQ_EINVAL, "tensors have 0 to %d dimensions, got %d", GLQ_MAX_DIMS, ndim);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return glq_error(GLQ_EINVAL, "negative size %lld in dimension %d", (long long)shape[i], i + 1);
    if (shape[i] && n > (INT64_MAX / 16) / shape[i]) return glq_error(GLQ_EINVAL, "tensor too large");
    n *= shape[i];
  }
  return GLQ_OK;
}

static void set_contiguous(glq_tensor *t, int ndim, const int64_t *shape) {
  t->ndim = ndim;
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    t->shape[i] = shape[i];
    t->stride[i] = s;
    s *= shape[i];
  }
  for (int i = ndim; i < GLQ_MAX_DIMS; i++) t->shape[i] = 1, t->stride[i] = 1;
}

int64_t glq_tensor_numel(const glq_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

int glq_tensor_new(glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out) {
  memset(out, 0, sizeof *out);
  if ((unsigned)dt >= GLQ_NDTYPES) return glq_error(GLQ_EINVAL, "invalid dtype");
  int rc = glq_shape_check(ndim, shape);
  if (rc) return rc;
  glq_tensor t = {0};
  set_contiguous(&t, ndim, shape);
  t.dtype = dt;
  rc = glq_storage_alloc((size_t)glq_tensor_numel(&t) * glq_dtype_size(dt), &t.st);
  if (rc) return rc;
  *out = t;
  return GLQ_OK;
}

int glq_tensor_view(glq_storage *st, size_t offset, glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out) {
  memset(out, 0, sizeof *out);
  if ((unsigned)dt >= GLQ_NDTYPES) return glq_error(GLQ_EINVAL, "invalid dtype");
  int rc = glq_shape_check(ndim, shape);
  if (rc) return rc;
  glq_tensor t = {0};
  set_contiguous(&t, ndim, shape);
  t.dtype = dt;
  size_t need = (size_t)glq_tensor_numel(&t) * glq_dtype_size(dt);
  if (offset > st->nbytes || need > st->nbytes - offset)
    return glq_error(GLQ_EINVAL, "view of %zu bytes at offset %zu exceeds storage of %zu bytes", need, offset, st->nbytes);
  t.st = st;
  t.offset = offset;
  glq_storage_retain(st);
  *out = t;
  return GLQ_OK;
}

void glq_tensor_retain(const glq_tensor *t) { glq_storage_retain(t->st); }

void glq_tensor_release(glq_tensor *t) {
  glq_storage_release(t->st);
  memset(t, 0, sizeof *t);
}

int glq_tensor_is_contiguous(const glq_tensor *t) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->stride[i] != s) return 0;
    s *= t->shape[i];
  }
  return 1;
}

int glq_tensor_reshape(const glq_tensor *t, int ndim, const int64_t *shape, glq_tensor *out) {
  if (!glq_tensor_is_contiguous(t)) return glq_error(GLQ_EINVAL, "reshape needs a contiguous tensor (call :contiguous() first)");
  if (ndim < 0 || ndim > GLQ_MAX_DIMS) return glq_error(GLQ_EINVAL, "reshape: 0 to %d dimensions, got %d", GLQ_MAX_DIMS, ndim);
  int64_t sh[GLQ_MAX_DIMS], known = 1;
  int infer = -1;
  for (int i = 0; i < ndim; i++) {
    sh[i] = shape[i];
    if (sh[i] == -1) {
      if (infer >= 0) return glq_error(GLQ_EINVAL, "reshape: only one dimension may be -1");
      infer = i;
    } else if (sh[i] < 0) {
      return glq_error(GLQ_EINVAL, "reshape: negative size %lld", (long long)sh[i]);
    } else {
      known *= sh[i];
    }
  }
  int64_t n = glq_tensor_numel(t);
  if (infer >= 0) {
    if (known == 0 || n % known) return glq_error(GLQ_EINVAL, "reshape: cannot infer -1 for %lld elements", (long long)n);
    sh[infer] = n / known;
    known *= sh[infer];
  }
  if (known != n) return glq_error(GLQ_EINVAL, "reshape: %lld elements cannot take a shape of %lld", (long long)n, (long long)known);
  glq_tensor r = *t;
  set_contiguous(&r, ndim, sh);
  glq_tensor_retain(&r);
  *out = r;
  return GLQ_OK;
}

int glq_tensor_narrow(const glq_tensor *t, int dim, int64_t start, int64_t len, glq_tensor *out) {
  if (dim < 0 || dim >= t->ndim) return glq_error(GLQ_EINVAL, "narrow: dimension %d out of range for a %d-d tensor", dim + 1, t->ndim);
  if (start < 0 || len < 0 || start > t->shape[dim] || len > t->shape[dim] - start)
    return glq_error(GLQ_EINVAL, "narrow: range [%lld, %lld) outside dimension %d of size %lld", (long long)start,
                     (long long)(start + len), dim + 1, (long long)t->shape[dim]);
  glq_tensor r = *t;
  r.offset += (size_t)(start * t->stride[dim]) * glq_dtype_size(t->dtype);
  r.shape[dim] = len;
  glq_tensor_retain(&r);
  *out = r;
  return GLQ_OK;
}

int glq_tensor_transpose(const glq_tensor *t, int d0, int d1, glq_tensor *out) {
  if (d0 < 0 || d0 >= t->ndim || d1 < 0 || d1 >= t->ndim)
    return glq_error(GLQ_EINVAL, "transpose: dimensions %d, %d out of range for a %d-d tensor", d0 + 1, d1 + 1, t->ndim);
  glq_tensor r = *t;
  int64_t s = r.shape[d0]; r.shape[d0] = r.shape[d1]; r.shape[d1] = s;
  s = r.stride[d0]; r.stride[d0] = r.stride[d1]; r.stride[d1] = s;
  glq_tensor_retain(&r);
  *out = r;
  return GLQ_OK;
}

/* visit elements of t in row-major order, calling fn with element byte pointers in runs */
typedef void (*run_fn)(void *ctx, const char *src, int64_t stride_bytes, int64_t n);
static void for_each_run(const glq_tensor *t, run_fn fn, void *ctx) {
  size_t es = glq_dtype_size(t->dtype);
  const char *base = (const char *)t->st->data + t->offset;
  if (t->ndim == 0) { fn(ctx, base, (int64_t)es, 1); return; }
  int64_t n = glq_tensor_numel(t);
  if (n == 0) return;
  int last = t->ndim - 1;
  int64_t idx[GLQ_MAX_DIMS] = {0};
  for (;;) {
    int64_t off = 0;
    for (int i = 0; i < last; i++) off += idx[i] * t->stride[i];
    fn(ctx, base + off * (int64_t)es, t->stride[last] * (int64_t)es, t->shape[last]);
    int i = last - 1;
    for (; i >= 0; i--) {
      if (++idx[i] < t->shape[i]) break;
      idx[i] = 0;
    }
    if (i < 0) break;
  }
}

typedef struct { char *dst; glq_dtype sdt, ddt; size_t ses, des; } copy_ctx;
static void copy_run(void *c, const char *src, int64_t sb, int64_t n) {
  copy_ctx *k = c;
  if ((size_t)sb == k->ses) {
    glq_convert(src, k->sdt, k->dst, k->ddt, n);
  } else {
    for (int64_t i = 0; i < n; i++) glq_convert(src + i * sb, k->sdt, k->dst + (size_t)i * k->des, k->ddt, 1);
  }
  k->dst += (size_t)n * k->des;
}

static int same_shape(const glq_tensor *a, const glq_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static void shape_str(const glq_tensor *t, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "(");
  for (int i = 0; i < t->ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (k < n) snprintf(buf + k, n - k, ")");
}

int glq_tensor_copy_(glq_tensor *dst, const glq_tensor *src) {
  if (!same_shape(dst, src)) {
    char a[96], b[96];
    shape_str(dst, a, sizeof a);
    shape_str(src, b, sizeof b);
    return glq_error(GLQ_EINVAL, "copy: shape mismatch, destination %s vs source %s", a, b);
  }
  if (dst->st->readonly) return glq_error(GLQ_EINVAL, "copy: destination is read-only (a mapped file)");
  if (glq_tensor_is_contiguous(dst)) {
    copy_ctx k = {(char *)glq_tensor_data(dst), src->dtype, dst->dtype, glq_dtype_size(src->dtype), glq_dtype_size(dst->dtype)};
    for_each_run(src, copy_run, &k);
    return GLQ_OK;
  }
  /* strided destination: go through a contiguous temporary */
  glq_tensor tmp;
  int rc = glq_tensor_to(src, dst->dtype, &tmp);
  if (rc) return rc;
  int64_t n = glq_tensor_numel(dst), idx[GLQ_MAX_DIMS] = {0};
  size_t es = glq_dtype_size(dst->dtype);
  const char *s = glq_tensor_data(&tmp);
  for (int64_t e = 0; e < n; e++) {
    int64_t off = 0;
    for (int i = 0; i < dst->ndim; i++) off += idx[i] * dst->stride[i];
    memcpy((char *)glq_tensor_data(dst) + off * (int64_t)es, s + (size_t)e * es, es);
    for (int i = dst->ndim - 1; i >= 0; i--) {
      if (++idx[i] < dst->shape[i]) break;
      idx[i] = 0;
    }
  }
  glq_tensor_release(&tmp);
  return GLQ_OK;
}

int glq_tensor_to(const glq_tensor *t, glq_dtype dt, glq_tensor *out) {
  glq_tensor r;
  int rc = glq_tensor_new(dt, t->ndim, t->shape, &r);
  if (rc) return rc;
  copy_ctx k = {(char *)glq_tensor_data(&r), t->dtype, dt, glq_dtype_size(t->dtype), glq_dtype_size(dt)};
  for_each_run(t, copy_run, &k);
  *out = r;
  return GLQ_OK;
}

int glq_tensor_contiguous(const glq_tensor *t, glq_tensor *out) {
  if (glq_tensor_is_contiguous(t)) {
    *out = *t;
    glq_tensor_retain(out);
    return GLQ_OK;
  }
  return glq_tensor_to(t, t->dtype, out);
}

static int64_t elem_offset(const glq_tensor *t, const int64_t *idx) {
  int64_t off = 0;
  for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
  return off;
}

double glq_tensor_get(const glq_tensor *t, const int64_t *idx) {
  const char *base = (const char *)t->st->data + t->offset;
  return load_d(base, t->dtype, elem_offset(t, idx));
}

int glq_tensor_set(glq_tensor *t, const int64_t *idx, double v) {
  if (t->st->readonly) return glq_error(GLQ_EINVAL, "tensor is read-only (a mapped file)");
  for (int i = 0; i < t->ndim; i++)
    if (idx[i] < 0 || idx[i] >= t->shape[i]) return glq_error(GLQ_EINVAL, "index %lld out of range for dimension %d of size %lld", (long long)idx[i] + 1, i + 1, (long long)t->shape[i]);
  store_d((char *)t->st->data + t->offset, t->dtype, elem_offset(t, idx), v);
  return GLQ_OK;
}

/* ---- atomic files ---- */

struct glq_atomic_file {
  int fd;
  char *path, *tmp; /* tmp NULL: a stream written in place (a character device or a FIFO) */
};

int glq_atomic_open(const char *path, glq_atomic_file **out) {
  static _Atomic unsigned counter;
  /* a rename over an existing path replaces whatever is there: as root that would turn /dev/null into a
   * regular file. Streams (character devices, FIFOs) are written in place; other non-regular files refused. */
  struct stat sb;
  int stream = 0;
  if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
    if (!S_ISCHR(sb.st_mode) && !S_ISFIFO(sb.st_mode))
      return glq_error(GLQ_EINVAL, "%s: not a regular file (%s)", path, S_ISDIR(sb.st_mode) ? "a directory" : "a socket or block device");
    stream = 1;
  }
  glq_atomic_file *f = calloc(1, sizeof *f);
  size_t n = strlen(path) + 64;
  if (!f || !(f->path = strdup(path)) || (!stream && !(f->tmp = malloc(n)))) {
    if (f) { free(f->path); free(f); }
    return glq_error(GLQ_ENOMEM, "out of memory");
  }
  if (stream) {
    f->fd = open(path, O_WRONLY | O_CLOEXEC);
    if (f->fd < 0) {
      int e = errno;
      free(f->path); free(f);
      return glq_error(GLQ_EIO, "%s: cannot open for writing: %s", path, strerror(e));
    }
    *out = f;
    return GLQ_OK;
  }
  snprintf(f->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    int e = errno;
    free(f->tmp); free(f->path); free(f);
    return glq_error(GLQ_EIO, "%s: cannot create file: %s", path, strerror(e));
  }
  *out = f;
  return GLQ_OK;
}

int glq_atomic_write(glq_atomic_file *f, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return glq_error(GLQ_EIO, "%s: write failed: %s", f->path, strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
  return GLQ_OK;
}

void glq_atomic_abort(glq_atomic_file *f) {
  if (!f) return;
  close(f->fd);
  if (f->tmp) unlink(f->tmp);
  free(f->tmp); free(f->path); free(f);
}

/* best effort: fsync the directory so the rename itself survives a crash (some file systems refuse it) */
static void sync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == path) snprintf(dir, sizeof dir, "/");
  else if ((size_t)(slash - path) < sizeof dir) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  else return;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

int glq_atomic_commit(glq_atomic_file *f) {
  int rc = GLQ_OK;
  if (!f->tmp) { /* a stream: nothing to sync or rename */
    if (close(f->fd) != 0) rc = glq_error(GLQ_EIO, "%s: close failed: %s", f->path, strerror(errno));
    free(f->path); free(f);
    return rc;
  }
  if (fsync(f->fd) != 0) rc = glq_error(GLQ_EIO, "%s: fsync failed: %s", f->path, strerror(errno));
  if (close(f->fd) != 0 && !rc) rc = glq_error(GLQ_EIO, "%s: close failed: %s", f->path, strerror(errno));
  f->fd = -1;
  if (!rc && rename(f->tmp, f->path) != 0) rc = glq_error(GLQ_EIO, "%s: rename failed: %s", f->path, strerror(errno));
  if (rc) unlink(f->tmp);
  else sync_parent(f->path);
  free(f->tmp); free(f->path); free(f);
  return rc;
}

int glq_file_checksum(const char *path, uint64_t *out) {
  glq_storage *st;
  int rc = glq_storage_mmap(path, &st);
  if (rc) return rc;
  const uint64_t prime = 1099511628211ull;
  uint64_t h = 1469598103934665603ull ^ (uint64_t)st->nbytes;
  const unsigned char *p = st->data;
  size_t i = 0;
  for (; i + 8 <= st->nbytes; i += 8) {
    uint64_t w = 0;
    for (int k = 7; k >= 0; k--) w = (w << 8) | p[i + (size_t)k];
    h = (h ^ w) * prime;
  }
  for (; i < st->nbytes; i++) h = (h ^ p[i]) * prime;
  glq_storage_release(st);
  *out = h;
  return GLQ_OK;
}

/* ---- raw tensor files ---- */

int glq_tensor_tofile(const glq_tensor *t, const char *path) {
  glq_tensor c;
  int rc = glq_tensor_contiguous(t, &c);
  if (rc) return rc;
  glq_atomic_file *f;
  rc = glq_atomic_open(path, &f);
  if (!rc) {
    rc = glq_atomic_write(f, glq_tensor_data(&c), (size_t)glq_tensor_numel(&c) * glq_dtype_size(c.dtype));
    if (rc) glq_atomic_abort(f); else rc = glq_atomic_commit(f);
  }
  glq_tensor_release(&c);
  return rc;
}

int glq_tensor_fromfile(const char *path, glq_dtype dt, int ndim, const int64_t *shape, glq_tensor *out) {
  int rc = glq_shape_check(ndim, shape);
  if (rc) return rc;
  glq_storage *st;
  rc = glq_storage_mmap(path, &st);
  if (rc) return rc;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  size_t need = (size_t)n * glq_dtype_size(dt);
  if (st->nbytes != need) {
    size_t have = st->nbytes;
    glq_storage_release(st);
    return glq_error(GLQ_EFORMAT, "%s: file has %zu bytes but %s with %lld elements needs %zu", path, have,
                     glq_dtype_name(dt), (long long)n, need);
  }
  /* copy into heap memory so the result is writable and independent of the file */
  glq_tensor v;
  rc = glq_tensor_view(st, 0, dt, ndim, shape, &v);
  glq_storage_release(st);
  if (rc) return rc;
  rc = glq_tensor_to(&v, dt, out);
  glq_tensor_release(&v);
  return rc;
}

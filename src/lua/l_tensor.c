/* l_tensor.c - the tensor userdata: construction, views, conversion, printing, raw file I/O. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../core/ops.h"
#include "../core/pool.h"
#include "lglq.h"

glq_tensor *lglq_totensor(lua_State *L, int idx) { return luaL_testudata(L, idx, LGLQ_TENSOR); }

glq_tensor *lglq_checktensor(lua_State *L, int idx) {
  glq_tensor *t = luaL_testudata(L, idx, LGLQ_TENSOR);
  if (!t) luaL_argerror(L, idx, lua_pushfstring(L, "tensor expected, got %s", luaL_typename(L, idx)));
  if (!t->st) luaL_argerror(L, idx, "tensor has been released");
  return t;
}

void lglq_pushtensor(lua_State *L, glq_tensor *t) {
  /* The collector only sees the small userdata, not the heap storage behind it: without help,
   * loops that make large temporaries (logits, dequantized weights) grow to many gigabytes
   * before a cycle runs. Step the collector in proportion to the bytes this tensor owns. */
  size_t owned = (t->st && t->st->kind == GLQ_STORAGE_HEAP && t->st->refcount == 1) ? t->st->nbytes : 0;
  glq_tensor *u = lua_newuserdata(L, sizeof *u);
  *u = *t;
  memset(t, 0, sizeof *t);
  luaL_getmetatable(L, LGLQ_TENSOR);
  lua_setmetatable(L, -2);
  if (owned >= ((size_t)1 << 16)) lua_gc(L, LUA_GCSTEP, (int)(owned >> 10 > 1 << 30 ? 1 << 30 : owned >> 10));
}

float *lglq_push_out(lua_State *L, int opts, int ndim, const int64_t *shape, const char *what) {
  if (lua_istable(L, opts)) {
    lua_getfield(L, opts, "out");
    if (!lua_isnil(L, -1)) {
      glq_tensor *o = lglq_totensor(L, -1);
      int ok = o && o->st && o->dtype == GLQ_F32 && glq_tensor_is_contiguous(o) && !o->st->readonly && o->ndim == ndim;
      for (int i = 0; ok && i < ndim; i++) ok = o->shape[i] == shape[i];
      if (!ok) {
        char want[96] = "";
        for (int i = 0, n = 0; i < ndim && n < (int)sizeof want - 24; i++)
          n += snprintf(want + n, sizeof want - (size_t)n, "%s%lld", i ? " x " : "", (long long)shape[i]);
        lglq_raisef(L, "%s: out must be a writable contiguous f32 tensor of %s", what, want);
        return NULL;
      }
      return glq_tensor_data(o);
    }
    lua_pop(L, 1);
  }
  glq_tensor y;
  lglq_check(L, glq_tensor_new(GLQ_F32, ndim, shape, &y), "%s", what);
  lglq_pushtensor(L, &y);
  return glq_tensor_data(lglq_checktensor(L, -1));
}

/* an empty tensor userdata pushed first, so the reference it receives later is the collector's to free */
static glq_tensor *push_empty(lua_State *L) {
  glq_tensor *u = lua_newuserdata(L, sizeof *u);
  memset(u, 0, sizeof *u);
  luaL_getmetatable(L, LGLQ_TENSOR);
  lua_setmetatable(L, -2);
  return u;
}

glq_tensor *lglq_checktensor_tmp(lua_State *L, int idx, glq_dtype dt, const char *what) {
  glq_tensor *t = lglq_checktensor(L, idx);
  glq_tensor *u = push_empty(L);
  lglq_check(L, (t->dtype == dt) ? glq_tensor_contiguous(t, u) : glq_tensor_to(t, dt, u), "%s", what);
  return u;
}

glq_tensor *lglq_newtensor(lua_State *L, glq_dtype dt, int ndim, const int64_t *shape, const char *what) {
  glq_tensor *u = push_empty(L);
  lglq_check(L, glq_tensor_new(dt, ndim, shape, u), "%s", what);
  return u;
}

void lglq_checktensor_as(lua_State *L, int idx, glq_dtype dt, const char *what, glq_tensor *out) {
  glq_tensor *t = lglq_checktensor(L, idx);
  int rc = (t->dtype == dt) ? glq_tensor_contiguous(t, out) : glq_tensor_to(t, dt, out);
  lglq_check(L, rc, "%s", what);
}

int lglq_checkshape(lua_State *L, int idx, int64_t *shape) {
  if (lua_type(L, idx) == LUA_TNUMBER) { /* a single size */
    shape[0] = (int64_t)lua_tointeger(L, idx);
    if (shape[0] < 0) luaL_argerror(L, idx, "negative size");
    return 1;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)lua_objlen(L, idx);
  if (n > GLQ_MAX_DIMS) luaL_argerror(L, idx, lua_pushfstring(L, "at most %d dimensions, got %d", GLQ_MAX_DIMS, n));
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    if (!lua_isnumber(L, -1)) luaL_argerror(L, idx, "shape must be a list of integers");
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (v < 0 || v != floor(v)) luaL_argerror(L, idx, lua_pushfstring(L, "size %f of dimension %d is not a non-negative integer", v, i + 1));
    shape[i] = (int64_t)v;
  }
  return n;
}

void lglq_pushshape(lua_State *L, const glq_tensor *t) {
  lua_createtable(L, t->ndim, 0);
  for (int i = 0; i < t->ndim; i++) {
    lua_pushnumber(L, (lua_Number)t->shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

glq_dtype lglq_checkdtype(lua_State *L, int idx) {
  const char *s = luaL_checkstring(L, idx);
  glq_dtype dt;
  if (glq_dtype_from_name(s, &dt)) luaL_argerror(L, idx, glq_errmsg());
  return dt;
}

glq_dtype lglq_optdtype(lua_State *L, int idx, glq_dtype def) {
  return lua_isnoneornil(L, idx) ? def : lglq_checkdtype(L, idx);
}

/* glq.tensor(values, shape, dtype) */
static int l_tensor(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int64_t shape[GLQ_MAX_DIMS];
  int n = (int)lua_objlen(L, 1), ndim;
  if (lua_isnoneornil(L, 2)) { shape[0] = n; ndim = 1; }
  else ndim = lglq_checkshape(L, 2, shape);
  glq_dtype dt = lglq_optdtype(L, 3, GLQ_F32);
  glq_tensor t;
  lglq_check(L, glq_tensor_new(GLQ_F64, ndim, shape, &t), "glq.tensor");
  if (glq_tensor_numel(&t) != n) {
    long long want = (long long)glq_tensor_numel(&t);
    glq_tensor_release(&t);
    return lglq_raisef(L, "glq.tensor: %d values given for a shape of %lld elements", n, want);
  }
  double *p = glq_tensor_data(&t);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    if (lua_type(L, -1) == LUA_TBOOLEAN) p[i] = lua_toboolean(L, -1);
    else if (lua_isnumber(L, -1)) p[i] = lua_tonumber(L, -1);
    else {
      glq_tensor_release(&t);
      return luaL_error(L, "glq.tensor: value %d is a %s, not a number", i + 1, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
  glq_tensor r;
  int rc = glq_tensor_to(&t, dt, &r);
  glq_tensor_release(&t);
  lglq_check(L, rc, "glq.tensor");
  lglq_pushtensor(L, &r);
  return 1;
}

/* glq.zeros(dtype, shape) */
static int l_zeros(lua_State *L) {
  glq_dtype dt = lglq_checkdtype(L, 1);
  int64_t shape[GLQ_MAX_DIMS];
  int ndim = lglq_checkshape(L, 2, shape);
  glq_tensor t;
  lglq_check(L, glq_tensor_new(dt, ndim, shape, &t), "glq.zeros");
  lglq_pushtensor(L, &t);
  return 1;
}

/* glq.full(dtype, shape, value) */
static int l_full(lua_State *L) {
  glq_dtype dt = lglq_checkdtype(L, 1);
  int64_t shape[GLQ_MAX_DIMS];
  int ndim = lglq_checkshape(L, 2, shape);
  double v = luaL_checknumber(L, 3);
  glq_tensor t, r;
  lglq_check(L, glq_tensor_new(GLQ_F64, ndim, shape, &t), "glq.full");
  double *p = glq_tensor_data(&t);
  for (int64_t i = 0, n = glq_tensor_numel(&t); i < n; i++) p[i] = v;
  int rc = glq_tensor_to(&t, dt, &r);
  glq_tensor_release(&t);
  lglq_check(L, rc, "glq.full");
  lglq_pushtensor(L, &r);
  return 1;
}

static int random_fill(lua_State *L, int normal) {
  int64_t shape[GLQ_MAX_DIMS];
  int ndim = lglq_checkshape(L, 1, shape);
  uint64_t seed = (uint64_t)luaL_optnumber(L, 2, 0);
  glq_dtype dt = lglq_optdtype(L, 3, GLQ_F32);
  glq_tensor t;
  lglq_check(L, (normal ? glq_randn : glq_rand)(dt, ndim, shape, seed, &t), normal ? "glq.randn" : "glq.rand");
  lglq_pushtensor(L, &t);
  return 1;
}
static int l_randn(lua_State *L) { return random_fill(L, 1); }
static int l_rand(lua_State *L) { return random_fill(L, 0); }

static int l_fromfile(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  glq_dtype dt = lglq_checkdtype(L, 2);
  int64_t shape[GLQ_MAX_DIMS];
  int ndim = lglq_checkshape(L, 3, shape);
  glq_tensor t;
  lglq_check(L, glq_tensor_fromfile(path, dt, ndim, shape, &t), "glq.fromfile");
  lglq_pushtensor(L, &t);
  return 1;
}

static int l_matmul(lua_State *L) {
  glq_tensor *a = lglq_checktensor(L, 1), *b = lglq_checktensor(L, 2), r;
  int tb = lglq_optboolean(L, 3, "transpose_b", 0);
  lglq_check(L, glq_matmul(a, b, tb, &r), "glq.matmul");
  lglq_pushtensor(L, &r);
  return 1;
}

static int l_num_threads(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) glq_set_num_threads((int)luaL_checkinteger(L, 1));
  lua_pushinteger(L, glq_num_threads());
  return 1;
}

/* ---- methods ---- */

/* t:shape() -> {d1, d2, ...} */
static int m_shape(lua_State *L) { lglq_pushshape(L, lglq_checktensor(L, 1)); return 1; }
/* t:dtype() -> "f32" | "f64" | "f16" | "bf16" | "i64" | "i32" | "i16" | "i8" | "u8" | "bool" */
static int m_dtype(lua_State *L) { lua_pushstring(L, glq_dtype_name(lglq_checktensor(L, 1)->dtype)); return 1; }
/* t:numel() -> the number of elements */
static int m_numel(lua_State *L) { lua_pushnumber(L, (lua_Number)glq_tensor_numel(lglq_checktensor(L, 1))); return 1; }
/* t:ndim() -> the number of dimensions */
static int m_ndim(lua_State *L) { lua_pushinteger(L, lglq_checktensor(L, 1)->ndim); return 1; }
static int m_nbytes(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  lua_pushnumber(L, (lua_Number)glq_tensor_numel(t) * (lua_Number)glq_dtype_size(t->dtype));
  return 1;
}
static int m_is_contiguous(lua_State *L) { lua_pushboolean(L, glq_tensor_is_contiguous(lglq_checktensor(L, 1))); return 1; }
static int m_is_mapped(lua_State *L) { lua_pushboolean(L, lglq_checktensor(L, 1)->st->kind == GLQ_STORAGE_MMAP); return 1; }

static int m_size(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  if (lua_isnoneornil(L, 2)) { lglq_pushshape(L, t); return 1; }
  int d = (int)luaL_checkinteger(L, 2);
  if (d < 0) d += t->ndim + 1;
  luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "dimension out of range");
  lua_pushnumber(L, (lua_Number)t->shape[d - 1]);
  return 1;
}

/* t:to(dtype) -> a converted copy */
static int m_to(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  lglq_check(L, glq_tensor_to(t, lglq_checkdtype(L, 2), &r), "tensor:to");
  lglq_pushtensor(L, &r);
  return 1;
}

/* t:clone() -> a contiguous copy */
static int m_clone(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  lglq_check(L, glq_tensor_to(t, t->dtype, &r), "tensor:clone");
  lglq_pushtensor(L, &r);
  return 1;
}

/* t:contiguous() -> t itself when contiguous, else a contiguous copy */
static int m_contiguous(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  lglq_check(L, glq_tensor_contiguous(t, &r), "tensor:contiguous");
  lglq_pushtensor(L, &r);
  return 1;
}

/* t:totable() -> nested Lua tables of numbers */
static int m_totable(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), c;
  lglq_check(L, glq_tensor_to(t, GLQ_F64, &c), "tensor:totable");
  int64_t n = glq_tensor_numel(&c);
  if (n > 100000000) { glq_tensor_release(&c); return lglq_raisef(L, "tensor:totable: %lld elements is too many for a Lua table", (long long)n); }
  const double *p = glq_tensor_data(&c);
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    if (t->dtype == GLQ_BOOL) lua_pushboolean(L, p[i] != 0);
    else lua_pushnumber(L, p[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  glq_tensor_release(&c);
  return 1;
}

static int m_tofile(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  const char *path = luaL_checkstring(L, 2);
  lglq_check(L, glq_tensor_tofile(t, path), "tensor:tofile");
  return 0;
}

/* t:reshape(shape) -> a view with another shape (same element count; t:view is the same) */
static int m_reshape(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  int64_t shape[GLQ_MAX_DIMS];
  int ndim;
  if (lua_istable(L, 2)) {
    ndim = (int)lua_objlen(L, 2);
    luaL_argcheck(L, ndim <= GLQ_MAX_DIMS, 2, "too many dimensions");
    for (int i = 0; i < ndim; i++) { lua_rawgeti(L, 2, i + 1); shape[i] = (int64_t)luaL_checknumber(L, -1); lua_pop(L, 1); }
  } else {
    ndim = lua_gettop(L) - 1;
    luaL_argcheck(L, ndim <= GLQ_MAX_DIMS, 2, "too many dimensions");
    for (int i = 0; i < ndim; i++) shape[i] = (int64_t)luaL_checknumber(L, i + 2);
  }
  lglq_check(L, glq_tensor_reshape(t, ndim, shape, &r), "tensor:reshape");
  lglq_pushtensor(L, &r);
  return 1;
}

/* t:narrow(dim, start, len) with 1-based dim and start */
static int m_narrow(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  int d = (int)luaL_checkinteger(L, 2);
  int64_t s = (int64_t)luaL_checknumber(L, 3), n = (int64_t)luaL_checknumber(L, 4);
  lglq_check(L, glq_tensor_narrow(t, d - 1, s - 1, n, &r), "tensor:narrow");
  lglq_pushtensor(L, &r);
  return 1;
}

/* t:transpose(d1, d2) -> a view with two dimensions swapped */
static int m_transpose(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1), r;
  int d0 = (int)luaL_optinteger(L, 2, 1), d1 = (int)luaL_optinteger(L, 3, 2);
  lglq_check(L, glq_tensor_transpose(t, d0 - 1, d1 - 1, &r), "tensor:transpose");
  lglq_pushtensor(L, &r);
  return 1;
}

static int read_index(lua_State *L, glq_tensor *t, int first, int64_t *idx) {
  int n = lua_gettop(L) - first + 1;
  if (lua_istable(L, first)) {
    n = (int)lua_objlen(L, first);
    if (n != t->ndim) return luaL_error(L, "index has %d components for a %d-d tensor", n, t->ndim);
    for (int i = 0; i < n; i++) { lua_rawgeti(L, first, i + 1); idx[i] = (int64_t)luaL_checknumber(L, -1) - 1; lua_pop(L, 1); }
  } else {
    if (n < t->ndim) return luaL_error(L, "index has %d components for a %d-d tensor", n, t->ndim);
    for (int i = 0; i < t->ndim; i++) idx[i] = (int64_t)luaL_checknumber(L, first + i) - 1;
  }
  for (int i = 0; i < t->ndim; i++)
    if (idx[i] < 0 || idx[i] >= t->shape[i])
      return lglq_raisef(L, "index %lld out of range for dimension %d of size %lld", (long long)idx[i] + 1, i + 1, (long long)t->shape[i]);
  return 0;
}

/* t:get(i, j, ...) with 1-based indices */
static int m_get(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  int64_t idx[GLQ_MAX_DIMS] = {0};
  read_index(L, t, 2, idx);
  lua_pushnumber(L, glq_tensor_get(t, idx));
  return 1;
}

/* t:set(value, i, j, ...) */
static int m_set(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  double v = luaL_checknumber(L, 2);
  int64_t idx[GLQ_MAX_DIMS] = {0};
  read_index(L, t, 3, idx);
  lglq_check(L, glq_tensor_set(t, idx, v), "tensor:set");
  return 0;
}

static int m_copy(lua_State *L) {
  glq_tensor *d = lglq_checktensor(L, 1), *s = lglq_checktensor(L, 2);
  lglq_check(L, glq_tensor_copy_(d, s), "tensor:copy");
  lua_settop(L, 1);
  return 1;
}

static int m_ptr(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  lua_pushlightuserdata(L, glq_tensor_data(t));
  return 1;
}

/* t:sum() -> the sum of every element (f64) */
static int m_sum(lua_State *L) { lua_pushnumber(L, glq_sum(lglq_checktensor(L, 1))); return 1; }
/* t:norm() -> the Frobenius norm (f64) */
static int m_norm(lua_State *L) { lua_pushnumber(L, sqrt(glq_sumsq(lglq_checktensor(L, 1)))); return 1; }
/* t:absmax() -> the largest absolute value */
static int m_absmax(lua_State *L) { lua_pushnumber(L, glq_absmax(lglq_checktensor(L, 1))); return 1; }

static int binop(lua_State *L, glq_binop op, const char *name) {
  glq_tensor *a = lglq_checktensor(L, 1), r;
  if (lua_isnumber(L, 2) && (op == GLQ_OP_MUL || op == GLQ_OP_DIV)) {
    double s = lua_tonumber(L, 2);
    lglq_check(L, glq_scale(a, op == GLQ_OP_MUL ? s : 1.0 / s, &r), "tensor:%s", name);
  } else {
    lglq_check(L, glq_binary(a, lglq_checktensor(L, 2), op, &r), "tensor:%s", name);
  }
  lglq_pushtensor(L, &r);
  return 1;
}
/* t:add(u) -> t + u (elementwise, same shape) */
static int m_add(lua_State *L) { return binop(L, GLQ_OP_ADD, "add"); }
static int m_sub(lua_State *L) { return binop(L, GLQ_OP_SUB, "sub"); }
/* t:mul(u | number) -> t * u elementwise, or t scaled */
static int m_mul(lua_State *L) { return binop(L, GLQ_OP_MUL, "mul"); }
static int m_div(lua_State *L) { return binop(L, GLQ_OP_DIV, "div"); }

/* t:max_abs_diff(u) -> max |t - u| */
static int m_max_abs_diff(lua_State *L) {
  double d;
  lglq_check(L, glq_max_abs_diff(lglq_checktensor(L, 1), lglq_checktensor(L, 2), &d), "tensor:max_abs_diff");
  lua_pushnumber(L, d);
  return 1;
}

static int m_gc(lua_State *L) {
  glq_tensor *t = luaL_checkudata(L, 1, LGLQ_TENSOR);
  glq_tensor_release(t);
  return 0;
}

static int m_len(lua_State *L) {
  glq_tensor *t = lglq_checktensor(L, 1);
  lua_pushnumber(L, t->ndim ? (lua_Number)t->shape[0] : 1);
  return 1;
}

/* printing: a dimension longer than PRINT_MAX shows its first and last PRINT_EDGE entries around
 * "..." (symmetric); every value is right-aligned to the widest one shown; rows keep their indent */
#define PRINT_MAX 8
#define PRINT_EDGE 3

/* One notation for every shown value of a float tensor, as torch chooses it: whole numbers without
 * decimals, "%.4f" for a moderate range, "%.4e" when the largest is >= 1e5 or the smallest
 * non-zero < 1e-4. Three passes over the shown values: statistics, widest, text. */
typedef struct { int pass, width; char fmt[8]; double maxabs, minabs; int whole; } print_style;

static int fmt_value(char *s, size_t n, glq_dtype dt, double v, const print_style *ps) {
  if (glq_dtype_is_float(dt)) {
    if (ps == NULL || !isfinite(v)) return snprintf(s, n, "%.6g", v);
    return snprintf(s, n, ps->fmt, v);
  }
  if (dt == GLQ_BOOL) return snprintf(s, n, "%s", v != 0 ? "true" : "false");
  return snprintf(s, n, "%.0f", v);
}

/* pass 0: gather the statistics; 1: return the widest value; 2: append the text */
static int fmt_dim(luaL_Buffer *b, const glq_tensor *t, int d, int64_t *idx, print_style *ps) {
  const int emit = ps->pass == 2;
  if (emit) luaL_addchar(b, '[');
  int64_t n = t->shape[d];
  int widest = 0;
  for (int64_t i = 0; i < n; i++) {
    if (n > PRINT_MAX && i == PRINT_EDGE) {
      if (emit) {
        if (d == t->ndim - 1) luaL_addstring(b, "..., ");
        else {
          luaL_addstring(b, "...,\n");
          for (int k = 0; k <= d; k++) luaL_addchar(b, ' ');
        }
      }
      i = n - PRINT_EDGE;
    }
    idx[d] = i;
    if (d == t->ndim - 1) {
      double v = glq_tensor_get(t, idx);
      if (ps->pass == 0) {
        double a = fabs(v);
        if (isfinite(v) && a > ps->maxabs) ps->maxabs = a;
        if (isfinite(v) && a > 0 && a < ps->minabs) ps->minabs = a;
        if (isfinite(v) && v != floor(v)) ps->whole = 0;
      } else {
        char s[48];
        int len = fmt_value(s, sizeof s, t->dtype, v, ps);
        if (len > widest) widest = len;
        if (emit) {
          for (int k = len; k < ps->width; k++) luaL_addchar(b, ' ');
          luaL_addstring(b, s);
        }
      }
    } else {
      int w = fmt_dim(b, t, d + 1, idx, ps);
      if (w > widest) widest = w;
    }
    if (emit && i + 1 < n) {
      luaL_addchar(b, ',');
      if (d == t->ndim - 1) luaL_addchar(b, ' ');
      else {
        luaL_addchar(b, '\n');
        for (int k = 0; k <= d; k++) luaL_addchar(b, ' ');
      }
    }
  }
  if (emit) luaL_addchar(b, ']');
  return widest;
}

static int m_tostring(lua_State *L) {
  glq_tensor *t = luaL_checkudata(L, 1, LGLQ_TENSOR);
  if (!t->st) { lua_pushstring(L, "tensor (released)"); return 1; }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char head[160];
  int k = snprintf(head, sizeof head, "tensor %s (", glq_dtype_name(t->dtype));
  for (int i = 0; i < t->ndim; i++) k += snprintf(head + k, sizeof head - (size_t)k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  snprintf(head + k, sizeof head - (size_t)k, ")%s\n", t->st->kind == GLQ_STORAGE_MMAP ? " mapped" : "");
  luaL_addstring(&b, head);
  int64_t idx[GLQ_MAX_DIMS] = {0};
  if (t->ndim == 0) {
    char v[48];
    fmt_value(v, sizeof v, t->dtype, glq_tensor_get(t, idx), NULL);
    luaL_addstring(&b, v);
  } else if (glq_tensor_numel(t) == 0) {
    luaL_addstring(&b, "[]");
  } else {
    print_style ps = {0, 0, "%.4f", 0.0, INFINITY, 1};
    fmt_dim(&b, t, 0, idx, &ps);
    if (ps.whole && ps.maxabs < 1e9) snprintf(ps.fmt, sizeof ps.fmt, "%%.0f");
    else if (ps.maxabs >= 1e5 || ps.minabs < 1e-4) snprintf(ps.fmt, sizeof ps.fmt, "%%.4e");
    ps.pass = 1;
    ps.width = fmt_dim(&b, t, 0, idx, &ps);
    ps.pass = 2;
    fmt_dim(&b, t, 0, idx, &ps);
  }
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg methods[] = {
  {"shape", m_shape}, {"dtype", m_dtype}, {"numel", m_numel}, {"ndim", m_ndim}, {"size", m_size},
  {"nbytes", m_nbytes}, {"is_contiguous", m_is_contiguous}, {"is_mapped", m_is_mapped},
  {"to", m_to}, {"clone", m_clone}, {"contiguous", m_contiguous}, {"totable", m_totable},
  {"tofile", m_tofile}, {"reshape", m_reshape}, {"view", m_reshape}, {"narrow", m_narrow},
  {"transpose", m_transpose}, {"get", m_get}, {"set", m_set}, {"copy", m_copy}, {"_rawptr", m_ptr},
  {"sum", m_sum}, {"norm", m_norm}, {"absmax", m_absmax}, {"add", m_add}, {"sub", m_sub},
  {"mul", m_mul}, {"div", m_div}, {"max_abs_diff", m_max_abs_diff}, {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"tensor", l_tensor}, {"zeros", l_zeros}, {"full", l_full}, {"randn", l_randn}, {"rand", l_rand},
  {"fromfile", l_fromfile}, {"matmul", l_matmul}, {"num_threads", l_num_threads}, {NULL, NULL}};

void lglq_open_tensor(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", m_gc}, {"__tostring", m_tostring}, {"__len", m_len}, {NULL, NULL}};
  lglq_newclass(L, LGLQ_TENSOR, meta, methods);
  /* expose the metatable so Lua code can add methods (init.lua adds :ptr via the FFI) */
  luaL_getmetatable(L, LGLQ_TENSOR);
  lua_setfield(L, -2, "_tensor_mt");
  lglq_register(L, NULL, funcs);
}

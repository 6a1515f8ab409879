/* l_gguf.c - Lua binding of the GGUF reader.
 *   glq.gguf.open(path) -> g            (errors name the file)
 *   g:metadata() -> {key = value}       arrays become Lua lists (1-based); u64/i64 as numbers
 *   g:get(key) -> value or nil
 *   g:tensors() -> list of {name, type ("q4_1", "f32", ...), shape (row-major), nbytes}
 *   g:tensor(name) -> tensor: zero-copy mapped view for f32/f16/bf16/f64/i8..i64, else dequantized f32
 *   g:version(), g:path(), g:close()
 *   glq.gguf.dequantize(u8 blocks, type, {rows, cols}) -> f32 (rows, cols)   ("q8_0", "q4_k", ...)
 *   glq.gguf.quantize_q8_0(float tensor (rows, cols)) -> u8 (rows, cols/32*34) Q8_0 blocks
 * Shapes are row-major: GGUF's ne = [in, out] is reported as {out, in}. */
#include <string.h>
#include "lglq.h"
#include "../io/ggml_quants.h"
#include "../io/gguf.h"


static glq_gguf *check_gguf(lua_State *L, int idx) {
  glq_gguf **p = luaL_checkudata(L, idx, LGLQ_GGUF);
  if (!*p) luaL_error(L, "gguf file is closed");
  return *p;
}

static void push_value(lua_State *L, const glq_gguf_value *v);

static void push_element(lua_State *L, const glq_gguf_value *v, uint64_t i) {
  glq_gguf_type t = v->type == GLQ_GGUF_ARRAY ? v->elem_type : v->type;
  if (v->type == GLQ_GGUF_ARRAY && v->items) {
    push_value(L, &v->items[i]);
  } else if (t == GLQ_GGUF_STRING) {
    lua_pushlstring(L, (const char *)v->data, (size_t)v->len);
  } else if (t == GLQ_GGUF_BOOL) {
    int64_t b = 0;
    glq_gguf_value_int(v, i, &b);
    lua_pushboolean(L, b != 0);
  } else {
    double d = 0;
    glq_gguf_value_num(v, i, &d);
    lua_pushnumber(L, d);
  }
}

static void push_value(lua_State *L, const glq_gguf_value *v) {
  if (v->type != GLQ_GGUF_ARRAY) {
    push_element(L, v, 0);
    return;
  }
  lua_createtable(L, v->len > 0x7fffffff ? 0 : (int)v->len, 0);
  for (uint64_t i = 0; i < v->len; i++) {
    push_element(L, v, i);
    lua_rawseti(L, -2, (int)(i + 1));
  }
}

static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  glq_gguf **p = lua_newuserdata(L, sizeof *p);
  *p = NULL;
  luaL_getmetatable(L, LGLQ_GGUF);
  lua_setmetatable(L, -2);
  lglq_check(L, glq_gguf_open(path, p), "glq.gguf.open");
  return 1;
}

static int m_close(lua_State *L) {
  glq_gguf **p = luaL_checkudata(L, 1, LGLQ_GGUF);
  glq_gguf_close(*p);
  *p = NULL;
  return 0;
}

static int m_metadata(lua_State *L) {
  glq_gguf *g = check_gguf(L, 1);
  lua_createtable(L, 0, (int)g->n_kv);
  for (uint64_t i = 0; i < g->n_kv; i++) {
    push_value(L, &g->kv[i].value);
    lua_setfield(L, -2, g->kv[i].key);
  }
  return 1;
}

static int m_get(lua_State *L) {
  const glq_gguf_value *v = glq_gguf_get(check_gguf(L, 1), luaL_checkstring(L, 2));
  if (v) push_value(L, v);
  else lua_pushnil(L);
  return 1;
}

static int m_tensors(lua_State *L) {
  glq_gguf *g = check_gguf(L, 1);
  lua_createtable(L, (int)g->n_tensors, 0);
  for (uint64_t i = 0; i < g->n_tensors; i++) {
    const glq_gguf_tensor_info *ti = &g->tensors[i];
    int64_t shape[4];
    int nd = glq_gguf_tensor_shape(ti, shape);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ti->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, glq_ggml_type_name(ti->type));
    lua_setfield(L, -2, "type");
    lua_createtable(L, nd, 0);
    for (int d = 0; d < nd; d++) {
      lua_pushnumber(L, (lua_Number)shape[d]);
      lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_pushnumber(L, (lua_Number)ti->nbytes);
    lua_setfield(L, -2, "nbytes");
    lua_rawseti(L, -2, (int)(i + 1));
  }
  return 1;
}

static int m_tensor(lua_State *L) {
  glq_gguf *g = check_gguf(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const glq_gguf_tensor_info *ti = glq_gguf_find_tensor(g, name);
  if (!ti) return luaL_error(L, "gguf '%s': no tensor named '%s'", g->path, name);
  glq_tensor t;
  lglq_check(L, glq_gguf_tensor(g, ti, &t), NULL);
  lglq_pushtensor(L, &t);
  return 1;
}

/* g:raw(name) -> the tensor's bytes as a read-only 1-D u8 view of the file, and its ggml type name */
static int m_raw(lua_State *L) {
  glq_gguf *g = check_gguf(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const glq_gguf_tensor_info *ti = glq_gguf_find_tensor(g, name);
  if (!ti) return luaL_error(L, "gguf '%s': no tensor named '%s'", g->path, name);
  int64_t n = (int64_t)ti->nbytes;
  glq_tensor t;
  lglq_check(L, glq_tensor_view(g->st, (size_t)(g->data_offset + ti->offset), GLQ_U8, 1, &n, &t), "gguf '%s': tensor '%s'", g->path, name);
  lglq_pushtensor(L, &t);
  lua_pushstring(L, glq_ggml_type_name(ti->type));
  return 2;
}

static int m_version(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_gguf(L, 1)->version);
  return 1;
}

static int m_path(lua_State *L) {
  lua_pushstring(L, check_gguf(L, 1)->path);
  return 1;
}

static int m_tostring(lua_State *L) {
  glq_gguf **p = luaL_checkudata(L, 1, LGLQ_GGUF);
  if (*p) lua_pushfstring(L, "gguf '%s' (v%d, %d tensors)", (*p)->path, (int)(*p)->version, (int)(*p)->n_tensors);
  else lua_pushstring(L, "gguf (closed)");
  return 1;
}

static const luaL_Reg methods[] = {
  {"metadata", m_metadata}, {"get", m_get}, {"tensors", m_tensors}, {"tensor", m_tensor}, {"raw", m_raw},
  {"version", m_version}, {"path", m_path}, {"close", m_close}, {NULL, NULL}};

static uint32_t type_id(const char *name) {
  for (uint32_t i = 0; i < 64; i++) {
    const char *n = glq_ggml_type_name(i);
    if (n && strcmp(n, name) == 0) return i;
  }
  return UINT32_MAX;
}

static int l_dequantize(lua_State *L) {
  const char *tname = luaL_checkstring(L, 2);
  int64_t shape[GLQ_MAX_DIMS];
  if (lglq_checkshape(L, 3, shape) != 2) return lglq_error(L, "gguf.dequantize: shape must be {rows, cols}");
  uint32_t ty = type_id(tname);
  int64_t be;
  size_t bb;
  if (ty == UINT32_MAX || glq_ggml_type_block(ty, &be, &bb) != GLQ_OK)
    return lglq_error(L, "gguf.dequantize: unknown ggml type '%s'", tname);
  if (shape[1] % be != 0) return lglq_error(L, "gguf.dequantize: %lld columns are not whole %s blocks of %lld", (long long)shape[1], tname, (long long)be);
  glq_tensor *b = lglq_checktensor_tmp(L, 1, GLQ_U8, "gguf.dequantize blocks");
  size_t want = (size_t)shape[0] * (size_t)(shape[1] / be) * bb;
  if ((size_t)glq_tensor_numel(b) != want)
    return lglq_error(L, "gguf.dequantize: %lld bytes of %s blocks for %lld x %lld, expected %zu", (long long)glq_tensor_numel(b), tname,
                      (long long)shape[0], (long long)shape[1], want);
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, "gguf.dequantize");
  lglq_check(L, glq_ggml_dequantize(ty, glq_tensor_data(b), glq_tensor_data(out), shape[0] * shape[1]), "gguf.dequantize");
  return 1;
}

static int l_quantize_q8_0(lua_State *L) {
  glq_tensor *x = lglq_checktensor_tmp(L, 1, GLQ_F32, "gguf.quantize_q8_0");
  if (x->ndim != 2 || x->shape[1] % 32 != 0)
    return lglq_error(L, "gguf.quantize_q8_0: expected a (rows, cols) tensor with cols a multiple of 32");
  int64_t shape[2] = {x->shape[0], x->shape[1] / 32 * 34};
  glq_tensor *out = lglq_newtensor(L, GLQ_U8, 2, shape, "gguf.quantize_q8_0");
  lglq_check(L, glq_ggml_quantize_q8_0(glq_tensor_data(x), glq_tensor_data(out), x->shape[0] * x->shape[1]), "gguf.quantize_q8_0");
  return 1;
}

static const luaL_Reg funcs[] = {{"open", l_open}, {"dequantize", l_dequantize}, {"quantize_q8_0", l_quantize_q8_0}, {NULL, NULL}};

void lglq_open_gguf(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", m_close}, {"__tostring", m_tostring}, {NULL, NULL}};
  lglq_newclass(L, LGLQ_GGUF, meta, methods);
  lglq_register(L, "gguf", funcs);
}

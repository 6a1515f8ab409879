/* l_linear.c - the linear-layer userdata shared by dense, E8 and HiF4 layers. */
#include <string.h>
#include "lglq.h"

typedef struct { glq_linear *l; } linear_ud;

void lglq_pushlinear(lua_State *L, glq_linear *l, int anchor) {
  if (anchor < 0) anchor = lua_gettop(L) + anchor + 1;
  linear_ud *u = lua_newuserdata(L, sizeof *u);
  u->l = l;
  luaL_getmetatable(L, LGLQ_LINEAR);
  lua_setmetatable(L, -2);
  lua_newtable(L); /* environment table keeps anchored values alive */
  if (anchor) { lua_pushvalue(L, anchor); lua_setfield(L, -2, "anchor"); }
  lua_setfenv(L, -2);
}

glq_linear *lglq_checklinear(lua_State *L, int idx) {
  linear_ud *u = luaL_testudata(L, idx, LGLQ_LINEAR);
  if (!u) luaL_argerror(L, idx, lua_pushfstring(L, "linear layer expected, got %s", luaL_typename(L, idx)));
  if (!u->l) luaL_argerror(L, idx, "linear layer has been released");
  return u->l;
}

static int m_gc(lua_State *L) {
  linear_ud *u = luaL_checkudata(L, 1, LGLQ_LINEAR);
  glq_linear_free(u->l);
  u->l = NULL;
  return 0;
}

/* lin:forward(x): x (in) or (B, in) -> y (out) or (B, out), f32 */
static int m_forward(lua_State *L) {
  glq_linear *l = lglq_checklinear(L, 1);
  glq_tensor x, y;
  lglq_checktensor_as(L, 2, GLQ_F32, "linear:forward input", &x);
  int vec = x.ndim == 1;
  int64_t B = vec ? 1 : x.shape[0];
  if ((x.ndim != 1 && x.ndim != 2) || x.shape[x.ndim - 1] != l->in) {
    int nd = x.ndim;
    long long last = nd ? (long long)x.shape[nd - 1] : 0;
    glq_tensor_release(&x);
    return lglq_raisef(L, "linear:forward: input must be (%lld) or (B, %lld), got a %d-d tensor with last size %lld",
                      (long long)l->in, (long long)l->in, nd, last);
  }
  int64_t shape[2] = {B, l->out};
  int rc = glq_tensor_new(GLQ_F32, vec ? 1 : 2, vec ? shape + 1 : shape, &y);
  if (!rc) rc = glq_linear_forward(l, glq_tensor_data(&x), B, glq_tensor_data(&y));
  glq_tensor_release(&x);
  if (rc) { glq_tensor_release(&y); return lglq_error(L, "linear:forward (%s)", l->vt->kind); }
  lglq_pushtensor(L, &y);
  return 1;
}

static int m_dequantize(lua_State *L) {
  glq_linear *l = lglq_checklinear(L, 1);
  glq_tensor w;
  int64_t shape[2] = {l->out, l->in};
  lglq_check(L, glq_tensor_new(GLQ_F32, 2, shape, &w), "linear:dequantize");
  int rc = l->vt->dequantize(l, glq_tensor_data(&w));
  if (rc) { glq_tensor_release(&w); return lglq_error(L, "linear:dequantize (%s)", l->vt->kind); }
  lglq_pushtensor(L, &w);
  return 1;
}

static int m_stored_bytes(lua_State *L) {
  glq_linear *l = lglq_checklinear(L, 1);
  lua_pushnumber(L, (lua_Number)l->vt->stored_bytes(l));
  return 1;
}

static int m_stored_bits(lua_State *L) {
  glq_linear *l = lglq_checklinear(L, 1);
  lua_pushnumber(L, 8.0 * (lua_Number)l->vt->stored_bytes(l));
  return 1;
}

static int m_kind(lua_State *L) { lua_pushstring(L, lglq_checklinear(L, 1)->vt->kind); return 1; }

static int m_shape(lua_State *L) {
  glq_linear *l = lglq_checklinear(L, 1);
  lua_createtable(L, 2, 0);
  lua_pushnumber(L, (lua_Number)l->out); lua_rawseti(L, -2, 1);
  lua_pushnumber(L, (lua_Number)l->in); lua_rawseti(L, -2, 2);
  return 1;
}

static int m_tostring(lua_State *L) {
  linear_ud *u = luaL_checkudata(L, 1, LGLQ_LINEAR);
  if (!u->l) lua_pushstring(L, "linear (released)");
  else lua_pushfstring(L, "linear %s (%d x %d)", u->l->vt->kind, (int)u->l->out, (int)u->l->in);
  return 1;
}

static const luaL_Reg methods[] = {
  {"forward", m_forward}, {"dequantize", m_dequantize}, {"stored_bytes", m_stored_bytes},
  {"stored_bits", m_stored_bits},
  {"kind", m_kind}, {"shape", m_shape}, {NULL, NULL}};

void lglq_open_linear(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", m_gc}, {"__tostring", m_tostring}, {NULL, NULL}};
  lglq_newclass(L, LGLQ_LINEAR, meta, methods);
}

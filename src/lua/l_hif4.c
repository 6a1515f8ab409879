/* l_hif4.c - glq.hif4: HiF4 quantize/dequantize/pack/unpack, the RHT and LDLQ weight
 * quantizers and the fused HiF4 linear layer. A quantized tensor is a Lua table
 * {e6m2, e1_8_packed, e1_16_packed, s1p2_packed, shape [, signs, seed] [, stats]}. */
#include <string.h>
#include "lglq.h"
#include "../layers/hif4_linear.h"
#include "../quant/rht.h"

static const char *const packed_names[4] = {"e6m2", "e1_8_packed", "e1_16_packed", "s1p2_packed"};
static const char *const unpacked_names[4] = {"e6m2", "e1_8", "e1_16", "s1p2"};

/* Push a fields table (consumes the references in f). */
static void push_fields(lua_State *L, glq_hif4_fields *f, int packed) {
  const char *const *names = packed ? packed_names : unpacked_names;
  glq_tensor *t[4] = {&f->e6m2, &f->e1_8, &f->e1_16, &f->s1p2};
  lua_createtable(L, 0, 8);
  for (int i = 0; i < 4; i++) {
    lglq_pushtensor(L, t[i]);
    lua_setfield(L, -2, names[i]);
  }
  lua_createtable(L, f->ndim, 0);
  for (int d = 0; d < f->ndim; d++) {
    lua_pushnumber(L, (lua_Number)f->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
  lua_setfield(L, -2, "shape");
  memset(f, 0, sizeof *f);
}

/* Read a fields table at idx into f (new contiguous references); raises on a malformed table. */
static void read_fields(lua_State *L, int idx, int packed, const char *fn, glq_hif4_fields *f) {
  const char *const *names = packed ? packed_names : unpacked_names;
  memset(f, 0, sizeof *f);
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "shape");
  if (!lua_istable(L, -1)) luaL_error(L, "%s: field 'shape' must be a table of sizes, got %s", fn, luaL_typename(L, -1));
  f->ndim = lglq_checkshape(L, lua_gettop(L), f->shape);
  lua_pop(L, 1);
  glq_tensor *t[4] = {&f->e6m2, &f->e1_8, &f->e1_16, &f->s1p2};
  for (int i = 0; i < 4; i++) {
    lua_getfield(L, idx, names[i]);
    glq_tensor *src = lglq_totensor(L, -1);
    int rc = src && src->st ? glq_tensor_contiguous(src, t[i]) : glq_error(GLQ_EINVAL, "field '%s' must be a tensor, got %s", names[i], luaL_typename(L, -1));
    lua_pop(L, 1);
    if (!rc) continue;
    glq_hif4_fields_release(f);
    lglq_error(L, "%s", fn);
  }
  int rc = glq_hif4_fields_check(f, packed);
  if (rc) {
    glq_hif4_fields_release(f);
    lglq_error(L, "%s", fn);
  }
}

/* The tensor in field `name` of the table at idx, or NULL when absent. */
static glq_tensor *opt_field_tensor(lua_State *L, int idx, const char *name, const char *fn) {
  lua_getfield(L, idx, name);
  glq_tensor *t = lglq_totensor(L, -1);
  if (!t && !lua_isnil(L, -1)) luaL_error(L, "%s: field '%s' must be a tensor, got %s", fn, name, luaL_typename(L, -1));
  lua_pop(L, 1); /* the table keeps it alive */
  return t;
}

/* glq.hif4.quantize(t [, {nonfinite = "error" | "nan", name = "..."}]) */
static int l_quantize(lua_State *L) {
  glq_tensor *x = lglq_checktensor(L, 1);
  static const lglq_enum nonfinite[] = {{"error", 0}, {"nan", GLQ_HIF4_NONFINITE_NAN}, {NULL, 0}};
  int nf = lglq_optenum(L, 2, "nonfinite", nonfinite, 0, "hif4.quantize");
  const char *name = lglq_optstring(L, 2, "name", "tensor");
  glq_hif4_fields f;
  lglq_check(L, glq_hif4_quantize(x, name, nf, &f), NULL);
  push_fields(L, &f, 1);
  return 1;
}

/* glq.hif4.dequantize(pack): f32 tensor of pack.shape; a rotated (RHT) pack is rotated back. */
static int l_dequantize(lua_State *L) {
  glq_hif4_fields f;
  glq_linear *l = NULL;
  glq_tensor y = {0};
  glq_tensor *signs = opt_field_tensor(L, 1, "signs", "hif4.dequantize");
  read_fields(L, 1, 1, "hif4.dequantize", &f);
  int rc;
  if (!signs) rc = glq_hif4_dequantize(&f, &y);
  else if (f.ndim != 2) rc = glq_error(GLQ_EINVAL, "a pack with signs must be 2-D, got %d dims", f.ndim);
  /* rotated rows: the layer knows how to undo the rotation */
  else if (!(rc = glq_hif4_linear_new(&f, NULL, signs, GLQ_HIF4_KERNEL_AUTO, &l)) &&
           !(rc = glq_tensor_new(GLQ_F32, 2, f.shape, &y))) {
    if ((rc = l->vt->dequantize(l, glq_tensor_data(&y)))) glq_tensor_release(&y);
  }
  glq_linear_free(l);
  glq_hif4_fields_release(&f);
  lglq_check(L, rc, "hif4.dequantize");
  lglq_pushtensor(L, &y);
  return 1;
}

/* glq.hif4.unpack(pack) -> {e6m2, e1_8 (..., nb, 8), e1_16 (..., nb, 16), s1p2 (..., nb, 64), shape} */
static int l_unpack(lua_State *L) {
  glq_hif4_fields f, u;
  read_fields(L, 1, 1, "hif4.unpack", &f);
  int rc = glq_hif4_unpack(&f, &u);
  glq_hif4_fields_release(&f);
  lglq_check(L, rc, "hif4.unpack");
  push_fields(L, &u, 0);
  return 1;
}

/* glq.hif4.pack(unpacked) -> pack */
static int l_pack(lua_State *L) {
  glq_hif4_fields f, p;
  read_fields(L, 1, 0, "hif4.pack", &f);
  int rc = glq_hif4_pack(&f, &p);
  glq_hif4_fields_release(&f);
  lglq_check(L, rc, "hif4.pack");
  push_fields(L, &p, 1);
  return 1;
}

/* glq.hif4.linear(pack [, bias] [, {kernel = "auto" | "portable"}]); pack.signs makes an RHT layer */
static int l_linear(lua_State *L) {
  glq_tensor *bias = lglq_totensor(L, 2);
  if (!bias && !lua_isnoneornil(L, 2) && !lua_istable(L, 2))
    return luaL_argerror(L, 2, lua_pushfstring(L, "bias tensor or options expected, got %s", luaL_typename(L, 2)));
  int oi = bias || lua_isnil(L, 2) ? 3 : 2;
  static const lglq_enum kernels[] = {{"auto", GLQ_HIF4_KERNEL_AUTO}, {"portable", GLQ_HIF4_KERNEL_PORTABLE}, {NULL, 0}};
  int kernel = lglq_optenum(L, oi, "kernel", kernels, GLQ_HIF4_KERNEL_AUTO, "hif4.linear");
  glq_hif4_fields f;
  glq_tensor *signs = opt_field_tensor(L, 1, "signs", "hif4.linear");
  read_fields(L, 1, 1, "hif4.linear", &f);
  glq_linear *l;
  int rc = glq_hif4_linear_new(&f, bias, signs, kernel, &l);
  glq_hif4_fields_release(&f);
  lglq_check(L, rc, "hif4.linear");
  lglq_pushlinear(L, l, 0);
  return 1;
}

/* Shared by quantize_rht and quantize_ldlq: weight at 1, hessian tensor or NULL, options at oi. */
static int quantize_weight(lua_State *L, const glq_tensor *hessian, int oi, int rht, const char *fn) {
  glq_tensor *w = lglq_checktensor(L, 1);
  glq_hif4_wopts o = {.rht = lglq_optboolean(L, oi, "rht", rht),
                      .seed = (uint64_t)lglq_optinteger(L, oi, "seed", 0),
                      .name = lglq_optstring(L, oi, "name", NULL),
                      .hessian = hessian,
                      .damp = lglq_optnumber(L, oi, "damp", 0.01)};
  glq_hif4_fields f;
  glq_tensor signs;
  glq_hif4_wstats st;
  lglq_check(L, glq_hif4_quantize_weight(w, &o, &f, &signs, &st), "%s", fn);
  push_fields(L, &f, 1);
  if (o.rht) {
    lglq_pushtensor(L, &signs);
    lua_setfield(L, -2, "signs");
    lua_pushnumber(L, (lua_Number)o.seed);
    lua_setfield(L, -2, "seed");
  }
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, st.damp);
  lua_setfield(L, -2, "damp");
  lua_pushnumber(L, (lua_Number)st.dead);
  lua_setfield(L, -2, "dead");
  lua_pushnumber(L, st.bits_per_weight);
  lua_setfield(L, -2, "bits_per_weight");
  lua_setfield(L, -2, "stats");
  return 1;
}

/* glq.hif4.quantize_rht(w [, {seed = 0, name = nil}]) */
static int l_quantize_rht(lua_State *L) { return quantize_weight(L, NULL, 2, 1, "hif4.quantize_rht"); }

/* glq.hif4.quantize_ldlq(w, hessian [, {rht = false, seed = 0, name = nil, damp = 0.01}]) */
static int l_quantize_ldlq(lua_State *L) {
  return quantize_weight(L, lglq_checktensor(L, 2), 3, 0, "hif4.quantize_ldlq");
}

/* glq.hif4.rht_signs(n [, seed [, name]]) -> f32 tensor of glq_rht_pad(n) signs +-1 (rht.h, tag "SV") */
static int l_rht_signs(lua_State *L) {
  int64_t n = (int64_t)luaL_checknumber(L, 1);
  uint64_t seed = (uint64_t)luaL_optnumber(L, 2, 0);
  const char *name = luaL_optstring(L, 3, NULL);
  if (n < 0) return luaL_argerror(L, 1, "negative size");
  int64_t np = glq_rht_pad(n);
  glq_tensor s;
  lglq_check(L, glq_tensor_new(GLQ_F32, 1, &np, &s), "hif4.rht_signs");
  glq_rht_signs(seed, name, "SV", np, glq_tensor_data(&s));
  lglq_pushtensor(L, &s);
  return 1;
}

/* glq.hif4.proxy_loss(a, b, hessian) -> tr((a-b) H (a-b)ᵀ) */
static int l_proxy_loss(lua_State *L) {
  double loss = 0.0;
  lglq_check(L, glq_hif4_proxy_loss(lglq_checktensor(L, 1), lglq_checktensor(L, 2), lglq_checktensor(L, 3), &loss),
             "hif4.proxy_loss");
  lua_pushnumber(L, loss);
  return 1;
}

/* glq.hif4.stored_bits(pack): bits of the four fields plus one per sign */
static int l_stored_bits(lua_State *L) {
  glq_hif4_fields f;
  glq_tensor *signs = opt_field_tensor(L, 1, "signs", "hif4.stored_bits");
  read_fields(L, 1, 1, "hif4.stored_bits", &f);
  lua_pushnumber(L, (lua_Number)(glq_tensor_numel(&f.e6m2) * GLQ_HIF4_UNIT_BYTES * 8 + (signs ? glq_tensor_numel(signs) : 0)));
  glq_hif4_fields_release(&f);
  return 1;
}

static const luaL_Reg fns[] = {
  {"quantize", l_quantize}, {"dequantize", l_dequantize}, {"unpack", l_unpack}, {"pack", l_pack},
  {"linear", l_linear}, {"quantize_rht", l_quantize_rht}, {"quantize_ldlq", l_quantize_ldlq},
  {"rht_signs", l_rht_signs}, {"proxy_loss", l_proxy_loss}, {"stored_bits", l_stored_bits}, {NULL, NULL}};

void lglq_open_hif4(lua_State *L) {
  lglq_register(L, "hif4", fns);
}

/* l_e8.c - glq.e8: the E8 shell codebook, exact encoding, (two-stage) decoding and the E8-RHT linear layer.
 *   glq.e8.codebook([size]) -> codebook with :size() and :table() (size x 8 f32)
 *   glq.e8.encode(x [, size]) -> i32 (N) for x (N, 8);  glq.e8.decode(idx [, size]) -> f32 (N, 8)
 *   glq.e8.decode2(idx, idx2, inv_rs [, size2]) -> C[idx] + inv_rs * C2[idx2]
 *   glq.e8.linear(artifacts [, {bias=, bits=, transform=, codebook=, name=}]) with artifacts {Qidxs=, SU=, SV=,
 *     Wscale= [, Qidxs2=, inv_resid_scale=, bits=, codebook = "e8p", bias=, in_features=, out_features=]}
 *     (lua/glq/checkpoint.lua); codebook "e8p" builds the E8P layer (kind "e8p") from the same fields
 *   glq.e8._encode_bruteforce(x [, size]): the exhaustive test reference */
#include <string.h>
#include "lglq.h"
#include "../quant/e8.h"
#include "../layers/e8_linear.h"
#include "../quant/codec.h"

#define E8_CODEBOOK "glq.e8.codebook"

static const glq_e8_codebook *check_size(lua_State *L, int idx, const char *fn) {
  lua_Integer size = luaL_optinteger(L, idx, 65536);
  const glq_e8_codebook *cb = glq_e8_codebook_get((int)size);
  if (!cb || size != cb->size) lglq_error(L, "%s", fn);
  return cb;
}

static int l_codebook(lua_State *L) {
  const glq_e8_codebook *cb = check_size(L, 1, "e8.codebook"), **u = lua_newuserdata(L, sizeof *u);
  *u = cb;
  luaL_getmetatable(L, E8_CODEBOOK);
  lua_setmetatable(L, -2);
  return 1;
}

static const glq_e8_codebook *check_codebook(lua_State *L) {
  return *(const glq_e8_codebook **)luaL_checkudata(L, 1, E8_CODEBOOK);
}

static int m_size(lua_State *L) {
  lua_pushinteger(L, check_codebook(L)->size);
  return 1;
}

static int m_table(lua_State *L) {
  const glq_e8_codebook *cb = check_codebook(L);
  glq_tensor t;
  int64_t shape[2] = {cb->size, 8};
  lglq_check(L, glq_tensor_new(GLQ_F32, 2, shape, &t), "e8 codebook:table");
  memcpy(glq_tensor_data(&t), cb->table, (size_t)cb->size * 8 * sizeof(float));
  lglq_pushtensor(L, &t);
  return 1;
}

static int m_tostring(lua_State *L) {
  lua_pushfstring(L, "e8 codebook (%d x 8)", check_codebook(L)->size);
  return 1;
}

/* x at index 1 as a contiguous f32 (N, 8) tensor (release after use) */
static void check_vectors(lua_State *L, const char *fn, glq_tensor *x) {
  lglq_checktensor_as(L, 1, GLQ_F32, fn, x);
  if (x->ndim != 2 || x->shape[1] != 8) {
    int nd = x->ndim;
    long long last = nd ? (long long)x->shape[nd - 1] : 0;
    glq_tensor_release(x);
    lglq_raisef(L, "%s: x must be (N, 8), got a %d-d tensor with last size %lld", fn, nd, last);
  }
}

typedef int (*encode_fn)(const glq_e8_codebook *, const float *, int64_t, int32_t *);

static int encode_with(lua_State *L, encode_fn fn, const char *name) {
  const glq_e8_codebook *cb = check_size(L, 2, name);
  glq_tensor x, idx;
  check_vectors(L, name, &x);
  int rc = glq_tensor_new(GLQ_I32, 1, x.shape, &idx);
  if (!rc) {
    rc = fn(cb, glq_tensor_data(&x), x.shape[0], glq_tensor_data(&idx));
    if (rc) glq_tensor_release(&idx);
  }
  glq_tensor_release(&x);
  lglq_check(L, rc, "%s", name);
  lglq_pushtensor(L, &idx);
  return 1;
}

static int l_encode(lua_State *L) { return encode_with(L, glq_e8_encode, "e8.encode"); }
static int l_encode_bruteforce(lua_State *L) { return encode_with(L, glq_e8_encode_bruteforce, "e8._encode_bruteforce"); }

/* indices at idx as contiguous i32 (any integer dtype), anchored on the stack; each masked value must be below size */
static glq_tensor *check_indices(lua_State *L, int idx, int size, const char *fn, const char *what) {
  glq_tensor *src = lglq_checktensor(L, idx);
  if (glq_dtype_is_float(src->dtype) || src->dtype == GLQ_BOOL)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s: %s must be an integer tensor, got %s", fn, what, glq_dtype_name(src->dtype)));
  glq_tensor *t = lglq_checktensor_tmp(L, idx, GLQ_I32, fn);
  const int32_t *p = glq_tensor_data(t);
  for (int64_t i = 0, n = glq_tensor_numel(t); i < n; i++)
    if ((p[i] & 0xFFFF) >= size)
      lglq_raisef(L, "%s: %s[%lld] = %d is not below the codebook size %d", fn, what, (long long)i, (int)p[i], size);
  return t;
}

static glq_tensor *decode_out(lua_State *L, const glq_tensor *idx, const char *fn) {
  int64_t shape[2] = {glq_tensor_numel(idx), 8};
  return lglq_newtensor(L, GLQ_F32, 2, shape, fn);
}

static int l_decode(lua_State *L) {
  const glq_e8_codebook *cb = check_size(L, 2, "e8.decode");
  glq_tensor *idx = check_indices(L, 1, cb->size, "e8.decode", "idx"), *out = decode_out(L, idx, "e8.decode");
  glq_e8_decode(cb, glq_tensor_data(idx), glq_tensor_numel(idx), glq_tensor_data(out));
  return 1;
}

static int l_decode2(lua_State *L) {
  const glq_e8_codebook *cb = glq_e8_codebook_get(65536), *cb2 = check_size(L, 4, "e8.decode2");
  if (!cb) return lglq_error(L, "e8.decode2");
  float inv_rs = (float)luaL_checknumber(L, 3);
  glq_tensor *a = check_indices(L, 1, cb->size, "e8.decode2", "idx"), *b = check_indices(L, 2, cb2->size, "e8.decode2", "idx2");
  if (glq_tensor_numel(a) != glq_tensor_numel(b))
    lglq_check(L, glq_error(GLQ_EINVAL, "idx has %lld entries, idx2 %lld", (long long)glq_tensor_numel(a),
                            (long long)glq_tensor_numel(b)), "e8.decode2");
  glq_tensor *out = decode_out(L, a, "e8.decode2");
  glq_e8_decode2(cb, cb2, glq_tensor_data(a), glq_tensor_data(b), inv_rs, glq_tensor_numel(a), glq_tensor_data(out));
  return 1;
}

/* ---- glq.e8.linear(artifacts) ---- */

enum { F_Q, F_Q2, F_SU, F_SV, F_BIAS, NF };
static const char *const field_names[NF] = {"Qidxs", "Qidxs2", "SU", "SV", "bias"};

/* field `name` of the table at tidx as a contiguous tensor of dtype dt; 0 if absent (out cleared) */
static int get_field_tensor(lua_State *L, int tidx, const char *name, glq_dtype dt, glq_tensor *out, int *rc) {
  memset(out, 0, sizeof *out);
  lua_getfield(L, tidx, name);
  glq_tensor *t = lglq_totensor(L, -1);
  int present = !lua_isnil(L, -1);
  if (present && !t) *rc = glq_error(GLQ_EINVAL, "field '%s' must be a tensor, got %s", name, luaL_typename(L, -1));
  else if (t && dt == GLQ_I16 && t->dtype != GLQ_I16)
    *rc = glq_error(GLQ_EINVAL, "field '%s' must be i16 (uint16 bit patterns), got %s", name, glq_dtype_name(t->dtype));
  else if (t) *rc = glq_tensor_to(t, dt, out);
  lua_pop(L, 1);
  return present;
}

/* a number or a one-element tensor in field `name` of the table at tidx */
static double get_field_number(lua_State *L, int tidx, const char *name, double def, int *rc) {
  double v = def;
  lua_getfield(L, tidx, name);
  glq_tensor *t = lglq_totensor(L, -1);
  if (lua_type(L, -1) == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (t && glq_tensor_numel(t) == 1) {
    int64_t zero[GLQ_MAX_DIMS] = {0};
    v = glq_tensor_get(t, zero);
  } else if (!lua_isnil(L, -1)) *rc = glq_error(GLQ_EINVAL, "field '%s' must be a number or a one-element tensor", name);
  lua_pop(L, 1);
  return v;
}

static int is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

/* artifacts table at 1, options table at 2 (or none): bias, bits, codebook override the artifacts; the transform
 * (parsed by the caller: nothing here raises, so f cannot leak) */
static int build_linear(lua_State *L, glq_hadamard_kind transform, int pow2, const char *opt_codebook, glq_tensor *f,
                        glq_linear **out) {
  int rc = 0;
  static const glq_dtype dts[NF] = {GLQ_I16, GLQ_I16, GLQ_F32, GLQ_F32, GLQ_F32};
  int present[NF];
  for (int i = 0; i < NF && !rc; i++) present[i] = get_field_tensor(L, 1, field_names[i], dts[i], &f[i], &rc);
  if (!rc && lua_istable(L, 2)) {
    glq_tensor b;
    if (get_field_tensor(L, 2, "bias", GLQ_F32, &b, &rc)) {
      glq_tensor_release(&f[F_BIAS]);
      f[F_BIAS] = b;
      present[F_BIAS] = 1;
    }
  }
  glq_e8_linear_desc d = {0};
  d.wscale = (float)get_field_number(L, 1, "Wscale", 0, &rc);
  d.inv_rs = (float)get_field_number(L, 1, "inv_resid_scale", 0, &rc);
  if (rc) return rc;
  if (!present[F_Q] || f[F_Q].ndim != 2) return glq_error(GLQ_EINVAL, "field 'Qidxs' must be a 2-d i16 tensor (out_pad, in_pad/8)");
  lua_getfield(L, 1, "Wscale");
  int has_scale = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has_scale) return glq_error(GLQ_EINVAL, "field 'Wscale' is missing");
  d.out_pad = f[F_Q].shape[0];
  d.in_pad = 8 * f[F_Q].shape[1];
  d.out = (int64_t)get_field_number(L, 1, "out_features", (double)d.out_pad, &rc);
  d.in = (int64_t)get_field_number(L, 1, "in_features", (double)d.in_pad, &rc);
  d.bits = (int)get_field_number(L, 1, "bits", present[F_Q2] ? 4 : 2, &rc);
  if (lua_istable(L, 2)) d.bits = (int)get_field_number(L, 2, "bits", d.bits, &rc);
  lua_getfield(L, 1, "codebook"); /* the options' codebook, else the artifacts' ("e8p"), else the shell book */
  const char *cb = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* the table keeps it alive */
  lua_pop(L, 1);
  if (opt_codebook) cb = opt_codebook;
  if (rc) return rc;
  if ((d.codebook = glq_codebook_from_name(cb)) < 0) return glq_error(GLQ_EINVAL, "unknown codebook '%s' (expected e8 or e8p)", cb);
  /* our default plans are the FWHT for powers of two, which is what pow2-padded uses; block-diagonal
   * has its own plans (binary expansion of the stored size, the FWHT itself for powers of two) */
  d.transform = transform;
  if (pow2 && !(is_pow2(d.out_pad) && is_pow2(d.in_pad)))
    return glq_error(GLQ_EUNSUPPORTED, "transform 'pow2-padded' with stored size %lld x %lld: only powers of two are supported",
                     (long long)d.out_pad, (long long)d.in_pad);
  if (present[F_Q2] && (f[F_Q2].ndim != 2 || f[F_Q2].shape[0] != d.out_pad || f[F_Q2].shape[1] != d.in_pad / 8))
    return glq_error(GLQ_EINVAL, "field 'Qidxs2' must have the shape of Qidxs (%lld, %lld)", (long long)d.out_pad,
                     (long long)(d.in_pad / 8));
  int64_t want[NF] = {0, 0, d.out_pad, d.in_pad, d.out};
  for (int i = F_SU; i < NF; i++)
    if (present[i] && glq_tensor_numel(&f[i]) != want[i])
      return glq_error(GLQ_EINVAL, "field '%s' has %lld values, expected %lld", field_names[i],
                       (long long)glq_tensor_numel(&f[i]), (long long)want[i]);
  d.qidxs = glq_tensor_data(&f[F_Q]);
  d.qidxs2 = present[F_Q2] ? glq_tensor_data(&f[F_Q2]) : NULL;
  d.su = present[F_SU] ? glq_tensor_data(&f[F_SU]) : NULL;
  d.sv = present[F_SV] ? glq_tensor_data(&f[F_SV]) : NULL;
  d.bias = present[F_BIAS] ? glq_tensor_data(&f[F_BIAS]) : NULL;
  return glq_e8_linear_new(&d, out);
}

/* glq.e8.linear(artifacts [, {bias=, bits=, transform=, name=}]) */
static int l_linear(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  const char *name = lglq_optstring(L, 2, "name", NULL), *cb = lglq_optstring(L, 2, "codebook", NULL);
  int pow2 = 0;
  glq_hadamard_kind tr = lglq_opttransform(L, 2, "transform", GLQ_HADAMARD_DEFAULT, "e8.linear", &pow2);
  glq_tensor f[NF];
  memset(f, 0, sizeof f);
  glq_linear *l = NULL;
  int rc = build_linear(L, tr, pow2, cb, f, &l);
  for (int i = 0; i < NF; i++) glq_tensor_release(&f[i]);
  if (name) lglq_check(L, rc, "e8.linear (%s)", name);
  lglq_check(L, rc, "e8.linear");
  lglq_pushlinear(L, l, 0);
  return 1;
}

static const luaL_Reg fns[] = {{"codebook", l_codebook}, {"encode", l_encode}, {"decode", l_decode},
                               {"decode2", l_decode2}, {"linear", l_linear},
                               {"_encode_bruteforce", l_encode_bruteforce}, {NULL, NULL}};

static const luaL_Reg methods[] = {{"size", m_size}, {"table", m_table}, {NULL, NULL}};

void lglq_open_e8(lua_State *L) {
  static const luaL_Reg meta[] = {{"__tostring", m_tostring}, {NULL, NULL}};
  lglq_newclass(L, E8_CODEBOOK, meta, methods);
  lglq_register(L, "e8", fns);
}

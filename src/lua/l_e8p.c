/* l_e8p.c - glq.e8p: the E8P codebook (QuIP#, glq 0.8.16's index layout) and its E81B residual codebook.
 *   glq.e8p.encode(x) -> i32 (N) exact nearest E8P indices of x (N, 8) (lowest index on ties)
 *   glq.e8p.decode(idx) -> f32 (N, 8);  glq.e8p.packed_abs() -> i32 (256), glq's grid_packed_abs
 *   glq.e8p.e81b_encode(x) / glq.e8p.e81b_decode(idx): the 256-entry E81B book likewise
 *   glq.e8p.pack(idx (m, nb)) -> i64 (m/16, nb/8, 8, 4), glq 0.8.16's Qidxs_e8p; glq.e8p.unpack(packed) -> i16 (m, nb)
 *   glq.e8p.e81b_pack(idx (m, nb)) -> i64 (m, nb/8), its Qidxs2_e81b; glq.e8p.e81b_unpack(packed) -> i16 (m, nb)
 *   glq.e8p._encode_bruteforce(x), glq.e8p._e81b_encode_bruteforce(x): exhaustive test references */
#include <string.h>
#include "lglq.h"
#include "../quant/e8p.h"

/* x at index 1 as a contiguous f32 (N, 8) tensor anchored on the stack */
static glq_tensor *check_vectors(lua_State *L, const char *fn) {
  glq_tensor *x = lglq_checktensor_tmp(L, 1, GLQ_F32, fn);
  if (x->ndim != 2 || x->shape[1] != 8)
    lglq_raisef(L, "%s: x must be (N, 8), got a %d-d tensor with last size %lld", fn, x->ndim,
                x->ndim ? (long long)x->shape[x->ndim - 1] : 0LL);
  return x;
}

static int encode_with(lua_State *L, int (*fn)(const float *, int64_t, int32_t *), const char *name) {
  glq_tensor *x = check_vectors(L, name), *idx = lglq_newtensor(L, GLQ_I32, 1, x->shape, name);
  lglq_check(L, fn(glq_tensor_data(x), x->shape[0], glq_tensor_data(idx)), "%s", name);
  return 1;
}

static int l_encode(lua_State *L) { return encode_with(L, glq_e8p_encode, "e8p.encode"); }
static int l_bf(lua_State *L) { return encode_with(L, glq_e8p_encode_bruteforce, "e8p._encode_bruteforce"); }
static int l_e81b_encode(lua_State *L) { return encode_with(L, glq_e81b_encode, "e8p.e81b_encode"); }
static int l_e81b_bf(lua_State *L) { return encode_with(L, glq_e81b_encode_bruteforce, "e8p._e81b_encode_bruteforce"); }

static int decode_with(lua_State *L, void (*fn)(const int32_t *, int64_t, float *), int size, const char *name) {
  lglq_check(L, glq_e8p_init(), "%s", name);
  glq_tensor *src = lglq_checktensor(L, 1);
  if (glq_dtype_is_float(src->dtype) || src->dtype == GLQ_BOOL)
    lglq_raisef(L, "%s: idx must be an integer tensor, got %s", name, glq_dtype_name(src->dtype));
  glq_tensor *idx = lglq_checktensor_tmp(L, 1, GLQ_I32, name);
  const int32_t *p = glq_tensor_data(idx);
  const int64_t n = glq_tensor_numel(idx);
  for (int64_t i = 0; i < n; i++) /* i16 bit patterns are accepted: the low 16 bits are the index */
    if ((p[i] & 0xFFFF) >= size)
      lglq_raisef(L, "%s: idx[%lld] = %d is not below the codebook size %d", name, (long long)i, (int)p[i], size);
  int64_t shape[2] = {n, 8};
  glq_tensor *out = lglq_newtensor(L, GLQ_F32, 2, shape, name);
  fn(p, n, glq_tensor_data(out));
  return 1;
}

static int l_decode(lua_State *L) { return decode_with(L, glq_e8p_decode, GLQ_E8P_SIZE, "e8p.decode"); }
static int l_e81b_decode(lua_State *L) { return decode_with(L, glq_e81b_decode, GLQ_E81B_SIZE, "e8p.e81b_decode"); }

static int l_packed_abs(lua_State *L) {
  lglq_check(L, glq_e8p_init(), "e8p.packed_abs");
  int64_t n = 256;
  glq_tensor *t = lglq_newtensor(L, GLQ_I32, 1, &n, "e8p.packed_abs");
  memcpy(glq_tensor_data(t), glq_e8p_packed_abs(), 256 * sizeof(uint32_t));
  return 1;
}

/* integer indices (m, nb) at 1 -> the packed i64 tensor */
static int pack_with(lua_State *L, int e8p, const char *name) {
  glq_tensor *src = lglq_checktensor(L, 1);
  if (glq_dtype_is_float(src->dtype) || src->dtype == GLQ_BOOL || src->ndim != 2)
    lglq_raisef(L, "%s: idx must be a 2-d integer tensor (rows, index columns)", name);
  glq_tensor *idx = lglq_checktensor_tmp(L, 1, GLQ_I32, name);
  const int64_t m = idx->shape[0], nb = idx->shape[1];
  int32_t *p = glq_tensor_data(idx);
  if (src->dtype == GLQ_I16)
    for (int64_t i = 0; i < m * nb; i++) p[i] &= 0xFFFF; /* uint16 bit patterns */
  int64_t s4[4] = {m / 16, nb / 8, 8, 4}, s2[2] = {m, nb / 8};
  if ((e8p && m % 16) || nb % 8) lglq_check(L, e8p ? glq_e8p_pack(p, m, nb, NULL) : glq_e81b_pack(p, m, nb, NULL), "%s", name);
  glq_tensor *out = lglq_newtensor(L, GLQ_I64, e8p ? 4 : 2, e8p ? s4 : s2, name);
  lglq_check(L, e8p ? glq_e8p_pack(p, m, nb, glq_tensor_data(out)) : glq_e81b_pack(p, m, nb, glq_tensor_data(out)), "%s", name);
  return 1;
}

static int unpack_with(lua_State *L, int e8p, const char *name) {
  glq_tensor *src = lglq_checktensor(L, 1);
  if (src->dtype != GLQ_I64 || src->ndim != (e8p ? 4 : 2) || (e8p && (src->shape[2] != 8 || src->shape[3] != 4)))
    lglq_raisef(L, "%s: packed must be an i64 tensor of shape %s", name, e8p ? "(m/16, nb/8, 8, 4)" : "(m, nb/8)");
  glq_tensor *pk = lglq_checktensor_tmp(L, 1, GLQ_I64, name);
  const int64_t m = e8p ? 16 * pk->shape[0] : pk->shape[0], nb = 8 * pk->shape[1];
  int64_t shape[2] = {m, nb};
  glq_tensor *i32 = lglq_newtensor(L, GLQ_I32, 2, shape, name);
  lglq_check(L, e8p ? glq_e8p_unpack(glq_tensor_data(pk), m, nb, glq_tensor_data(i32))
                    : glq_e81b_unpack(glq_tensor_data(pk), m, nb, glq_tensor_data(i32)), "%s", name);
  glq_tensor *out = lglq_newtensor(L, GLQ_I16, 2, shape, name);
  const int32_t *a = glq_tensor_data(i32);
  int16_t *b = glq_tensor_data(out);
  for (int64_t i = 0; i < m * nb; i++) b[i] = (int16_t)(uint16_t)a[i];
  return 1;
}

static int l_pack(lua_State *L) { return pack_with(L, 1, "e8p.pack"); }
static int l_unpack(lua_State *L) { return unpack_with(L, 1, "e8p.unpack"); }
static int l_e81b_pack(lua_State *L) { return pack_with(L, 0, "e8p.e81b_pack"); }
static int l_e81b_unpack(lua_State *L) { return unpack_with(L, 0, "e8p.e81b_unpack"); }

static const luaL_Reg fns[] = {{"pack", l_pack},
                               {"unpack", l_unpack},
                               {"e81b_pack", l_e81b_pack},
                               {"e81b_unpack", l_e81b_unpack},
{"encode", l_encode},
                               {"decode", l_decode},
                               {"e81b_encode", l_e81b_encode},
                               {"e81b_decode", l_e81b_decode},
                               {"packed_abs", l_packed_abs},
                               {"_encode_bruteforce", l_bf},
                               {"_e81b_encode_bruteforce", l_e81b_bf},
                               {NULL, NULL}};

void lglq_open_e8p(lua_State *L) { lglq_register(L, "e8p", fns); }

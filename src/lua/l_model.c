/* l_model.c - Lua binding of the Llama model (glq.llama): its CPU weights and the backend that runs
 * its forward (src/model/backend.h: the CPU, or the GPU after m:to("cuda")), one class for every
 * device; its KV cache; the sampler (glq.sampler) and the dense linear constructor (glq.linear.dense).
 * The userdata that owns the weights keeps every tensor and linear it was given alive through its
 * environment table; the C model borrows them (created without owns_linears). Layer indices are
 * 0-based, as in the checkpoints' tensor names; token ids are the model's own 0-based ids. */
#include <stdlib.h>
#include <string.h>
#include "lglq.h"
#include "../layers/dense_linear.h"
#include "../model/backend.h"
#include "../model/sampler.h"

#define LLAMA_MT "glq.llama"
#define KVCACHE_MT "glq.kvcache"
#define SAMPLER_MT "glq.sampler"

typedef struct { glq_model_kv *c; } kvcache_ud;
typedef struct { glq_sampler *s; } sampler_ud;

static const char *cap_names[GLQ_CAP_N] = {"qkv", "o", "gate_up", "down"};

/* ---- glq.linear.dense ---- */

/* glq.linear.dense(weight (out × in) [, bias (out)]) -> linear; f32/bf16 weights are borrowed */
static int l_dense(lua_State *L) {
  glq_tensor *w = lglq_checktensor(L, 1);
  glq_tensor *b = lua_isnoneornil(L, 2) ? NULL : lglq_checktensor(L, 2);
  glq_linear *lin;
  lglq_check(L, glq_dense_linear_new(w, b, &lin), "glq.linear.dense");
  lglq_pushlinear(L, lin, 0);
  return 1;
}

/* ---- helpers ---- */

/* A model userdata: the CPU weights and the backend that runs them. The one made by glq.llama.new
 * owns the weights; one made by m:to(device) borrows them and keeps the owner alive through
 * its environment (field "weights"). */
typedef struct {
  glq_llama *m;
  glq_model_backend *b;
  int owns;
} model_ud;

static model_ud *checkmodel(lua_State *L, int idx) {
  model_ud *u = luaL_checkudata(L, idx, LLAMA_MT);
  if (!u->b) luaL_error(L, "glq.llama: model used after free");
  return u;
}

glq_llama *lglq_checkllama(lua_State *L, int idx) { return checkmodel(L, idx)->m; }

static glq_model_backend *checkbackend(lua_State *L, int idx) { return checkmodel(L, idx)->b; }

static glq_model_kv *optcache(lua_State *L, int opts) {
  if (lua_isnoneornil(L, opts)) return NULL;
  luaL_checktype(L, opts, LUA_TTABLE);
  lua_getfield(L, opts, "cache");
  glq_model_kv *c = NULL;
  if (!lua_isnil(L, -1)) c = ((kvcache_ud *)luaL_checkudata(L, -1, KVCACHE_MT))->c;
  lua_pop(L, 1);
  return c;
}

/* Tokens from a tensor (n) / (B, T) of any numeric dtype, a flat table (one sequence) or a table
 * of equal-length tables; pushes an i32 (B × T) tensor that owns the ids and returns its data. */
const int32_t *lglq_checktokens(lua_State *L, int idx, int *B, int *T) {
  glq_tensor t;
  if (lua_istable(L, idx)) {
    int nb = (int)lua_objlen(L, idx), nested;
    lua_rawgeti(L, idx, 1);
    nested = lua_istable(L, -1);
    int nt = nested ? (int)lua_objlen(L, -1) : nb;
    lua_pop(L, 1);
    if (!nested) nb = 1;
    if (nb < 1 || nt < 1) luaL_argerror(L, idx, "token list is empty");
    int64_t shape[2] = {nb, nt};
    lglq_check(L, glq_tensor_new(GLQ_I32, 2, shape, &t), "tokens");
    lglq_pushtensor(L, &t);
    int32_t *p = glq_tensor_data(lglq_checktensor(L, -1));
    for (int b = 0; b < nb; b++) {
      if (nested) {
        lua_rawgeti(L, idx, b + 1);
        if (!lua_istable(L, -1) || (int)lua_objlen(L, -1) != nt)
          luaL_argerror(L, idx, "token rows must be tables of equal length");
      }
      int row = nested ? lua_gettop(L) : idx;
      for (int i = 0; i < nt; i++) {
        lua_rawgeti(L, row, i + 1);
        if (!lua_isnumber(L, -1)) luaL_argerror(L, idx, "tokens must be integers");
        p[(size_t)b * nt + i] = (int32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
      }
      if (nested) lua_pop(L, 1);
    }
    *B = nb;
    *T = nt;
    return p;
  }
  glq_tensor *src = lglq_checktensor(L, idx);
  if (src->ndim != 1 && src->ndim != 2) luaL_argerror(L, idx, "tokens must be a 1-D (T) or 2-D (B, T) tensor");
  *B = src->ndim == 2 ? (int)src->shape[0] : 1;
  *T = (int)src->shape[src->ndim - 1];
  if (*B < 1 || *T < 1) luaL_argerror(L, idx, "token tensor is empty");
  lglq_checktensor_as(L, idx, GLQ_I32, "tokens", &t);
  lglq_pushtensor(L, &t);
  return glq_tensor_data(lglq_checktensor(L, -1));
}

/* Push the environment of the userdata that owns model idx's weights. */
static void owner_env(lua_State *L, int model) {
  lua_getfenv(L, model);
  lua_getfield(L, -1, "weights");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfenv(L, -1);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* Remember value at idx under key in the weights' owner (keeps it alive as long as the weights). */
static void anchor(lua_State *L, int model, const char *key, int idx) {
  idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
  owner_env(L, model);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, key);
  lua_pop(L, 1);
}

static int cfg_int(lua_State *L, int idx, const char *name, int def, int required) {
  lua_getfield(L, idx, name);
  int present = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!present && required) return luaL_error(L, "glq.llama.new: config field '%s' is required", name);
  return (int)lglq_optinteger(L, idx, name, def);
}

/* Tensors in the backend's memory: CPU tensors, or device tensors (glq.cuda.tensor). */
static glq_tensor *to_act(lua_State *L, int idx, const glq_model_backend *b) {
  return b->vt->storage == GLQ_STORAGE_CUDA ? lglq_todevtensor(L, idx) : lglq_totensor(L, idx);
}

/* a contiguous f32 tensor in b's memory at idx whose last dimension is d; rows = numel / d */
static glq_tensor *check_act(lua_State *L, int idx, const glq_model_backend *b, int64_t d, const char *what, int64_t *rows) {
  glq_tensor *t = to_act(L, idx, b);
  if (!t) lglq_raisef(L, "%s: expected a %s tensor", what, b->vt->device);
  if (t->dtype != GLQ_F32 || t->ndim < 1 || t->shape[t->ndim - 1] != d || !glq_tensor_is_contiguous(t))
    lglq_raisef(L, "%s: expected a contiguous f32 %s tensor (..., %lld)", what, b->vt->device, (long long)d);
  *rows = glq_tensor_numel(t) / d;
  return t;
}

/* push a new zero-filled tensor in b's memory and return it */
static glq_tensor *push_act(lua_State *L, const glq_model_backend *b, glq_dtype dt, int ndim, const int64_t *shape,
                            const char *what) {
  glq_tensor t;
  lglq_check(L, b->vt->tensor_new(dt, ndim, shape, &t), "%s", what);
  if (t.st->kind == GLQ_STORAGE_CUDA) lglq_pushdevtensor(L, &t);
  else lglq_pushtensor(L, &t);
  return to_act(L, -1, b);
}

/* ---- model ---- */

static model_ud *new_model(lua_State *L) {
  model_ud *u = lua_newuserdata(L, sizeof *u);
  memset(u, 0, sizeof *u);
  luaL_getmetatable(L, LLAMA_MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setfenv(L, -2);
  return u;
}

/* glq.llama.new(cfg) with cfg = {dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab,
 * max_seq, norm_eps, rope_theta, rope_layout = "interleaved" | "half", rope_scaling = nil |
 * {type = "llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings},
 * qk_norm, tied} -> a model without weights whose forward runs on the CPU (m:to("cuda") for the GPU) */
static int l_llama_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  glq_llama_config c = {0};
  c.dim = cfg_int(L, 1, "dim", 0, 1);
  c.n_layers = cfg_int(L, 1, "n_layers", 0, 1);
  c.n_heads = cfg_int(L, 1, "n_heads", 0, 1);
  c.n_kv_heads = cfg_int(L, 1, "n_kv_heads", c.n_heads, 0);
  c.head_dim = cfg_int(L, 1, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0, 0);
  c.ffn_dim = cfg_int(L, 1, "ffn_dim", 0, 1);
  c.vocab = cfg_int(L, 1, "vocab", 0, 1);
  c.max_seq = cfg_int(L, 1, "max_seq", 0, 1);
  c.norm_eps = (float)lglq_optnumber(L, 1, "norm_eps", 1e-5);
  c.rope_theta = (float)lglq_optnumber(L, 1, "rope_theta", 10000.0);
  c.qk_norm = lglq_optboolean(L, 1, "qk_norm", 0);
  c.tied = lglq_optboolean(L, 1, "tied", 0);
  static const lglq_enum layouts[] = {{"interleaved", GLQ_ROPE_INTERLEAVED}, {"half", GLQ_ROPE_HALF}, {NULL, 0}};
  int layout = lglq_optenum(L, 1, "rope_layout", layouts, -1, "glq.llama.new");
  if (layout < 0) return luaL_error(L, "glq.llama.new: config field 'rope_layout' (\"interleaved\" for GGUF/Meta, \"half\" for HF) is required");
  c.rope_layout = (glq_rope_layout)layout;
  lua_getfield(L, 1, "rope_scaling");
  if (lua_istable(L, -1)) {
    int rs = lua_gettop(L);
    const char *type = lglq_optstring(L, rs, "type", "llama3");
    if (strcmp(type, "llama3")) return luaL_error(L, "glq.llama.new: unsupported rope_scaling type \"%s\"", type);
    c.rope_scaling = GLQ_ROPE_SCALE_LLAMA3;
    c.rope_factor = (float)lglq_optnumber(L, rs, "factor", 0);
    c.rope_low_freq_factor = (float)lglq_optnumber(L, rs, "low_freq_factor", 0);
    c.rope_high_freq_factor = (float)lglq_optnumber(L, rs, "high_freq_factor", 0);
    c.rope_original_max_pos = (int)lglq_optinteger(L, rs, "original_max_position_embeddings", 0);
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "glq.llama.new: rope_scaling must be a table or nil");
  }
  lua_pop(L, 1);
  model_ud *u = new_model(L);
  u->owns = 1;
  lglq_check(L, glq_llama_new(&c, 0, &u->m), "glq.llama.new");
  lglq_check(L, glq_cpu_backend_new(u->m, &u->b), "glq.llama.new");
  return 1;
}

/* m:to(device [, {dense_bf16 = false}]) -> the same weights with the forward on device ("cpu" or
 * "cuda"). A device model starts without weights: sync_layer(l) and sync_head() copy them (again
 * after every change of the CPU weights); dense_bf16 stores dense projections in bf16 on the GPU. */
static int m_to(lua_State *L) {
  model_ud *src = checkmodel(L, 1);
  const char *dev = luaL_checkstring(L, 2);
  glq_backend_opts o = {lua_isnoneornil(L, 3) ? 0 : lglq_optboolean(L, 3, "dense_bf16", 0)};
  model_ud *u = new_model(L);
  u->m = src->m;
  lua_getfenv(L, -1);
  lua_getfenv(L, 1);
  lua_getfield(L, -1, "weights");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
  }
  lua_setfield(L, -3, "weights");
  lua_pop(L, 2);
  lglq_check(L, glq_model_backend_new(dev, u->m, &o, &u->b), "llama:to(\"%s\")", dev);
  return 1;
}

static int m_llama_gc(lua_State *L) {
  model_ud *u = luaL_checkudata(L, 1, LLAMA_MT);
  glq_model_backend_free(u->b);
  if (u->owns) glq_llama_free(u->m);
  u->b = NULL;
  u->m = NULL;
  return 0;
}

/* m:device() -> "cpu" or "cuda": where the forward runs */
static int m_device(lua_State *L) {
  lua_pushstring(L, checkbackend(L, 1)->vt->device);
  return 1;
}

/* m:has(capability) -> whether the backend has it: "argmax" (forward{argmax = true} picks greedy tokens
 * on the device, without copying logits back), "kv_quant" (f16 and int8 KV caches) */
static int m_has(lua_State *L) {
  static const lglq_enum caps[] = {{"argmax", GLQ_BACKEND_ARGMAX}, {"kv_quant", GLQ_BACKEND_KV_QUANT}, {NULL, 0}};
  glq_model_backend *b = checkbackend(L, 1);
  lua_pushboolean(L, (b->vt->caps & (unsigned)lglq_checkenum(L, 2, "capability", caps, "glq.llama:has")) != 0);
  return 1;
}

/* m:head_rows() -> how many rows of logits a caller best asks m:head for at once: a performance hint (more
 * on the GPU, which amortises its launches over them) */
static int m_head_rows(lua_State *L) {
  lua_pushinteger(L, checkbackend(L, 1)->vt->head_rows);
  return 1;
}

/* m:config() -> table of the model's configuration */
static int m_config(lua_State *L) {
  const glq_llama_config *c = glq_llama_config_of(lglq_checkllama(L, 1));
  lua_newtable(L);
  struct { const char *k; int v; } ints[] = {{"dim", c->dim}, {"n_layers", c->n_layers}, {"n_heads", c->n_heads},
    {"n_kv_heads", c->n_kv_heads}, {"head_dim", c->head_dim}, {"ffn_dim", c->ffn_dim}, {"vocab", c->vocab},
    {"max_seq", c->max_seq}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) { lua_pushinteger(L, ints[i].v); lua_setfield(L, -2, ints[i].k); }
  lua_pushnumber(L, c->norm_eps); lua_setfield(L, -2, "norm_eps");
  lua_pushnumber(L, c->rope_theta); lua_setfield(L, -2, "rope_theta");
  lua_pushstring(L, c->rope_layout == GLQ_ROPE_HALF ? "half" : "interleaved"); lua_setfield(L, -2, "rope_layout");
  lua_pushboolean(L, c->qk_norm); lua_setfield(L, -2, "qk_norm");
  lua_pushboolean(L, c->tied); lua_setfield(L, -2, "tied");
  return 1;
}

static int m_set_embedding(lua_State *L) {
  glq_llama *m = lglq_checkllama(L, 1);
  lglq_check(L, glq_llama_set_embedding(m, lglq_checktensor(L, 2)), "llama:set_embedding");
  anchor(L, 1, "embedding", 2);
  return 0;
}

static int m_set_final_norm(lua_State *L) {
  lglq_check(L, glq_llama_set_final_norm(lglq_checkllama(L, 1), lglq_checktensor(L, 2)), "llama:set_final_norm");
  return 0;
}

/* m:set_head_q8_0(u8 blocks): decode-time head over the GGUF Q8_0 bytes of the tied embedding */
static int m_set_head_q8_0(lua_State *L) {
  lglq_check(L, glq_llama_set_head_q8_0(lglq_checkllama(L, 1), lglq_checktensor(L, 2)), "llama:set_head_q8_0");
  return 0;
}

/* m:set_head(linear | nil): nil returns a tied model to its embedding-backed head */
static int m_set_head(lua_State *L) {
  glq_llama *m = lglq_checkllama(L, 1);
  glq_linear *h = lua_isnoneornil(L, 2) ? NULL : lglq_checklinear(L, 2);
  lglq_check(L, glq_llama_set_head(m, h), "llama:set_head");
  anchor(L, 1, "head", 2);
  return 0;
}

/* m:set_layer(l, {attn_norm, ffn_norm, [q_norm, k_norm], q, k, v, o, gate, up, down}) sets the CPU
 * weights (a device model copies them with sync_layer) */
static int m_set_layer(lua_State *L) {
  glq_llama *m = lglq_checkllama(L, 1);
  int l = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  static const char *lin_names[7] = {"q", "k", "v", "o", "gate", "up", "down"};
  static const char *norm_names[4] = {"attn_norm", "ffn_norm", "q_norm", "k_norm"};
  glq_linear *lin[7];
  const glq_tensor *norm[4];
  for (int i = 0; i < 7; i++) {
    lua_getfield(L, 3, lin_names[i]);
    if (lua_isnil(L, -1)) return luaL_error(L, "llama:set_layer(%d): field '%s' (a linear) is missing", l, lin_names[i]);
    lin[i] = lglq_checklinear(L, -1);
    lua_pop(L, 1);
  }
  for (int i = 0; i < 4; i++) {
    lua_getfield(L, 3, norm_names[i]);
    norm[i] = lua_isnil(L, -1) ? NULL : lglq_checktensor(L, -1);
    lua_pop(L, 1); /* the table keeps the tensor alive during the call; norms are copied */
  }
  glq_llama_layer_weights w = {norm[0], norm[1], norm[2], norm[3], lin[0], lin[1], lin[2], lin[3], lin[4], lin[5], lin[6]};
  lglq_check(L, glq_llama_set_layer(m, l, &w), "llama:set_layer");
  lua_createtable(L, 0, 7);
  for (int i = 0; i < 7; i++) { lua_getfield(L, 3, lin_names[i]); lua_setfield(L, -2, lin_names[i]); }
  char key[32];
  snprintf(key, sizeof key, "layer%d", l);
  anchor(L, 1, key, lua_gettop(L));
  return 0;
}

/* m:layer_linears(l) -> {q=, k=, ..., down=} as set (nil if the layer is not set) */
static int m_layer_linears(lua_State *L) {
  lglq_checkllama(L, 1);
  char key[32];
  snprintf(key, sizeof key, "layer%d", (int)luaL_checkinteger(L, 2));
  owner_env(L, 1);
  lua_getfield(L, -1, key);
  return 1;
}

/* m:sync_layer(l): copy layer l's CPU weights as they are now to the model's device (on the CPU: only
 * checks the layer is set) */
static int m_sync_layer(lua_State *L) {
  glq_model_backend *b = checkbackend(L, 1);
  int l = (int)luaL_checkinteger(L, 2);
  lglq_check(L, b->vt->sync_layer(b, l), "llama:sync_layer(%d)", l);
  return 0;
}

/* m:drop_layer(l): free the device's copy of layer l (streaming; nothing on the CPU) */
static int m_drop_layer(lua_State *L) {
  glq_model_backend *b = checkbackend(L, 1);
  b->vt->drop_layer(b, (int)luaL_checkinteger(L, 2));
  return 0;
}

/* m:sync_head(): copy the embedding, final norm and output head to the model's device */
static int m_sync_head(lua_State *L) {
  glq_model_backend *b = checkbackend(L, 1);
  lglq_check(L, b->vt->sync_head(b), "llama:sync_head");
  return 0;
}

/* m:bytes() -> bytes of weights the device holds (0 on the CPU, which reads the weights where they are) */
static int m_bytes(lua_State *L) {
  glq_model_backend *b = checkbackend(L, 1);
  lua_pushnumber(L, (lua_Number)b->vt->bytes(b));
  return 1;
}

/* m:embed(tokens) -> hidden (B, T, dim) f32 in the model's memory (a device tensor on the GPU) */
static int m_embed(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  int B, T;
  const int32_t *tok = lglq_checktokens(L, 2, &B, &T);
  int64_t shape[3] = {B, T, glq_llama_config_of(u->m)->dim};
  glq_tensor *h = push_act(L, u->b, GLQ_F32, 3, shape, "llama:embed");
  lglq_check(L, u->b->vt->embed(u->b, tok, (int64_t)B * T, glq_tensor_data(h)), "llama:embed");
  return 1;
}

/* The capture table at idx: existing f64 d×d tensors are accumulated into, missing ones created. */
static void prepare_capture(lua_State *L, glq_llama *m, int idx, glq_llama_capture *cap) {
  memset(cap, 0, sizeof *cap);
  lua_getfield(L, idx, "rows");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, idx, "rows");
  }
  int rows = lua_gettop(L);
  for (int i = 0; i < GLQ_CAP_N; i++) {
    int64_t d = glq_llama_capture_dim(m, i);
    lua_getfield(L, idx, cap_names[i]);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      glq_tensor H;
      int64_t shape[2] = {d, d};
      lglq_check(L, glq_tensor_new(GLQ_F64, 2, shape, &H), "llama:layer capture");
      lglq_pushtensor(L, &H);
      lua_pushvalue(L, -1);
      lua_setfield(L, idx, cap_names[i]);
    }
    glq_tensor *H = lglq_checktensor(L, -1);
    if (H->dtype != GLQ_F64 || H->ndim != 2 || H->shape[0] != d || H->shape[1] != d || !glq_tensor_is_contiguous(H) ||
        H->st->readonly)
      luaL_error(L, "llama:layer: capture.%s must be a writable contiguous f64 tensor of %d x %d", cap_names[i], (int)d, (int)d);
    cap->H[i] = glq_tensor_data(H);
    lua_pop(L, 1);
    lua_getfield(L, rows, cap_names[i]);
    cap->rows[i] = (int64_t)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* m:layer(l, hidden (B, T, dim) or (T, dim), {cache = c, capture = true | table, in_place = true})
 * runs decoder layer l on hidden (a contiguous f32 tensor in the model's memory), in place unless
 * in_place = false (capture only; not with a cache), and returns it, plus with capture the table
 * {qkv = H, o = H, gate_up = H, down = H, rows = {qkv = n, ...}} (CPU f64, H += xᵀx; a table given
 * is accumulated into). Without a cache the sequences are independent and start at position 0; with
 * one, at the cache's length: call cache:advance(T) after the last layer. */
static int m_layer(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  int l = (int)luaL_checkinteger(L, 2);
  int64_t dim = glq_llama_config_of(u->m)->dim, rows;
  glq_tensor *h = check_act(L, 3, u->b, dim, "llama:layer", &rows);
  if ((h->ndim != 2 && h->ndim != 3) || h->st->readonly)
    return lglq_raisef(L, "llama:layer(%d): hidden must be a writable (B, T, %lld) or (T, %lld) tensor", l, (long long)dim,
                       (long long)dim);
  int B = h->ndim == 3 ? (int)h->shape[0] : 1, T = (int)h->shape[h->ndim - 2];
  glq_model_kv *cache = optcache(L, 4);
  int in_place = lua_isnoneornil(L, 4) ? 1 : lglq_optboolean(L, 4, "in_place", 1);
  glq_llama_capture cap, *capp = NULL;
  int capidx = 0;
  if (!lua_isnoneornil(L, 4)) {
    lua_getfield(L, 4, "capture");
    if (lua_toboolean(L, -1)) {
      if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
      }
      capidx = lua_gettop(L);
      prepare_capture(L, u->m, capidx, &cap);
      capp = &cap;
    }
  }
  lglq_check(L, u->b->vt->layer(u->b, l, glq_tensor_data(h), B, T, cache, capp, in_place), "llama:layer(%d)", l);
  lua_pushvalue(L, 3);
  if (!capp) return 1;
  lua_getfield(L, capidx, "rows");
  for (int i = 0; i < GLQ_CAP_N; i++) {
    lua_pushnumber(L, (lua_Number)cap.rows[i]);
    lua_setfield(L, -2, cap_names[i]);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, capidx);
  return 2;
}

/* m:head(hidden (..., dim)) -> logits (..., vocab) in the model's memory (CPU hidden of any float dtype
 * is converted; a device tensor on the GPU: d:cpu() copies it to the host) */
static int m_head(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  const glq_llama_config *c = glq_llama_config_of(u->m);
  if (u->b->vt->storage != GLQ_STORAGE_CUDA) {
    glq_tensor *in = lglq_checktensor(L, 2);
    if (in->ndim < 1 || in->shape[in->ndim - 1] != c->dim)
      return lglq_raisef(L, "llama:head: hidden must end in a dimension of %d", c->dim);
    lglq_checktensor_tmp(L, 2, GLQ_F32, "llama:head");
    lua_replace(L, 2);
  }
  int64_t n;
  glq_tensor *x = check_act(L, 2, u->b, c->dim, "llama:head", &n);
  int64_t shape[GLQ_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = c->vocab;
  glq_tensor *y = push_act(L, u->b, GLQ_F32, x->ndim, shape, "llama:head");
  lglq_check(L, u->b->vt->head(u->b, glq_tensor_data(x), n, glq_tensor_data(y)), "llama:head");
  return 1;
}

/* m:forward(tokens, {cache = c, all_logits = false, out = t, argmax = false}) -> CPU logits (B, vocab)
 * or (B, T, vocab), written into `out` when given; with argmax = true instead the greedy next token of
 * each sequence (B integers: the lowest index of the maximum; chosen on the device when m:has("argmax")) */
static int m_forward(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  const glq_llama_config *c = glq_llama_config_of(u->m);
  glq_model_kv *cache = optcache(L, 3);
  int all = lua_isnoneornil(L, 3) ? 0 : lglq_optboolean(L, 3, "all_logits", 0);
  int argmax = lua_isnoneornil(L, 3) ? 0 : lglq_optboolean(L, 3, "argmax", 0);
  int B, T;
  const int32_t *tok = lglq_checktokens(L, 2, &B, &T);
  if (argmax) {
    if (all) return luaL_error(L, "llama:forward: argmax and all_logits exclude each other");
    int32_t *next = lua_newuserdata(L, sizeof(int32_t) * (size_t)B);
    lglq_check(L, u->b->vt->forward(u->b, cache, tok, B, T, NULL, 0, next), "llama:forward");
    luaL_checkstack(L, B, "llama:forward");
    for (int b = 0; b < B; b++) lua_pushinteger(L, next[b]);
    return B;
  }
  int64_t shape[3] = {B, all ? T : c->vocab, c->vocab};
  float *y = lglq_push_out(L, 3, all ? 3 : 2, shape, "llama:forward");
  lglq_check(L, u->b->vt->forward(u->b, cache, tok, B, T, y, all, NULL), "llama:forward");
  return 1;
}

/* m:nll_rows(logits (..., vocab) in the model's memory, targets (rows)) -> CPU f64 (rows):
 * logsumexp(row) - row[target], as glq.nll_rows (on the device for a GPU model) */
static int m_nll_rows(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  int64_t V = glq_llama_config_of(u->m)->vocab, n;
  glq_tensor *lg = check_act(L, 2, u->b, V, "llama:nll_rows", &n);
  glq_tensor *tg = lglq_checktensor_tmp(L, 3, GLQ_I32, "llama:nll_rows targets");
  if (glq_tensor_numel(tg) != n) return lglq_raisef(L, "llama:nll_rows: %lld rows of logits but %lld targets", (long long)n,
                                                    (long long)glq_tensor_numel(tg));
  glq_tensor *out = lglq_newtensor(L, GLQ_F64, 1, &n, "llama:nll_rows");
  lglq_check(L, u->b->vt->nll_rows(glq_tensor_data(lg), n, V, glq_tensor_data(tg), glq_tensor_data(out)), "llama:nll_rows");
  return 1;
}

/* m:kl_rows(p, q) (logits (..., vocab) in the model's memory, p the reference) -> CPU kl f64 (rows),
 * agree u8 (rows), as glq.kl_rows */
static int m_kl_rows(lua_State *L) {
  model_ud *u = checkmodel(L, 1);
  int64_t V = glq_llama_config_of(u->m)->vocab, n, nq;
  glq_tensor *p = check_act(L, 2, u->b, V, "llama:kl_rows", &n), *q = check_act(L, 3, u->b, V, "llama:kl_rows", &nq);
  if (n != nq) return lglq_raisef(L, "llama:kl_rows: p has %lld rows, q %lld", (long long)n, (long long)nq);
  glq_tensor *kl = lglq_newtensor(L, GLQ_F64, 1, &n, "llama:kl_rows");
  glq_tensor *ag = lglq_newtensor(L, GLQ_U8, 1, &n, "llama:kl_rows");
  lglq_check(L, u->b->vt->kl_rows(glq_tensor_data(p), glq_tensor_data(q), n, V, glq_tensor_data(kl), glq_tensor_data(ag)),
             "llama:kl_rows");
  return 2;
}

/* ---- KV cache ---- */

/* m:kvcache({dtype = "f32" | "f16" | "int8", batch = 1, max_seq = cfg.max_seq, residual_length = 128,
 * group = 32}) (also glq.llama.kvcache(m, opts)) -> a cache in the model's memory; f16 and int8 need
 * m:has("kv_quant") */
static int l_kvcache(lua_State *L) {
  static const lglq_enum dtypes[] = {{"f32", GLQ_KV_F32}, {"f16", GLQ_KV_F16}, {"int8", GLQ_KV_INT8}, {NULL, 0}};
  model_ud *u = checkmodel(L, 1);
  const glq_llama_config *mc = glq_llama_config_of(u->m);
  glq_kvcache_config c = {mc->n_layers, 1, mc->n_kv_heads, mc->head_dim, mc->max_seq, GLQ_KV_F32, 128, 32};
  c.dtype = (glq_kv_dtype)lglq_optenum(L, 2, "dtype", dtypes, GLQ_KV_F32, "glq.llama.kvcache");
  c.batch = (int)lglq_optinteger(L, 2, "batch", 1);
  c.max_seq = (int)lglq_optinteger(L, 2, "max_seq", mc->max_seq);
  c.residual = (int)lglq_optinteger(L, 2, "residual_length", 128);
  c.group = (int)lglq_optinteger(L, 2, "group", 32);
  if (c.residual < 0 || c.group < 1) return luaL_error(L, "glq.llama.kvcache: residual_length must be >= 0 and group >= 1");
  kvcache_ud *cu = lua_newuserdata(L, sizeof *cu);
  cu->c = NULL;
  luaL_getmetatable(L, KVCACHE_MT);
  lua_setmetatable(L, -2);
  lglq_check(L, u->b->vt->kv_new(u->b, &c, &cu->c), "glq.llama.kvcache");
  return 1;
}

static glq_model_kv *checkcache(lua_State *L, int idx) {
  glq_model_kv *c = ((kvcache_ud *)luaL_checkudata(L, idx, KVCACHE_MT))->c;
  if (!c) luaL_error(L, "kvcache: used after free");
  return c;
}

static int m_cache_gc(lua_State *L) {
  kvcache_ud *u = luaL_checkudata(L, 1, KVCACHE_MT);
  glq_model_kv_free(u->c);
  u->c = NULL;
  return 0;
}
static int m_cache_len(lua_State *L) { lua_pushinteger(L, glq_model_kv_len(checkcache(L, 1))); return 1; }
static int m_cache_bytes(lua_State *L) { lua_pushnumber(L, (lua_Number)glq_model_kv_bytes(checkcache(L, 1))); return 1; }
static int m_cache_reset(lua_State *L) { glq_model_kv_reset(checkcache(L, 1)); return 0; }
static int m_cache_advance(lua_State *L) {
  lglq_check(L, glq_model_kv_advance(checkcache(L, 1), (int)luaL_checkinteger(L, 2)), "kvcache:advance");
  return 0;
}

/* ---- sampler ---- */

/* glq.sampler.new({temperature = 0, top_k = 0, top_p = 1, seed = 0, min_p = 0,
 *                   repeat_penalty = 1, repeat_last_n = 64}) */
static int l_sampler_new(lua_State *L) {
  glq_sampler_config c;
  c.temperature = (float)lglq_optnumber(L, 1, "temperature", 0);
  c.top_k = (int)lglq_optinteger(L, 1, "top_k", 0);
  c.top_p = (float)lglq_optnumber(L, 1, "top_p", 1);
  c.min_p = (float)lglq_optnumber(L, 1, "min_p", 0);
  c.repeat_penalty = (float)lglq_optnumber(L, 1, "repeat_penalty", 1);
  c.repeat_last_n = (int)lglq_optinteger(L, 1, "repeat_last_n", 64);
  lua_Number seed = lglq_optnumber(L, 1, "seed", 0);
  if (!(seed >= 0 && seed < 18446744073709551616.0)) return luaL_error(L, "glq.sampler.new: seed must be in [0, 2^64)");
  c.seed = (uint64_t)seed;
  sampler_ud *u = lua_newuserdata(L, sizeof *u);
  u->s = NULL;
  luaL_getmetatable(L, SAMPLER_MT);
  lua_setmetatable(L, -2);
  lglq_check(L, glq_sampler_new(&c, &u->s), "glq.sampler.new");
  return 1;
}

static int m_sampler_gc(lua_State *L) {
  sampler_ud *u = luaL_checkudata(L, 1, SAMPLER_MT);
  glq_sampler_free(u->s);
  u->s = NULL;
  return 0;
}

/* s:sample(logits (V) or (B, V)) -> token id, or a table of B ids */
static int m_sample(lua_State *L) {
  glq_sampler *s = ((sampler_ud *)luaL_checkudata(L, 1, SAMPLER_MT))->s;
  glq_tensor *in = lglq_checktensor(L, 2);
  if (in->ndim != 1 && in->ndim != 2) return lglq_raisef(L, "sampler:sample: logits must be (V) or (B, V)");
  glq_tensor x;
  lglq_checktensor_as(L, 2, GLQ_F32, "sampler:sample", &x);
  lglq_pushtensor(L, &x);
  glq_tensor *xp = lglq_checktensor(L, -1);
  int rows = xp->ndim == 2 ? (int)xp->shape[0] : 1, V = (int)xp->shape[xp->ndim - 1];
  const float *p = glq_tensor_data(xp);
  if (xp->ndim == 2) lua_createtable(L, rows, 0);
  for (int r = 0; r < rows; r++) {
    int32_t tok;
    lglq_check(L, glq_sampler_sample(s, p + (size_t)r * V, V, &tok), "sampler:sample");
    lua_pushinteger(L, tok);
    if (xp->ndim == 2) lua_rawseti(L, -2, r + 1);
  }
  return 1;
}

/* s:accept(id or {ids}): tokens the repetition penalty looks back over (prompt and output) */
static int m_accept(lua_State *L) {
  glq_sampler *s = ((sampler_ud *)luaL_checkudata(L, 1, SAMPLER_MT))->s;
  if (lua_istable(L, 2)) {
    for (int i = 1, n = (int)lua_objlen(L, 2); i <= n; i++) {
      lua_rawgeti(L, 2, i);
      int32_t t = (int32_t)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
      lglq_check(L, glq_sampler_accept(s, t), "sampler:accept");
    }
  } else {
    lglq_check(L, glq_sampler_accept(s, (int32_t)luaL_checkinteger(L, 2)), "sampler:accept");
  }
  return 0;
}

void lglq_open_model(lua_State *L) {
  static const luaL_Reg llama_methods[] = {
    {"config", m_config}, {"device", m_device}, {"has", m_has}, {"head_rows", m_head_rows}, {"to", m_to},
    {"set_embedding", m_set_embedding}, {"set_final_norm", m_set_final_norm}, {"set_head_q8_0", m_set_head_q8_0},
    {"set_head", m_set_head}, {"set_layer", m_set_layer}, {"layer_linears", m_layer_linears},
    {"sync_layer", m_sync_layer}, {"drop_layer", m_drop_layer}, {"sync_head", m_sync_head}, {"bytes", m_bytes},
    {"embed", m_embed}, {"layer", m_layer}, {"head", m_head}, {"forward", m_forward}, {"kvcache", l_kvcache},
    {"nll_rows", m_nll_rows}, {"kl_rows", m_kl_rows}, {NULL, NULL}};
  static const luaL_Reg cache_methods[] = {
    {"len", m_cache_len}, {"bytes", m_cache_bytes}, {"reset", m_cache_reset}, {"advance", m_cache_advance}, {NULL, NULL}};
  static const luaL_Reg sampler_methods[] = {{"sample", m_sample}, {"accept", m_accept}, {NULL, NULL}};
  static const luaL_Reg llama_funcs[] = {{"new", l_llama_new}, {"kvcache", l_kvcache}, {NULL, NULL}};
  static const luaL_Reg sampler_funcs[] = {{"new", l_sampler_new}, {NULL, NULL}};
  static const luaL_Reg linear_funcs[] = {{"dense", l_dense}, {NULL, NULL}};
  static const luaL_Reg llama_meta[] = {{"__gc", m_llama_gc}, {NULL, NULL}};
  static const luaL_Reg cache_meta[] = {{"__gc", m_cache_gc}, {NULL, NULL}};
  static const luaL_Reg sampler_meta[] = {{"__gc", m_sampler_gc}, {NULL, NULL}};
  lglq_newclass(L, LLAMA_MT, llama_meta, llama_methods);
  lglq_newclass(L, KVCACHE_MT, cache_meta, cache_methods);
  lglq_newclass(L, SAMPLER_MT, sampler_meta, sampler_methods);
  lglq_register(L, "llama", llama_funcs);
  lglq_register(L, "sampler", sampler_funcs);
  lglq_register(L, "linear", linear_funcs);
}

/* l_cuda.c - glq.cuda: whether this build has the CUDA backend and which device it sees, device
 * tensors (t:cuda(), d:cpu()), and the GPU model (glq.cuda.model) with its KV cache.
 * A build without nvcc, or a machine without a GPU, answers available() = false with the reason;
 * everything else raises an error that says so. */
#include <string.h>
#include "lglq.h"
#ifdef GLQ_HAVE_CUDA
#include "../../cuda/model_cuda.h"
#include "../model/llama.h"
#endif

/* glq.cuda.available() -> true, description | false, reason */
static int l_available(lua_State *L) {
#ifdef GLQ_HAVE_CUDA
  char buf[256];
  int rc = glq_cuda_describe(buf, sizeof buf);
  lua_pushboolean(L, rc == GLQ_OK);
  lua_pushstring(L, buf);
#else
  lua_pushboolean(L, 0);
  lua_pushstring(L, "this build has no CUDA backend (nvcc was not found at build time)");
#endif
  return 2;
}

static int l_built(lua_State *L) {
#ifdef GLQ_HAVE_CUDA
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

#ifdef GLQ_HAVE_CUDA

#define DTENSOR_MT "glq.cuda.tensor"
#define GMODEL_MT "glq.cuda.model"
#define GKV_MT "glq.cuda.kvcache"

/* ---- device tensors: contiguous, f32/f64/i32/...; views share the buffer ---- */

typedef struct {
  glq_cuda_buf *buf;
  size_t offset;
  glq_dtype dtype;
  int ndim;
  int64_t shape[GLQ_MAX_DIMS];
} dtensor;

static dtensor *checkdt(lua_State *L, int idx) { return luaL_checkudata(L, idx, DTENSOR_MT); }

static int64_t dt_numel(const dtensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

static void *dt_ptr(const dtensor *t) { return (char *)glq_cuda_buf_ptr(t->buf) + t->offset; }

/* new device tensor userdata; takes over buf's reference */
static dtensor *pushdt(lua_State *L, glq_cuda_buf *buf, size_t offset, glq_dtype dt, int ndim, const int64_t *shape) {
  dtensor *t = lua_newuserdata(L, sizeof *t);
  t->buf = buf;
  t->offset = offset;
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  luaL_getmetatable(L, DTENSOR_MT);
  lua_setmetatable(L, -2);
  return t;
}

static dtensor *newdt(lua_State *L, glq_dtype dt, int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  size_t bytes = (size_t)n * glq_dtype_size(dt);
  /* the collector sees only the small userdata: step it by the device bytes (as for CPU tensors),
   * before allocating, so dead device tensors are freed first */
  if (bytes >= ((size_t)1 << 16)) lua_gc(L, LUA_GCSTEP, (int)(bytes >> 10 > 1 << 30 ? 1 << 30 : bytes >> 10));
  glq_cuda_buf *b;
  lglq_check(L, glq_cuda_buf_new(bytes, &b), "device tensor");
  return pushdt(L, b, 0, dt, ndim, shape);
}

static int dt_gc(lua_State *L) {
  dtensor *t = checkdt(L, 1);
  glq_cuda_buf_release(t->buf);
  t->buf = NULL;
  return 0;
}

/* t:cuda() on a CPU tensor -> device tensor (contiguous copy) */
static int t_cuda(lua_State *L) {
  glq_tensor *src = lglq_checktensor(L, 1);
  glq_tensor c;
  lglq_checktensor_as(L, 1, src->dtype, "tensor:cuda", &c);
  int64_t n = glq_tensor_numel(&c);
  dtensor *d = newdt(L, c.dtype, c.ndim, c.shape);
  int rc = glq_cuda_copy_to_device(dt_ptr(d), glq_tensor_data(&c), (size_t)n * glq_dtype_size(c.dtype));
  glq_tensor_release(&c);
  lglq_check(L, rc, "tensor:cuda");
  return 1;
}

/* push a CPU copy of d */
static int push_host(lua_State *L, const dtensor *d) {
  glq_tensor t;
  lglq_check(L, glq_tensor_new(d->dtype, d->ndim, d->shape, &t), "cuda tensor:cpu");
  lglq_pushtensor(L, &t);
  glq_tensor *p = lglq_checktensor(L, -1);
  lglq_check(L, glq_cuda_copy_to_host(glq_tensor_data(p), dt_ptr(d), (size_t)dt_numel(d) * glq_dtype_size(d->dtype)),
             "cuda tensor:cpu");
  return 1;
}

/* d:cpu() -> CPU tensor */
static int dt_cpu(lua_State *L) { return push_host(L, checkdt(L, 1)); }

/* d:size([i]) -> shape table or size of dimension i (1-based) */
static int dt_size(lua_State *L) {
  dtensor *d = checkdt(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lua_createtable(L, d->ndim, 0);
    for (int i = 0; i < d->ndim; i++) { lua_pushnumber(L, (lua_Number)d->shape[i]); lua_rawseti(L, -2, i + 1); }
    return 1;
  }
  int i = (int)luaL_checkinteger(L, 2);
  if (i < 1 || i > d->ndim) return luaL_error(L, "cuda tensor:size: dimension %d outside 1..%d", i, d->ndim);
  lua_pushnumber(L, (lua_Number)d->shape[i - 1]);
  return 1;
}

static int dt_numel_l(lua_State *L) { lua_pushnumber(L, (lua_Number)dt_numel(checkdt(L, 1))); return 1; }
static int dt_dtype(lua_State *L) { lua_pushstring(L, glq_dtype_name(checkdt(L, 1)->dtype)); return 1; }
static int dt_device(lua_State *L) { checkdt(L, 1); lua_pushstring(L, "cuda"); return 1; }

/* d:narrow(dim, start, len) (1-based, like tensor:narrow) -> view; only views that stay
 * contiguous (every dimension before dim has size 1, or dim is the first) */
static int dt_narrow(lua_State *L) {
  dtensor *d = checkdt(L, 1);
  int dim = (int)luaL_checkinteger(L, 2);
  int64_t start = (int64_t)luaL_checknumber(L, 3), len = (int64_t)luaL_checknumber(L, 4);
  if (dim < 1 || dim > d->ndim) return luaL_error(L, "cuda tensor:narrow: dimension %d outside 1..%d", dim, d->ndim);
  if (start < 1 || len < 0 || start - 1 + len > d->shape[dim - 1])
    return lglq_raisef(L, "cuda tensor:narrow: [%lld, %lld) outside dimension %d of size %lld", (long long)start,
                       (long long)(start + len), dim, (long long)d->shape[dim - 1]);
  for (int i = 0; i < dim - 1; i++)
    if (d->shape[i] != 1) return luaL_error(L, "cuda tensor:narrow: dimension %d gives a non-contiguous view", dim);
  int64_t inner = 1;
  for (int i = dim; i < d->ndim; i++) inner *= d->shape[i];
  int64_t shape[GLQ_MAX_DIMS];
  memcpy(shape, d->shape, sizeof shape);
  shape[dim - 1] = len;
  glq_cuda_buf_retain(d->buf);
  pushdt(L, d->buf, d->offset + (size_t)((start - 1) * inner) * glq_dtype_size(d->dtype), d->dtype, d->ndim, shape);
  return 1;
}

static int dt_tostring(lua_State *L) {
  dtensor *d = checkdt(L, 1);
  char s[160];
  int n = snprintf(s, sizeof s, "glq.cuda.tensor(%s, {", glq_dtype_name(d->dtype));
  for (int i = 0; i < d->ndim && n < 120; i++) n += snprintf(s + n, sizeof s - n, "%s%lld", i ? ", " : "", (long long)d->shape[i]);
  snprintf(s + n, sizeof s - n, "})");
  lua_pushstring(L, s);
  return 1;
}

/* ---- the GPU model ---- */

typedef struct { glq_cuda_llama *g; } gmodel_ud;
typedef struct { glq_cuda_kv *kv; } gkv_ud;

static glq_cuda_llama *checkgm(lua_State *L, int idx) {
  gmodel_ud *u = luaL_checkudata(L, idx, GMODEL_MT);
  if (!u->g) luaL_error(L, "glq.cuda.model: used after free");
  return u->g;
}

/* the CPU model the GPU model was made from (kept in its environment) */
static struct glq_llama *cpu_of(lua_State *L, int idx) {
  lua_getfenv(L, idx);
  lua_getfield(L, -1, "cpu");
  struct glq_llama *m = lglq_checkllama(L, -1);
  lua_pop(L, 2);
  return m;
}

/* glq.cuda.model(cpu_llama, {dense_bf16 = false}) -> GPU model without weights (sync_layer/sync_head copy them) */
static int l_model(lua_State *L) {
  struct glq_llama *m = lglq_checkllama(L, 1);
  int bf16 = lua_isnoneornil(L, 2) ? 0 : lglq_optboolean(L, 2, "dense_bf16", 0);
  gmodel_ud *u = lua_newuserdata(L, sizeof *u);
  u->g = NULL;
  luaL_getmetatable(L, GMODEL_MT);
  lua_setmetatable(L, -2);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "cpu");
  lua_setfenv(L, -2);
  lglq_check(L, glq_cuda_llama_new(m, bf16, &u->g), "glq.cuda.model");
  return 1;
}

static int gm_gc(lua_State *L) {
  gmodel_ud *u = luaL_checkudata(L, 1, GMODEL_MT);
  glq_cuda_llama_free(u->g);
  u->g = NULL;
  return 0;
}

/* gm:sync_layer(l): copy layer l (0-based) from the CPU model as it is now */
static int gm_sync_layer(lua_State *L) {
  glq_cuda_llama *g = checkgm(L, 1);
  int l = (int)luaL_checkinteger(L, 2);
  lglq_check(L, glq_cuda_llama_sync_layer(g, cpu_of(L, 1), l), "cuda model:sync_layer(%d)", l);
  return 0;
}

static int gm_drop_layer(lua_State *L) {
  glq_cuda_llama_drop_layer(checkgm(L, 1), (int)luaL_checkinteger(L, 2));
  return 0;
}

static int gm_sync_head(lua_State *L) {
  glq_cuda_llama *g = checkgm(L, 1);
  lglq_check(L, glq_cuda_llama_sync_head(g, cpu_of(L, 1)), "cuda model:sync_head");
  return 0;
}

static int gm_bytes(lua_State *L) { lua_pushnumber(L, (lua_Number)glq_cuda_llama_bytes(checkgm(L, 1))); return 1; }

/* gm:embed(tokens) -> device hidden (B, T, dim) */
static int gm_embed(lua_State *L) {
  glq_cuda_llama *g = checkgm(L, 1);
  int B, T;
  const int32_t *tok = lglq_checktokens(L, 2, &B, &T);
  int64_t shape[3] = {B, T, glq_llama_config_of(cpu_of(L, 1))->dim};
  dtensor *h = newdt(L, GLQ_F32, 3, shape);
  lglq_check(L, glq_cuda_llama_embed(g, tok, (int64_t)B * T, dt_ptr(h)), "cuda model:embed");
  return 1;
}

static glq_cuda_kv *optkv(lua_State *L, int opts) {
  if (lua_isnoneornil(L, opts)) return NULL;
  luaL_checktype(L, opts, LUA_TTABLE);
  lua_getfield(L, opts, "cache");
  glq_cuda_kv *kv = lua_isnil(L, -1) ? NULL : ((gkv_ud *)luaL_checkudata(L, -1, GKV_MT))->kv;
  lua_pop(L, 1);
  return kv;
}

/* gm:layer(l, hidden (B, T, dim) device f32, {capture = false, in_place = true, cache = kv})
 * -> hidden [, capture table {qkv = H, o = H, gate_up = H, down = H, rows = {...}} with f64 sums as on the CPU] */
static int gm_layer(lua_State *L) {
  static const char *names[GLQ_CAP_N] = {"qkv", "o", "gate_up", "down"};
  glq_cuda_llama *g = checkgm(L, 1);
  int l = (int)luaL_checkinteger(L, 2);
  dtensor *h = checkdt(L, 3);
  int64_t dim = glq_llama_config_of(cpu_of(L, 1))->dim;
  if (h->dtype != GLQ_F32 || h->ndim != 3 || h->shape[2] != dim)
    return lglq_raisef(L, "cuda model:layer(%d): hidden must be a device f32 tensor (B, T, %lld)", l, (long long)dim);
  int want = lua_isnoneornil(L, 4) ? 0 : lglq_optboolean(L, 4, "capture", 0);
  int in_place = lua_isnoneornil(L, 4) ? 1 : lglq_optboolean(L, 4, "in_place", 1);
  glq_cuda_kv *kv = optkv(L, 4);
  glq_cuda_capture *cap = NULL;
  if (want) lglq_check(L, glq_cuda_capture_new(g, &cap), "cuda model:layer(%d)", l);
  int rc = glq_cuda_llama_layer(g, l, dt_ptr(h), (int)h->shape[0], (int)h->shape[1], kv, cap, in_place);
  if (rc) {
    glq_cuda_capture_free(cap);
    return lglq_error(L, "cuda model:layer(%d)", l);
  }
  lua_pushvalue(L, 3);
  if (!cap) return 1;
  lua_createtable(L, 0, GLQ_CAP_N + 1);
  lua_createtable(L, 0, GLQ_CAP_N);
  for (int i = 0; i < GLQ_CAP_N; i++) {
    int64_t d = glq_cuda_capture_dim(cap, i);
    glq_tensor H;
    int64_t shape[2] = {d, d};
    if ((rc = glq_tensor_new(GLQ_F64, 2, shape, &H)) == GLQ_OK) rc = glq_cuda_capture_download(cap, i, glq_tensor_data(&H));
    if (rc) {
      glq_tensor_release(&H);
      glq_cuda_capture_free(cap);
      return lglq_error(L, "cuda model:layer(%d) capture", l);
    }
    lglq_pushtensor(L, &H);
    lua_setfield(L, -3, names[i]);
    lua_pushnumber(L, (lua_Number)glq_cuda_capture_rows(cap, i));
    lua_setfield(L, -2, names[i]);
  }
  lua_setfield(L, -2, "rows");
  glq_cuda_capture_free(cap);
  return 2;
}

/* the head over device hidden (n, dim) / (1, n, dim): device logits (n, vocab) pushed and returned */
static dtensor *head_logits(lua_State *L, const char *what) {
  glq_cuda_llama *g = checkgm(L, 1);
  dtensor *h = checkdt(L, 2);
  const glq_llama_config *c = glq_llama_config_of(cpu_of(L, 1));
  if (h->dtype != GLQ_F32 || h->ndim < 1 || h->shape[h->ndim - 1] != c->dim)
    luaL_error(L, "%s: hidden must be a device f32 tensor (..., %d)", what, c->dim);
  int64_t n = dt_numel(h) / c->dim;
  int64_t shape[2] = {n, c->vocab};
  dtensor *lg = newdt(L, GLQ_F32, 2, shape);
  lglq_check(L, glq_cuda_llama_head(g, dt_ptr(h), n, dt_ptr(lg)), what);
  lglq_check(L, glq_cuda_llama_sync(g), what);
  return lg;
}

/* gm:head(hidden) -> CPU logits (n, vocab) */
static int gm_head(lua_State *L) { return push_host(L, head_logits(L, "cuda model:head")); }

/* gm:head_device(hidden) -> device logits (n, vocab) (for glq.cuda.nll_rows / kl_rows) */
static int gm_head_device(lua_State *L) {
  head_logits(L, "cuda model:head_device");
  return 1;
}

/* glq.cuda.nll_rows(logits (n, vocab) device f32, targets (n) i32) -> CPU f64 (n), as glq.nll_rows */
static int l_nll_rows(lua_State *L) {
  dtensor *lg = checkdt(L, 1);
  glq_tensor tg, out;
  lglq_checktensor_as(L, 2, GLQ_I32, "cuda.nll_rows targets", &tg);
  if (lg->dtype != GLQ_F32 || lg->ndim != 2 || tg.ndim != 1 || tg.shape[0] != lg->shape[0]) {
    glq_tensor_release(&tg);
    return luaL_error(L, "cuda.nll_rows: need device f32 logits (n, vocab) and targets (n)");
  }
  int64_t n = lg->shape[0];
  int rc = glq_tensor_new(GLQ_F64, 1, &n, &out);
  if (!rc) rc = glq_cuda_nll_rows(dt_ptr(lg), n, lg->shape[1], glq_tensor_data(&tg), glq_tensor_data(&out));
  glq_tensor_release(&tg);
  if (rc) { glq_tensor_release(&out); return lglq_error(L, "cuda.nll_rows"); }
  lglq_pushtensor(L, &out);
  return 1;
}

/* glq.cuda.kl_rows(p, q) (device f32 (n, vocab)) -> kl f64 (n), agree u8 (n) on the CPU, as glq.kl_rows */
static int l_kl_rows(lua_State *L) {
  dtensor *p = checkdt(L, 1), *q = checkdt(L, 2);
  if (p->dtype != GLQ_F32 || q->dtype != GLQ_F32 || p->ndim != 2 || q->ndim != 2 || p->shape[0] != q->shape[0] ||
      p->shape[1] != q->shape[1])
    return luaL_error(L, "cuda.kl_rows: p and q must both be device f32 (n, vocab) with equal shapes");
  int64_t n = p->shape[0];
  glq_tensor kl, ag;
  lglq_check(L, glq_tensor_new(GLQ_F64, 1, &n, &kl), "cuda.kl_rows");
  lglq_pushtensor(L, &kl);
  lglq_check(L, glq_tensor_new(GLQ_U8, 1, &n, &ag), "cuda.kl_rows");
  lglq_pushtensor(L, &ag);
  lglq_check(L, glq_cuda_kl_rows(dt_ptr(p), dt_ptr(q), n, p->shape[1], glq_tensor_data(lglq_checktensor(L, -2)),
                                 glq_tensor_data(lglq_checktensor(L, -1))), "cuda.kl_rows");
  return 2;
}

/* gm:forward(tokens, {cache = kv, all_logits = false, out = t}) -> CPU logits (B, vocab) or (B, T, vocab);
 * with argmax = true instead the greedy next token of each sequence (B integers), chosen on the GPU */
static int gm_forward(lua_State *L) {
  glq_cuda_llama *g = checkgm(L, 1);
  const glq_llama_config *c = glq_llama_config_of(cpu_of(L, 1));
  glq_cuda_kv *kv = optkv(L, 3);
  int all = lua_isnoneornil(L, 3) ? 0 : lglq_optboolean(L, 3, "all_logits", 0);
  int argmax = lua_isnoneornil(L, 3) ? 0 : lglq_optboolean(L, 3, "argmax", 0);
  int B, T;
  const int32_t *tok = lglq_checktokens(L, 2, &B, &T);
  if (argmax) {
    if (all) return luaL_error(L, "cuda model:forward: argmax and all_logits exclude each other");
    int32_t *next = lua_newuserdata(L, sizeof(int32_t) * (size_t)B);
    lglq_check(L, glq_cuda_llama_forward_argmax(g, kv, tok, B, T, next), "cuda model:forward");
    luaL_checkstack(L, B, "cuda model:forward");
    for (int b = 0; b < B; b++) lua_pushinteger(L, next[b]);
    return B;
  }
  int64_t shape[3] = {B, all ? T : c->vocab, c->vocab};
  float *y = lglq_push_out(L, 3, all ? 3 : 2, shape, "cuda model:forward");
  lglq_check(L, glq_cuda_llama_forward(g, kv, tok, B, T, y, all), "cuda model:forward");
  return 1;
}

/* gm:kvcache({batch = 1, max_seq = cfg.max_seq}) -> f32 device cache */
static int gm_kvcache(lua_State *L) {
  glq_cuda_llama *g = checkgm(L, 1);
  const glq_llama_config *c = glq_llama_config_of(cpu_of(L, 1));
  int batch = lua_isnoneornil(L, 2) ? 1 : (int)lglq_optinteger(L, 2, "batch", 1);
  int max_seq = lua_isnoneornil(L, 2) ? c->max_seq : (int)lglq_optinteger(L, 2, "max_seq", c->max_seq);
  gkv_ud *u = lua_newuserdata(L, sizeof *u);
  u->kv = NULL;
  luaL_getmetatable(L, GKV_MT);
  lua_setmetatable(L, -2);
  lglq_check(L, glq_cuda_kv_new(g, batch, max_seq, &u->kv), "cuda model:kvcache");
  return 1;
}

static glq_cuda_kv *checkkv(lua_State *L) {
  gkv_ud *u = luaL_checkudata(L, 1, GKV_MT);
  if (!u->kv) luaL_error(L, "glq.cuda.kvcache: used after free");
  return u->kv;
}
static int kv_gc(lua_State *L) {
  gkv_ud *u = luaL_checkudata(L, 1, GKV_MT);
  glq_cuda_kv_free(u->kv);
  u->kv = NULL;
  return 0;
}
static int kv_len(lua_State *L) { lua_pushinteger(L, glq_cuda_kv_len(checkkv(L))); return 1; }
static int kv_bytes(lua_State *L) { lua_pushnumber(L, (lua_Number)glq_cuda_kv_bytes(checkkv(L))); return 1; }
static int kv_reset(lua_State *L) { glq_cuda_kv_reset(checkkv(L)); return 0; }
static int kv_advance(lua_State *L) {
  lglq_check(L, glq_cuda_kv_advance(checkkv(L), (int)luaL_checkinteger(L, 2)), "cuda kvcache:advance");
  return 0;
}

static void newmt(lua_State *L, const char *name, lua_CFunction gc, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  if (gc) { lua_pushcfunction(L, gc); lua_setfield(L, -2, "__gc"); }
  lua_newtable(L);
  lglq_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
#else
static int t_cuda(lua_State *L) {
  return luaL_error(L, "tensor:cuda: this build has no CUDA backend (nvcc was not found at build time)");
}
#endif

static const luaL_Reg fns[] = {{"available", l_available}, {"built", l_built},
#ifdef GLQ_HAVE_CUDA
                               {"model", l_model}, {"nll_rows", l_nll_rows}, {"kl_rows", l_kl_rows},
#endif
                               {NULL, NULL}};

void lglq_open_cuda(lua_State *L) {
#ifdef GLQ_HAVE_CUDA
  static const luaL_Reg dt_methods[] = {{"cpu", dt_cpu}, {"size", dt_size}, {"numel", dt_numel_l}, {"dtype", dt_dtype},
    {"device", dt_device}, {"narrow", dt_narrow}, {NULL, NULL}};
  static const luaL_Reg gm_methods[] = {{"sync_layer", gm_sync_layer}, {"drop_layer", gm_drop_layer},
    {"sync_head", gm_sync_head}, {"bytes", gm_bytes}, {"embed", gm_embed}, {"layer", gm_layer}, {"head", gm_head},
    {"forward", gm_forward}, {"kvcache", gm_kvcache}, {"head_device", gm_head_device}, {NULL, NULL}};
  static const luaL_Reg kv_methods[] = {{"len", kv_len}, {"bytes", kv_bytes}, {"reset", kv_reset},
    {"advance", kv_advance}, {NULL, NULL}};
  newmt(L, DTENSOR_MT, dt_gc, dt_methods);
  luaL_getmetatable(L, DTENSOR_MT);
  lua_pushcfunction(L, dt_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  newmt(L, GMODEL_MT, gm_gc, gm_methods);
  newmt(L, GKV_MT, kv_gc, kv_methods);
#endif
  /* CPU tensors gain :cuda() */
  luaL_getmetatable(L, LGLQ_TENSOR);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, t_cuda);
  lua_setfield(L, -2, "cuda");
  lua_pop(L, 2);
  lglq_register(L, "cuda", fns);
}

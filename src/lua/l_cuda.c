/* l_cuda.c - glq.cuda: whether this build has the CUDA backend and which device it sees, and device
 * tensors (t:cuda(), d:cpu()): glq_tensors whose storage is GPU memory (GLQ_STORAGE_CUDA), what a
 * model on the GPU (glq.llama m:to("cuda"), l_model.c) takes and returns as activations and logits.
 * A build without nvcc, or a machine without a GPU, answers available() = false with the reason;
 * everything else raises an error that says so. */
#include <string.h>
#include "lglq.h"
#ifdef GLQ_HAVE_CUDA
#include "../../cuda/model_cuda.h"
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

#define DTENSOR_MT "glq.cuda.tensor"

glq_tensor *lglq_todevtensor(lua_State *L, int idx) { return luaL_testudata(L, idx, DTENSOR_MT); }

#ifdef GLQ_HAVE_CUDA

/* ---- device tensors: contiguous; views (narrow) share the storage ---- */

static glq_tensor *checkdt(lua_State *L, int idx) {
  glq_tensor *t = luaL_checkudata(L, idx, DTENSOR_MT);
  if (!t->st) luaL_error(L, "glq.cuda.tensor: used after free");
  return t;
}

void lglq_pushdevtensor(lua_State *L, glq_tensor *t) {
  /* the collector sees only the small userdata: step it by the device bytes a new tensor owns (as for
   * CPU tensors), so that dead device tensors are freed as fast as new ones come */
  size_t owned = t->st && t->st->refcount == 1 ? t->st->nbytes : 0;
  glq_tensor *u = lua_newuserdata(L, sizeof *u);
  *u = *t;
  memset(t, 0, sizeof *t);
  luaL_getmetatable(L, DTENSOR_MT);
  lua_setmetatable(L, -2);
  if (owned >= ((size_t)1 << 16)) lua_gc(L, LUA_GCSTEP, (int)(owned >> 10 > 1 << 30 ? 1 << 30 : owned >> 10));
}

/* new zero-filled device tensor pushed on the stack */
static glq_tensor *newdt(lua_State *L, glq_dtype dt, int ndim, const int64_t *shape) {
  glq_tensor t;
  lglq_check(L, glq_cuda_tensor_new(dt, ndim, shape, &t), "device tensor");
  lglq_pushdevtensor(L, &t);
  return lua_touserdata(L, -1);
}

static int dt_gc(lua_State *L) {
  glq_tensor *t = luaL_checkudata(L, 1, DTENSOR_MT);
  if (t->st) glq_tensor_release(t);
  return 0;
}

/* t:cuda() on a CPU tensor -> device tensor (contiguous copy) */
static int t_cuda(lua_State *L) {
  glq_tensor *c = lglq_checktensor_tmp(L, 1, lglq_checktensor(L, 1)->dtype, "tensor:cuda");
  glq_tensor *d = newdt(L, c->dtype, c->ndim, c->shape);
  lglq_check(L, glq_cuda_copy_to_device(glq_tensor_data(d), glq_tensor_data(c), (size_t)glq_tensor_numel(c) * glq_dtype_size(c->dtype)),
             "tensor:cuda");
  return 1;
}

/* d:cpu() -> CPU tensor (a copy) */
static int dt_cpu(lua_State *L) {
  glq_tensor *d = checkdt(L, 1);
  glq_tensor *p = lglq_newtensor(L, d->dtype, d->ndim, d->shape, "cuda tensor:cpu");
  lglq_check(L, glq_cuda_copy_to_host(glq_tensor_data(p), glq_tensor_data(d), (size_t)glq_tensor_numel(d) * glq_dtype_size(d->dtype)),
             "cuda tensor:cpu");
  return 1;
}

/* d:size([i]) -> shape table or size of dimension i (1-based) */
static int dt_size(lua_State *L) {
  glq_tensor *d = checkdt(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lglq_pushshape(L, d);
    return 1;
  }
  int i = (int)luaL_checkinteger(L, 2);
  if (i < 1 || i > d->ndim) return luaL_error(L, "cuda tensor:size: dimension %d outside 1..%d", i, d->ndim);
  lua_pushnumber(L, (lua_Number)d->shape[i - 1]);
  return 1;
}

static int dt_numel(lua_State *L) { lua_pushnumber(L, (lua_Number)glq_tensor_numel(checkdt(L, 1))); return 1; }
static int dt_dtype(lua_State *L) { lua_pushstring(L, glq_dtype_name(checkdt(L, 1)->dtype)); return 1; }
static int dt_device(lua_State *L) { checkdt(L, 1); lua_pushstring(L, "cuda"); return 1; }

/* d:narrow(dim, start, len) (1-based, like tensor:narrow) -> view; only views that stay
 * contiguous (every dimension before dim has size 1, or dim is the first) */
static int dt_narrow(lua_State *L) {
  glq_tensor *d = checkdt(L, 1);
  int dim = (int)luaL_checkinteger(L, 2);
  int64_t start = (int64_t)luaL_checknumber(L, 3), len = (int64_t)luaL_checknumber(L, 4);
  if (dim < 1 || dim > d->ndim) return luaL_error(L, "cuda tensor:narrow: dimension %d outside 1..%d", dim, d->ndim);
  for (int i = 0; i < dim - 1; i++)
    if (d->shape[i] != 1) return luaL_error(L, "cuda tensor:narrow: dimension %d gives a non-contiguous view", dim);
  glq_tensor v;
  lglq_check(L, glq_tensor_narrow(d, dim - 1, start - 1, len, &v), "cuda tensor:narrow");
  lglq_pushdevtensor(L, &v);
  return 1;
}

static int dt_tostring(lua_State *L) {
  glq_tensor *d = checkdt(L, 1);
  char s[160];
  int n = snprintf(s, sizeof s, "glq.cuda.tensor(%s, {", glq_dtype_name(d->dtype));
  for (int i = 0; i < d->ndim && n < 120; i++) n += snprintf(s + n, sizeof s - n, "%s%lld", i ? ", " : "", (long long)d->shape[i]);
  snprintf(s + n, sizeof s - n, "})");
  lua_pushstring(L, s);
  return 1;
}
#else
void lglq_pushdevtensor(lua_State *L, glq_tensor *t) {
  glq_tensor_release(t);
  luaL_error(L, "device tensor: this build has no CUDA backend (nvcc was not found at build time)");
}

static int t_cuda(lua_State *L) {
  return luaL_error(L, "tensor:cuda: this build has no CUDA backend (nvcc was not found at build time)");
}
#endif

static const luaL_Reg fns[] = {{"available", l_available}, {"built", l_built}, {NULL, NULL}};

void lglq_open_cuda(lua_State *L) {
#ifdef GLQ_HAVE_CUDA
  static const luaL_Reg dt_methods[] = {{"cpu", dt_cpu}, {"size", dt_size}, {"numel", dt_numel}, {"dtype", dt_dtype},
    {"device", dt_device}, {"narrow", dt_narrow}, {NULL, NULL}};
  static const luaL_Reg dt_meta[] = {{"__gc", dt_gc}, {"__tostring", dt_tostring}, {NULL, NULL}};
  lglq_newclass(L, DTENSOR_MT, dt_meta, dt_methods);
#endif
  /* CPU tensors gain :cuda() */
  luaL_getmetatable(L, LGLQ_TENSOR);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, t_cuda);
  lua_setfield(L, -2, "cuda");
  lua_pop(L, 2);
  lglq_register(L, "cuda", fns);
}

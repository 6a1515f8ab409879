/* l_cuda.c - glq.cuda: whether this build has the CUDA backend and which device it sees.
 * A build without nvcc, or a machine without a GPU, answers available() = false with the reason. */
#include <string.h>
#include "lglq.h"
#ifdef GLQ_HAVE_CUDA
#include "../../cuda/glq_cuda.h"
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

static const luaL_Reg fns[] = {{"available", l_available}, {"built", l_built}, {NULL, NULL}};

void lglq_open_cuda(lua_State *L) { lglq_register(L, "cuda", fns); }

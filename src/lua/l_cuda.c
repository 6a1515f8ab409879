/* l_cuda.c - Lua binding of the cuda module (filled in by its owner). */
#include "lglq.h"

void lglq_open_cuda(lua_State *L) { (void)L; }

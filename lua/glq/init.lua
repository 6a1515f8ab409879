-- glq: the Lua face of the toolkit. C functions come from glq.core; Lua modules in lua/glq/
-- (model, cli, calib, ...) load on first use as glq.<name>.
local core = require "glq.core"

local glq = { core = core, version = "0.1.0" }
package.loaded["glq"] = glq -- lets submodules `require "glq"` while this file runs

for k, v in pairs(core) do
  if type(v) == "function" then glq[k] = v end
end

-- t:ptr() -> an FFI pointer of the element type (the tensor must outlive the pointer)
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    local ctype = { f64 = "double*", f32 = "float*", f16 = "uint16_t*", bf16 = "uint16_t*",
      i64 = "int64_t*", i32 = "int32_t*", i16 = "int16_t*", i8 = "int8_t*", u8 = "uint8_t*", bool = "uint8_t*" }
    core._tensor_mt.__index.ptr = function(t) return ffi.cast(ctype[t:dtype()], t:_rawptr()) end
  end
end

-- zeros(shape, dtype), t[i], t:mean() / max() / min() (lua/glq/tensor.lua)
require("glq.tensor").install(glq, core)

local function lua_module_exists(name)
  return package.searchpath and package.searchpath(name, package.path) ~= nil
end

setmetatable(glq, {
  __index = function(t, k)
    if type(k) ~= "string" then return nil end
    local v
    if lua_module_exists("glq." .. k) then
      v = require("glq." .. k)
    else
      v = core[k]
    end
    if v ~= nil then rawset(t, k, v) end
    return v
  end,
})

-- backend line for `glq --version`
function glq.backend_info()
  local ok, desc = core.cuda.available()
  return { cuda = (ok and "available: " or "not available: ") .. desc }
end

-- the status code an error raised by the C bindings starts with ("EIO", "EINVAL", "EFORMAT", "ENOMEM",
-- "ENUMERIC", "EUNSUPPORTED"), or nil for any other error
function glq.error_code(err)
  return type(err) == "string" and err:match("^(E%u+): ") or nil
end

-- is x a tensor?
function glq.is_tensor(x)
  return type(x) == "userdata" and getmetatable(x) == core._tensor_mt
end

return glq

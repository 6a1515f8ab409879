-- glq.tensor: the tensor conveniences of the Lua face, installed on glq and on the tensor type
-- when glq loads (the arithmetic itself is C: src/lua/l_tensor.c).
--   glq.zeros(shape, dtype)        zeros; dtype defaults to "f32" (the old order zeros(dtype, shape) works too)
--   glq.full(shape, value, dtype)  a constant tensor (old order full(dtype, shape, value) too)
--   t[i]                           1-based index along the first dimension (negative: from the end):
--                                  a number for a 1-d tensor, else a view of row i
--   t:mean(), t:max(), t:min()     reductions over every element (as f64), like t:sum() and t:norm()
local M = {}

function M.install(glq, core)
  local mt = core._tensor_mt
  local methods = mt.__index
  if type(methods) ~= "table" then return end -- installed already

  -- glq.zeros(shape, dtype) / glq.zeros(dtype, shape)
  function glq.zeros(a, b)
    if type(a) == "string" then return core.zeros(a, b) end
    return core.zeros(b or "f32", a)
  end

  -- glq.full(shape, value, dtype) / glq.full(dtype, shape, value)
  function glq.full(a, b, c)
    if type(a) == "string" then return core.full(a, b, c) end
    return core.full(c or "f32", a, b)
  end

  -- every element as f64, contiguous, with a pointer (for the reductions below)
  local function f64(t)
    local d = t:dtype() == "f64" and t:contiguous() or t:to("f64")
    return d, d:ptr(), d:numel()
  end

  -- t:mean() -> the mean of every element
  function methods.mean(t)
    local n = t:numel()
    if n == 0 then error("tensor:mean: empty tensor", 2) end
    return t:sum() / n
  end

  local function extreme(t, name, better)
    local _, p, n = f64(t)
    if n == 0 then error("tensor:" .. name .. ": empty tensor", 3) end
    local best, at = p[0], 0
    for i = 1, n - 1 do
      local v = p[i]
      if better(v, best) or (v ~= v and best == best) then best, at = v, i end -- NaN wins, as torch's
    end
    return best, at + 1
  end
  -- t:max() -> the largest element and its flat 1-based position (NaN if any)
  function methods.max(t) return extreme(t, "max", function(a, b) return a > b end) end
  -- t:min() -> the smallest element and its flat 1-based position (NaN if any)
  function methods.min(t) return extreme(t, "min", function(a, b) return a < b end) end

  -- t[i]: a number (1-d) or a view of row i
  local function row(t, i)
    local shape = t:shape()
    local n = shape[1]
    if n == nil then error("cannot index a 0-d tensor", 3) end
    if i ~= math.floor(i) then error(("tensor index %s is not an integer"):format(tostring(i)), 3) end
    if i < 0 then i = n + 1 + i end
    if i < 1 or i > n then error(("tensor index %d out of range for a first dimension of %d"):format(i, n), 3) end
    if #shape == 1 then return t:get(i) end
    local rest = {}
    for k = 2, #shape do rest[k - 1] = shape[k] end
    local r = t:narrow(1, i, 1)
    local ok, v = pcall(r.reshape, r, rest)
    return ok and v or r:contiguous():reshape(rest)
  end

  mt.__methods = methods -- what tab completion lists (__index is a function now)
  mt.__index = function(t, k)
    local m = methods[k]
    if m ~= nil then return m end
    if type(k) == "number" then return row(t, k) end
    return nil
  end
end

return M

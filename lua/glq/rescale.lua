-- rescale.lua - the closed-form scale refit of a quantized layer, folded into its stored scales.
-- A GLQ layer decodes to diag(SU)·Hmᵀ·W̃·Hn·diag(SV): the codes W̃ stay, SU (per output row) and SV
-- (per input column) are free reals in every reader (ours, the Python glq's), so multiplying them by
-- the row/column scales of glq.fit_scales lowers the proxy loss tr(dW H dWᵀ) at no cost in bits.
-- The fitted values are rounded to the stored f16 before the layer is built or written.
local glq = require "glq"

local M = {}

-- t: f16 scale vector (p >= k entries); returns a new f16 vector whose first k entries are multiplied by f (f32, k)
local function fold(t, f)
  local v = t:to("f32"):contiguous():clone()
  local p, q = v:ptr(), f:ptr()
  for i = 0, f:numel() - 1 do p[i] = p[i] * q[i] end
  return v:to("f16")
end

--- M.apply(a, W, What, H, opts) -> info: fit row/column scales of the decoded weight What (m x n f32)
-- against W on Hessian H (f64 or nil) and fold them into artifacts a.SU / a.SV (f16, in place: new
-- tensors); info = {loss0, loss1} from glq.fit_scales. opts: {iters = 2, damp = 0.01, max_cols = 16384}.
function M.apply(a, W, What, H, opts)
  local s, u, info = glq.fit_scales(W, What, H, opts)
  a.SU = fold(a.SU, s)
  a.SV = fold(a.SV, u)
  return info
end

return M

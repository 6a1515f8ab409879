-- glq.budget: what `glq quantize` will cost on this machine, and a calibration budget for CPUs.
--
-- The estimate times one f32 matrix product here (a fraction of a second) and scales it by the
-- model's arithmetic: self-calibration samples nsamples x seqlen tokens (batched decoding: the
-- linears and the head per token), the Hessian capture runs about three forwards over them (capture,
-- Hessian products, the propagated pass), and LDLQ costs about 5 m n^2 + 2e4 m n GEMM flops per
-- linear (factorisation and sweep, plus the per-weight search and scale passes; times four with a
-- fractional --bpw, which profiles every candidate). The constants come from runs on the shared
-- 2-core development machine (SmolLM2-135M, LDLQ 4096x4096); the result is a rough guide, and says so.
--
-- The CPU budget itself depends on the model's size only (never on timings), so the same command
-- picks the same calibration, and writes the same bytes, on every machine and thread count.
local glq = require "glq"
local model = require "glq.model"

local M = {}

M.FULL = { nsamples = 128, seqlen = 2048 } -- the standard protocol (the recipe's defaults)

-- weights of the decoder linears (what a token's forward multiplies by)
function M.linear_params(cfg)
  local n = 0
  for _, s in pairs(model.layer_shapes(cfg)) do n = n + s[1] * s[2] end
  return n * cfg.n_layers
end

-- The CPU budget: about 5.5e11 / (linear weights) calibration tokens (a few minutes on 2 cores),
-- as seqlen 512 (or the model's context if shorter) and a power of two of sequences, 4 to 128.
function M.cpu_choice(cfg)
  local seqlen = math.min(512, cfg.max_seq or 512)
  local want = 5.5e11 / math.max(M.linear_params(cfg), 1) / seqlen
  local n = 4
  while n * 2 <= want and n < 128 do n = n * 2 end
  return n, seqlen
end

-- f32 GEMM speed here, in flop/s (best of three 256 x 576 x 1536 products)
function M.gemm_rate()
  local now = require("glq.progress").now
  local a, b = glq.randn({ 256, 576 }, 1), glq.randn({ 1536, 576 }, 2)
  local best = math.huge
  for _ = 1, 3 do
    local t0 = now()
    glq.matmul(a, b, { transpose_b = true })
    best = math.min(best, now() - t0)
  end
  return 2 * 256 * 576 * 1536 / math.max(best, 1e-6)
end

-- Seconds for {calib, capture, quantize} and their total. o: nsamples, seqlen, self (sampled
-- calibration), calibrate (false: no Hessians), mixed (fractional bpw), device ("cuda": not estimated).
local EFF_DECODE, EFF_PREFILL, LDLQ_A, LDLQ_B = 0.2, 0.4, 5, 2e4 -- fitted to the runs named above
function M.estimate(cfg, o, rate)
  rate = rate or M.gemm_rate()
  local tokens = o.nsamples * o.seqlen
  local lp = M.linear_params(cfg)
  local attn = 2 * cfg.n_layers * cfg.dim * o.seqlen -- scores and values per token (average length seqlen/2, twice)
  local e = { calib = 0, capture = 0, quantize = 0 }
  if o.calibrate ~= false then
    if o.self then e.calib = tokens * 2 * (lp + cfg.vocab * cfg.dim + attn) / (rate * EFF_DECODE) end
    e.capture = 3 * tokens * 2 * (lp + attn) / (rate * EFF_PREFILL)
  end
  local q = 0
  for _, s in pairs(model.layer_shapes(cfg)) do q = q + LDLQ_A * s[1] * s[2] * s[2] + LDLQ_B * s[1] * s[2] end
  e.quantize = q * cfg.n_layers / rate * (o.mixed and 4 or 1)
  e.total = e.calib + e.capture + e.quantize
  return e
end

-- one line: "calibration ~1 min 10 s, Hessians ~40 s, quantization ~20 s (total ~2 min 10 s)"
function M.describe(e)
  local d = require("glq.progress").fmt_time
  local parts = {}
  if e.calib > 0 then parts[#parts + 1] = "self-calibration ~" .. d(e.calib) end
  if e.capture > 0 then parts[#parts + 1] = "Hessians ~" .. d(e.capture) end
  parts[#parts + 1] = "quantization ~" .. d(e.quantize)
  return table.concat(parts, ", ") .. " (total ~" .. d(e.total) .. ")"
end

return M

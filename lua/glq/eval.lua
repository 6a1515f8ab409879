-- glq.eval: perplexity and divergence from a base model, with the standard protocol:
-- the text is tokenized once (BOS at the start only), cut into non-overlapping windows of
-- seqlen tokens (a short tail is dropped), and the mean NLL is taken over every predicted token
-- (positions 1..T-1 of each window), as HF/GPTQ/glq evaluations do on "\n\n".join(rows).
local glq = require "glq"
local model = require "glq.model"
local progress = require "glq.progress"

local M = {}

-- token ids of a text file (BOS added once, per the tokenizer's rule)
function M.tokenize_file(m, path)
  local f, err = io.open(path, "rb")
  if not f then error(path .. ": " .. tostring(err), 0) end
  local text = f:read("*a")
  f:close()
  return m:encode(text)
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 / 0 end
  local k = math.max(1, math.min(#sorted, math.ceil(p * #sorted)))
  return sorted[k]
end

-- ids: list of token ids; opts: seqlen, base (a loaded model), max_windows, chunk, quiet
-- returns {ppl, nll, tokens, windows, kld_mean, kld_p99, top1}
function M.run(m, ids, opts)
  opts = opts or {}
  local T = opts.seqlen or 2048
  if T > m.max_seq then error(string.format("seqlen %d exceeds the model's context of %d", T, m.max_seq), 0) end
  local total_win = math.floor(#ids / T)
  local first = opts.first_window or 0 -- evaluate windows first .. first+nwin-1 (0-based), to split long runs
  if first < 0 or (first >= total_win and total_win > 0) then
    error(string.format("first window %d is outside the text's %d windows", first, total_win), 0)
  end
  local nwin = total_win - first
  if opts.max_windows then nwin = math.min(nwin, opts.max_windows) end
  if nwin < 1 then
    error(string.format("the text has %d tokens, fewer than one window of %d", #ids, T), 0)
  end
  -- on the GPU (m:cuda()), logits stay on the device and the row statistics run there
  local dev = m.device == "cuda"
  local chunk = opts.chunk or (dev and 512 or 128)
  local nll_rows = dev and glq.core.cuda.nll_rows or glq.nll_rows
  local kl_rows = dev and glq.core.cuda.kl_rows or glq.kl_rows
  local function logits(mm, h, s, n)
    if dev then return mm.c:head_device(h:narrow(2, s + 1, n)) end
    return mm.c:head(h:narrow(2, s + 1, n)):reshape({ n, m.cfg.vocab })
  end
  if base and (base.device == "cuda") ~= dev then error("the model and --base must run on the same device", 0) end
  local base = opts.base
  local sum, count = 0, 0
  local kls, agree = {}, 0
  local bar = progress.new("eval", nwin, { quiet = opts.quiet })
  for w = first, first + nwin - 1 do
    local toks = model.ids_tensor(ids, w * T + 1, (w + 1) * T)
    local h = m:hidden(toks)
    local hb = base and base:hidden(toks)
    -- positions 0..T-2 predict tokens 1..T-1, in chunks so logits stay small
    for s = 0, T - 2, chunk do
      local n = math.min(chunk, T - 1 - s)
      local lg = logits(m, h, s, n)
      local tg = glq.zeros("i32", { n })
      local tp = tg:ptr()
      for i = 0, n - 1 do tp[i] = ids[w * T + s + i + 2] end
      local nll = nll_rows(lg, tg)
      sum = sum + nll:sum()
      count = count + n
      if base then
        local lb = logits(base, hb, s, n)
        local kl, ag = kl_rows(lb, lg)
        local kp, ap = kl:ptr(), ag:ptr()
        for i = 0, n - 1 do kls[#kls + 1] = kp[i]; agree = agree + ap[i] end
      end
    end
    bar:update(w - first + 1, string.format("ppl %.4f", math.exp(sum / count)))
  end
  bar:finish(string.format("%d windows of %d tokens", nwin, T))
  local r = { nll = sum / count, nll_sum = sum, ppl = math.exp(sum / count), tokens = count, windows = nwin,
    first_window = first, seqlen = T }
  if base then
    local s = 0
    for _, v in ipairs(kls) do s = s + v end
    table.sort(kls)
    r.kld_mean = s / #kls
    r.kld_p99 = percentile(kls, 0.99)
    r.top1 = agree / #kls
  end
  return r
end

return M

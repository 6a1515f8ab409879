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
  if type(text) ~= "string" then f:close() error(path .. ": cannot read text from it (a directory?)", 0) end
  f:close()
  return m:encode(text)
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 / 0 end
  local k = math.max(1, math.min(#sorted, math.ceil(p * #sorted)))
  return sorted[k]
end

-- ids: list of token ids; opts: seqlen, base (a loaded model), max_windows, chunk, quiet
-- returns {ppl, nll, tokens, windows, windows_total, ppl_se, kld_mean, kld_p99, top1, ...}. The
-- standard errors treat the predicted tokens as independent (as llama-perplexity does): ppl_se =
-- ppl * sd(nll) / sqrt(n); with a base, the ratio PPL/PPL(base) and its error come from the
-- per-token differences nll - nll_base (paired), kld_se = sd(kl) / sqrt(n), top1_se binomial.
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
  -- logits stay in the model's memory (on the GPU, the device) and the row statistics run there
  local chunk = opts.chunk or m.c:head_rows()
  local function logits(mm, h, s, n) return mm.c:head(h:narrow(2, s + 1, n)) end
  local base = opts.base
  if base and base.device ~= m.device then error("the model and --base must run on the same device", 0) end
  local sum, count, sumsq = 0, 0, 0
  local kls, agree = {}, 0
  local bsum, bsumsq, dsum, dsumsq = 0, 0, 0, 0 -- base nll, and the paired differences nll - nll_base
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
      local nll = m.c:nll_rows(lg, tg)
      local np = nll:ptr()
      for i = 0, n - 1 do sumsq = sumsq + np[i] * np[i] end
      sum = sum + nll:sum()
      count = count + n
      if base then
        local lb = logits(base, hb, s, n)
        local bp = base.c:nll_rows(lb, tg):ptr()
        for i = 0, n - 1 do
          local d = np[i] - bp[i]
          bsum, bsumsq, dsum, dsumsq = bsum + bp[i], bsumsq + bp[i] * bp[i], dsum + d, dsumsq + d * d
        end
        local kl, ag = m.c:kl_rows(lb, lg)
        local kp, ap = kl:ptr(), ag:ptr()
        for i = 0, n - 1 do kls[#kls + 1] = kp[i]; agree = agree + ap[i] end
      end
    end
    bar:update(w - first + 1, string.format("ppl %.4f", math.exp(sum / count)))
  end
  bar:finish(string.format("%d windows of %d tokens", nwin, T))
  if not (sum / count < math.huge) then -- NaN or infinite: never report it as a result
    error(string.format("perplexity is not finite (mean negative log-likelihood %s over %d tokens): the model's weights or activations hold NaN or infinite values",
      tostring(sum / count), count), 0)
  end
  local function se(s1, s2, n) -- standard error of a mean from the sum and the sum of squares
    if n < 2 then return 0 / 0 end
    local mean = s1 / n
    return math.sqrt(math.max(s2 / n - mean * mean, 0) * n / (n - 1) / n)
  end
  local r = { nll = sum / count, nll_sum = sum, ppl = math.exp(sum / count), tokens = count, windows = nwin,
    windows_total = total_win, first_window = first, seqlen = T }
  r.ppl_se = r.ppl * se(sum, sumsq, count)
  if base then
    local s, s2 = 0, 0
    for _, v in ipairs(kls) do s, s2 = s + v, s2 + v * v end
    r.kld_se = se(s, s2, #kls)
    table.sort(kls)
    r.kld_mean = s / #kls
    r.kld_p99 = percentile(kls, 0.99)
    r.top1 = agree / #kls
    r.top1_se = math.sqrt(r.top1 * (1 - r.top1) / #kls)
    r.base_nll = bsum / count
    r.base_ppl = math.exp(bsum / count)
    r.base_ppl_se = r.base_ppl * se(bsum, bsumsq, count)
    r.ppl_ratio = math.exp(dsum / count)
    r.ppl_ratio_se = r.ppl_ratio * se(dsum, dsumsq, count)
  end
  return r
end

return M

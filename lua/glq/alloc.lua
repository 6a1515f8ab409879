-- Mixed-precision allocation: choose one candidate per layer (E8 2/3/4 bits, HiF4 4.5, ...) to
-- minimise the total measured proxy loss subject to an average of at most `target` stored bits
-- per weight. Exact multiple-choice knapsack by dynamic programming over a fine grid of the
-- extra budget above the cheapest choice; costs are rounded up on the grid so the true stored
-- size never exceeds the budget.
local ffi = require "ffi"

local M = {}

-- layers: list of {name=, numel=, options={{bits=, loss=, key=}, ...}}
-- target: average stored bits per weight. opts.grid: number of budget cells (default 20000).
-- Returns choice (name -> option), summary {bits=achieved average, loss=total, budget_bits=}.
function M.allocate(layers, target, opts)
  opts = opts or {}
  local grid = opts.grid or 20000
  local n = #layers
  if n == 0 then return {}, { bits = 0, loss = 0 } end
  local total_numel, min_bits_total, max_bits_total = 0, 0, 0
  for _, L in ipairs(layers) do
    if #L.options == 0 then error("allocate: layer " .. L.name .. " has no candidates", 0) end
    table.sort(L.options, function(a, b) return a.bits < b.bits end)
    total_numel = total_numel + L.numel
    min_bits_total = min_bits_total + L.numel * L.options[1].bits
    max_bits_total = max_bits_total + L.numel * L.options[#L.options].bits
  end
  local budget = target * total_numel
  if budget < min_bits_total - 1e-6 * total_numel then
    error(string.format("allocate: target %.3f bits/weight is below the cheapest choice (%.3f)", target,
      min_bits_total / total_numel), 0)
  end
  local extra = math.min(budget, max_bits_total) - min_bits_total
  local unit = math.max(extra / grid, 1e-9)
  local G = extra > 0 and grid or 0

  -- best[c] = minimal loss using layers 1..i with extra cost exactly <= c cells
  local INF = math.huge
  local best = ffi.new("double[?]", G + 1)
  local nxt = ffi.new("double[?]", G + 1)
  local pick = ffi.new("uint8_t[?]", n * (G + 1))
  for c = 0, G do best[c] = 0 end
  for i, L in ipairs(layers) do
    local base = L.options[1].bits * L.numel
    local costs, losses = {}, {}
    for k, o in ipairs(L.options) do
      costs[k] = math.ceil((o.bits * L.numel - base) / unit - 1e-9)
      losses[k] = o.loss
      if o.loss ~= o.loss then error("allocate: layer " .. L.name .. " has a NaN loss", 0) end
    end
    local row = (i - 1) * (G + 1)
    for c = 0, G do
      local bv, bk = INF, 1
      for k = 1, #costs do
        local cc = costs[k]
        if cc <= c then
          local v = best[c - cc] + losses[k]
          if v < bv then bv, bk = v, k end
        end
      end
      nxt[c] = bv
      pick[row + c] = bk
    end
    best, nxt = nxt, best
  end
  -- walk back
  local choice, c = {}, G
  local used_bits, total_loss = 0, 0
  for i = n, 1, -1 do
    local L = layers[i]
    local k = pick[(i - 1) * (G + 1) + c]
    local o = L.options[k]
    choice[L.name] = o
    c = c - math.ceil((o.bits * L.numel - L.options[1].bits * L.numel) / unit - 1e-9)
    used_bits = used_bits + o.bits * L.numel
    total_loss = total_loss + o.loss
  end
  return choice, { bits = used_bits / total_numel, loss = total_loss, budget_bits = budget / total_numel }
end

-- glq's flat map module -> bits (integers for E8; other formats by name, e.g. "hif4")
function M.to_map(choice)
  local map = {}
  for name, o in pairs(choice) do map[name] = o.key or o.bits end
  return map
end

return M

-- Mixed-precision allocator: exactness against brute force, budget, and no bimodal collapse.
local alloc = require "glq.alloc"

local function brute(layers, target)
  local best, bestc = math.huge, nil
  local total = 0
  for _, L in ipairs(layers) do total = total + L.numel end
  local n = #layers
  local idx = {}
  for i = 1, n do idx[i] = 1 end
  while true do
    local bits, loss = 0, 0
    for i = 1, n do
      local o = layers[i].options[idx[i]]
      bits = bits + o.bits * layers[i].numel
      loss = loss + o.loss
    end
    if bits <= target * total + 1e-9 and loss < best then
      best = loss
      bestc = {}
      for i = 1, n do bestc[i] = idx[i] end
    end
    local i = 1
    while i <= n do
      idx[i] = idx[i] + 1
      if idx[i] <= #layers[i].options then break end
      idx[i] = 1
      i = i + 1
    end
    if i > n then break end
  end
  return best, bestc
end

local function rng(seed)
  local s = seed
  return function()
    s = (s * 1103515245 + 12345) % 2147483648
    return s / 2147483648
  end
end

describe("allocator", function()
  it("matches brute force on random instances", function()
    local r = rng(7)
    for trial = 1, 30 do
      local layers = {}
      for i = 1, 6 do
        local sens = 0.1 + r() * 10
        local numel = ({4096, 8192, 16384, 2048})[1 + math.floor(r() * 4)]
        layers[i] = { name = "l" .. i, numel = numel, options = {
          { bits = 2, loss = sens }, { bits = 3, loss = sens * (0.2 + 0.2 * r()) }, { bits = 4, loss = sens * 0.06 } } }
      end
      local target = 2 + r() * 2
      local choice, summary = alloc.allocate(layers, target, { grid = 4000 })
      local bl = brute(layers, target)
      assert.is_true(summary.bits <= target + 1e-9)
      -- grid rounding is conservative: within a hair of the exact optimum, never better
      assert.is_true(summary.loss >= bl - 1e-9)
      assert.is_true(summary.loss <= bl * 1.02 + 1e-9, string.format("trial %d: %g vs %g", trial, summary.loss, bl))
    end
  end)

  it("spreads bits by diminishing returns instead of maxing one layer first", function()
    -- identical layers: the optimum at 3 bits is all layers at 3 (loss halves per bit is convex)
    local layers = {}
    for i = 1, 8 do
      layers[i] = { name = "l" .. i, numel = 1000, options = {
        { bits = 2, loss = 1.0 }, { bits = 3, loss = 0.25 }, { bits = 4, loss = 0.0625 } } }
    end
    local choice = alloc.allocate(layers, 3.0)
    for i = 1, 8 do assert.equal(3, choice["l" .. i].bits) end
  end)

  it("rejects a target below the cheapest choice", function()
    local layers = { { name = "a", numel = 10, options = { { bits = 2, loss = 1 } } } }
    assert.error_matches(function() alloc.allocate(layers, 1.5) end, "below the cheapest")
  end)
end)

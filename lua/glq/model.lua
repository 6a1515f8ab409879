-- glq.model: open model files (GGUF, Hugging Face directories, glq/HiF4 checkpoints), build the C
-- model (glq.llama: CPU weights with pluggable linears, and a backend that runs the forward on the
-- CPU or, after m:to("cuda"), the GPU), and run it.
--   local m = glq.model.load(path [, {max_seq = 2048}])
--   m:encode(text) / m:decode(ids); m:logits(ids); m:set_linear(name, linear); m:hidden(tokens)
-- Whatever the device, m.c answers the same methods (embed, layer, head, forward, kvcache, nll_rows,
-- kl_rows, sync_layer, ...): callers never branch on it, only on m.c:has(capability).
-- Weights are read lazily per tensor; GGUF llama-arch q/k rows are permuted back from Meta's
-- interleaved RoPE order to Hugging Face's, so every model runs with rotate-half RoPE and
-- checkpoints written from GGUF inputs use HF's layout.
local glq = require "glq"
local core = glq.core
local modelcfg = require "glq.modelcfg"
local json = require "glq.json"
local fs = require "glq.fs"

local M = {}

-- ---------------------------------------------------------------- sources

local Source = {}
Source.__index = Source

local function is_gguf(path)
  if core.file_kind(path) ~= "file" then return false end -- a FIFO would block io.open
  local f = io.open(path, "rb")
  if not f then return false end
  local magic = f:read(4)
  f:close()
  return magic == "GGUF"
end

-- HF row order from GGUF (Meta) order for one q/k tensor: HF row h*hd + a*hd/2 + i = GGUF row h*hd + 2i + a
local function unpermute_rows(t, n_heads)
  local rows = t:size(1)
  local hd = rows / n_heads
  local out = glq.zeros(t:dtype() == "bf16" and "bf16" or "f32", t:shape())
  local half = hd / 2
  for h = 0, n_heads - 1 do
    for a = 0, 1 do
      for i = 0, half - 1 do
        local dst = h * hd + a * half + i
        local srcr = h * hd + 2 * i + a
        out:narrow(1, dst + 1, 1):copy(t:narrow(1, srcr + 1, 1))
      end
    end
  end
  return out
end

local function open_gguf(path)
  local g = core.gguf.open(path)
  local meta = g:metadata()
  local names, by_hf = {}, {}
  for _, info in ipairs(g:tensors()) do
    local hf = modelcfg.gguf_to_hf(info.name)
    if hf then by_hf[hf] = info.name; names[#names + 1] = hf end
  end
  local cfg = modelcfg.from_gguf(meta, path, by_hf["lm_head.weight"] ~= nil)
  local self = setmetatable({ path = path, kind = "gguf", g = g, meta = meta, cfg = cfg, by_hf = by_hf, names = names }, Source)
  self.hf_config = modelcfg.to_hf(cfg)
  return self
end

local function open_hf(dir)
  local cfg_path = fs.join(dir, "config.json")
  local raw, err = json.read_file(cfg_path)
  if not raw then error(string.format("%s: not a model directory (%s)", dir, tostring(err)), 0) end
  if type(raw) ~= "table" or raw[1] ~= nil then
    error(string.format("%s: not a model directory (%s must hold a JSON object, got %s)", dir, cfg_path,
      raw == json.null and "null" or type(raw) == "table" and "an array" or type(raw)), 0)
  end
  local cfg = modelcfg.from_hf(raw, cfg_path)
  local self = setmetatable({ path = dir, kind = "hf", hf_config = raw, cfg = cfg }, Source)
  if raw.quantization_config then
    self.kind = "checkpoint"
    self.ckpt = require("glq.checkpoint").read(dir)
    self.tensors = self.ckpt.dense
  elseif fs.exists(fs.join(dir, "hif4_config.json")) then
    self.kind = "checkpoint"
    self.ckpt = require("glq.checkpoint").read(dir)
    self.tensors = self.ckpt.dense
  elseif fs.exists(fs.join(dir, "model.safetensors")) then
    self.tensors = glq.load_safetensors(fs.join(dir, "model.safetensors"))
  elseif fs.exists(fs.join(dir, "model.safetensors.index.json")) then
    self.tensors = glq.load_safetensors_index(dir)
  else
    error(string.format("%s: no model.safetensors or model.safetensors.index.json", dir), 0)
  end
  self.names = {}
  for k in pairs(self.tensors) do self.names[#self.names + 1] = k end
  table.sort(self.names)
  return self
end

-- no tensors of decoder layers the config does not declare (a too small layer count would drop them silently)
local function check_layer_count(src)
  for _, name in ipairs(src.names) do
    local l = tonumber(name:match("^model%.layers%.(%d+)%."))
    if l and l >= src.cfg.n_layers then
      error(string.format("%s: tensor %s belongs to decoder layer %d, but the config declares %d layers", src.path,
        src.kind == "gguf" and (src.by_hf[name] or name) or name, l, src.cfg.n_layers), 0)
    end
  end
  return src
end

-- open a model source; errors say what the path is not
function M.open(path)
  if type(path) ~= "string" then error("model path must be a string", 0) end
  if fs.is_dir(path) then return check_layer_count(open_hf(path)) end
  if not fs.exists(path) then error(path .. ": no such file or directory", 0) end
  if is_gguf(path) then return check_layer_count(open_gguf(path)) end
  error(path .. ": not a model (expected a GGUF file or a directory with config.json)", 0)
end

-- tensor by HF name (f32/bf16/f16 as stored, quantized GGUF types dequantized to f32); nil if absent
function Source:tensor(name)
  if self.kind == "gguf" then
    local gname = self.by_hf[name]
    if not gname then return nil end
    local t = self.g:tensor(gname)
    if self.cfg.gguf_qk_permuted then
      local l, role = modelcfg.parse_linear_name(name:gsub("%.weight$", ""):gsub("%.bias$", ""))
      if role == "q" then t = unpermute_rows(t, self.cfg.n_heads)
      elseif role == "k" then t = unpermute_rows(t, self.cfg.n_kv_heads) end
    end
    return t
  end
  return self.tensors[name]
end

function Source:need(name)
  local t = self:tensor(name)
  if not t then error(string.format("%s: missing tensor %s", self.path, name), 0) end
  return t
end

-- every decoder linear's weight present with the shape the config implies, checked from the headers
-- before any work starts (a missing or mis-shaped tensor must not surface after hours of quantization)
function Source:check_linears()
  local shapes = M.layer_shapes(self.cfg)
  local info = {}
  if self.kind == "gguf" then
    for _, ti in ipairs(self.g:tensors()) do
      local hf = modelcfg.gguf_to_hf(ti.name)
      if hf then info[hf] = ti.shape end
    end
  end
  for l = 0, self.cfg.n_layers - 1 do
    for _, r in ipairs(modelcfg.roles) do
      local name = modelcfg.linear_name(l, r.role) .. ".weight"
      local shape
      if self.kind == "gguf" then
        shape = info[name]
      else
        local t = self.tensors[name]
        shape = t and t:shape()
      end
      local want = shapes[r.role]
      if not shape and not (self.ckpt and self.ckpt.layers[modelcfg.linear_name(l, r.role)]) then
        error(string.format("%s: missing tensor %s", self.path, name), 0)
      end
      if shape and (#shape ~= 2 or shape[1] ~= want[1] or shape[2] ~= want[2]) then
        error(string.format("%s: %s has shape (%s), the config implies (%d, %d)", self.path, name,
          table.concat(shape, ", "), want[1], want[2]), 0)
      end
    end
  end
end

-- the tokenizer of the model (GGUF vocabulary or tokenizer.json beside the config)
function Source:tokenizer()
  if self.tok then return self.tok end
  local tokmod = require "glq.tokenizer"
  if self.kind == "gguf" then
    self.tok = tokmod.from_gguf(self.g)
  else
    local p = fs.join(self.path, "tokenizer.json")
    if not fs.exists(p) then error(self.path .. ": no tokenizer.json (pass --tokenizer FILE)", 0) end
    self.tok = tokmod.load(p)
  end
  return self.tok
end

-- the chat template's text (GGUF tokenizer.chat_template, tokenizer_config.json's chat_template)
function Source:chat_template()
  local tmpl
  if self.kind == "gguf" then tmpl = self.meta["tokenizer.chat_template"]
  else
    local tc = json.read_file(fs.join(self.path, "tokenizer_config.json"))
    tmpl = tc and tc.chat_template
  end
  return type(tmpl) == "string" and tmpl or nil
end

-- the chat format glq.chat recognises in the template ("chatml", "llama3", ...), or nil
function Source:chat_style()
  local fmt = require("glq.chat").recognize(self:chat_template())
  return fmt and fmt.name or nil
end

-- ---------------------------------------------------------------- models

local Model = {}
Model.__index = Model

local function check_shape(t, want, name, path)
  local s = t:shape()
  local ok = #s == #want
  for i = 1, #want do ok = ok and s[i] == want[i] end
  if not ok then
    error(string.format("%s: tensor %s has shape (%s), config needs (%s)", path, name,
      table.concat(s, ", "), table.concat(want, ", ")), 0)
  end
end

-- a linear layer from a checkpoint layer entry (see glq.checkpoint) of true shape (out, in)
function M.quantized_linear(e, out, inn, name)
  local f = require("glq.formats").get(e.format)
  if not (f and f.linear) then
    error(string.format("layer %s: a checkpoint entry of unknown format '%s'", tostring(name), tostring(e.format)), 0)
  end
  return f.linear(e, out, inn, name)
end

-- the linear for module `name` of shape (out, in): dense from the source, or the checkpoint's quantized layer
local function build_linear(src, name, out, inn)
  if src.ckpt and src.ckpt.layers[name] then
    local e = src.ckpt.layers[name]
    local lin = M.quantized_linear(e, out, inn, name)
    local s = lin:shape()
    if s[1] ~= out or s[2] ~= inn then
      error(string.format("%s: quantized layer %s is %dx%d, config needs %dx%d", src.path, name, s[1], s[2], out, inn), 0)
    end
    return lin
  end
  local w = src:need(name .. ".weight")
  check_shape(w, { out, inn }, name .. ".weight", src.path)
  local b = src:tensor(name .. ".bias")
  if b then check_shape(b, { out }, name .. ".bias", src.path) end
  if w:dtype() ~= "f32" and w:dtype() ~= "bf16" then w = w:to("f32") end
  return glq.linear.dense(w, b and b:to("f32") or nil)
end

local function layer_shapes(c)
  local q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
  return { q = { q, c.dim }, k = { kv, c.dim }, v = { kv, c.dim }, o = { c.dim, q },
    gate = { c.ffn_dim, c.dim }, up = { c.ffn_dim, c.dim }, down = { c.dim, c.ffn_dim } }
end
M.layer_shapes = layer_shapes

local function f32(t) return (t:dtype() == "f32") and t or t:to("f32") end

-- load a model for inference/calibration. opts.max_seq caps the context (memory of the KV cache);
-- opts.lazy: build no decoder layer yet (load_layer(l) builds one; quantization streams this way).
-- opts.tokenizer: a tokenizer (or a .gguf/.json/llama2.c .bin path) for directories without tokenizer.json.
function M.load(path, opts)
  opts = opts or {}
  local src = type(path) == "table" and path or M.open(path)
  local c = src.cfg
  local max_seq = math.min(opts.max_seq or c.max_seq, c.max_seq)
  local cm = core.llama.new {
    dim = c.dim, n_layers = c.n_layers, n_heads = c.n_heads, n_kv_heads = c.n_kv_heads, head_dim = c.head_dim,
    ffn_dim = c.ffn_dim, vocab = c.vocab, max_seq = max_seq, norm_eps = c.norm_eps, rope_theta = c.rope_theta,
    rope_layout = "half", rope_scaling = c.rope_scaling, qk_norm = c.qk_norm, tied = c.tied,
  }
  local emb = src:need("model.embed_tokens.weight")
  check_shape(emb, { c.vocab, c.dim }, "model.embed_tokens.weight", src.path)
  cm:set_embedding(emb)
  if c.tied and src.kind == "gguf" then
    -- decode-sized head calls read the file's Q8_0 blocks (bit-identical logits, 3.8x fewer bytes)
    local raw, ty = src.g:raw(src.by_hf["model.embed_tokens.weight"])
    if ty == "q8_0" and emb:dtype() == "f32" and c.dim % 32 == 0 and c.dim <= 4096 then cm:set_head_q8_0(raw) end
  elseif c.tied and src.ckpt and src.ckpt.dense_raw and src.ckpt.dense_raw["model.embed_tokens.weight"] then
    -- a checkpoint that kept the GGUF's Q8_0 embedding: the same decode-time head as the GGUF's
    local raw = src.ckpt.dense_raw["model.embed_tokens.weight"].blocks
    if c.dim % 32 == 0 and c.dim <= 4096 then cm:set_head_q8_0(raw:reshape({ raw:numel() })) end
  end
  cm:set_final_norm(f32(src:need("model.norm.weight")))
  if not c.tied then
    local hw = src:need("lm_head.weight")
    check_shape(hw, { c.vocab, c.dim }, "lm_head.weight", src.path)
    cm:set_head(glq.linear.dense(hw:dtype() == "f16" and hw:to("f32") or hw))
  end
  if opts.tokenizer then
    src.tok = type(opts.tokenizer) == "string" and require("glq.tokenizer").load(opts.tokenizer) or opts.tokenizer
  end
  local self = setmetatable({ src = src, cfg = c, c = cm, max_seq = max_seq, layers = {}, device = "cpu" }, Model)
  if not opts.lazy then
    for l = 0, c.n_layers - 1 do self:load_layer(l) end
  end
  return self
end

-- build layer l's norms and linears from the source (dense, or the checkpoint's quantized layers)
function Model:load_layer(l)
  local src, c = self.src, self.cfg
  local shapes = layer_shapes(c)
  local p = string.format("model.layers.%d.", l)
  local w = {
    attn_norm = f32(src:need(p .. "input_layernorm.weight")),
    ffn_norm = f32(src:need(p .. "post_attention_layernorm.weight")),
  }
  if c.qk_norm then
    w.q_norm = f32(src:need(p .. "self_attn.q_norm.weight"))
    w.k_norm = f32(src:need(p .. "self_attn.k_norm.weight"))
  end
  for _, r in ipairs(modelcfg.roles) do
    local s = shapes[r.role]
    w[r.role] = build_linear(src, p .. r.hf, s[1], s[2])
  end
  self.c:set_layer(l, w)
  self.layers[l] = w
  return w
end

-- a one-screen summary (what the REPL prints for a model)
function Model:__tostring()
  local c, src = self.cfg, self.src
  local loaded = 0
  for _ in pairs(self.layers) do loaded = loaded + 1 end
  local lines = {
    string.format("glq model %s: %d layers (%d built), dim %d, %d heads / %d KV heads (head %d), ffn %d, vocab %d%s",
      tostring(c.arch or "llama"), c.n_layers, loaded, c.dim, c.n_heads, c.n_kv_heads, c.head_dim or c.dim / c.n_heads, c.ffn_dim, c.vocab,
      c.tied and ", tied head" or ""),
    string.format("  source   %s (%s); context %d of %d%s", tostring(src.path), tostring(src.kind), self.max_seq, c.max_seq,
      self.device == "cuda" and "; on the GPU" or ""),
  }
  local ck = src.ckpt
  if ck and ck.layers then
    local by, n = {}, 0
    for _, e in pairs(ck.layers) do
      local label = require("glq.text").layer_label(e)
      by[label] = (by[label] or 0) + 1
      n = n + 1
    end
    local parts = {}
    for label, k in pairs(by) do parts[#parts + 1] = string.format("%d %s", k, label) end
    table.sort(parts)
    lines[#lines + 1] = string.format("  linears  %d quantized (%s), %d dense", n, table.concat(parts, ", "),
      c.n_layers * #modelcfg.roles - n)
  else
    lines[#lines + 1] = string.format("  linears  %d dense", c.n_layers * #modelcfg.roles)
  end
  local chat = src.chat_style and src:chat_style()
  lines[#lines + 1] = "  chat     " .. (chat and (chat .. " template (glq chat, glq generate --chat)") or "no template glq recognises")
  lines[#lines + 1] = "  use      m:encode(text), m:decode(ids), m:logits(ids), glq.generate.run(m, ids, opts); help(m) lists the methods"
  return table.concat(lines, "\n")
end

function Model:tokenizer() return self.src:tokenizer() end

function Model:encode(text, opts) return self:tokenizer():encode(text, opts) end
function Model:decode(ids, opts) return self:tokenizer():decode(ids, opts) end

-- replace the linear of module `name` (e.g. "model.layers.3.mlp.up_proj") and return the old one
-- (in the CPU weights: a model on the GPU runs it after m.c:sync_layer(l))
function Model:set_linear(name, lin)
  local l, role = modelcfg.parse_linear_name(name)
  if not l then error("set_linear: not a decoder projection: " .. tostring(name), 0) end
  local w = self.layers[l]
  local old = w[role]
  w[role] = lin
  self.c:set_layer(l, w)
  return old
end

function Model:linear(name)
  local l, role = modelcfg.parse_linear_name(name)
  return l and self.layers[l][role]
end

-- i32 (1, T) tensor from a Lua list of ids (0-based)
function M.ids_tensor(ids, first, last)
  first, last = first or 1, last or #ids
  local n = last - first + 1
  local t = glq.zeros("i32", { 1, n })
  local p = t:ptr()
  for i = 0, n - 1 do p[i] = ids[first + i] end
  return t
end

-- last-position logits (vocab) of a token list (a CPU tensor)
function Model:logits(ids)
  local lg = self.c:forward(M.ids_tensor(ids), { all_logits = false })
  return lg:reshape({ self.cfg.vocab })
end

-- hidden states after the last decoder layer for tokens (1, T) (before the final norm), in the
-- model's memory (a device tensor on the GPU)
function Model:hidden(tokens)
  local h = self.c:embed(tokens)
  for l = 0, self.cfg.n_layers - 1 do self.c:layer(l, h) end
  return h
end

-- a KV cache for this model on its device (opts as glq.llama.kvcache: dtype, batch, max_seq, residual_length)
function Model:new_cache(opts)
  return self.c:kvcache(opts)
end

-- where a command runs: "cpu", or "cuda" when the build and the machine have a GPU (otherwise one
-- message on stderr and the CPU). Returns the device actually used.
function M.pick_device(want)
  if want ~= "cuda" then return "cpu" end
  local ok, why = core.cuda.available()
  if ok then return "cuda" end
  -- the reason may already say "no CUDA device (...)": keep only the innermost cause, once
  local reason = tostring(why)
  reason = reason:match("^no CUDA device %((.*)%)$") or reason
  io.stderr:write("glq: --device cuda: no usable GPU here, running on the CPU: " .. reason .. "\n")
  return "cpu"
end

-- Move this model's forward to `device` ("cpu" or "cuda") in place and return it. The CPU weights stay
-- the source of truth and are shared: the device gets a copy of every loaded layer (none with
-- opts.layers = false: a streaming caller syncs each layer when it runs it), the embedding and the
-- head; after m:set_linear, m.c:sync_layer(l) refreshes the copy. opts.dense_bf16 keeps dense
-- projections in bf16 on the GPU.
function Model:use(device, opts)
  opts = opts or {}
  if device == self.device then return self end
  local c = self.c:to(device, { dense_bf16 = opts.dense_bf16 })
  if opts.layers ~= false then
    for l = 0, self.cfg.n_layers - 1 do
      if self.layers[l] then c:sync_layer(l) end
    end
  end
  c:sync_head()
  self.c, self.device = c, device
  return self
end

-- This model on `device` (itself when already there, else a second model sharing its weights; opts as
-- Model:use); this one stays where it is.
function Model:to(device, opts)
  if device == self.device then return self end
  local m = {}
  for k, v in pairs(self) do m[k] = v end
  return setmetatable(m, Model):use(device, opts)
end

-- The model on the GPU (Model:to("cuda", opts)).
function Model:cuda(opts) return self:to("cuda", opts) end

return M

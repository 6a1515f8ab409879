-- Model configuration and tensor naming, independent of the file format.
-- Canonical names are Hugging Face's (model.layers.N.self_attn.q_proj.weight, ...); GGUF names
-- are mapped onto them. A normalized config is a plain table:
--   {arch, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab, max_seq, norm_eps,
--    rope_theta, rope_scaling = nil | {type="llama3", factor, low_freq_factor, high_freq_factor,
--    original_max_position_embeddings}, qk_norm, attn_bias, tied, bos, eos}
local M = {}

M.supported_arch = { llama = true, mistral = true, qwen2 = true, qwen3 = true, smollm = true }

M.roles = {
  { role = "q", hf = "self_attn.q_proj" }, { role = "k", hf = "self_attn.k_proj" },
  { role = "v", hf = "self_attn.v_proj" }, { role = "o", hf = "self_attn.o_proj" },
  { role = "gate", hf = "mlp.gate_proj" }, { role = "up", hf = "mlp.up_proj" },
  { role = "down", hf = "mlp.down_proj" },
}

-- module path of a linear, e.g. linear_name(3, "q") -> "model.layers.3.self_attn.q_proj"
function M.linear_name(l, role)
  for _, r in ipairs(M.roles) do
    if r.role == role then return string.format("model.layers.%d.%s", l, r.hf) end
  end
  error("unknown role " .. tostring(role))
end

-- inverse: module path -> layer index, role (nil for non-decoder modules)
function M.parse_linear_name(name)
  local l, rest = name:match("^model%.layers%.(%d+)%.(.+)$")
  if not l then return nil end
  for _, r in ipairs(M.roles) do
    if r.hf == rest then return tonumber(l), r.role end
  end
  return nil
end

local gguf_layer_map = {
  attn_norm = "input_layernorm", ffn_norm = "post_attention_layernorm",
  attn_q = "self_attn.q_proj", attn_k = "self_attn.k_proj", attn_v = "self_attn.v_proj",
  attn_output = "self_attn.o_proj", attn_q_norm = "self_attn.q_norm", attn_k_norm = "self_attn.k_norm",
  ffn_gate = "mlp.gate_proj", ffn_up = "mlp.up_proj", ffn_down = "mlp.down_proj",
}
local gguf_global_map = {
  ["token_embd.weight"] = "model.embed_tokens.weight", ["output_norm.weight"] = "model.norm.weight",
  ["output.weight"] = "lm_head.weight",
}

-- GGUF tensor name -> HF name (nil when there is no counterpart, e.g. rope_freqs)
function M.gguf_to_hf(name)
  if gguf_global_map[name] then return gguf_global_map[name] end
  local l, part, kind = name:match("^blk%.(%d+)%.([%w_]+)%.(%w+)$")
  if l and gguf_layer_map[part] then
    return string.format("model.layers.%s.%s.%s", l, gguf_layer_map[part], kind)
  end
  return nil
end

local function req(v, what, src)
  if v == nil then error(string.format("%s: missing %s", src, what), 0) end
  return v
end

-- every number of a config is checked before any tensor is touched: a string "64" or an infinite
-- rope theta is an error naming the key, not a shape mismatch or NaN logits after hours of work
local INT_FIELDS = { "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab", "max_seq" }
local function validate(c, src, names)
  local function show(v) return type(v) == "string" and string.format("%q (a string)", v) or tostring(v) end
  for _, f in ipairs(INT_FIELDS) do
    local v = c[f]
    if type(v) ~= "number" or v ~= v or v < 1 or v % 1 ~= 0 or v >= 2 ^ 31 then
      error(string.format("%s: %s must be a positive integer, got %s", src, names[f], show(v)), 0)
    end
  end
  for _, f in ipairs { "norm_eps", "rope_theta" } do
    local v = c[f]
    if type(v) ~= "number" or not (v > 0 and v < math.huge) then
      error(string.format("%s: %s must be a finite positive number, got %s", src, names[f], show(v)), 0)
    end
  end
  return c
end

-- from GGUF metadata (a Lua table key -> value)
function M.from_gguf(meta, src, has_output)
  local arch = req(meta["general.architecture"], "general.architecture", src)
  if not M.supported_arch[arch] then
    error(string.format("%s: unsupported architecture '%s' (supported: llama, mistral, qwen2, qwen3)", src, arch), 0)
  end
  local function k(name) return meta[arch .. "." .. name] end
  local c = { arch = arch, source_format = "gguf" }
  c.dim = req(k("embedding_length"), arch .. ".embedding_length", src)
  c.n_layers = req(k("block_count"), arch .. ".block_count", src)
  c.n_heads = req(k("attention.head_count"), arch .. ".attention.head_count", src)
  c.n_kv_heads = k("attention.head_count_kv") or c.n_heads
  c.head_dim = k("attention.key_length") or math.floor(c.dim / c.n_heads)
  c.ffn_dim = req(k("feed_forward_length"), arch .. ".feed_forward_length", src)
  c.max_seq = k("context_length") or 2048
  c.norm_eps = k("attention.layer_norm_rms_epsilon") or 1e-5
  c.rope_theta = k("rope.freq_base") or 10000
  local tokens = meta["tokenizer.ggml.tokens"]
  c.vocab = k("vocab_size") or (tokens and #tokens)
  req(c.vocab, "vocabulary size", src)
  c.qk_norm = arch == "qwen3"
  c.attn_bias = arch == "qwen2"
  c.tied = not has_output
  c.bos = meta["tokenizer.ggml.bos_token_id"]
  c.eos = meta["tokenizer.ggml.eos_token_id"]
  -- llama.cpp's convert permutes q/k rows of llama-arch models to Meta's interleaved RoPE order;
  -- qwen models keep HF order (NEOX RoPE).
  c.gguf_qk_permuted = (arch == "llama" or arch == "mistral")
  local st = k("rope.scaling.type")
  if st and st ~= "none" then
    error(string.format("%s: RoPE scaling '%s' in GGUF is not supported", src, st), 0)
  end
  local a = arch .. "."
  return validate(c, src, { dim = a .. "embedding_length", n_layers = a .. "block_count", n_heads = a .. "attention.head_count",
    n_kv_heads = a .. "attention.head_count_kv", head_dim = a .. "attention.key_length", ffn_dim = a .. "feed_forward_length",
    vocab = "the vocabulary size", max_seq = a .. "context_length", norm_eps = a .. "attention.layer_norm_rms_epsilon",
    rope_theta = a .. "rope.freq_base" })
end

-- from an HF config.json table
function M.from_hf(cfg, src)
  local mt = cfg.model_type or "llama"
  if not M.supported_arch[mt] then
    local a = cfg.architectures and cfg.architectures[1] or mt
    error(string.format("%s: unsupported architecture '%s' (supported: llama, mistral, qwen2, qwen3)", src, a), 0)
  end
  local c = { arch = mt, source_format = "hf" }
  c.dim = req(cfg.hidden_size, "hidden_size", src)
  c.n_layers = req(cfg.num_hidden_layers, "num_hidden_layers", src)
  c.n_heads = req(cfg.num_attention_heads, "num_attention_heads", src)
  c.n_kv_heads = cfg.num_key_value_heads or c.n_heads
  c.head_dim = cfg.head_dim or math.floor(c.dim / c.n_heads)
  c.ffn_dim = req(cfg.intermediate_size, "intermediate_size", src)
  c.vocab = req(cfg.vocab_size, "vocab_size", src)
  c.max_seq = cfg.max_position_embeddings or 2048
  c.norm_eps = cfg.rms_norm_eps or 1e-6
  -- transformers >= 5 writes rope_theta and the scaling into rope_parameters (no top-level keys)
  local rp = type(cfg.rope_parameters) == "table" and cfg.rope_parameters or nil
  c.rope_theta = cfg.rope_theta or (rp and rp.rope_theta) or 10000
  c.tied = cfg.tie_word_embeddings
  if c.tied == nil then c.tied = false end
  c.qk_norm = mt == "qwen3"
  c.attn_bias = mt == "qwen2" or cfg.attention_bias == true
  c.bos = cfg.bos_token_id
  c.eos = type(cfg.eos_token_id) == "table" and cfg.eos_token_id[1] or cfg.eos_token_id
  local rs = type(cfg.rope_scaling) == "table" and cfg.rope_scaling or rp
  if type(rs) == "table" then
    local t = rs.rope_type or rs.type
    if t == "llama3" then
      c.rope_scaling = { type = "llama3", factor = rs.factor, low_freq_factor = rs.low_freq_factor,
        high_freq_factor = rs.high_freq_factor, original_max_position_embeddings = rs.original_max_position_embeddings }
    elseif t ~= "default" then
      error(string.format("%s: RoPE scaling '%s' is not supported (llama3 is)", src, tostring(t)), 0)
    end
  end
  return validate(c, src, { dim = "hidden_size", n_layers = "num_hidden_layers", n_heads = "num_attention_heads",
    n_kv_heads = "num_key_value_heads", head_dim = "head_dim", ffn_dim = "intermediate_size", vocab = "vocab_size",
    max_seq = "max_position_embeddings", norm_eps = "rms_norm_eps", rope_theta = "rope_theta" })
end

-- an HF config.json table describing c (written into checkpoints made from GGUF files)
function M.to_hf(c)
  local mt = (c.arch == "smollm") and "llama" or c.arch
  local archs = { llama = "LlamaForCausalLM", mistral = "MistralForCausalLM", qwen2 = "Qwen2ForCausalLM", qwen3 = "Qwen3ForCausalLM" }
  local t = {
    architectures = { archs[mt] or "LlamaForCausalLM" }, model_type = mt, hidden_size = c.dim,
    intermediate_size = c.ffn_dim, num_hidden_layers = c.n_layers, num_attention_heads = c.n_heads,
    num_key_value_heads = c.n_kv_heads, head_dim = c.head_dim, vocab_size = c.vocab,
    max_position_embeddings = c.max_seq, rms_norm_eps = c.norm_eps, rope_theta = c.rope_theta,
    hidden_act = "silu", tie_word_embeddings = c.tied and true or false, bos_token_id = c.bos,
    eos_token_id = c.eos, torch_dtype = "float32",
  }
  if c.rope_scaling then
    t.rope_scaling = { rope_type = "llama3", factor = c.rope_scaling.factor, low_freq_factor = c.rope_scaling.low_freq_factor,
      high_freq_factor = c.rope_scaling.high_freq_factor, original_max_position_embeddings = c.rope_scaling.original_max_position_embeddings }
  end
  if mt == "qwen2" then t.attention_bias = true end
  return t
end

return M

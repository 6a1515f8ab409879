/* fuzz_tokenizer.c - libFuzzer harness: arbitrary bytes as text through a GPT-2 byte-level BPE
 * tokenizer and a SentencePiece-style one, both built from a tiny synthetic vocabulary with
 * merges, byte tokens and special tokens. The first input byte picks the encode flags. Encoding
 * then decoding must give the text back exactly (SPM: unless the text has a literal U+2581, which
 * SentencePiece cannot tell from a space, or encode was told not to add the BOS that decode drops). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static glq_tokenizer *bpe, *spm;

/* GPT-2's byte-level character of byte b, UTF-8 encoded into out; returns its length */
static int byte_char(int b, char *out) {
  static int map[256];
  if (!map['A']) {
    int next = 256;
    for (int i = 0; i < 256; i++) map[i] = ((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174) ? i : next++;
  }
  int cp = map[b];
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | (cp >> 6));
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

static void build(void) {
  static char bytes[256][8];
  static const char *bpe_extra[] = {"th", "the", "\xC4\xA0t", "\xC4\xA0the", "in", "ing", "<|a|>", "<|ab|>"};
  static const char *bpe_merges[] = {"t h", "th e", "\xC4\xA0 t", "\xC4\xA0t he", "\xC4\xA0t h", "i n", "in g"};
  static const char *spm_extra[] = {"\xE2\x96\x81", "t", "h", "e", "\xE2\x96\x81t", "th", "the", "\xE2\x96\x81the", "\xC3\xA9"};
  const char *tok[300];
  float scores[300];
  int32_t types[300];
  int n = 0;
  for (int b = 0; b < 256; b++) {
    bytes[b][byte_char(b, bytes[b])] = 0;
    tok[n] = bytes[b];
    types[n++] = GLQ_TOKEN_NORMAL;
  }
  for (size_t i = 0; i < sizeof bpe_extra / sizeof *bpe_extra; i++) {
    tok[n] = bpe_extra[i];
    types[n++] = bpe_extra[i][0] == '<' ? GLQ_TOKEN_CONTROL : GLQ_TOKEN_NORMAL;
  }
  int npat;
  const char *const *pat = glq_tokenizer_pre_patterns("smollm", &npat);
  glq_tokenizer_spec b = {.kind = GLQ_TOK_BPE, .n_vocab = n, .tokens = tok, .types = types,
                          .n_merges = (int32_t)(sizeof bpe_merges / sizeof *bpe_merges), .merges = bpe_merges,
                          .n_patterns = npat, .patterns = pat, .bos = n - 2, .eos = n - 1, .unk = -1};
  if (glq_tokenizer_new(&b, &bpe)) __builtin_trap(); /* before tok/types are reused below */
  static char hex[256][8];
  n = 0;
  static const char *spm_special[] = {"<unk>", "<s>", "</s>"};
  for (int i = 0; i < 3; i++) {
    tok[n] = spm_special[i];
    scores[n] = 0;
    types[n++] = i == 0 ? GLQ_TOKEN_UNKNOWN : GLQ_TOKEN_CONTROL;
  }
  for (int v = 0; v < 256; v++) {
    snprintf(hex[v], sizeof hex[v], "<0x%02X>", v);
    tok[n] = hex[v];
    scores[n] = 0;
    types[n++] = GLQ_TOKEN_BYTE;
  }
  for (size_t i = 0; i < sizeof spm_extra / sizeof *spm_extra; i++) {
    tok[n] = spm_extra[i];
    scores[n] = -(float)i;
    types[n++] = GLQ_TOKEN_NORMAL;
  }
  glq_tokenizer_spec s = {.kind = GLQ_TOK_SPM, .n_vocab = n, .tokens = tok, .scores = scores, .types = types,
                          .bos = 1, .eos = 2, .unk = 0, .add_bos = 1, .add_space_prefix = 1};
  if (glq_tokenizer_new(&s, &spm)) __builtin_trap();
}

/* encode, decode, and require the text back when `exact` */
static void round_trip(const glq_tokenizer *t, const char *text, size_t len, int flags, int exact) {
  int32_t *ids;
  size_t n, blen;
  char *back;
  if (glq_tokenizer_encode(t, text, len, flags, &ids, &n) != 0) __builtin_trap(); /* full byte coverage: never fails */
  if (glq_tokenizer_decode(t, ids, n, 0, &back, &blen) != 0) __builtin_trap();
  if (exact && (blen != len || memcmp(back, text, len) != 0)) __builtin_trap();
  free(back);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!bpe) build();
  if (size == 0) return 0;
  int flags = data[0] & (GLQ_TOK_NO_ADD_SPECIAL | GLQ_TOK_NO_PARSE_SPECIAL);
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  round_trip(bpe, text, len, flags, 1);
  int has_u2581 = 0;
  for (size_t i = 0; i + 2 < len; i++) has_u2581 |= memcmp(text + i, "\xE2\x96\x81", 3) == 0;
  round_trip(spm, text, len, flags, !has_u2581 && !(flags & GLQ_TOK_NO_ADD_SPECIAL));
  return 0;
}

/* tokenizer.h - BPE tokenizers: SentencePiece-style (llama.cpp's `llama` vocab) and GPT-2 byte-level.
 *
 * SPM: spaces become U+2581 ("▁"), a space is prepended to the text and after every special
 * token (when add_space_prefix), then adjacent symbols (UTF-8 characters) are merged, best first:
 * by the score of the merged token (GGUF/llama2.c vocabularies) or by merge rank (tokenizer.json
 * with `merges`); ties go to the leftmost pair. Characters left without a token become
 * <0xXX> byte tokens (or unk).
 * BPE: the text is split by the pre-tokenizer regexes (PCRE2, UTF + UCP; each regex splits the
 * pieces of the previous one, keeping matches and the gaps between them), each piece's bytes are
 * mapped to GPT-2's byte-level alphabet, and merged by rank.
 * Both: special tokens (types control, user-defined, unknown) are split out of the text first,
 * leftmost-longest; BOS/EOS are added per add_bos/add_eos. Invalid UTF-8 is tokenized byte-wise.
 * decode() inverts encode(): it drops the BOS (EOS) that encode adds, strips the SPM prefix space,
 * maps byte tokens / byte-level characters back to bytes, and writes other special tokens as text.
 * A tokenizer is immutable after construction and may be used from several threads. */
#ifndef GLQ_TOKENIZER_H
#define GLQ_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>
#include "../io/gguf.h"

typedef enum { GLQ_TOK_SPM, GLQ_TOK_BPE } glq_tok_kind;

/* token types; the ids are GGUF's tokenizer.ggml.token_type values */
enum {
  GLQ_TOKEN_NORMAL = 1, GLQ_TOKEN_UNKNOWN = 2, GLQ_TOKEN_CONTROL = 3,
  GLQ_TOKEN_USER_DEFINED = 4, GLQ_TOKEN_UNUSED = 5, GLQ_TOKEN_BYTE = 6
};

/* encode/decode flags */
enum {
  GLQ_TOK_NO_ADD_SPECIAL = 1,   /* encode: do not add BOS/EOS */
  GLQ_TOK_NO_PARSE_SPECIAL = 2, /* encode: treat special-token text as plain text */
  GLQ_TOK_SKIP_SPECIAL = 4      /* decode: write nothing for control tokens */
};

/* Everything needed to build a tokenizer; arrays are copied. */
typedef struct {
  glq_tok_kind kind;
  int32_t n_vocab;
  const char *const *tokens;     /* token texts, as stored (SPM: with "▁"; BPE: byte-level alphabet) */
  const size_t *token_lens;      /* their lengths (NULL: NUL-terminated) */
  const float *scores;           /* SPM with merge by score; NULL to merge by rank */
  const int32_t *types;          /* GLQ_TOKEN_*; NULL: all normal */
  int32_t n_merges;              /* "left right" strings in rank order (split at the first space after byte 0) */
  const char *const *merges;
  const size_t *merge_lens;      /* NULL: NUL-terminated */
  int n_patterns;                /* BPE pre-tokenizer regexes, applied in order */
  const char *const *patterns;
  int32_t bos, eos, unk;         /* -1: none */
  int add_bos, add_eos;
  int add_space_prefix;          /* SPM dummy prefix */
  int ignore_merges;             /* BPE: a piece that is itself a token is not merged (llama-3) */
} glq_tokenizer_spec;

typedef struct glq_tokenizer glq_tokenizer;

/* Build a tokenizer; GLQ_EINVAL naming the problem (bad ids, regex errors, missing scores/merges). */
int glq_tokenizer_new(const glq_tokenizer_spec *spec, glq_tokenizer **out);
/* Build from GGUF metadata (tokenizer.ggml.*: model llama -> SPM, gpt2 -> BPE with the regexes of `pre`). */
int glq_tokenizer_from_gguf(const glq_gguf *g, glq_tokenizer **out);
/* Load llama2.c's tokenizer.bin (e.g. tok512.bin): SPM by score, BOS 1, EOS 2, add BOS. */
int glq_tokenizer_load_llama2c(const char *path, glq_tokenizer **out);
void glq_tokenizer_free(glq_tokenizer *t); /* NULL is ignored */

/* The pre-tokenizer regexes for a tokenizer.ggml.pre name ("gpt2", "smollm", "llama-bpe", "qwen2",
 * ...; "default" is llama.cpp's choice when a file names none); NULL if unknown. *n receives the count. */
const char *const *glq_tokenizer_pre_patterns(const char *pre, int *n);
/* Whether that pre-tokenizer keeps a piece that is itself a token whole (llama-3); 0 if unknown. */
int glq_tokenizer_pre_ignore_merges(const char *pre);

/* Encode text[0..len) into a malloc'd array of ids (*ids, *n); flags GLQ_TOK_NO_*. */
int glq_tokenizer_encode(const glq_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, size_t *n);
/* The pre-tokenizer's pieces of text (BPE regex splits; SPM: the whole text) as a malloc'd array
 * of 2 * *n offsets and lengths. Special tokens are not split out. */
int glq_tokenizer_pre_tokenize(const glq_tokenizer *t, const char *text, size_t len, size_t **spans, size_t *n);
/* Decode ids into a malloc'd NUL-terminated string (*text, *len); GLQ_EINVAL on out-of-range ids. */
int glq_tokenizer_decode(const glq_tokenizer *t, const int32_t *ids, size_t n, int flags, char **text, size_t *len);

/* facts */
int32_t glq_tokenizer_n_vocab(const glq_tokenizer *t);
int32_t glq_tokenizer_bos(const glq_tokenizer *t);   /* -1 if none */
int32_t glq_tokenizer_eos(const glq_tokenizer *t);   /* -1 if none */
glq_tok_kind glq_tokenizer_kind(const glq_tokenizer *t);
/* The stored text of token id (NULL if out of range) and its length. */
const char *glq_tokenizer_token(const glq_tokenizer *t, int32_t id, size_t *len);
/* The id of a token text, or -1. */
int32_t glq_tokenizer_find(const glq_tokenizer *t, const char *text, size_t len);

#endif

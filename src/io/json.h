/* json.h - a small strict JSON (RFC 8259) parser into a read-only tree, and a string builder
 * for writing JSON (used for safetensors headers). Parsing never trusts its input: nesting depth
 * is limited, strings must be valid UTF-8, duplicate object keys are rejected, and every error
 * message gives the byte offset of the problem. */
#ifndef GLQ_JSON_H
#define GLQ_JSON_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
  GLQ_JSON_NULL, GLQ_JSON_BOOL, GLQ_JSON_INT, GLQ_JSON_NUM, GLQ_JSON_STR, GLQ_JSON_ARR, GLQ_JSON_OBJ
} glq_json_type;

/* One value. Integers without fraction/exponent that fit int64 are GLQ_JSON_INT (exact); other
 * numbers are GLQ_JSON_NUM. Strings are decoded, NUL-terminated, and may contain NUL bytes. */
typedef struct glq_json {
  glq_json_type type;
  size_t offset;                 /* byte offset of the value in the parsed text */
  const char *key;               /* member name when the value sits in an object, else NULL */
  size_t keylen;
  union {
    int64_t i;                   /* INT; BOOL (0 or 1) */
    double num;                  /* NUM */
    struct { const char *str; size_t len; };              /* STR */
    struct { const struct glq_json *items; size_t n; };   /* ARR, OBJ (members in text order) */
  };
} glq_json;

typedef struct glq_json_doc glq_json_doc;

#define GLQ_JSON_DEFAULT_DEPTH 64

/* Parse len bytes (no NUL needed) allowing max_depth nested arrays/objects; GLQ_EFORMAT on bad text. */
int glq_json_parse(const char *text, size_t len, int max_depth, glq_json_doc **out);
/* The document's top-level value. */
const glq_json *glq_json_root(const glq_json_doc *doc);
/* Free a document and every value in it (NULL is fine). */
void glq_json_free(glq_json_doc *doc);
/* The member of object obj named key (NUL-terminated), or NULL if absent or obj is not an object. */
const glq_json *glq_json_get(const glq_json *obj, const char *key);
/* "null", "boolean", "integer", "number", "string", "array" or "object". */
const char *glq_json_type_name(glq_json_type t);

/* A growing output string. Errors are sticky: after the first failure (recorded with glq_error)
 * further calls do nothing and status stays non-zero, so a caller checks once at the end. */
typedef struct {
  char *data;                    /* NUL-terminated while status == 0 */
  size_t len, cap;
  int status;
} glq_json_out;

/* Append n raw bytes. */
void glq_json_out_raw(glq_json_out *o, const char *s, size_t n);
/* Append printf-formatted text. */
void glq_json_out_fmt(glq_json_out *o, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;
/* Append s[0..n) as a quoted, escaped JSON string; GLQ_EINVAL if it is not valid UTF-8. */
void glq_json_out_str(glq_json_out *o, const char *s, size_t n);
/* Release the buffer and reset to empty. */
void glq_json_out_free(glq_json_out *o);

#endif

/* error.h - status codes and the per-thread error message.
 * Every library function that can fail returns a glq_status (0 = ok) and, on failure,
 * records a message with glq_error(); the Lua binding raises that message. */
#ifndef GLQ_ERROR_H
#define GLQ_ERROR_H

typedef enum {
  GLQ_OK = 0,
  GLQ_EINVAL,      /* bad argument, shape or dtype */
  GLQ_EIO,         /* file could not be opened/read/written */
  GLQ_EFORMAT,     /* file contents malformed */
  GLQ_ENOMEM,      /* allocation failed */
  GLQ_ENUMERIC,    /* numerical failure (non-finite input, failed factorisation) */
  GLQ_EUNSUPPORTED /* valid input we do not handle */
} glq_status;

/* Record a printf-style message for the calling thread; returns code (so `return glq_error(...)`). */
int glq_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;
/* Prefix the current message with "prefix: " (adds context such as a file or tensor name). */
void glq_error_prefix(const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 1, 2)))
#endif
  ;
/* The calling thread's last message ("" if none). */
const char *glq_errmsg(void);
/* The code recorded with the calling thread's last message (GLQ_OK if none). */
int glq_errcode(void);
/* Stable short name of a status: "EINVAL", "EIO", "EFORMAT", "ENOMEM", "ENUMERIC", "EUNSUPPORTED" ("OK" for 0). */
const char *glq_status_name(int code);

#endif

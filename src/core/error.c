#include "error.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];
static _Thread_local int errcode;

int glq_error(int code, const char *fmt, ...) {
  errcode = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return code;
}

void glq_error_prefix(const char *fmt, ...) {
  char pre[512], old[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, errbuf, sizeof old);
  size_t n = strlen(pre);
  if (n > sizeof errbuf - 3) n = sizeof errbuf - 3;
  memcpy(errbuf, pre, n);
  memcpy(errbuf + n, ": ", 2);
  size_t rest = sizeof errbuf - n - 3, k = strlen(old);
  if (k > rest) k = rest;
  memcpy(errbuf + n + 2, old, k);
  errbuf[n + 2 + k] = 0;
}

const char *glq_errmsg(void) { return errbuf; }

int glq_errcode(void) { return errcode; }

const char *glq_status_name(int code) {
  static const char *const names[] = {"OK", "EINVAL", "EIO", "EFORMAT", "ENOMEM", "ENUMERIC", "EUNSUPPORTED"};
  return code >= 0 && code <= GLQ_EUNSUPPORTED ? names[code] : "EINVAL";
}

/*
 * Stub <string.h> for .ci/macos.sh: type-checking only.
 *
 * No Apple SDK is available on the Linux CI machine; the agent's C dependencies (ring) are
 * compiled for aarch64-apple-darwin by Debian's clang with `-ffreestanding -nostdlibinc`, which
 * leaves only the compiler's own headers. ring needs the mem* functions from string.h; they
 * are declared here with the C standard's signatures. Objects compiled against it are never
 * linked or run: a real macOS build uses the SDK's header.
 */
#ifndef COMMSCAN_CI_STUB_STRING_H
#define COMMSCAN_CI_STUB_STRING_H

#include <stddef.h>

void *memchr(const void *s, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *s, int c, size_t n);

#endif

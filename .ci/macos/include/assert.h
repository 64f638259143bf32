/*
 * Stub <assert.h> for .ci/macos.sh: type-checking only.
 *
 * No Apple SDK is available on the Linux CI machine; the agent's C dependencies (ring) are
 * compiled for aarch64-apple-darwin by Debian's clang with `-ffreestanding -nostdlibinc`, which
 * leaves only the compiler's own headers (stddef.h, stdint.h, ...). assert.h is not one of
 * them, so this no-op stands in. Objects compiled against it are never linked or run: a real
 * macOS build uses the SDK's header.
 */
#ifndef COMMSCAN_CI_STUB_ASSERT_H
#define COMMSCAN_CI_STUB_ASSERT_H

#undef assert
#define assert(e) ((void)0)

#endif

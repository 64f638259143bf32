/*
 * Stub of the macOS SDK's <TargetConditionals.h>, for .ci/macos.sh: type-checking only.
 *
 * No Apple SDK is available on the Linux CI machine, and none can be fetched, so the C
 * dependencies of the agent (ring) are compiled for aarch64-apple-darwin by Debian's clang with
 * `-ffreestanding -nostdlibinc` and this folder on the include path. ring includes this header
 * on Apple targets to tell macOS from iOS; these are the values the real SDK has for macOS on
 * Apple silicon. Objects compiled against it are never linked or run.
 */
#ifndef COMMSCAN_CI_STUB_TARGETCONDITIONALS_H
#define COMMSCAN_CI_STUB_TARGETCONDITIONALS_H

#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_UNIX 0
#define TARGET_OS_WIN32 0
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_MACCATALYST 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_VISION 0
#define TARGET_OS_BRIDGE 0
#define TARGET_OS_DRIVERKIT 0
#define TARGET_OS_SIMULATOR 0
#define TARGET_OS_EMBEDDED 0

#define TARGET_CPU_ARM64 1
#define TARGET_CPU_X86_64 0
#define TARGET_RT_64_BIT 1
#define TARGET_RT_LITTLE_ENDIAN 1
#define TARGET_RT_BIG_ENDIAN 0

#endif

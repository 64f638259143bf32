/*
 * A stand-in bcryptprimitives.dll for the Wine tests only; never shipped, never installed.
 *
 * Rust's standard library for x86_64-pc-windows-gnu (the target we ship) gets its random
 * numbers from ProcessPrng in bcryptprimitives.dll (Windows 10 and later). Wine 8, the Wine
 * Debian ships, has no such export, so the real agent.exe fails to load under it. Rather than
 * test a different binary (the tier-3 x86_64-win7-windows-gnu target uses RtlGenRandom), the
 * tests put this DLL next to the unchanged agent.exe in a throw-away Wine prefix: Windows
 * loads a DLL from the application's directory before System32. ProcessPrng is mapped onto
 * RtlGenRandom (advapi32's SystemFunction036), which Wine implements.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

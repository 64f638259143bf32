/* A stand-in for a catalogued product's process in the Wine tests (tests/tests/windows_wine.rs):
 * built with x86_64-w64-mingw32-gcc as e.g. Telegram.exe, it does nothing but sleep, so the
 * agent's `process` source sees a running executable of that name. It exits by itself after
 * the given number of seconds (default 60), so a test that dies before killing it leaves
 * nothing running for long. */
#include <stdlib.h>
#include <windows.h>

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 60;
    if (seconds <= 0 || seconds > 600)
        seconds = 60;
    Sleep((DWORD)seconds * 1000);
    return 0;
}

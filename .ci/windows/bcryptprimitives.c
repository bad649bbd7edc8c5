/*
 * Minimal stand-in for Windows' bcryptprimitives.dll, for Wine 8 only.
 *
 * Rust std >= 1.78 imports ProcessPrng from bcryptprimitives.dll; Wine 8.0
 * (Debian 12) does not ship that DLL, so every Rust .exe dies at load time
 * with STATUS_DLL_NOT_FOUND (c0000135). This DLL exports ProcessPrng and
 * forwards to RtlGenRandom (advapi32!SystemFunction036), which Wine has.
 *
 * Built by .ci/windows/setup with mingw and copied into the Wine prefix's
 * system32. Never used on real Windows.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE; /* the real ProcessPrng always returns TRUE */
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst; (void)reason; (void)reserved;
    return TRUE;
}

# cython: language_level=3
"""A mapped file that shrinks under ``udt-send`` becomes a flag instead of a ``SIGBUS``.

``udt-send`` queues windows of the mapped file (``udt.cli._mapped``); each window is populated
first, but the copy into the send buffer can wait for room for a long time, and a file truncated
meanwhile would kill the process with ``SIGBUS`` (no JSON, no exit code of ours).  While a range
is guarded, this module's ``SIGBUS`` handler maps anonymous zero pages over the faulting page of
that range and sets a flag, so the copy resumes; the sender checks the flag after each window
and fails with "shrank while being sent" before it sends a digest, so the zeros never count as
the file.  A fault outside the range goes to the handler that was there before (Python's
``faulthandler`` or the default).  One range at a time: udt-send sends its files one by one.
"""

cdef extern from *:
    """
    #include <signal.h>
    #include <stdint.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <unistd.h>

    static volatile uintptr_t udt_guard_lo = 0, udt_guard_hi = 0, udt_guard_page = 4096;
    static volatile sig_atomic_t udt_guard_hit = 0;
    static struct sigaction udt_guard_previous;
    static int udt_guard_installed = 0;

    static void udt_guard_handler(int sig, siginfo_t *info, void *context) {
        uintptr_t address = (uintptr_t)info->si_addr;
        if (udt_guard_hi != 0 && address >= udt_guard_lo && address < udt_guard_hi) {
            uintptr_t page = address & ~(udt_guard_page - 1);
            if (mmap((void *)page, udt_guard_page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
                udt_guard_hit = 1;
                return;  /* the faulting copy runs again, on zeros */
            }
        }
        /* not ours: the previous disposition takes this fault when the access runs again */
        sigaction(SIGBUS, &udt_guard_previous, NULL);
        udt_guard_installed = 0;
    }

    static int udt_guard_install(void) {
        struct sigaction action;
        if (udt_guard_installed) return 0;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = udt_guard_handler;
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        udt_guard_page = (uintptr_t)sysconf(_SC_PAGESIZE);
        if (sigaction(SIGBUS, &action, &udt_guard_previous) != 0) return -1;
        udt_guard_installed = 1;
        return 0;
    }

    static void udt_guard_set(uintptr_t lo, uintptr_t hi) {
        udt_guard_hit = 0;
        udt_guard_lo = lo;
        udt_guard_hi = hi;
    }
    """
    int udt_guard_install()
    void udt_guard_set(size_t lo, size_t hi)
    int udt_guard_hit


def guard(const unsigned char[::1] mapping) -> bool:
    """Guard the whole of ``mapping`` (a buffer over a mapped file); False if no handler."""
    if mapping.shape[0] == 0 or udt_guard_install() != 0:
        return False
    udt_guard_set(<size_t>&mapping[0], <size_t>&mapping[0] + <size_t>mapping.shape[0])
    return True


def unguard() -> None:
    """Stop guarding (the mapping is about to go)."""
    udt_guard_set(0, 0)


def shrank() -> bool:
    """Whether a page of the guarded range had vanished (the file shrank) since ``guard``."""
    return udt_guard_hit != 0

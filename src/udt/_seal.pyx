# cython: language_level=3
"""Sealing and opening udt packets (protocol.md §12) with AES-GCM from ``cryptography``.

A sealed packet is the UDT header in clear (the associated data: routing and the engine need
it), an explicit 8-byte packet number, the AEAD ciphertext of the rest and the 16-byte tag.
The nonce is 4 zero bytes and the packet number, counted per direction from 0 and never
reused: a retransmission is a new transmission with a new number, so no nonce repeats under a
key (each direction has its own key).  The receiver keeps a window of 1024 numbers below the
highest it opened; a number seen before or older than the window is a replay.

Only the multiplexer's workers call seal/open, with the GIL taken once for a whole burst or
batch (``_mux.pyx``); the key exchange itself is Python (``udt._crypto``)."""
from cpython.buffer cimport PyBUF_READ, PyBUF_WRITE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


cdef inline uint64_t _get_u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


cdef inline void _put_u64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = v & 0xFF
        v >>= 8


cdef inline bytearray _nonce(bytearray buf, uint64_t pn):
    """buf (12 bytes: 4 zero, then pn) rewritten in place: no object per packet."""
    _put_u64(<uint8_t*><char*>buf + 4, pn)
    return buf


cdef class CryptoState:
    """One connection's keys, packet counter and replay window."""

    def __cinit__(self):
        self.keyed = False
        self.next_pn = 0
        self.highest = 0
        memset(self.window, 0, sizeof(self.window))
        self.seal_nonce = bytearray(12)
        self.open_nonce = bytearray(12)

    @staticmethod
    def keyed_with(bytes seal_key, bytes open_key):
        """A state ready to seal and open (the listener's side, keys known at accept)."""
        cdef CryptoState state = CryptoState.__new__(CryptoState)
        state._set_keys(seal_key, open_key)
        return state

    @staticmethod
    def for_client(object pending):
        """A client's state: keyed once the listener's answer checks out (client_check)."""
        cdef CryptoState state = CryptoState.__new__(CryptoState)
        state.pending = pending
        return state

    cdef void _set_keys(self, bytes seal_key, bytes open_key):
        self.seal_into = AESGCM(seal_key).encrypt_into
        self.open_into = AESGCM(open_key).decrypt_into
        self.keyed = True

    def offer(self):
        """The client's 32 bytes for its conclusion."""
        return self.pending.offer

    cdef ssize_t seal(self, const uint8_t* packet, size_t length, uint8_t* out) except -2:
        """Write the sealed form of packet at out; its length, or -1 when not keyed."""
        cdef uint64_t pn
        if not self.keyed or length < SEAL_HEADER_SIZE:
            return -1
        pn = self.next_pn
        self.next_pn += 1
        memcpy(out, packet, SEAL_HEADER_SIZE)
        _put_u64(out + SEAL_HEADER_SIZE, pn)
        self.seal_into(
            _nonce(self.seal_nonce, pn),
            PyMemoryView_FromMemory(<char*>packet + SEAL_HEADER_SIZE, length - SEAL_HEADER_SIZE, PyBUF_READ),
            PyMemoryView_FromMemory(<char*>packet, SEAL_HEADER_SIZE, PyBUF_READ),
            PyMemoryView_FromMemory(<char*>out + SEAL_HEADER_SIZE + SEAL_PN_SIZE,
                                    length - SEAL_HEADER_SIZE + SEAL_TAG_SIZE, PyBUF_WRITE))
        return <ssize_t>(length + SEAL_OVERHEAD)

    cdef int open(self, uint8_t* packet, size_t length, uint8_t* scratch, size_t* new_length) except -1:
        """Open a sealed packet in place (the header stays, the plaintext follows it);
        OPEN_OK with *new_length set, else why it must be dropped."""
        cdef uint64_t pn, distance
        cdef size_t body
        cdef int word, shift, i
        if not self.keyed:
            return OPEN_NO_KEYS
        if length < SEAL_HEADER_SIZE + SEAL_OVERHEAD:
            return OPEN_FORGED
        pn = _get_u64(packet + SEAL_HEADER_SIZE)
        if pn < self.highest:
            distance = self.highest - 1 - pn
            if distance >= REPLAY_WORDS * 64:
                return OPEN_REPLAYED
            if self.window[distance >> 6] & (1ULL << (distance & 63)):
                return OPEN_REPLAYED
        body = length - SEAL_HEADER_SIZE - SEAL_OVERHEAD
        try:
            self.open_into(
                _nonce(self.open_nonce, pn),
                PyMemoryView_FromMemory(<char*>packet + SEAL_HEADER_SIZE + SEAL_PN_SIZE,
                                        length - SEAL_HEADER_SIZE - SEAL_PN_SIZE, PyBUF_READ),
                PyMemoryView_FromMemory(<char*>packet, SEAL_HEADER_SIZE, PyBUF_READ),
                PyMemoryView_FromMemory(<char*>scratch, body, PyBUF_WRITE))
        except InvalidTag:
            return OPEN_FORGED
        # authentic: note its number (only now, so forgeries cannot fill the window)
        if pn >= self.highest:
            distance = pn + 1 - self.highest      # how far the window slides
            if distance >= REPLAY_WORDS * 64:
                memset(self.window, 0, sizeof(self.window))
            else:
                word = <int>(distance >> 6)
                shift = <int>(distance & 63)
                for i in range(REPLAY_WORDS - 1, -1, -1):
                    self.window[i] = ((self.window[i - word] << shift if i - word >= 0 else 0)
                                      | (self.window[i - word - 1] >> (64 - shift)
                                         if shift and i - word - 1 >= 0 else 0))
            self.highest = pn + 1
            self.window[0] |= 1
        else:
            distance = self.highest - 1 - pn
            self.window[distance >> 6] |= 1ULL << (distance & 63)
        memcpy(packet + SEAL_HEADER_SIZE, scratch, body)
        new_length[0] = SEAL_HEADER_SIZE + body
        return OPEN_OK

    # test and bench access (the workers use the cdef methods)
    def seal_packet(self, bytes packet):
        """Seal one packet (tests)."""
        out = bytearray(len(packet) + SEAL_OVERHEAD)
        cdef uint8_t* o = <uint8_t*><char*>out
        n = self.seal(<const uint8_t*><char*>packet, len(packet), o)
        return None if n < 0 else bytes(out[:n])

    def open_packet(self, bytes sealed):
        """(verdict, plaintext packet or None) for one sealed packet (tests)."""
        data = bytearray(sealed)
        scratch = bytearray(len(sealed) + 1)
        cdef size_t n = 0
        verdict = self.open(<uint8_t*><char*>data, len(data), <uint8_t*><char*>scratch, &n)
        return verdict, (bytes(data[:n]) if verdict == OPEN_OK else None)


cdef int client_check(void* user, const uint8_t* answer) noexcept nogil:
    with gil:
        try:
            state = <CryptoState>user
            keys = state.pending.finish((<const char*>answer)[:32])
            if keys is None:
                return -1
            state._set_keys(keys[0], keys[1])
            state.pending = None
            return 0
        except BaseException:
            return -1


cdef void* server_answer(void* listener_keys, const uint8_t* offer, uint8_t* answer_out) noexcept nogil:
    with gil:
        try:
            result = (<object>listener_keys).answer((<const char*>offer)[:32])
            if result is None:
                return NULL
            answer, seal_key, open_key = result
            memcpy(answer_out, <const char*>answer, 32)
            state = CryptoState.keyed_with(seal_key, open_key)
            Py_INCREF(state)
            return <void*>state
        except BaseException:
            return NULL

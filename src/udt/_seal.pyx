# cython: language_level=3
# distutils: libraries = crypto
"""Sealing and opening udt packets (protocol.md §12): AES-256-GCM through OpenSSL's EVP
interface, the library ``cryptography`` itself is built on (no cryptography written here).

A sealed packet is the UDT header in clear (the associated data: routing and the engine need
it), an explicit 8-byte packet number, the ciphertext of the rest and the 16-byte tag.  The
nonce is 4 zero bytes and the packet number, counted per direction from 0 and never reused: a
retransmission is a new transmission with a new number, so no nonce repeats under a key (each
direction has its own key).  The receiver keeps a window of 1024 numbers below the highest it
opened; a number seen before or older than the window is a replay.

Why EVP and not ``cryptography``'s AESGCM for the packets: its per-call cost (a context per
call, ~1.1 µs even for 24 bytes, plus the GIL) about doubled the cost of a packet; one EVP
context per direction, keyed once and given a new nonce per packet, costs ~0.3 µs for a full
packet and needs no GIL, so the workers seal and open in their own loops.  ``cryptography``
still does the key exchange (``udt._crypto``), and the tests check that its AESGCM opens what
this unit seals and the other way round (``tests/test_crypto.py``)."""
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memmove

from udt._sync cimport mux_atomic_load, mux_atomic_store


cdef extern from "<openssl/evp.h>" nogil:
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
    const EVP_CIPHER* EVP_aes_256_gcm()
    int EVP_CipherInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, void* impl,
                          const unsigned char* key, const unsigned char* iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                         const unsigned char* inp, int inl)
    int EVP_CipherFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    enum:
        EVP_CTRL_GCM_SET_IVLEN
        EVP_CTRL_GCM_GET_TAG
        EVP_CTRL_GCM_SET_TAG


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


cdef inline void _nonce(uint8_t* iv, uint64_t pn) noexcept nogil:
    iv[0] = iv[1] = iv[2] = iv[3] = 0
    _put_u64(iv + 4, pn)


cdef EVP_CIPHER_CTX* _context(bytes key, int enc) except NULL:
    cdef EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        raise MemoryError()
    if (len(key) != 32 or EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1
            or EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) != 1
            or EVP_CipherInit_ex(ctx, NULL, NULL, <const unsigned char*><const char*>key, NULL, enc) != 1):
        EVP_CIPHER_CTX_free(ctx)
        raise ValueError("cannot set up AES-256-GCM")
    return ctx


cdef class CryptoState:
    """One connection's keys, packet counter and replay window."""

    def __cinit__(self):
        self.st = <SealState*>calloc(1, sizeof(SealState))
        if self.st == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.st != NULL:
            if self.st.seal_ctx != NULL:
                EVP_CIPHER_CTX_free(self.st.seal_ctx)
            if self.st.open_ctx != NULL:
                EVP_CIPHER_CTX_free(self.st.open_ctx)
            free(self.st)
            self.st = NULL

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

    cdef int _set_keys(self, bytes seal_key, bytes open_key) except -1:
        if mux_atomic_load(&self.st.keyed):
            raise ValueError("already keyed")
        self.st.seal_ctx = _context(seal_key, 1)
        self.st.open_ctx = _context(open_key, 0)
        mux_atomic_store(&self.st.keyed, 1)
        return 0

    @property
    def keyed(self):
        return mux_atomic_load(&self.st.keyed) != 0

    def offer(self):
        """The client's 32 bytes for its conclusion."""
        return self.pending.offer

    # test access (the workers call seal / open_sealed on the SealState)
    def seal_packet(self, bytes packet):
        """The sealed form of one packet (None when not keyed)."""
        out = bytearray(len(packet) + SEAL_OVERHEAD)
        n = seal(self.st, <const uint8_t*><const char*>packet, len(packet), <uint8_t*><char*>out)
        return None if n < 0 else bytes(out[:n])

    def open_packet(self, bytes sealed):
        """(verdict, the packet in clear or None) for one sealed packet."""
        data = bytearray(sealed)
        cdef size_t n = 0
        verdict = open_sealed(self.st, <uint8_t*><char*>data, len(data), &n)
        return verdict, (bytes(data[:n]) if verdict == OPEN_OK else None)


cdef ssize_t seal(SealState* st, const uint8_t* packet, size_t length, uint8_t* out) noexcept nogil:
    cdef uint8_t iv[12]
    cdef int n = 0
    cdef uint64_t pn
    cdef size_t body
    if not mux_atomic_load(&st.keyed) or length < SEAL_HEADER_SIZE:
        return -1
    body = length - SEAL_HEADER_SIZE
    pn = st.next_pn
    st.next_pn += 1
    _nonce(iv, pn)
    memcpy(out, packet, SEAL_HEADER_SIZE)
    _put_u64(out + SEAL_HEADER_SIZE, pn)
    if (EVP_CipherInit_ex(st.seal_ctx, NULL, NULL, NULL, iv, 1) != 1
            or EVP_CipherUpdate(st.seal_ctx, NULL, &n, packet, SEAL_HEADER_SIZE) != 1
            or EVP_CipherUpdate(st.seal_ctx, out + SEAL_HEADER_SIZE + SEAL_PN_SIZE, &n,
                                packet + SEAL_HEADER_SIZE, <int>body) != 1
            or EVP_CipherFinal_ex(st.seal_ctx, out + SEAL_HEADER_SIZE + SEAL_PN_SIZE + body, &n) != 1
            or EVP_CIPHER_CTX_ctrl(st.seal_ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_SIZE,
                                   out + SEAL_HEADER_SIZE + SEAL_PN_SIZE + body) != 1):
        return -1
    return <ssize_t>(length + SEAL_OVERHEAD)


cdef int open_sealed(SealState* st, uint8_t* packet, size_t length, size_t* new_length) noexcept nogil:
    cdef uint8_t iv[12]
    cdef int n = 0
    cdef uint64_t pn, distance
    cdef size_t body
    cdef int word, shift, i
    cdef uint8_t* cipher = packet + SEAL_HEADER_SIZE + SEAL_PN_SIZE
    if not mux_atomic_load(&st.keyed):
        return OPEN_NO_KEYS
    if length < SEAL_HEADER_SIZE + SEAL_OVERHEAD:
        return OPEN_FORGED
    pn = _get_u64(packet + SEAL_HEADER_SIZE)
    if pn < st.highest:
        distance = st.highest - 1 - pn
        if distance >= REPLAY_WORDS * 64:
            return OPEN_REPLAYED
        if st.window[distance >> 6] & (1ULL << (distance & 63)):
            return OPEN_REPLAYED
    body = length - SEAL_HEADER_SIZE - SEAL_OVERHEAD
    _nonce(iv, pn)
    # decrypted in place (EVP allows out == in); dropped whole if the tag fails
    if (EVP_CipherInit_ex(st.open_ctx, NULL, NULL, NULL, iv, 0) != 1
            or EVP_CipherUpdate(st.open_ctx, NULL, &n, packet, SEAL_HEADER_SIZE) != 1
            or EVP_CipherUpdate(st.open_ctx, cipher, &n, cipher, <int>body) != 1
            or EVP_CIPHER_CTX_ctrl(st.open_ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_SIZE, cipher + body) != 1
            or EVP_CipherFinal_ex(st.open_ctx, cipher + body, &n) != 1):
        return OPEN_FORGED
    # authentic: note its number (only now, so forgeries cannot fill the window)
    if pn >= st.highest:
        distance = pn + 1 - st.highest       # how far the window slides
        if distance >= REPLAY_WORDS * 64:
            for i in range(REPLAY_WORDS):
                st.window[i] = 0
        elif distance > 0:
            word = <int>(distance >> 6)
            shift = <int>(distance & 63)
            for i in range(REPLAY_WORDS - 1, -1, -1):
                st.window[i] = ((st.window[i - word] << shift if i - word >= 0 else 0)
                                | (st.window[i - word - 1] >> (64 - shift)
                                   if shift and i - word - 1 >= 0 else 0))
        st.highest = pn + 1
        st.window[0] |= 1
    else:
        distance = st.highest - 1 - pn
        st.window[distance >> 6] |= 1ULL << (distance & 63)
    memmove(packet + SEAL_HEADER_SIZE, cipher, body)
    new_length[0] = SEAL_HEADER_SIZE + body
    return OPEN_OK


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


cdef void* server_answer(void* listener_keys, const uint8_t* offer, uint8_t* answer_out,
                         void** seal_out) noexcept nogil:
    with gil:
        return _server_answer(<object>listener_keys, offer, answer_out, seal_out)


cdef void* _server_answer(object listener_keys, const uint8_t* offer, uint8_t* answer_out,
                          void** seal_out) noexcept:
    cdef CryptoState state
    try:
        result = listener_keys.answer((<const char*>offer)[:32])
        if result is None:
            return NULL
        answer, seal_key, open_key = result
        memcpy(answer_out, <const char*>answer, 32)
        state = CryptoState.keyed_with(seal_key, open_key)
    except BaseException:
        return NULL
    Py_INCREF(state)
    seal_out[0] = <void*>state.st
    return <void*>state

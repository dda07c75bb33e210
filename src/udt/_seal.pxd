# cython: language_level=3
"""Sealing udt packets with AES-256-GCM (protocol.md §12): the per-connection key state the
multiplexer's workers seal and open with, without the GIL (OpenSSL's EVP interface)."""
from libc.stdint cimport uint8_t, uint64_t

cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass

cdef enum:
    SEAL_PN_SIZE = 8                # the explicit packet number after the header
    SEAL_TAG_SIZE = 16              # the AEAD tag at the end
    SEAL_OVERHEAD = 24              # what a sealed packet adds (the MSS given to the engine drops by it)
    SEAL_HEADER_SIZE = 16           # the UDT header: in clear, authenticated (associated data)
    REPLAY_WORDS = 16               # replay window: 1024 packet numbers below the highest seen
    OPEN_OK = 0
    OPEN_FORGED = 1                 # too short, or the tag does not verify
    OPEN_REPLAYED = 2               # a packet number already opened, or older than the window
    OPEN_NO_KEYS = 3                # not keyed yet (handshake in progress)


cdef struct SealState:
    # Only the holder of the connection's tx_inflight seals (seal_ctx, next_pn: the send
    # worker, or a user thread sending directly, one at a time) and only the receive worker opens
    # (open_ctx, highest, window); `keyed` is set once, before either may use the keys.
    EVP_CIPHER_CTX* seal_ctx
    EVP_CIPHER_CTX* open_ctx
    int keyed                       # atomic
    uint64_t next_pn                # packet number of our next sealed packet
    uint64_t highest                # 1 + the highest packet number opened (0: none yet)
    uint64_t window[REPLAY_WORDS]


cdef class CryptoState:
    cdef SealState* st
    cdef object pending             # client: the udt._crypto.ClientKeys awaiting the answer
    cdef int _set_keys(self, bytes seal_key, bytes open_key) except -1


# Write the sealed form of packet at out (length + SEAL_OVERHEAD bytes); -1 when not keyed.
cdef ssize_t seal(SealState* st, const uint8_t* packet, size_t length, uint8_t* out) noexcept nogil
# Open a sealed packet in place (the header stays, the plaintext follows it): OPEN_OK with
# *new_length set, else why it must be dropped.
cdef int open_sealed(SealState* st, uint8_t* packet, size_t length, size_t* new_length) noexcept nogil


cdef inline bint is_handshake(const uint8_t* packet, size_t length) noexcept nogil:
    """Handshakes travel in clear (they carry the key exchange); everything else is sealed."""
    return length >= 4 and packet[0] == 0x80 and packet[1] == 0


# The client's check of the listener's answer (ConnOptions.crypto_check): user is its
# CryptoState; 0 when the keys are agreed (then it is keyed).  Takes the GIL (once per connect).
cdef int client_check(void* user, const uint8_t* answer) noexcept nogil

# The accepting thread's half (GIL taken): a new reference to a keyed CryptoState and the
# 32-byte answer in answer_out, or NULL when the client's proof fails (a wrong passphrase).
# *seal_out is its SealState (for the workers).
cdef void* server_answer(void* listener_keys, const uint8_t* offer, uint8_t* answer_out,
                         void** seal_out) noexcept nogil

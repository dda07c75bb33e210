# cython: language_level=3
"""Sealing udt packets with an AEAD (protocol.md §12): the per-connection key state the
multiplexer's workers use with the GIL taken once per burst or batch, never per packet."""
from libc.stdint cimport int64_t, uint8_t, uint64_t

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


cdef class CryptoState:
    cdef object seal_into           # AESGCM(key for what we send).encrypt_into (None until keyed)
    cdef object open_into           # AESGCM(key for what the peer sends).decrypt_into
    cdef bytearray seal_nonce       # 12 bytes each, rewritten in place per packet
    cdef bytearray open_nonce
    cdef object pending             # client: the udt._crypto.ClientKeys awaiting the answer
    cdef readonly bint keyed
    cdef uint64_t next_pn           # packet number of our next sealed packet
    cdef uint64_t highest           # 1 + the highest packet number opened (0: none yet)
    cdef uint64_t window[REPLAY_WORDS]
    cdef void _set_keys(self, bytes seal_key, bytes open_key)
    cdef ssize_t seal(self, const uint8_t* packet, size_t length, uint8_t* out) except -2
    cdef int open(self, uint8_t* packet, size_t length, uint8_t* scratch, size_t* new_length) except -1


cdef inline bint is_handshake(const uint8_t* packet, size_t length) noexcept nogil:
    """Handshakes travel in clear (they carry the key exchange); everything else is sealed."""
    return length >= 4 and packet[0] == 0x80 and packet[1] == 0


# The client's check of the listener's answer (ConnOptions.crypto_check): user is its
# CryptoState; 0 when the keys are agreed (then it is keyed).  Takes the GIL.
cdef int client_check(void* user, const uint8_t* answer) noexcept nogil

# The accepting thread's half (GIL taken): a new reference to a keyed CryptoState and the
# 32-byte answer in answer_out, or NULL when the client's proof fails (a wrong passphrase).
cdef void* server_answer(void* listener_keys, const uint8_t* offer, uint8_t* answer_out) noexcept nogil

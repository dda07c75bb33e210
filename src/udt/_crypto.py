"""The key exchange of encrypted udt connections (protocol.md §12), on ``cryptography``.

Both ends hold the same passphrase (``UDT_PASSPHRASE``).  The client picks a random 16-byte
nonce *cn* and stretches the passphrase with scrypt salted by it (the memory-hard step: a
guess costs an attacker the same 16 MiB and tens of milliseconds); from that master secret
HKDF derives a proof key, and the client's conclusion carries ``cn | HMAC(proof key, cn)[:16]``.
The listener repeats the stretch (only for a conclusion whose cookie was valid, in its
accepting thread: never in the receive worker), checks the proof — a wrong passphrase is
refused here, with a reason, before any connection exists — picks its own nonce *sn* and
derives the session: one AES-256-GCM key per direction and its own proof key, all by HKDF
over the master salted with ``cn | sn``.  Its answer ``sn | HMAC(server proof key, cn | sn)[:16]``
lets the client confirm the keys before it reports the connection.  A replayed conclusion
meets a fresh *sn*, so no two connections share a key."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "NONCE_SIZE",
    "PROOF_SIZE",
    "SCRYPT_N",
    "ClientKeys",
    "ListenerKeys",
    "stretch",
]

NONCE_SIZE = 16
PROOF_SIZE = 16
SCRYPT_N = 1 << 14  # 16 MiB with r=8: ~40 ms on one core, per connect and per side
_SCRYPT_R = 8
_SALT_PREFIX = b"udt-crypt-v1 "


def _kdfs() -> tuple[type[Scrypt], type[HKDF], type[SHA256]]:
    """cryptography's scrypt, HKDF and SHA-256, imported by the first encrypted socket rather
    than with udt: a process without a passphrase (udt-send, udt-recv) never loads it, 15-25 ms
    of each one's start-up."""
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt, HKDF, SHA256


def stretch(passphrase: str, client_nonce: bytes) -> bytes:
    """The master secret: scrypt over the passphrase, salted with the client's nonce."""
    Scrypt = _kdfs()[0]
    kdf = Scrypt(salt=_SALT_PREFIX + client_nonce, length=32, n=SCRYPT_N, r=_SCRYPT_R, p=1)
    return kdf.derive(passphrase.encode("utf-8"))


def _hkdf(master: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    _, HKDF, SHA256 = _kdfs()
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(master)


def _proof(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:PROOF_SIZE]


def _client_proof(master: bytes, client_nonce: bytes) -> bytes:
    return _proof(_hkdf(master, b"", b"udt client proof", 32), client_nonce)


def _session(master: bytes, client_nonce: bytes, server_nonce: bytes) -> tuple[bytes, bytes, bytes]:
    """(client-to-server key, server-to-client key, server proof key)."""
    okm = _hkdf(master, client_nonce + server_nonce, b"udt session keys", 96)
    return okm[:32], okm[32:64], okm[64:]


class ClientKeys:
    """A connecting socket's half: the offer for its conclusion, then the answer's check."""

    def __init__(self, passphrase: str) -> None:
        self._nonce = os.urandom(NONCE_SIZE)
        self._master = stretch(passphrase, self._nonce)
        self.offer = self._nonce + _client_proof(self._master, self._nonce)

    def finish(self, answer: bytes) -> tuple[bytes, bytes] | None:
        """(seal key, open key) when the listener proved the same passphrase, else None."""
        server_nonce, proof = answer[:NONCE_SIZE], answer[NONCE_SIZE:]
        c2s, s2c, confirm = _session(self._master, self._nonce, server_nonce)
        if not hmac.compare_digest(proof, _proof(confirm, self._nonce + server_nonce)):
            return None
        return c2s, s2c


class ListenerKeys:
    """A listening socket's half, run by its accepting thread for each valid conclusion."""

    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase
        _kdfs()  # imported here, in the listening thread, not in the accepting thread later
        self.refused_mismatch = 0  # conclusions whose proof failed (wrong passphrase)

    def answer(self, offer: bytes) -> tuple[bytes, bytes, bytes] | None:
        """(answer, seal key, open key) for a client's offer, or None for a wrong passphrase."""
        client_nonce, proof = offer[:NONCE_SIZE], offer[NONCE_SIZE:]
        master = stretch(self._passphrase, client_nonce)
        if not hmac.compare_digest(proof, _client_proof(master, client_nonce)):
            self.refused_mismatch += 1
            return None
        server_nonce = os.urandom(NONCE_SIZE)
        c2s, s2c, confirm = _session(master, client_nonce, server_nonce)
        return server_nonce + _proof(confirm, client_nonce + server_nonce), s2c, c2s

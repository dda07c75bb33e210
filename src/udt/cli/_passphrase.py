"""The passphrase of udt-send / udt-recv (protocol.md §12): from ``--passphrase-file FILE`` or
the environment variable ``UDT_PASSPHRASE``, never from a plain argument (``ps`` shows those)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import udt

from ._common import CliError, ExitCode

ENVIRONMENT_VARIABLE = "UDT_PASSPHRASE"

__all__ = ["ENVIRONMENT_VARIABLE", "RefusalLog", "add_passphrase_argument", "read_passphrase"]


def add_passphrase_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help=f"encrypt: read the shared passphrase from FILE (one line); else ${ENVIRONMENT_VARIABLE} if set",
    )


def read_passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase the command line asked for, or None (plaintext)."""
    path = getattr(args, "passphrase_file", None)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise CliError(ExitCode.USAGE, f"cannot read the passphrase file {path!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CliError(ExitCode.USAGE, f"the passphrase file {path!r} is not UTF-8") from None
        return text.rstrip("\r\n")
    return os.environ.get(ENVIRONMENT_VARIABLE) or None


class RefusalLog:
    """Logs the connections a listening socket refused for encryption reasons (they never
    reach accept(): the listener counts them and goes on serving)."""

    _REASONS = {
        "crypto_refused_unexpected": "the client offered encryption and we have no passphrase",
        "crypto_refused_no_passphrase": "the client has no passphrase",
        "crypto_refused_mismatch": "wrong passphrase",
    }

    def __init__(self, prog: str, listener: udt.socket) -> None:
        self._prog = prog
        self._listener = listener
        self._seen: dict[str, int] = {}

    def check(self) -> None:
        counts: dict[str, Any] = self._listener.listener_stats()
        for key, reason in self._REASONS.items():
            new = int(counts.get(key, 0)) - self._seen.get(key, 0)
            if new > 0:
                print(f"{self._prog}: refused {new} connection(s): {reason}", file=sys.stderr, flush=True)
            self._seen[key] = int(counts.get(key, 0))

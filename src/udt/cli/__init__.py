"""Command-line tools: ``udt-send`` (udt.cli.send) and ``udt-recv`` (udt.cli.recv).

Both speak a small versioned framing over one UDT stream (udt.cli._wire): a session header, then
files (name, size, data, sha256) or memory-mode chunks, and an end record; the receiver answers
each file with a verdict.  Exit codes are shared (udt.cli._common.ExitCode) and listed in --help.
"""

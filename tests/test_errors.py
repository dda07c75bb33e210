"""One table of error numbers: the engine's C enum and udt.errors.ErrorCode agree both ways."""

from __future__ import annotations

import udt
from udt import _core
from udt.errors import ErrorCode, error_from_code


def _c_codes() -> dict[str, int]:
    return {name.removeprefix("ERR_"): getattr(_core, name) for name in dir(_core) if name.startswith("ERR_")}


def test_c_enum_and_python_names_are_one_table():
    c_codes = _c_codes()
    python_codes = {member.name: int(member) for member in ErrorCode}
    assert c_codes == python_codes


def test_every_code_has_an_exception_and_a_message():
    for code in ErrorCode:
        if code is ErrorCode.SUCCESS:
            continue
        exc = error_from_code(code)
        assert isinstance(exc, udt.UDTError) and exc.udt_code == code
        assert exc.strerror and exc.strerror != "UDT error", code

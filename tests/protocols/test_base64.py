"""Base64 in JSON requests as clients write it (corolla.tensors.decode_base64)."""

from __future__ import annotations

import base64
import binascii
import os

import pytest

from corolla.tensors import decode_base64

DATA = os.urandom(301) + b"\xfb\xff\xfe"  # both alphabets differ on these bytes


def test_standard_and_url_safe_alphabets() -> None:
    assert decode_base64(base64.b64encode(DATA).decode()) == DATA
    assert decode_base64(base64.urlsafe_b64encode(DATA).decode()) == DATA


def test_padding_optional_and_line_breaks_ignored() -> None:
    text = base64.b64encode(DATA[:100]).decode()
    assert text.endswith("=")
    assert decode_base64(text.rstrip("=")) == DATA[:100]
    assert decode_base64(base64.encodebytes(DATA).decode()) == DATA  # 76 columns, "\n"s
    assert decode_base64(base64.encodebytes(DATA).decode().replace("\n", "\r\n")) == DATA


def test_padding_may_be_short() -> None:
    assert decode_base64("QQ") == decode_base64("QQ=") == decode_base64("QQ==") == b"A"


@pytest.mark.parametrize("text", ["abc$", "ab*d", "a", "====", "ab=c", "QUJD+-8_",
                                  "QUJD\u00a0RA== ", "QUJD\u2028RA==\n"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises((binascii.Error, ValueError)):
        decode_base64(text)

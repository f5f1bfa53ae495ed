"""packs.spec: the fast canonical JSON is byte-identical to rfc8785, and the zip is stable."""

from __future__ import annotations

import io
import random
import zipfile

import pytest
import rfc8785

from packs import spec

TRICKY_STRINGS = [
    "",
    'a"b\\c',
    "\x00\x01\x1f\x7f",
    "\u2028\u2029",
    "é😀\ue000",
    "\b\f\n\r\t",
    "</script>",
    "/",
    "\ufeff",
]


def _random_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(8 if depth < 4 else 5)
    if choice == 0:
        return rng.choice(TRICKY_STRINGS) + "".join(
            chr(
                rng.choice(
                    [
                        rng.randrange(32, 127),
                        rng.randrange(0x80, 0x3000),
                        rng.randrange(0x1F600, 0x1F650),
                    ]
                )
            )
            for _ in range(rng.randrange(6))
        )
    if choice == 1:
        return rng.choice([0, -1, 1, 2**53 - 1, -(2**53 - 1), rng.randrange(-(10**9), 10**9)])
    if choice == 2:
        return rng.choice([True, False, None])
    if choice == 3:
        return rng.choice([0.5, 1.0, -0.0, 1e21, 1e-7, 123456789.125, rng.random()])
    if choice == 4:
        return rng.choice(TRICKY_STRINGS)
    if choice in (5, 6):
        keys = [
            str(_random_value(rng, 9))
            if rng.random() < 0.3
            else rng.choice(["a", "B", "é", "😀", "\ue000", "z" * rng.randrange(1, 4)])
            for _ in range(rng.randrange(5))
        ]
        return {k: _random_value(rng, depth + 1) for k in keys}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_the_fast_canonical_json_equals_rfc8785_on_random_documents() -> None:
    rng = random.Random(8785)
    for _ in range(3000):
        value = {"event": _random_value(rng), "n": rng.randrange(100)}
        assert spec.jcs(value) == rfc8785.dumps(value), value


def test_the_fast_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # U+E000 sorts after U+1F600 in UTF-16 (0xE000 > 0xD83D) but before it by code point
    value = {"\ue000": 1, "😀": 2}
    assert spec.jcs(value) == rfc8785.dumps(value) == '{"😀":2,"\ue000":1}'.encode()


def test_the_fast_canonical_json_refuses_what_rfc8785_refuses() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        spec.jcs({"n": 2**53})
    with pytest.raises(rfc8785.CanonicalizationError):
        spec.jcs({"s": "\ud800"})


def test_zip_write_is_deterministic_and_sorted() -> None:
    entries = [spec.Entry("b.json", b"{}"), spec.Entry("a.jsonl", b"x\n")]

    first = spec.zip_write(entries)

    assert first == spec.zip_write(list(reversed(entries)))
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.namelist() == ["a.jsonl", "b.json"]

"""Secret masking: registered forms, merged ranges, row repair."""

from __future__ import annotations

import base64
import random
import string

import pytest

from trio_runner.masking import (
    ROW_LIMIT_BYTES,
    Masker,
    decode_output,
    escape_command_data,
    row_safe,
    secret_forms,
    split_rows,
)


def masker(*values: str) -> Masker:
    m = Masker()
    for value in values:
        m.add(value)
    return m


def test_no_secrets_leaves_text_alone() -> None:
    m = Masker()
    assert not m
    assert m.mask("anything") == "anything"


def test_overlapping_secrets_merge() -> None:
    m = masker("abc", "abcdef")
    assert m.mask("abcdefg") == "***g"
    assert m.mask("abcabc") == "***"  # touching ranges merge
    assert m.mask("xabcx abcdef") == "x***x ***"


def test_range_reaching_past_an_earlier_match() -> None:
    m = masker("abcdef", "defghi")
    assert m.mask("abcdefghij") == "***j"
    assert m.mask("[abcdef] [defghi]") == "[***] [***]"


def test_chain_of_overlaps_and_order_independence() -> None:
    for values in (("aaab", "bccc", "cddd"), ("cddd", "bccc", "aaab")):
        assert masker(*values).mask("xaaabcccdddx") == "x***x"


def test_repeated_characters() -> None:
    assert masker("aa").mask("aaaaa b aa") == "*** b ***"


def test_case_sensitive() -> None:
    assert masker("Secret").mask("secret Secret") == "secret ***"


def test_short_values_ignored() -> None:
    m = masker("1", "{", " x ", "")
    assert m.mask("1 { x") == "1 { x"
    assert secret_forms("ab") >= {"ab"}


def test_trimmed_value_and_lines() -> None:
    m = masker("  first line\r\n  second  \n\nthird\n")
    assert m.mask("see first line here") == "see *** here"
    assert m.mask("second") == "***"
    assert m.mask("third") == "***"
    assert m.mask("first line\r\n  second  \n\nthird") == "***"


def test_base64_forms() -> None:
    secret = "my-secret-value"
    m = masker(secret)
    assert m.mask(base64.b64encode(secret.encode()).decode()) == "***"
    for prefix in (b"x", b"xy", b"xyz", b"user:"):
        blob = base64.b64encode(prefix + secret.encode() + b"!tail").decode()
        assert "***" in m.mask(blob), prefix


def test_offset_forms_need_eight_characters() -> None:
    forms = secret_forms("abcdef")
    full = base64.b64encode(b"abcdef").decode()
    assert forms == {"abcdef", full}


def test_json_url_and_command_forms() -> None:
    secret = 'p@ss "w<o>r&d"/%x y'
    forms = secret_forms(secret)
    assert 'p@ss \\"w<o>r&d\\"/%x y' in forms
    assert 'p@ss \\"w\\u003co\\u003er\\u0026d\\"/%x y' in forms
    assert "p%40ss+%22w%3Co%3Er%26d%22%2F%25x+y" in forms
    assert "p@ss%20%22w%3Co%3Er&d%22%2F%25x%20y" in forms
    assert escape_command_data(secret) in forms
    m = masker(secret)
    assert m.mask('{"token": "p@ss \\"w<o>r&d\\"/%x y"}') == '{"token": "***"}'


def test_command_form_for_multiline() -> None:
    m = masker("line1\nline2")
    assert m.mask("::set-output name=x::line1%0Aline2") == "::set-output name=x::***"
    assert m.mask("::error::prefix line1%0Aline2 end") == "::error::prefix *** end"


def test_json_escapes_control_characters() -> None:
    assert masker("a\tb-c").mask('"a\\tb-c"') == '"***"'


def test_masks_only_after_registration() -> None:
    m = Masker()
    assert m.mask("late-secret") == "late-secret"
    m.add("late-secret")
    assert m.mask("late-secret") == "***"
    m.add("late-secret")  # adding again changes nothing
    assert m.mask("x late-secret") == "x ***"


def test_unicode_secret() -> None:
    m = masker("päßwörd")
    assert m.mask("> päßwörd <") == "> *** <"
    assert m.mask(base64.b64encode("päßwörd".encode()).decode()) == "***"


def test_mask_before_repair_never_matches_half_a_character() -> None:
    m = masker("\u00e9t\u00e9")
    raw = "été".encode() + b"\xff" + "été".encode()
    assert row_safe(m.mask(decode_output(raw))) == "***?***"


def test_large_input_correctness() -> None:
    rnd = random.Random(7)
    secrets = ["".join(rnd.choices(string.ascii_letters, k=24)) for _ in range(5)]
    m = masker(*secrets)
    lines = []
    expected = []
    for i in range(50_000):
        if i % 97 == 0:
            s = secrets[i % 5]
            lines.append(f"line {i} token={s} and {s}{s}")
            expected.append(f"line {i} token=*** and ***")
        else:
            line = f"line {i} " + "".join(rnd.choices(string.digits + " ", k=60))
            lines.append(line)
            expected.append(line)
    assert [m.mask(line) for line in lines] == expected


# --- row repair ------------------------------------------------------------------------


def test_row_safe_ascii_fast_path() -> None:
    assert row_safe("plain") == "plain"
    assert row_safe("a\nb") == "a b"


def test_row_safe_replaces_invalid_bytes() -> None:
    assert row_safe(decode_output(b"ok \xff\xfe caf\xc3\xa9 \xc3")) == "ok ?? café ?"


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_row_safe_cuts_at_character_boundary(char: str) -> None:
    row = row_safe(char * (ROW_LIMIT_BYTES + 5))
    data = row.encode("utf-8")
    assert len(data) <= ROW_LIMIT_BYTES
    assert len(data) > ROW_LIMIT_BYTES - len(char.encode())
    assert set(row) == {char}


def test_split_rows() -> None:
    assert split_rows("one\r\ntwo\nthree\r") == ["one", "two", "three"]
    assert split_rows("progress\r50%") == ["progress\r50%"]

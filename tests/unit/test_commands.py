"""Workflow commands in step output, environment files and command-row escaping."""

from __future__ import annotations

import pytest

from trio_runner.executor.commands import (
    CommandProcessor,
    FileCommandError,
    accept_env,
    error_row,
    escape_data,
    escape_property,
    group_row,
    is_true,
    parse_command,
    parse_key_value_file,
    parse_path_file,
    prepend_paths,
    warning_row,
)
from trio_runner.masking import Masker


def processor(**flags: bool) -> tuple[CommandProcessor, Masker]:
    masker = Masker()
    return CommandProcessor(masker, **flags), masker


# --- parsing and decoding --------------------------------------------------------------


def test_v2_parsing() -> None:
    cmd = parse_command("  ::Set-Output Name=a%3Ab%2Cc=d,empty=,=x::va%25lue%0A%3A")
    assert cmd is not None
    assert (cmd.name, cmd.properties, cmd.data, cmd.v1) == (
        "set-output",
        {"name": "a:b,c=d"},
        "va%lue\n%3A",
        False,
    )
    assert cmd.raw_data == "va%25lue%0A%3A"


def test_v1_parsing() -> None:
    cmd = parse_command("prefix ##[set-output name=x%3By%5D;other=1%3A]a%3Bb%5Dc%0D")
    assert cmd is not None
    assert (cmd.name, cmd.properties, cmd.data, cmd.v1) == (
        "set-output",
        {"name": "x;y]", "other": "1:"},
        "a;b]c\r",
        True,
    )


def test_v2_data_keeps_v1_codes() -> None:
    cmd = parse_command("::debug::a%3Bb%5D%2C")
    assert cmd is not None and cmd.data == "a%3Bb%5D%2C"


def test_single_pass_decoding() -> None:
    cmd = parse_command("::debug::%250A%25%25")
    assert cmd is not None and cmd.data == "%0A%%"


@pytest.mark.parametrize(
    "line",
    ["::unknown::x", "no command", "::debug", "##[debug no end", "text :: more", "::::x"],
)
def test_not_commands(line: str) -> None:
    assert parse_command(line) is None


def test_unknown_v2_falls_back_to_v1() -> None:
    cmd = parse_command("::nope:: ##[debug]x")
    assert cmd is not None and (cmd.name, cmd.data) == ("debug", "x")


# --- escaping --------------------------------------------------------------------------


def test_escape_tables() -> None:
    assert escape_data("100%\r\nx:y,z") == "100%25%0D%0Ax:y,z"
    assert escape_property("100%\r\nx:y,z") == "100%25%0D%0Ax%3Ay%2Cz"
    assert escape_data("%0A") == "%250A"
    assert error_row("bad\nthing 50%") == "##[error]bad%0Athing 50%25"
    assert warning_row("w") == "##[warning]w"
    assert group_row("Run a\nb") == "::group::Run a%0Ab"


def test_escape_round_trip() -> None:
    text = "a%0A%\r\n:,;]"
    cmd = parse_command("::debug::" + escape_data(text))
    assert cmd is not None and cmd.data == text
    cmd = parse_command(f"::error title={escape_property(text)}::x")
    assert cmd is not None and cmd.properties["title"] == text


# --- processor -------------------------------------------------------------------------


def test_plain_lines_pass() -> None:
    p, _ = processor()
    assert p.feed("hello") == ["hello"]
    assert p.feed("a::b") == ["a::b"]
    assert p.feed("::unknown::x") == ["::unknown::x"]


def test_add_mask_registers_and_drops() -> None:
    p, masker = processor()
    assert p.feed("::add-mask::top%25secret") == []
    assert masker.mask("x top%secret") == "x ***"
    assert p.feed("echo ##[add-mask]other-secret") == []
    assert masker.mask("other-secret") == "***"
    assert p.feed("::add-mask::   ") == [
        "##[warning]Can't add secret mask for empty string in ##[add-mask] command."
    ]


def test_add_mask_multiline_value() -> None:
    p, masker = processor()
    p.feed("::add-mask::first-part%0Asecond-part")
    assert masker.mask("first-part") == "***"
    assert masker.mask("then second-part") == "then ***"


def test_debug_rows() -> None:
    p, _ = processor()
    assert p.feed("::debug::hidden") == []
    p, _ = processor(debug=True)
    assert p.feed("::debug::shown%0A") == ["::debug::shown%0A"]
    assert p.feed("##[debug]v1") == ["##[debug]v1"]


@pytest.mark.parametrize(
    ("line", "row"),
    [
        ("::error::boom", "::error::boom"),
        ("::warning file=a.py::msg", "::warning::a.py: msg"),
        ("::warning file=a.py,line=3::msg", "::warning::a.py:3: msg"),
        ("::error file=a.py,line=3,col=7,endLine=4::m%0An", "::error::a.py:3:7: m%0An"),
        ("::notice file=a.py,line=3,column=9::m", "::notice::a.py:3:9: m"),
        ("::error file=a.py,col=7::m", "::error::a.py: m"),
        ("::Error title=T%3A1%2C2::m", "::error::T:1,2: m"),
        ("::error file=dir/a%25b.py,line=1,title=Oops::m", "::error::dir/a%25b.py:1: Oops: m"),
        ("::error title=50%25::m", "::error::50%25: m"),
        ("##[warning file=x.c;line=2]m%3B", "##[warning]x.c:2: m%3B"),
        ("  ::Warning::indented", "::warning::indented"),
        ("::NOTICE::loud%0Aline", "::notice::loud%0Aline"),
        ("before ##[Error]v1", "##[error]v1"),
    ],
)
def test_annotations_rewritten(line: str, row: str) -> None:
    p, _ = processor()
    assert p.feed(line) == [row]
    assert not p.result.failed


@pytest.mark.parametrize(
    "line",
    ["::group::Title%0Ax", "::endgroup::", "##[group]t", "::echo::on", "::add-matcher::m.json"],
)
def test_verbatim_commands(line: str) -> None:
    p, _ = processor()
    assert p.feed(line) == [line]


def test_set_output_and_save_state() -> None:
    p, _ = processor()
    assert p.feed("::set-output name=a::1%0A2") == ["::set-output name=a::1%0A2"]
    assert p.feed("::save-state name=s::v") == ["::save-state name=s::v"]
    assert p.feed("##[set-output name=b]x%5D") == ["##[set-output name=b]x%5D"]
    assert p.result.outputs == {"a": "1\n2", "b": "x]"}
    assert p.result.state == {"s": "v"}
    assert not p.result.failed


def test_missing_name_fails_phase() -> None:
    p, _ = processor()
    assert p.feed("::set-output::v") == [
        "::set-output::v",
        "##[error]Required field 'name' is missing in ##[set-output] command.",
    ]
    p.feed("::save-state name=::v")
    assert p.result.failed and len(p.result.errors) == 2
    assert p.result.outputs == {} and p.result.state == {}


def test_unsecure_commands_refused() -> None:
    p, _ = processor()
    rows = p.feed("::set-env name=A::1")
    assert rows[0] == "::set-env name=A::1"
    assert rows[1].startswith("##[error]The `set-env` command is disabled.")
    assert "GITHUB_ENV" in rows[1] and "ACTIONS_ALLOW_UNSECURE_COMMANDS" in rows[1]
    rows = p.feed("::add-path::/opt/bin")
    assert "GITHUB_PATH" in rows[1]
    assert p.result.env == {} and p.result.path == []
    assert len(p.result.errors) == 2


def test_unsecure_commands_allowed() -> None:
    p, _ = processor(allow_unsecure_commands=True)
    assert p.feed("::set-env name=A::1") == ["::set-env name=A::1"]
    p.feed("::add-path::/a")
    p.feed("::add-path::/b")
    rows = p.feed("::set-env name=NODE_OPTIONS::--require x")
    assert rows[1] == (
        "##[error]Can't update NODE_OPTIONS environment variable using ::set-env:: command."
    )
    assert p.result.env == {"A": "1"}
    assert p.result.path == ["/a", "/b"]
    assert not p.result.failed


def test_stop_commands() -> None:
    p, masker = processor(debug=True)
    assert p.feed("::stop-commands::pause-token-123") == []
    assert masker.mask("pause-token-123") == "***"
    assert p.feed("::set-output name=a::1") == ["::set-output name=a::1"]
    assert p.feed("::add-mask::not-a-mask") == ["::add-mask::not-a-mask"]
    assert p.feed("::Pause-Token-123::") == []
    assert p.feed("::set-output name=b::2") == ["::set-output name=b::2"]
    assert p.result.outputs == {"b": "2"}
    assert masker.mask("not-a-mask") == "not-a-mask"


def test_short_stop_token_not_masked() -> None:
    p, masker = processor()
    p.feed("::stop-commands::abc123")
    assert masker.mask("abc123") == "abc123"
    assert p.feed("##[abc123]") == []
    assert p.feed("::debug::x") == []


@pytest.mark.parametrize("token", ["", "set-output", "Pause-Logging", "DEBUG"])
def test_invalid_stop_tokens(token: str) -> None:
    p, _ = processor()
    rows = p.feed(f"::stop-commands::{token}")
    assert len(rows) == 1 and rows[0].startswith("##[error]Invalid stop-commands token")
    assert p.result.failed
    assert p.feed("::set-output name=a::1") == ["::set-output name=a::1"]
    assert p.result.outputs == {"a": "1"}


def test_invalid_stop_token_allowed() -> None:
    p, _ = processor(allow_unsecure_stop_tokens=True)
    assert p.feed("::stop-commands::debug") == []
    assert p.feed("::set-output name=a::1") == ["::set-output name=a::1"]
    assert p.feed("::debug::") == []
    assert not p.result.failed and p.result.outputs == {}


def test_new_processor_starts_unstopped() -> None:
    masker = Masker()
    CommandProcessor(masker).feed("::stop-commands::tok")
    p = CommandProcessor(masker)
    p.feed("::set-output name=a::1")
    assert p.result.outputs == {"a": "1"}


def test_is_true() -> None:
    assert is_true(" TRUE ") and is_true("true")
    assert not is_true("1") and not is_true(None) and not is_true("")


# --- environment files -----------------------------------------------------------------


def test_key_value_lines() -> None:
    data = b"A=1\n\nB=x=y\nC=\nA=2\nD=a<<b\n"
    assert parse_key_value_file(data, "env") == {"A": "2", "B": "x=y", "C": "", "D": "a<<b"}


def test_heredoc() -> None:
    data = b"M<<EOF\nline 1\n\nEOF inside\n EOF\nEOF\nN<<=x\n=x\nAFTER=1\n"
    assert parse_key_value_file(data, "output") == {
        "M": "line 1\n\nEOF inside\n EOF",
        "N": "",
        "AFTER": "1",
    }
    assert parse_key_value_file(b"E<<X\nX", "output") == {"E": ""}
    assert parse_key_value_file(b"E<<X\nabc\nX", "output") == {"E": "abc"}


def test_heredoc_missing_delimiter() -> None:
    with pytest.raises(FileCommandError) as info:
        parse_key_value_file(b"M<<EOF\nvalue\nEOF \n", "output")
    assert str(info.value) == "Unable to process file command 'output' successfully."
    assert info.value.detail == "Invalid value. Matching delimiter not found 'EOF'"
    assert info.value.rows() == [
        "##[error]Unable to process file command 'output' successfully.",
        "##[error]Invalid value. Matching delimiter not found 'EOF'",
    ]


@pytest.mark.parametrize("line", ["novalue", "=x", "<<EOF", "NAME<<", " "])
def test_invalid_format(line: str) -> None:
    with pytest.raises(FileCommandError) as info:
        parse_key_value_file(f"OK=1\n{line}\n".encode(), "env")
    assert info.value.detail == f"Invalid format '{line}'"
    assert info.value.command == "env"


def test_pairs_before_the_bad_line_are_kept_for_the_caller() -> None:
    # A delimiter line inside the value ends it early; the rest must parse on its own.
    data = b"NOTE<<EOF\nmentions EOF\nEOFX\nEOF\nBODY<<EOF\nline\nEOF\nafter\nEOF\n"
    with pytest.raises(FileCommandError) as info:
        parse_key_value_file(data, "env")
    assert info.value.detail == "Invalid format 'after'"
    assert info.value.pairs == {"NOTE": "mentions EOF\nEOFX", "BODY": "line"}
    with pytest.raises(FileCommandError) as missing:
        parse_key_value_file(b"A=1\nB<<END\nnever closed\n", "output")
    assert missing.value.pairs == {"A": "1"}


def test_crlf_is_kept_on_unix() -> None:
    assert parse_key_value_file(b"A=1\r\n", "env") == {"A": "1\r"}


def test_encodings() -> None:
    assert parse_key_value_file(b"\xef\xbb\xbfA=\xc3\xa9\n", "env") == {"A": "é"}
    utf16 = "A=1\nB<<E\nx\nE\n".encode("utf-16")
    assert parse_key_value_file(utf16, "env") == {"A": "1", "B": "x"}
    assert parse_key_value_file("A=é\n".encode("utf-16-be").join([b"\xfe\xff", b""]), "env") == {
        "A": "é"
    }


def test_large_value() -> None:
    big = "x" * (16 * 1024 * 1024)
    assert parse_key_value_file(f"A={big}\n".encode(), "env")["A"] == big


def test_accept_env_refuses_node_options() -> None:
    accepted, rows = accept_env({"A": "1", "NODE_OPTIONS": "--x", "node_options": "y"})
    assert accepted == {"A": "1", "node_options": "y"}
    assert rows == [
        "##[error]Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command."
    ]


def test_path_file_and_ordering() -> None:
    assert parse_path_file(b"/a\n\n/b with space \r\n/c") == ["/a", "/b with space ", "/c"]
    assert prepend_paths([], ["/a", "/b", "/c"]) == ["/c", "/b", "/a"]
    assert prepend_paths(["/x", "/a"], ["/a", "/y"]) == ["/y", "/a", "/x"]

"""Scope: the online server's bearer-token check in process (``aiflow.serving.auth``): which headers pass, tokens from the
environment and from a tokens file (comments, blanks, commas), rotation when the file changes, a removed file, and the
refusal of a tokens file that does not exist. ``test_online_api.py`` checks the same through a real ``aiflow serve``
process; these tests run in the test process, so mutation testing sees them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiflow.serving.auth import TOKEN_ENV, TOKENS_FILE_ENV, NoTokenError, TokenSource


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer alpha", True),
        ("bearer alpha", True),  # the scheme is case-insensitive (RFC 7235)
        ("BEARER beta", True),
        ("Bearer   alpha  ", True),  # spaces around the token do not count
        ("Bearer alpha-and-more", False),  # a token is compared whole, never as a prefix
        ("Bearer alph", False),
        ("Bearer ALPHA", False),  # the token itself is case-sensitive
        ("Bearer gamma", False),
        ("Bearer ", False),
        ("Bearer", False),
        ("Bearealpha", False),
        ("Basic alpha", False),
        ("Token alpha", False),
        ("alpha", False),
        ("", False),
        (None, False),
    ],
)
def test_only_bearer_and_a_whole_valid_token_passes(header, ok):
    assert TokenSource(["alpha", "beta"]).valid(header) is ok


@pytest.mark.parametrize("position", [0, 1, 2])
def test_every_token_is_valid_wherever_it_is_listed(position):
    tokens = ["t-zero", "t-one", "t-two"]
    source = TokenSource(tokens)
    assert source.valid(bearer(tokens[position])) is True
    assert source.count() == 3


@pytest.mark.parametrize("tokens", [[""], ["alpha", " "], ["\t"]])
def test_a_blank_token_given_directly_is_refused_never_a_credential(tokens):
    with pytest.raises(NoTokenError, match=rf"token {len(tokens)} of {len(tokens)} given is blank: a blank token would let 'Bearer ' in"):
        TokenSource(tokens)


def test_a_token_given_with_spaces_around_it_is_the_token_without_them():
    assert TokenSource([" alpha "]).valid(bearer("alpha")) is True


def test_no_token_means_nothing_passes():
    source = TokenSource()
    assert source.count() == 0 and source.valid(bearer("")) is False and source.valid("Bearer  ") is False


def test_from_env_splits_commas_and_drops_blanks_and_comments(monkeypatch):
    source = TokenSource.from_env({TOKEN_ENV: " one , two,,#not-a-token, three "})
    assert source.count() == 3
    assert [source.valid(bearer(t)) for t in ("one", "two", "three", "#not-a-token", "")] == [True, True, True, False, False]
    assert TokenSource.from_env({}).count() == 0
    assert TokenSource.from_env({TOKEN_ENV: "", TOKENS_FILE_ENV: ""}).count() == 0  # an empty file variable is no file
    monkeypatch.setenv(TOKEN_ENV, "from-the-process")
    monkeypatch.delenv(TOKENS_FILE_ENV, raising=False)
    assert TokenSource.from_env().valid(bearer("from-the-process")) is True  # no mapping given: the process environment


def test_tokens_file_lines_comments_and_blanks(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# rotated tokens\n\nfile-1\n   file-2   \n  # file-3 retired\n")
    source = TokenSource(["env-1"], tokens)
    assert source.count() == 3
    assert [source.valid(bearer(t)) for t in ("env-1", "file-1", "file-2", "file-3", "# rotated tokens")] == [
        True, True, True, False, False,
    ]  # fmt: skip


def test_tokens_file_from_env_or_argument_the_argument_wins(tmp_path):
    (tmp_path / "env.txt").write_text("from-env-file\n")
    (tmp_path / "arg.txt").write_text("from-arg-file\n")
    env = {TOKEN_ENV: "fixed", TOKENS_FILE_ENV: str(tmp_path / "env.txt")}
    by_env = TokenSource.from_env(env)
    assert [by_env.valid(bearer(t)) for t in ("fixed", "from-env-file", "from-arg-file")] == [True, True, False]
    by_arg = TokenSource.from_env(env, tokens_file=tmp_path / "arg.txt")
    assert [by_arg.valid(bearer(t)) for t in ("fixed", "from-env-file", "from-arg-file")] == [True, False, True]


def test_a_tokens_file_that_does_not_exist_is_refused_naming_it(tmp_path):
    missing = tmp_path / "nope" / "tokens.txt"
    with pytest.raises(NoTokenError, match=f"^the tokens file {missing} does not exist$"):
        TokenSource(["fixed"], missing)
    with pytest.raises(NoTokenError, match="nope/tokens.txt does not exist"):
        TokenSource.from_env({TOKENS_FILE_ENV: str(missing)})


def test_rotation_follows_the_file_and_a_removed_file_drops_its_tokens(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("old\n")
    source = TokenSource(["env"], tokens)
    assert [source.valid(bearer(t)) for t in ("old", "new", "env")] == [True, False, True]
    tokens.write_text("old\nnew\n")  # both valid while the clients move
    assert [source.valid(bearer(t)) for t in ("old", "new")] == [True, True] and source.count() == 3
    tokens.write_text("new\n")  # the old one retired
    assert [source.valid(bearer(t)) for t in ("old", "new")] == [False, True] and source.count() == 2
    tokens.unlink()  # removed mid-rotation: its tokens are no longer valid, the fixed ones still are
    assert [source.valid(bearer(t)) for t in ("new", "env")] == [False, True] and source.count() == 1
    tokens.write_text("back\n")
    assert [source.valid(bearer(t)) for t in ("back", "new", "env")] == [True, False, True]


def test_a_file_removed_before_the_first_request_gives_no_tokens_and_the_fixed_ones_still_pass(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("from-file\n")
    source = TokenSource(["env"], tokens)  # the file exists at start
    tokens.unlink()  # and is gone before anything asked for a token
    assert [source.valid(bearer(t)) for t in ("env", "from-file")] == [True, False] and source.count() == 1
    assert source.count() == 1  # asked again while it is still missing
    tokens.write_text("from-file\n")
    assert source.valid(bearer("from-file")) is True and source.count() == 2


def _rewrite_same_stamp(path: Path, text: str) -> None:
    """Replace the file's content keeping its size and modification time (what the re-read is keyed on)."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_file_is_re_read_when_its_size_or_mtime_changes_and_only_then(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("aaaa\n")
    source = TokenSource(tokens_file=tokens)
    assert source.valid(bearer("aaaa")) is True
    _rewrite_same_stamp(tokens, "bbbb\n")  # same size, same mtime: the cached tokens stay (no read per request)
    assert source.valid(bearer("aaaa")) is True and source.valid(bearer("bbbb")) is False
    st = tokens.stat()
    os.utime(tokens, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # only the mtime moves: re-read
    assert source.valid(bearer("bbbb")) is True and source.valid(bearer("aaaa")) is False
    _rewrite_same_stamp(tokens, "cccc\n")
    tokens.write_text(tokens.read_text() + "dd\n")  # the size changes (mtime may not, on a coarse clock): re-read
    os.utime(tokens, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert [source.valid(bearer(t)) for t in ("bbbb", "cccc", "dd")] == [False, True, True]

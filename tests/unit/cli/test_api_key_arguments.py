"""Where the node's API key comes from (services/cli/arguments.py): --api-key, --api-key-file or
$MESH_LLM_API_KEY; anything unusable is one line for the user."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.arguments import ApiKeyChoiceError, api_key_from_args
from services.node.config import API_KEY_ENV

KEY = "sk-mesh-0123456789"


def test_no_key_anywhere_is_none() -> None:
    assert api_key_from_args(None, None, False, {}) is None
    assert api_key_from_args(None, None, True, {}) is None
    assert api_key_from_args(None, None, False, {API_KEY_ENV: ""}) is None  # empty: unset


def test_the_flag_the_file_or_the_environment(tmp_path: Path) -> None:
    assert api_key_from_args(KEY, None, False, {}) == KEY
    assert api_key_from_args(None, None, False, {API_KEY_ENV: KEY}) == KEY
    assert api_key_from_args("flag-key", None, False, {API_KEY_ENV: KEY}) == "flag-key"  # a flag wins
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert api_key_from_args(None, key_file, False, {API_KEY_ENV: "env-key"}) == KEY


@pytest.mark.parametrize(
    ("api_key", "file_text", "no_api_key", "environ", "message"),
    [
        ("", None, False, {}, "--api-key: the API key is empty"),
        ("has space", None, False, {}, "--api-key: the API key must be visible ASCII"),
        (None, "", False, {}, "the API key is empty"),
        (None, None, True, {API_KEY_ENV: KEY}, f"--no-api-key, but {API_KEY_ENV} is set"),
        (None, None, False, {API_KEY_ENV: "a b"}, f"{API_KEY_ENV}: the API key must be visible ASCII"),
    ],
)
def test_unusable_choices_say_why(
    tmp_path: Path,
    api_key: str | None,
    file_text: str | None,
    no_api_key: bool,
    environ: dict[str, str],
    message: str,
) -> None:
    key_file = None
    if file_text is not None:
        key_file = tmp_path / "key"
        key_file.write_text(file_text)
    with pytest.raises(ApiKeyChoiceError, match=message):
        api_key_from_args(api_key, key_file, no_api_key, environ)


def test_an_unreadable_key_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyChoiceError, match="cannot read it"):
        api_key_from_args(None, tmp_path / "missing", False, {})
    with pytest.raises(ApiKeyChoiceError, match="cannot read it"):
        api_key_from_args(None, tmp_path, False, {})  # a directory

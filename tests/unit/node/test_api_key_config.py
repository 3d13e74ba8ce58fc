"""The API key's place in the node's home (services/node/config.py): its own 0600 file, not node.toml."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.node.config import (
    MAX_API_KEY_BYTES,
    ConfigError,
    InvalidApiKey,
    NodeConfig,
    api_key_file,
    check_api_key,
    read_api_key,
    save_api_key,
)

KEY = "sk-mesh-0123456789"


def test_the_key_is_saved_for_the_nodes_user_only_and_read_back(tmp_path: Path) -> None:
    save_api_key(tmp_path, KEY)
    assert stat.S_IMODE(api_key_file(tmp_path).stat().st_mode) == 0o600
    assert read_api_key(tmp_path) == KEY
    save_api_key(tmp_path, KEY + "2")  # a restart with another key replaces it
    assert read_api_key(tmp_path) == KEY + "2"


def test_a_node_without_a_key_has_no_key_file(tmp_path: Path) -> None:
    assert read_api_key(tmp_path) is None
    save_api_key(tmp_path, KEY)
    save_api_key(tmp_path, None)
    assert read_api_key(tmp_path) is None and not api_key_file(tmp_path).exists()


def test_a_key_file_with_a_trailing_newline_is_fine_and_garbage_is_an_error(tmp_path: Path) -> None:
    api_key_file(tmp_path).write_text(KEY + "\n")
    assert read_api_key(tmp_path) == KEY
    api_key_file(tmp_path).write_text("two words")
    with pytest.raises(ConfigError, match="visible ASCII"):
        read_api_key(tmp_path)


@pytest.mark.parametrize(
    ("key", "why"),
    [("", "empty"), ("a b", "visible ASCII"), ("tab\there", "visible ASCII"), ("ключ", "visible ASCII")],
)
def test_keys_must_fit_in_a_header(key: str, why: str) -> None:
    with pytest.raises(InvalidApiKey, match=why):
        check_api_key(key)


def test_keys_have_a_size_limit() -> None:
    assert check_api_key("k" * MAX_API_KEY_BYTES)
    with pytest.raises(InvalidApiKey, match="longer than"):
        check_api_key("k" * (MAX_API_KEY_BYTES + 1))


def test_node_toml_says_a_key_is_required_but_never_holds_it(tmp_path: Path) -> None:
    config = NodeConfig(home=tmp_path, require_api_key=True, listen_all=True)
    config.save()
    save_api_key(tmp_path, KEY)
    assert KEY not in config.node_home.node_config.read_text() and KEY not in repr(config)
    loaded = NodeConfig.load(tmp_path)
    assert loaded.require_api_key and not loaded.no_api_key
    assert loaded.mesh_ingress_socket == tmp_path / "run" / "ingress.sock"

import errno
import os
import stat
from pathlib import Path

import pytest

from services.mesh.identity import IdentityError, load_or_create_identity
from services.mesh.invite import InviteToken
from services.mesh.membership import MeshMembership, load_or_create_membership
from services.node import home_files
from services.node.home_files import HomeWriteError


def test_identity_is_created_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    first = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(path)
    assert again.node_id == first.node_id
    assert len(first.node_id) == 32 and first.short_id == first.node_id[:8]


def test_damaged_identity_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_text("not a key")
    with pytest.raises(IdentityError, match="not a valid key"):
        load_or_create_identity(path)


def test_membership_is_kept_unless_a_join_token_says_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "mesh.toml"
    created = load_or_create_membership(path, None)
    assert load_or_create_membership(path, None) == created
    other = InviteToken.new_mesh()
    joined = load_or_create_membership(path, other)
    assert joined.mesh_id == other.mesh_id and joined.secret == other.secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every home file write fails as on a full disk (some file systems say so only at fsync)."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(home_files.os, "fsync", full)


def test_a_refused_mesh_config_write_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mesh.toml"
    before = load_or_create_membership(path, None)
    refuse_writes(monkeypatch)
    with pytest.raises(HomeWriteError) as refused:
        load_or_create_membership(path, InviteToken.new_mesh())
    assert str(refused.value) == f"cannot write {path}: No space left on device"
    assert MeshMembership.load(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.toml"]  # no temp file left


def test_a_refused_identity_leaves_no_key_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_writes(monkeypatch)
    with pytest.raises(HomeWriteError, match=r"identity\.key: No space left on device"):
        load_or_create_identity(tmp_path / "identity.key")
    assert list(tmp_path.iterdir()) == []


def test_rejoining_with_the_same_token_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mesh.toml"
    token = InviteToken.new_mesh()
    joined = load_or_create_membership(path, token)
    refuse_writes(monkeypatch)
    assert load_or_create_membership(path, token) == joined

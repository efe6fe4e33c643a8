"""Cluster model artifacts on disk: versioned, checksummed, authenticated, swapped atomically.

An artifact is one file ``<version>.rfmodel``: a JSON header line, then the pickled
``ClusterModel``. The header carries the format and feature-schema versions, created-at,
parameters, counts, the previous model's version (lineage) and an HMAC-SHA256 of the payload
keyed with the service's hash key: every replica and the batch job share that key, and an
artifact whose MAC or schema does not match is refused (pickle must never load untrusted
bytes). ``LATEST`` names the newest artifact; it is replaced with an atomic rename.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.service.core.clustering import ClusterModel
from ringfence.service.core.features import FEATURE_SCHEMA_VERSION

log = logging.getLogger(__name__)

FORMAT = "ringfence-cluster-model"
FORMAT_VERSION = 1
SUFFIX = ".rfmodel"
LATEST = "LATEST"


class ModelArtifactError(Exception):
    """An artifact is missing, corrupt, forged or for another feature schema."""


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    path: Path
    version: str
    created_at: float
    previous: str
    accounts: int
    clusters: int
    sha256: str


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """A directory of model artifacts, shared by replicas and the batch job."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key

    def save(self, model: ClusterModel, previous: str = "") -> ArtifactInfo:
        """Write an artifact and make it the latest. Safe against readers: both the artifact
        and LATEST appear only complete (write to a temp file, fsync, rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        header: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "schema_version": model.schema_version, "version": model.version,
            "created_at": model.fitted_at, "previous": previous,
            "params": dataclasses.asdict(model.params), "accounts": len(model.account_ids),
            "clusters": len(model.clusters), "sha256": hashlib.sha256(payload).hexdigest(),
            "mac": _mac(self._key, payload),
        }
        path = self.directory / f"{model.version}{SUFFIX}"
        _write_atomic(path, json.dumps(header).encode() + b"\n" + payload)
        _write_atomic(self.directory / LATEST, path.name.encode())
        return self._info(path, header)

    def latest_path(self) -> Path | None:
        try:
            name = (self.directory / LATEST).read_text().strip()
        except FileNotFoundError:
            return None
        if not name.endswith(SUFFIX) or "/" in name:
            raise ModelArtifactError(f"{self.directory / LATEST} does not name an artifact")
        return self.directory / name

    def load(self, path: Path) -> tuple[ClusterModel, ArtifactInfo]:
        """Read and verify an artifact; raises ModelArtifactError (the caller keeps its model)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelArtifactError(f"cannot read {path}: {exc.strerror}") from None
        head, sep, payload = data.partition(b"\n")
        try:
            header = json.loads(head) if sep else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ModelArtifactError(f"{path} is not a ringfence model artifact")
        if header.get("format_version") != FORMAT_VERSION:
            raise ModelArtifactError(f"{path}: format version {header.get('format_version')} "
                                     f"is not {FORMAT_VERSION}")
        if header.get("schema_version") != FEATURE_SCHEMA_VERSION:
            raise ModelArtifactError(
                f"{path}: feature schema {header.get('schema_version')} does not match this "
                f"service's schema {FEATURE_SCHEMA_VERSION}")
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise ModelArtifactError(f"{path}: checksum mismatch (truncated or corrupt)")
        if not hmac.compare_digest(_mac(self._key, payload), str(header.get("mac"))):
            raise ModelArtifactError(f"{path}: not signed with this service's key")
        model = pickle.loads(payload)
        if not isinstance(model, ClusterModel):
            raise ModelArtifactError(f"{path}: payload is not a ClusterModel")
        return model, self._info(path, header)

    def load_latest(self) -> tuple[ClusterModel, ArtifactInfo] | None:
        path = self.latest_path()
        return None if path is None else self.load(path)

    @staticmethod
    def _info(path: Path, header: dict[str, Any]) -> ArtifactInfo:
        return ArtifactInfo(path=path, version=str(header["version"]),
                            created_at=float(header["created_at"]),
                            previous=str(header.get("previous", "")),
                            accounts=int(header["accounts"]), clusters=int(header["clusters"]),
                            sha256=str(header["sha256"]))

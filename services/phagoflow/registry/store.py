"""Model versions in the object store: push, list, promote, rollback, fetch.

The state lives in one JSON object, ``models/<model>/registry.json``, read and rewritten by each
change. There is no lock: run one writer at a time (the training Job or an operator), which is
how the chart uses it (the training CronJob has ``concurrencyPolicy: Forbid``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from phagoflow.core.model_dir import (
    CARD_FILE,
    ONNX_FILE,
    TORCH_FILE,
    ModelCard,
    read_model_card,
)
from phagoflow.registry import DEFAULT_MODEL, DEFAULT_PREFIX
from phagoflow.registry.triton import pin_version, read_config
from phagoflow.services.objectstore import ObjectMissing, ObjectStore, sha256_hex

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PREFIX",
    "ModelRegistry",
    "RegistryError",
    "RegistryEvent",
    "RegistryState",
    "VersionInfo",
]

logger = logging.getLogger(__name__)

STATE_FILE = "registry.json"
CONFIG_FILE = "config.pbtxt"
_FILES = (ONNX_FILE, TORCH_FILE, CARD_FILE)  # card last: a version without it is incomplete


class RegistryError(ValueError):
    """A registry operation is not possible (unknown version, nothing to roll back, ...)."""


class VersionInfo(BaseModel):
    """One stored model version.

    Attributes
    ----------
    version : int
        Triton version folder (1, 2, ...).
    card_version : str
        The card's own version string (a content hash unless training named it).
    name : str
        Model name in the card.
    pushed_at : str
        ISO 8601 UTC time of the push.
    sha256 : dict of str to str
        File name → SHA-256 of the stored bytes.
    source : str
        Free text: where it came from (training Job name, manual push, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    card_version: str
    name: str
    pushed_at: str
    sha256: dict[str, str]
    source: str = ""


class RegistryEvent(BaseModel):
    """A promotion or rollback, with the gate's evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["promote", "rollback", "reject"]
    version: int
    previous: int | None
    at: str
    reason: str = ""
    gate: dict[str, Any] | None = None


class RegistryState(BaseModel):
    """Contents of ``registry.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    serving: int | None = None
    versions: list[VersionInfo] = Field(default_factory=list)
    history: list[RegistryEvent] = Field(default_factory=list)

    def get(self, version: int) -> VersionInfo:
        """The stored version ``version``; :class:`RegistryError` if there is none."""
        for v in self.versions:
            if v.version == version:
                return v
        known = [v.version for v in self.versions]
        raise RegistryError(f"no version {version} of {self.model} (stored: {known})")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The versions of one Triton model in one bucket.

    Parameters
    ----------
    store : ObjectStore
        The bucket (MinIO in production).
    model : str
        Triton model name = folder under ``prefix`` (``autophagy_unet``).
    prefix : str
        Repository root inside the bucket (``models``): Triton's ``--model-repository`` is
        ``s3://<host:port>/<bucket>/<prefix>``.
    """

    def __init__(
        self, store: ObjectStore, *, model: str = DEFAULT_MODEL, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if not model or "/" in model:
            raise ValueError(f"model must be a folder name, got {model!r}")
        self.store = store
        self.model = model
        self.root = f"{prefix.strip('/')}/{model}"

    # ------------------------------------------------------------------ state

    def key(self, *parts: str | int) -> str:
        """Object key under the model's folder."""
        return "/".join([self.root, *(str(p) for p in parts)])

    def state(self) -> RegistryState:
        """Current state (empty when nothing was pushed)."""
        doc = self.store.get_json(self.key(STATE_FILE))
        if doc is None:
            return RegistryState(model=self.model)
        return RegistryState.model_validate(doc)

    def _write_state(self, state: RegistryState) -> None:
        self.store.put_json(self.key(STATE_FILE), state.model_dump(mode="json"))

    def versions(self) -> list[VersionInfo]:
        """Stored versions, oldest first."""
        return sorted(self.state().versions, key=lambda v: v.version)

    def serving(self) -> int | None:
        """The version Triton is told to serve, or ``None``."""
        return self.state().serving

    # ------------------------------------------------------------------ push / fetch

    def push(self, model_dir: Path, *, source: str = "") -> VersionInfo:
        """Store a verified model folder as the next version (not promoted).

        A folder whose ``model.onnx`` equals a stored version's is not stored twice: that
        version is returned.

        Raises
        ------
        ModelDirError
            The folder fails its card's checksums.
        """
        model_dir = Path(model_dir)
        card = read_model_card(model_dir)  # verifies model.pt and model.onnx checksums
        data = {name: (model_dir / name).read_bytes() for name in _FILES}
        sha = {name: sha256_hex(b) for name, b in data.items()}
        state = self.state()
        for v in state.versions:
            if v.sha256.get(ONNX_FILE) == sha[ONNX_FILE]:
                logger.info("model.onnx already stored as version %d", v.version)
                return v
        version = max((v.version for v in state.versions), default=0) + 1
        for name in _FILES:
            ctype = "application/json" if name == CARD_FILE else "application/octet-stream"
            self.store.put_bytes(self.key(version, name), data[name], content_type=ctype)
        info = VersionInfo(
            version=version,
            card_version=card.version,
            name=card.name,
            pushed_at=_now(),
            sha256=sha,
            source=source,
        )
        self._write_state(state.model_copy(update={"versions": [*state.versions, info]}))
        return info

    def card(self, version: int) -> ModelCard:
        """The stored card of ``version`` (its checksum verified), without the weights."""
        info = self.state().get(version)
        data = self.store.get_bytes(self.key(version, CARD_FILE), sha256=info.sha256[CARD_FILE])
        return ModelCard.model_validate_json(data)

    def fetch(self, version: int, dest: Path) -> Path:
        """Download version ``version`` into ``dest`` (a model folder), checksums verified."""
        info = self.state().get(version)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            data = self.store.get_bytes(self.key(version, name), sha256=info.sha256[name])
            (dest / name).write_bytes(data)
        read_model_card(dest)
        return dest

    # ------------------------------------------------------------------ serving

    def config_text(self) -> str | None:
        """The stored Triton ``config.pbtxt``, or ``None``."""
        try:
            return self.store.get_bytes(self.key(CONFIG_FILE)).decode()
        except ObjectMissing:
            return None

    def promote(
        self,
        version: int,
        *,
        base_config: str | None = None,
        reason: str = "",
        gate: dict[str, Any] | None = None,
        action: Literal["promote", "rollback"] = "promote",
    ) -> RegistryState:
        """Serve ``version``: rewrite ``config.pbtxt`` and record the change.

        Parameters
        ----------
        version : int
            A stored version.
        base_config : str, optional
            Triton config text to pin (e.g. ``model_repository/autophagy_unet/config.pbtxt``);
            default: the stored ``config.pbtxt``.
        reason : str
            Recorded in the history.
        gate : dict, optional
            The gate's evidence (:meth:`GateDecision.to_dict`).

        Raises
        ------
        RegistryError
            Unknown version, or no config to pin (first promotion without ``base_config``).
        ValueError
            ``base_config`` is not a valid Triton config.
        """
        state = self.state()
        state.get(version)
        text = base_config if base_config is not None else self.config_text()
        if text is None:
            raise RegistryError(
                f"no {self.key(CONFIG_FILE)} yet: pass the Triton config to pin "
                "(--triton-config model_repository/autophagy_unet/config.pbtxt)"
            )
        read_config(text)  # fail before writing anything
        self.store.put_bytes(
            self.key(CONFIG_FILE),
            pin_version(text, version, name=self.model).encode(),
            content_type="text/plain",
        )
        event = RegistryEvent(
            action=action,
            version=version,
            previous=state.serving,
            at=_now(),
            reason=reason,
            gate=gate,
        )
        new = state.model_copy(update={"serving": version, "history": [*state.history, event]})
        self._write_state(new)
        return new

    def record_rejection(self, version: int, *, reason: str, gate: dict[str, Any]) -> None:
        """Record that the gate kept ``version`` out of service."""
        state = self.state()
        state.get(version)
        event = RegistryEvent(
            action="reject",
            version=version,
            previous=state.serving,
            at=_now(),
            reason=reason,
            gate=gate,
        )
        self._write_state(state.model_copy(update={"history": [*state.history, event]}))

    def rollback(self, *, to: int | None = None, reason: str = "") -> RegistryState:
        """Serve the version that served before the current one (or ``to``).

        Raises
        ------
        RegistryError
            Nothing is serving, or no earlier version was ever served.
        """
        state = self.state()
        if state.serving is None:
            raise RegistryError(f"{self.model}: nothing is serving, nothing to roll back")
        if to is None:
            stack = _served_stack(state.history)
            if len(stack) < 2:
                raise RegistryError(
                    f"{self.model}: version {state.serving} is the first served; "
                    "pass a version to roll back to"
                )
            to = stack[-2]
        return self.promote(to, reason=reason or "rollback", action="rollback")


def _served_stack(history: list[RegistryEvent]) -> list[int]:
    """Versions served in order, with rolled-back ones popped (the rollback targets)."""
    stack: list[int] = []
    for e in history:
        if e.action == "promote":
            stack.append(e.version)
        elif e.action == "rollback":
            if e.version in stack:
                del stack[len(stack) - 1 - stack[::-1].index(e.version) :]
            stack.append(e.version)
    return stack


def dumps_state(state: RegistryState) -> str:
    """Pretty JSON of a state (for ``phagoflow model list --json``)."""
    return json.dumps(state.model_dump(mode="json"), indent=2)

"""Read Triton ``config.pbtxt`` files and pin the serving version (Triton's own protobuf)."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

__all__ = ["pin_version", "read_config"]


def read_config(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's ``ModelConfig`` message.

    Raises
    ------
    ValueError
        The text is not a valid ``ModelConfig`` (unknown field, bad enum value, syntax).
    """
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"invalid Triton config.pbtxt: {exc}") from exc


def pin_version(text: str, version: int, *, name: str | None = None) -> str:
    """``config.pbtxt`` text serving exactly ``version`` (``version_policy: specific``).

    Parameters
    ----------
    text : str
        A Triton config (comments are dropped in the output).
    version : int
        Version folder to serve (>= 1).
    name : str, optional
        Model name to set (must equal the repository folder); default: keep.

    Returns
    -------
    str
        The config as protobuf text format, with a header comment.
    """
    if version < 1:
        raise ValueError(f"Triton versions are positive integers, got {version}")
    config = read_config(text)
    if name is not None:
        config.name = name
    config.version_policy.Clear()
    config.version_policy.specific.versions.append(version)
    header = f"# written by phagoflow model promote: serving version {version}\n"
    return header + text_format.MessageToString(config)

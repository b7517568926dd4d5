"""Settings of the review app, read from ``PHAGOFLOW_REVIEW_*`` environment variables."""

from __future__ import annotations

import secrets

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ReviewSettings"]


class ReviewSettings(BaseSettings):
    """Review-app settings (frozen).

    Attributes
    ----------
    token : SecretStr or None
        Bearer token every data request (reads included) and every write must carry
        (``PHAGOFLOW_REVIEW_TOKEN``). ``None``: a random one is generated at start-up (see
        :meth:`with_token`) and printed by ``phagoflow review``.
    users : dict of str to SecretStr
        Optional personal tokens, user name → token (``PHAGOFLOW_REVIEW_USERS='{"ana": "..."}'``).
        A write made with a personal token is attributed to that user, whatever name the client
        declares; with the shared ``token`` the client's declared name is recorded.
    max_upload_bytes : int
        Largest accepted request body for a mask upload, in bytes (default 16 MiB).
    user_pattern : str
        Regular expression a user or rater name must match (it becomes a file name).
    blind : bool
        Blind-rating mode (``PHAGOFLOW_REVIEW_BLIND``): masks are served only through rating
        sessions (slots A/B), never by method name; per-method counts, disagreement and
        provenance are withheld, and curation is off — nothing lets a rater tell which method
        made a shown mask.
    """

    model_config = SettingsConfigDict(
        env_prefix="PHAGOFLOW_REVIEW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    token: SecretStr | None = None
    users: dict[str, SecretStr] = Field(default_factory=dict)
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    user_pattern: str = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
    blind: bool = False

    def with_token(self) -> tuple[ReviewSettings, bool]:
        """Return settings that certainly hold a token, and whether it was generated now."""
        if self.token is not None and self.token.get_secret_value():
            return self, False
        generated = SecretStr(secrets.token_urlsafe(24))
        return self.model_copy(update={"token": generated}), True

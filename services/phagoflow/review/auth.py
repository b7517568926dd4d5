"""Bearer-token authentication of the review app: who made a request, and the one check for /api/.

The app holds one shared token and optional personal tokens (user → token) of
:class:`~phagoflow.review.settings.ReviewSettings` as :class:`Tokens` in ``app.state.tokens``.
:func:`require_api_token` is the HTTP middleware that turns away every ``/api/`` request without
a valid token (reads included); :func:`authenticate` is the FastAPI dependency that tells a route
whose token it was (:class:`Identity`); :data:`router` serves ``GET /api/auth`` (a client checks
its token there). Tokens are compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from phagoflow.review.settings import ReviewSettings

__all__ = ["Auth", "Identity", "Tokens", "authenticate", "identify", "require_api_token", "router"]


@dataclass(frozen=True)
class Identity:
    """Who made an authenticated request: a user of a personal token, or ``None`` (shared)."""

    user: str | None


@dataclass(frozen=True)
class Tokens:
    """The tokens a request may carry, as UTF-8 bytes.

    Attributes
    ----------
    shared : bytes
        The shared token (``PHAGOFLOW_REVIEW_TOKEN``); its requests have no user.
    personal : dict of str to bytes
        User name → that user's personal token (``PHAGOFLOW_REVIEW_USERS``).
    """

    shared: bytes
    personal: dict[str, bytes]

    @classmethod
    def from_settings(cls, settings: ReviewSettings) -> Tokens:
        """The tokens of ``settings``, whose ``token`` must be set (not checked here)."""
        shared = settings.token.get_secret_value() if settings.token is not None else ""
        return cls(
            shared=shared.encode(),
            personal={
                user: tok.get_secret_value().encode() for user, tok in settings.users.items()
            },
        )


def identify(tokens: Tokens, header: str) -> Identity:
    """The identity of an ``Authorization`` header; :class:`HTTPException` 401 otherwise.

    Parameters
    ----------
    tokens : Tokens
        The app's tokens.
    header : str
        The request's ``Authorization`` header (``""`` when absent).

    Raises
    ------
    HTTPException
        401 with ``WWW-Authenticate: Bearer``: no bearer token, or not one of ``tokens``.
    """
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "authentication required: send 'Authorization: Bearer <token>' "
            "(printed by `phagoflow review`, or PHAGOFLOW_REVIEW_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.strip().encode()
    for user, tok in tokens.personal.items():
        if hmac.compare_digest(given, tok):
            return Identity(user)
    if hmac.compare_digest(given, tokens.shared):
        return Identity(None)
    raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> Identity:
    """FastAPI dependency: check ``Authorization: Bearer <token>``; 401 otherwise."""
    return identify(request.app.state.tokens, request.headers.get("authorization", ""))


#: A route parameter holding the caller's :class:`Identity` (checked by :func:`authenticate`).
Auth = Annotated[Identity, Depends(authenticate)]


async def require_api_token(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """HTTP middleware: every /api/ request carries a valid token, reads included (one check).

    Parameters
    ----------
    request : Request
        The incoming request.
    call_next : callable
        The rest of the app.

    Returns
    -------
    Response
        The app's response, or the 401 JSON ``{"detail": ...}`` of :func:`identify`.
    """
    if request.url.path.startswith("/api/"):
        try:
            identify(request.app.state.tokens, request.headers.get("authorization", ""))
        except HTTPException as exc:
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
    return await call_next(request)


router = APIRouter()


@router.get("/api/auth")
def whoami(identity: Auth) -> dict[str, Any]:
    """Check a token; returns the user of a personal token (``null`` for the shared one)."""
    return {"ok": True, "user": identity.user}

"""What every route of the review app shares: the opened plate, the settings and an image cache.

:func:`~phagoflow.review.app.create_app` builds one :class:`ReviewContext` and keeps it in
``app.state.review``; a route asks for it with a :data:`Context` parameter (the FastAPI
dependency :func:`review_context`) instead of closing over the factory's locals. The context
also holds the lookups that turn request strings into catalogue entries or HTTP errors
(:meth:`ReviewContext.field_key`, :meth:`~ReviewContext.user_name`,
:meth:`~ReviewContext.not_blind`), and this module the response helpers the routes share
(:func:`raw_response`, :func:`nan_to_none`).
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response

from phagoflow.core.opera.catalogue import FieldKey
from phagoflow.review.auth import Identity
from phagoflow.review.results import ReviewResults
from phagoflow.review.settings import ReviewSettings

__all__ = [
    "Context",
    "ImageCache",
    "ReviewContext",
    "nan_to_none",
    "raw_response",
    "review_context",
]


def raw_response(array: npt.NDArray[Any]) -> Response:
    """Raw little-endian bytes of ``array`` with ``X-Shape`` and ``X-Dtype`` headers.

    Parameters
    ----------
    array : ndarray
        Any shape and numeric dtype, e.g. a (2, H, W) uint16 image or an (H, W) uint8 mask.

    Returns
    -------
    Response
        ``application/octet-stream`` in C order, ``X-Shape: "2,H,W"``, ``X-Dtype: "uint16"``,
        ``Cache-Control: no-store``.
    """
    arr = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return Response(
        content=arr.tobytes(),
        media_type="application/octet-stream",
        headers={
            "X-Shape": ",".join(map(str, arr.shape)),
            "X-Dtype": arr.dtype.name,
            "Cache-Control": "no-store",
        },
    )


def nan_to_none(value: float) -> float | None:
    """``value`` rounded to 4 decimals for JSON, or ``None`` when it is NaN (no data)."""
    return None if math.isnan(value) else round(value, 4)


class ImageCache:
    """A few recently loaded fields (the viewer asks for contrast and pixels back to back).

    Parameters
    ----------
    results : ReviewResults
        Where the images come from (:meth:`ReviewResults.image`: (2, H, W) float32).
    size : int
        How many fields are kept, least recently used dropped first.
    """

    def __init__(self, results: ReviewResults, size: int = 4) -> None:
        self._results = results
        self._size = size
        self._items: OrderedDict[FieldKey, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()  # sync endpoints run in a thread pool

    def get(self, key: FieldKey) -> npt.NDArray[np.float32]:
        """The (2, H, W) float32 channels of ``key``, [DsRed, pHluorin]."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = self._results.image(key)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return image


@dataclass(frozen=True)
class ReviewContext:
    """The state the routes of one app share.

    Attributes
    ----------
    results : ReviewResults
        The plate being reviewed.
    settings : ReviewSettings
        The app's settings (token set).
    page : str
        The HTML of ``GET /`` (:func:`~phagoflow.review.app.index_html`), read once.
    images : ImageCache
        Recently loaded fields of ``results``.
    """

    results: ReviewResults
    settings: ReviewSettings
    page: str
    images: ImageCache = field(init=False)
    _user_re: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", ImageCache(self.results))
        object.__setattr__(self, "_user_re", re.compile(self.settings.user_pattern))

    @property
    def blind(self) -> bool:
        """Blind-rating mode (:attr:`ReviewSettings.blind`)."""
        return self.settings.blind

    def field_key(self, name: str) -> FieldKey:
        """The catalogue key of field ``name``; :class:`HTTPException` 404 when there is none."""
        try:
            return self.results.field_key(name)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc

    def user_name(self, identity: Identity, declared: str | None) -> str:
        """Who to record: the user of a personal token, else the ``declared`` name (422 if bad).

        Parameters
        ----------
        identity : Identity
            The caller.
        declared : str or None
            The name the client gave (``user`` or ``rater``); must match
            :attr:`ReviewSettings.user_pattern` when the shared token was used.
        """
        if identity.user is not None:
            return identity.user
        if declared is None or not self._user_re.fullmatch(declared):
            raise HTTPException(
                422,
                f"give your name as 'user' matching {self.settings.user_pattern} "
                f"(got {declared!r:.40})",
            )
        return declared

    def not_blind(self, what: str) -> None:
        """Refuse (403, saying ``what`` is off) in blind mode; nothing otherwise."""
        if self.blind:
            raise HTTPException(
                403, f"blind mode: {what} (masks are shown only as slots of a rating session)"
            )


def review_context(request: Request) -> ReviewContext:
    """FastAPI dependency: the :class:`ReviewContext` of the app serving ``request``."""
    context: ReviewContext = request.app.state.review
    return context


#: A route parameter holding the app's :class:`ReviewContext`.
Context = Annotated[ReviewContext, Depends(review_context)]

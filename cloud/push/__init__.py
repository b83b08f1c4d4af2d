"""The two ways the cloud reaches a shopper: the wallet's message API and standard Web Push.

Both report failure the same way, so the code that fans offers out to opted-in shoppers can
decide without knowing the channel: `RecipientGone` means stop sending to that recipient
(delete the subscription or the opt-in), `PushError.retry` means the same push may work later
(outbox it), anything else is a mistake on our side that retrying will not fix.
"""

from __future__ import annotations


class PushError(Exception):
    """A push that did not arrive; str() says why in one line, without any secret."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry = retry  # the same push may succeed later (outage, rate limit)
        self.status = status  # the HTTP status the far end answered, if it answered
        self.retry_after = retry_after  # seconds the far end asked us to wait, if it said


class RecipientGone(PushError):
    """The recipient is no more: an expired Web Push subscription (404/410) or a wallet user
    the wallet does not know. Delete it; sending again cannot work."""


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header as seconds (its delta-seconds form; an HTTP date is ignored, and
    the caller's own back-off applies)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None

"""Relays that report bounces and complaints by HTTP (issue 12): thin handlers over
`feedback.sns`, `feedback.webhook` and the feedback use case.

    POST /webhooks/ses      Amazon SES through SNS: the SNS signature, the certificate on
                            an SNS host, the topic one of MAILER_SES_TOPIC_ARNS
    POST /webhooks/bounce   a JSON body signed with MAILER_WEBHOOK_SECRET (HMAC-SHA256)

Each route is 404 while its setting is unset, so an install that uses neither exposes
neither. A request that is unsigned, badly signed, signed off the SNS hosts or from
another topic gets 401 and changes nothing; a genuine one that cannot be read gets 400
(SNS then retries, which is what we want if we are the ones who are wrong); a certificate
that cannot be fetched just now gets 503. Each notification is recorded once, by SNS's
MessageId or the body's digest, however often it is delivered. The log says why a request
was refused, never the secret, a signature, a token or an address.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer.campaigns.feedback import Applied, apply_feedback, own_addresses, policy_from
from mailer.config import Settings
from mailer.errors import CertificateUnavailable, WebhookError
from mailer.feedback.sns import Fetch, SnsVerifier, ses_feedback
from mailer.feedback.webhook import SIGNATURE_HEADER, body_key, generic_feedback, signature_valid
from mailer.logs import fields
from mailer.models import Feedback
from mailer.store import Store
from mailer.tokens import TokenSigner

logger = logging.getLogger("mailer.web")

SES_MAX_BODY_BYTES = 320 * 1024
"""An SNS message is at most 256 KiB, plus its JSON envelope."""

T = TypeVar("T")
P = ParamSpec("P")


class Webhooks:
    def __init__(
        self,
        *,
        store: Store,
        signer: TokenSigner,
        settings: Settings,
        fetch: Fetch,
        now: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.signer = signer
        self.now = now
        self.policy = policy_from(settings)
        self.own = own_addresses(settings)
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value().encode("utf-8") if secret else None
        self._sns = (
            SnsVerifier(fetch, topic_arns=settings.ses_topic_arns)
            if settings.ses_topic_arns
            else None
        )
        self._threads = anyio.CapacityLimiter(4)  # as the pages: below the store's pool

    async def ses(self, request: Request) -> Response:
        if self._sns is None:
            raise HTTPException(404)
        body = await request.body()
        try:
            # Fetching a certificate (the first time) and the RSA check leave the loop free.
            message = await self._thread(self._sns.verify, body)
            if message.type == "SubscriptionConfirmation":
                await self._thread(self._sns.confirm, message)
                logger.info(fields(event="ses-subscription-confirmed", topic=message.topic_arn))
                return JSONResponse({"result": "subscription confirmed"})
            if message.type == "UnsubscribeConfirmation":
                logger.warning(fields(event="ses-unsubscribed", topic=message.topic_arn))
                return JSONResponse({"result": "noted"})
            feedback = ses_feedback(message, own=self.own)
        except WebhookError as exc:
            return self._refused("ses", exc)
        applied = await self._apply(feedback, key=f"sns:{message.message_id}")
        return _result(applied)

    async def bounce(self, request: Request) -> Response:
        if self._secret is None:
            raise HTTPException(404)
        body = await request.body()
        try:
            if not signature_valid(body, request.headers.get(SIGNATURE_HEADER), self._secret):
                raise WebhookError(f"no valid {SIGNATURE_HEADER}")
            feedback = generic_feedback(body)
        except WebhookError as exc:
            return self._refused("bounce", exc)
        applied = await self._apply(feedback, key=body_key(body))
        return _result(applied)

    async def _apply(self, feedback: Feedback, *, key: str) -> Applied:
        return await self._thread(
            apply_feedback,
            self.store,
            feedback,
            signer=self.signer,
            policy=self.policy,
            now=self.now(),
            key=key,
            # Signed by SNS or with our secret: the address a relay names is its word.
            authenticated=True,
        )

    async def _thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._threads
        )

    def _refused(self, route: str, exc: WebhookError) -> Response:
        if isinstance(exc, CertificateUnavailable):
            status = 503
        else:
            status = 400 if exc.authenticated else 401
        logger.warning(
            fields(event="webhook-refused", route=route, status=status, reason=exc.message)
        )
        headers = {"Retry-After": "60"} if status == 503 else None
        return JSONResponse({"error": exc.message}, status_code=status, headers=headers)


def _result(applied: Applied) -> Response:
    return JSONResponse(
        {
            "kind": applied.kind.value,
            "disposition": applied.disposition.value,
            "actions": [a.value for a in applied.actions],
            "duplicate": applied.duplicate,
        }
    )

"""The cloud's client of the wallet's trade API (Alipay open-platform dialect).

Not a second Alipay client: requests are signed, sent and their answers verified by the
portal's `plaza.wallet.alipay.AlipayProvider` (RSA2 over the sorted parameters, the answer's
signature checked over its exact bytes, our own trust anchors, 5 s timeouts, no redirects),
and notifies are verified by `plaza.wallet.rsa2.verify_notify`. This module only knows the
trade methods' parameters. See docs/decisions.md (2026-12-06) for why not python-alipay-sdk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from plaza.wallet import http, rsa2
from plaza.wallet.alipay import AlipayProvider
from plaza.wallet.base import LoginError
from plaza.wallet.config import WalletConfig

PAY_METHOD = "alipay.trade.wap.pay"  # the phone's cashier (page.pay is the desktop one)
NOT_FOUND = "ACQ.TRADE_NOT_EXIST"


class TradeError(Exception):
    """The wallet refused a trade call (`code`: its sub_code) or could not be reached
    (`unreachable`). str() is safe to show and log."""

    def __init__(self, message: str, code: str = "", unreachable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.unreachable = unreachable


def yuan(amount: int) -> str:
    """Fen as the dialect's yuan string: 1234 -> "12.34"."""
    return f"{amount // 100}.{amount % 100:02d}"


@dataclass(frozen=True)
class TradeSettings:
    """The merchant app the cloud trades as, at one wallet gateway."""

    gateway_url: str
    app_id: str
    seller_id: str
    app_private_key_file: str
    wallet_public_key_file: str
    ca_file: str = ""


class TradeClient:
    def __init__(self, settings: TradeSettings, *, clock: Callable[[], float] = time.time) -> None:
        if not (settings.app_id and settings.app_private_key_file):
            raise ValueError("payments need the wallet app_id and app private key")
        config = WalletConfig(
            dialect="alipay",
            app_id=settings.app_id,
            authorize_url=settings.gateway_url,  # not used: payments sign nobody in
            gateway_url=settings.gateway_url,
            app_private_key_file=settings.app_private_key_file,
            wallet_public_key_file=settings.wallet_public_key_file,
            ca_file=settings.ca_file,
        )
        self.provider = AlipayProvider(config, clock=clock)
        self.app_id = settings.app_id
        self.seller_id = settings.seller_id
        self.gateway_url = settings.gateway_url

    def call(self, method: str, biz: Mapping[str, Any], **params: str) -> dict[str, Any]:
        """One signed gateway call: the verified answer, or TradeError."""
        try:
            with http.new_session(self.provider.ca_file, self.provider.pool) as session:
                return self.provider.call(session, method, params, biz)
        except LoginError as exc:
            raise TradeError(str(exc), exc.code, exc.reason == "unreachable") from None

    def _order(self, out_trade_no: str, amount: int, subject: str) -> dict[str, Any]:
        biz = {"out_trade_no": out_trade_no, "total_amount": yuan(amount), "subject": subject}
        if self.seller_id:
            biz["seller_id"] = self.seller_id
        return biz

    def create(self, out_trade_no: str, amount: int, subject: str, notify_url: str) -> str:
        """alipay.trade.create: the wallet's trade_no. The same order again is the same trade."""
        answer = self.call(
            "alipay.trade.create", self._order(out_trade_no, amount, subject), notify_url=notify_url
        )
        return str(answer.get("trade_no", ""))

    def pay_url(
        self, out_trade_no: str, amount: int, subject: str, notify_url: str, return_url: str
    ) -> str:
        """The signed URL that sends the shopper's browser to the wallet's cashier."""
        biz = {**self._order(out_trade_no, amount, subject), "product_code": "QUICK_WAP_WAY"}
        params = self.provider.request_params(
            PAY_METHOD, {"notify_url": notify_url, "return_url": return_url}, biz
        )
        sep = "&" if "?" in self.gateway_url else "?"
        return f"{self.gateway_url}{sep}{urlencode(params)}"

    def query(self, out_trade_no: str) -> dict[str, Any] | None:
        """alipay.trade.query: the trade as the wallet knows it; None if it knows none."""
        try:
            return self.call("alipay.trade.query", {"out_trade_no": out_trade_no})
        except TradeError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise

    def refund(self, out_trade_no: str, amount: int, out_request_no: str, reason: str) -> dict:
        """alipay.trade.refund: once per out_request_no, however often it is sent."""
        biz = {
            "out_trade_no": out_trade_no,
            "refund_amount": yuan(amount),
            "out_request_no": out_request_no,
            "refund_reason": reason,
        }
        return self.call("alipay.trade.refund", biz)

    def close(self, out_trade_no: str) -> None:
        """alipay.trade.close: an unpaid trade will never be paid."""
        self.call("alipay.trade.close", {"out_trade_no": out_trade_no})

    def verify_notify(self, params: Mapping[str, str]) -> bool:
        """Whether an asynchronous notify was signed by the wallet."""
        return rsa2.verify_notify(params, self.provider.wallet_key)

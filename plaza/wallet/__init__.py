"""Wallet login for the portal: one provider interface, two dialects.

`make_provider(config.wallet)` gives an object with `start(redirect_uri)`,
`finish(args, transaction, redirect_uri)` and `pass_url(link, title)`; see `plaza.wallet.base`
for the contract. Key files
and the client secret are read here, at startup, so a bad configuration fails before the first
shopper arrives rather than during their login.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from plaza.wallet.base import LoginError, WalletProvider, WalletUser, origin_of
from plaza.wallet.config import WalletConfig

__all__ = ["LoginError", "WalletProvider", "WalletUser", "make_provider", "wallet_origin"]


def make_provider(
    config: WalletConfig, *, clock: Callable[[], float] = time.time
) -> WalletProvider:
    """The provider for `config.dialect`; ValueError (incl. rsa2.KeyFileError) on bad config."""
    if config.dialect == "oidc":
        from plaza.wallet.oidc import OidcProvider

        return OidcProvider(config, clock=clock)
    if config.dialect == "alipay":
        from plaza.wallet.alipay import AlipayProvider

        return AlipayProvider(config, clock=clock)
    raise ValueError(f"[wallet] dialect: 'oidc' or 'alipay', got {config.dialect!r}")


def wallet_origin(config: WalletConfig) -> str:
    """The origin of the wallet's pages for `config.dialect` (where pass_url points), without
    building a provider: cheap enough for every response, and no key files read."""
    return origin_of(config.authorize_url if config.dialect == "alipay" else config.issuer)

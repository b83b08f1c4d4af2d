"""The lab's sandbox wallet: an OpenID provider and an Alipay-style open platform in one.

It is strict where real wallets are strict (exact redirect URIs, PKCE S256, single-use codes
that expire, RSA2 request signatures, signed responses), so the portal's login is tested
against refusals and not just the happy path. Nothing here is meant for production.
"""

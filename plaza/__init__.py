"""The bottom floor: what the router and the cloud both speak.

The router (gateway, portal) and the cloud are separate programs on separate machines, run and
upgraded by separate people; what they share is a wire protocol. That protocol lives here:
device request signing, the usage record's fields, the validators both ends apply to the same
values, language fallback, CSRF, the wallet client, TLS and compression recipes, log format.
This package imports nothing from `gateway`, `portal` or `cloud` (tests/unit/test_imports.py).
"""

"""User tokens for clients: re-exports of `kernel_ext.functions.auth`.

The JWT configuration lives in `functions/` so that both `client/` and `sync/` can use it
without `sync/` importing `client/`; this module keeps the old import path working.
"""

from __future__ import annotations

from kernel_ext.functions.auth import AuthConfig, claims_of, make_dev_token

__all__ = ["AuthConfig", "claims_of", "make_dev_token"]

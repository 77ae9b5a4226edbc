"""Every exception the library raises, in one tree.

::

    StoreError
    ├── ValidationError (also ValueError)        a value, argument or document is not acceptable
    │   ├── ArgumentError                          function arguments fail their validator
    │   ├── ReturnsError                           a function's return value fails `returns=`
    │   └── SchemaViolation                        a write does not match the table's schema
    ├── SchemaError (also ValueError)             a schema definition is invalid
    ├── QueryError (also ValueError)              an ill-formed query: bad index range, unknown
    │                                              index, bad filter expression, unique() with >1
    ├── DocumentNotFound (also KeyError)          patch/replace/delete on a missing document
    ├── TransactionError
    │   ├── ConflictError                          OCC gave up after its retries
    │   ├── HistoryUnavailable                     a read as of an earlier ts cannot be exact
    │   └── TransactionClosed (also RuntimeError)  a ctx used after its function returned
    ├── FunctionError
    │   ├── UnknownFunction (also LookupError)     no (public) function at that path
    │   └── WrongFunctionKind                      a query called as a mutation, etc.
    ├── PersistenceError                          storage failed (disk, lock, corrupt file)
    │   └── StoreLocked                            another process owns the store file
    └── SyncError                                 remote protocol problems (server issue)
        ├── ProtocolError                          a peer broke the wire protocol
        ├── AuthenticationError                    a token or admin key was refused
        └── ConnectionClosed

`ConvexError` is separate on purpose: it is the application's own error, raised by user code,
and its `.data` travels to every client unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "AuthenticationError",
    "ConflictError",
    "ConnectionClosed",
    "ConvexError",
    "DocumentNotFound",
    "FunctionError",
    "HistoryUnavailable",
    "PersistenceError",
    "ProtocolError",
    "QueryError",
    "ReturnsError",
    "SchemaError",
    "SchemaViolation",
    "StoreError",
    "StoreLocked",
    "SyncError",
    "TransactionClosed",
    "TransactionError",
    "UnknownFunction",
    "ValidationError",
    "WrongFunctionKind",
]


class StoreError(Exception):
    """Root of every error the library raises (except `ConvexError`)."""


class ValidationError(StoreError, ValueError):
    """A value, argument or document is not acceptable; the message gives path and rule."""


class ArgumentError(ValidationError):
    """A function's arguments do not match its `args=` validator."""


class ReturnsError(ValidationError):
    """A function's return value does not match its `returns=` validator."""


class SchemaViolation(ValidationError):
    """A write would store a document that does not match its table's schema."""


class SchemaError(StoreError, ValueError):
    """A schema definition (tables, fields, indexes) breaks a rule."""


class QueryError(StoreError, ValueError):
    """A query is ill-formed: bad index range, unknown index, bad filter, failed unique()."""


class DocumentNotFound(StoreError, KeyError):
    """patch/replace/delete was given the id of a document that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TransactionError(StoreError):
    """A transaction could not commit."""


class ConflictError(TransactionError):
    """Optimistic concurrency control kept failing: other commits changed what this read."""


class HistoryUnavailable(TransactionError):
    """A read as of an earlier timestamp was asked for, but the store keeps only the latest
    version of each document and cannot show that nothing the read depends on changed since
    (a later commit wrote into it, or that ts is older than the write history kept)."""


class TransactionClosed(TransactionError, RuntimeError):
    """A ctx (or query builder) was used after its function had returned."""


class FunctionError(StoreError):
    """Problems finding or calling a function."""


class UnknownFunction(FunctionError, LookupError):
    """No function (or no public function, for clients) is registered at that path."""


class WrongFunctionKind(FunctionError, TypeError):
    """A function was called as the wrong kind (e.g. a query through `client.mutation`)."""


class PersistenceError(StoreError):
    """The storage layer failed: disk error, corrupt or incompatible store file."""


class StoreLocked(PersistenceError):
    """Another process owns the store file; the message names it."""


class SyncError(StoreError):
    """Errors of the remote client and server."""


class ProtocolError(SyncError):
    """A peer sent a message that breaks the protocol."""


class AuthenticationError(SyncError):
    """A user token (JWT) or admin key could not be verified: forged, expired, for another
    issuer or audience, or no way to verify it was configured."""


class ConnectionClosed(SyncError):
    """The connection to the server is closed."""


class ConvexError(Exception):
    """An application error whose `data` reaches the caller unchanged.

    Raise it from a function handler to report an expected failure to clients::

        raise ConvexError({"code": "NOT_FOUND", "id": user_id})

    Args:
        data: any Convex value; a string is also the message.
    """

    def __init__(self, data: Any = None) -> None:
        self.data = data
        super().__init__(data if isinstance(data, str) else repr(data))

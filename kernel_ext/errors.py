"""Every exception the library raises, in one tree.

::

    StoreError
    ├── ValidationError (also ValueError)        a value, argument or document is not acceptable
    │   ├── ArgumentError                          function arguments fail their validator
    │   ├── ReturnsError                           a function's return value fails `returns=`
    │   └── SchemaViolation                        a write does not match the table's schema
    ├── SchemaError (also ValueError)             a schema definition is invalid
    ├── HeaderError (also ValueError)             a magic cell's header breaks the grammar
    │   └── UnknownValidator (also AttributeError)  `v.strin()`: no such validator builder
    ├── QueryError (also ValueError)              an ill-formed query: bad index range, unknown
    │                                              index, bad filter expression, unique() with >1
    ├── DocumentNotFound (also KeyError)          patch/replace/delete on a missing document
    ├── TransactionError
    │   ├── ConflictError                          a commit that cannot succeed (never for
    │   │                                          contention: see the class)
    │   ├── HistoryUnavailable                     a read as of an earlier ts cannot be exact
    │   └── TransactionClosed (also RuntimeError)  a ctx used after its function returned
    ├── FunctionError
    │   ├── UnknownFunction (also LookupError)     no (public) function at that path
    │   ├── WrongFunctionKind                      a query called as a mutation, etc.
    │   ├── FunctionTimeout (also TimeoutError)    a function ran past its time limit
    │   ├── FunctionAborted                        a handler raised SystemExit, GeneratorExit...
    │   ├── TooManyRequests                        a connection's cap on calls/subscriptions
    │   └── RemoteFunctionError                    a function failed on a server; its
    │       └── Remote<X> (also <X>)               subclasses mirror the library class <X>
    │                                              whose code the server sent (Argument-,
    │                                              Conflict-, UnknownFunction, ...)
    ├── PersistenceError                          storage failed (disk, lock, corrupt file)
    │   ├── StoreLocked                            another process owns the store file
    │   ├── CommitOutcomeUnknown                   the connection to the database was lost
    │   │                                          while a commit ran: it may or may not have
    │   │                                          been written (never re-applied silently)
    │   └── CommitNotWritten                       the connection was lost while a commit ran,
    │                                              and the commit log shows it was not written
    │                                              (the store runs the mutation again)
    └── SyncError                                 remote protocol problems (server issue)
        ├── ProtocolError                          a peer broke the wire protocol
        ├── AuthenticationError                    a token or admin key was refused
        ├── ProtocolMisuse (also RuntimeError)     our transport drove a protocol out of order
        ├── ConnectionClosed
        └── ServerUnreachable (also ConnectionError)  no Convex server answers at that URL:
                                                  nothing listening, refused (403), not
                                                  Convex, or gone for longer than the bound

Every class has a `code`: errors cross the wire as that code plus a message, and
`remote_error(code, message)` picks the class a remote client raises.

`ConvexError` is separate on purpose: it is the application's own error, raised by user code,
and its `.data` travels to every client unchanged.

`StoreWarning` (a `UserWarning`) is the category of the library's warnings about code that runs
but likely does not do what was meant (a query of a table the schema does not declare, an int
compared with a float field); filter it with `warnings.filterwarnings`.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "RemoteFunctionAborted",
    "RemoteFunctionError",
    "RemoteFunctionTimeout",
    "RemoteValidationError",
    "RemoteArgumentError",
    "RemoteReturnsError",
    "RemoteSchemaViolation",
    "RemoteTooManyRequests",
    "RemoteSchemaError",
    "RemoteHeaderError",
    "RemoteQueryError",
    "RemoteDocumentNotFound",
    "RemoteTransactionError",
    "RemoteConflictError",
    "RemoteHistoryUnavailable",
    "RemoteUnknownFunction",
    "RemoteWrongFunctionKind",
    "RemoteAuthenticationError",
    "remote_error",
    "ArgumentError",
    "AuthenticationError",
    "ConflictError",
    "ConnectionClosed",
    "ServerUnreachable",
    "ConvexError",
    "DocumentNotFound",
    "FunctionAborted",
    "FunctionError",
    "FunctionTimeout",
    "HeaderError",
    "HistoryUnavailable",
    "PersistenceError",
    "ProtocolError",
    "ProtocolMisuse",
    "QueryError",
    "ReturnsError",
    "SchemaError",
    "SchemaViolation",
    "StoreError",
    "StoreLocked",
    "CommitOutcomeUnknown",
    "CommitNotWritten",
    "StoreWarning",
    "SyncError",
    "TooManyRequests",
    "TransactionClosed",
    "TransactionError",
    "UnknownFunction",
    "UnknownValidator",
    "ValidationError",
    "WrongFunctionKind",
]


class StoreError(Exception):
    """Root of every error the library raises (except `ConvexError`).

    `code` names the class on the wire: the server sends it with the message
    (`errorCode`), and the remote client raises the matching `Remote*` class
    (`remote_error`), never by reading the prose.
    """

    code: ClassVar[str] = "StoreError"


class ValidationError(StoreError, ValueError):
    """A value, argument or document is not acceptable; the message gives path and rule."""

    code: ClassVar[str] = "ValidationError"


class ArgumentError(ValidationError):
    """A function's arguments do not match its `args=` validator."""

    code: ClassVar[str] = "ArgumentValidationError"


class ReturnsError(ValidationError):
    """A function's return value does not match its `returns=` validator."""

    code: ClassVar[str] = "ReturnsValidationError"


class SchemaViolation(ValidationError):
    """A write would store a document that does not match its table's schema."""

    code: ClassVar[str] = "SchemaViolation"


class SchemaError(StoreError, ValueError):
    """A schema definition (tables, fields, indexes) breaks a rule."""

    code: ClassVar[str] = "SchemaError"


class UnknownValidator(SchemaError, AttributeError):
    """`v.<name>` is not a validator builder (a typo such as `v.strin()`); an `AttributeError`
    too, so `hasattr(v, name)` and `getattr(v, name, default)` keep working."""


class StoreWarning(UserWarning):
    """Code that runs but likely does not do what was meant (see the module docstring)."""


class HeaderError(StoreError, ValueError):
    """A magic cell's header line (`[module:]name(arg: validator, ...) [--flags]`) does not
    follow the grammar; the message shows where."""

    code: ClassVar[str] = "HeaderError"


class QueryError(StoreError, ValueError):
    """A query is ill-formed: bad index range, unknown index, bad filter, failed unique()."""

    code: ClassVar[str] = "QueryError"


class DocumentNotFound(StoreError, KeyError):
    """patch/replace/delete was given the id of a document that does not exist."""

    code: ClassVar[str] = "DocumentNotFound"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TransactionError(StoreError):
    """A transaction could not commit."""

    code: ClassVar[str] = "TransactionError"


class ConflictError(TransactionError):
    """A mutation could not commit. Never raised for contention: after a few optimistic
    retries a mutation runs serially under the commit lock, where nothing can conflict with it
    (contention slows it down, never fails it). The engine raises it only if even that serial
    run fails validation, which its single committer rules out (it would be a bug); a remote
    server of another implementation may still send it."""

    code: ClassVar[str] = "OptimisticConcurrencyControlFailure"


class HistoryUnavailable(TransactionError):
    """A read as of an earlier timestamp was asked for, but the store keeps only the latest
    version of each document and cannot show that nothing the read depends on changed since
    (a later commit wrote into it, or that ts is older than the write history kept)."""

    code: ClassVar[str] = "HistoricalQueryUnsupported"


class TransactionClosed(TransactionError, RuntimeError):
    """A ctx (or query builder) was used after its function had returned."""

    code: ClassVar[str] = "TransactionClosed"


class FunctionError(StoreError):
    """Problems finding or calling a function."""

    code: ClassVar[str] = "FunctionError"


class UnknownFunction(FunctionError, LookupError):
    """No function (or no public function, for clients) is registered at that path."""

    code: ClassVar[str] = "UnknownFunction"


class WrongFunctionKind(FunctionError, TypeError):
    """A function was called as the wrong kind (e.g. a query through `client.mutation`)."""

    code: ClassVar[str] = "WrongFunctionKind"


class FunctionTimeout(FunctionError, TimeoutError):
    """A query or mutation of a served store ran past its time limit and was stopped (a
    mutation commits nothing)."""

    code: ClassVar[str] = "FunctionTimeout"


class FunctionAborted(FunctionError):
    """A handler raised a `BaseException` that is not an `Exception` (`SystemExit`,
    `GeneratorExit`, `KeyboardInterrupt` off the main thread): that call failed, the process
    and its workers go on."""

    code: ClassVar[str] = "FunctionAborted"


class TooManyRequests(FunctionError):
    """A connection exceeded its server's cap on concurrent calls or live subscriptions;
    only that call or subscription fails."""

    code: ClassVar[str] = "TooManyRequests"


class PersistenceError(StoreError):
    """The storage layer failed: disk error, corrupt or incompatible store file."""

    code: ClassVar[str] = "PersistenceError"


class StoreLocked(PersistenceError):
    """Another process owns the store file; the message names it."""


class CommitNotWritten(PersistenceError):
    """The database connection was lost while a commit was being written, and the commit log
    shows it was not stored: nothing of it was written. `Store.mutate` runs the mutation
    again (on a new connection) rather than failing it."""


class CommitOutcomeUnknown(PersistenceError):
    """The database connection was lost while a commit was being written, and the commit log
    could not be read afterwards to tell whether it was stored. It is never re-applied
    silently: check the data (or the commit log) before running the mutation again."""


class SyncError(StoreError):
    """Errors of the remote client and server."""

    code: ClassVar[str] = "SyncError"


class ProtocolError(SyncError):
    """A peer sent a message that breaks the protocol."""


class AuthenticationError(SyncError):
    """A user token (JWT) or admin key could not be verified: forged, expired, for another
    issuer or audience, or no way to verify it was configured."""

    code: ClassVar[str] = "Unauthenticated"


class ProtocolMisuse(SyncError, RuntimeError):
    """A transport drove a sans-I/O protocol object out of order (answered a request that is
    not running, asked for a Transition that is not due): a bug in the library, never the
    peer's fault."""


class ConnectionClosed(SyncError):
    """The connection to the server is closed."""


class ServerUnreachable(SyncError, ConnectionError):
    """No Convex server answers at the URL: nothing listens there, it refuses the connection
    (403: a token is needed), it does not speak the Convex protocol, or it has been gone
    longer than the client waits (`connect()` or a call while disconnected). The message
    names the URL, the reason and what to do."""


#: The class a remote client raises for each code (filled as the `Remote*` classes are made).
_REMOTE_BY_CODE: dict[str, type[RemoteFunctionError]] = {}


class RemoteFunctionError(FunctionError):
    """A function failed on the server; the message is what the server chose to tell.

    Raised as is for a handler's own exception (`Uncaught ValueError: ...`); the library's
    own errors arrive as the subclasses below, so `except ArgumentError` (etc.) works with
    either client.
    """

    code: ClassVar[str] = "FunctionFailed"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # `RemoteX(RemoteFunctionError, X)` answers for X's code, the one the server sent.
        super().__init_subclass__(**kwargs)
        mirrored = cls.__bases__[-1]
        if issubclass(mirrored, StoreError):
            cls.code = mirrored.code
            _REMOTE_BY_CODE[cls.code] = cls


class RemoteValidationError(RemoteFunctionError, ValidationError):
    """The server refused a value or document."""


class RemoteArgumentError(RemoteFunctionError, ArgumentError):
    """The server refused the arguments."""


class RemoteReturnsError(RemoteFunctionError, ReturnsError):
    """The function's result failed its `returns` validator on the server."""


class RemoteSchemaViolation(RemoteFunctionError, SchemaViolation):
    """A write on the server did not match its table's schema."""


class RemoteSchemaError(RemoteFunctionError, SchemaError):
    """The server refused a schema definition."""


class RemoteHeaderError(RemoteFunctionError, HeaderError):
    """The server refused a pushed cell's header."""


class RemoteQueryError(RemoteFunctionError, QueryError):
    """A query on the server was ill-formed."""


class RemoteDocumentNotFound(RemoteFunctionError, DocumentNotFound):
    """patch/replace/delete on the server named a missing document."""


class RemoteTransactionError(RemoteFunctionError, TransactionError):
    """A transaction on the server could not commit."""


class RemoteConflictError(RemoteFunctionError, ConflictError):
    """The mutation could not commit on the server (see `ConflictError`)."""


class RemoteHistoryUnavailable(RemoteFunctionError, HistoryUnavailable):
    """The server cannot answer a read as of that timestamp exactly."""


class RemoteUnknownFunction(RemoteFunctionError, UnknownFunction):
    """The server has no (public) function at that path."""


class RemoteWrongFunctionKind(RemoteFunctionError, WrongFunctionKind):
    """The function on the server is of another kind."""


class RemoteFunctionTimeout(RemoteFunctionError, FunctionTimeout):
    """The function ran past the server's time limit."""


class RemoteFunctionAborted(RemoteFunctionError, FunctionAborted):
    """The handler raised SystemExit, GeneratorExit or KeyboardInterrupt on the server."""


class RemoteTooManyRequests(RemoteFunctionError, TooManyRequests):
    """This connection hit the server's cap on calls or subscriptions."""


class RemoteAuthenticationError(RemoteFunctionError, AuthenticationError):
    """The server refused the call's credentials."""


def remote_error(code: str | None, message: str) -> RemoteFunctionError:
    """The exception a client raises for a failure the server reported with `code`.

    Args:
        code: the wire's `errorCode` (a `StoreError.code`), or None for a handler's own error.
        message: the server's message, kept as the exception's text.

    Returns:
        The `Remote*` class for that code (a subclass of the matching library class), or
        `RemoteFunctionError` for no code or a code this version does not know (a newer server
        may send codes an older client has no class for).
    """
    return _REMOTE_BY_CODE.get(code or "", RemoteFunctionError)(message)


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

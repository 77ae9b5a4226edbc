"""The Convex wire protocol (PROTOCOL.md): what lets the official Convex clients use a store.

Sans-I/O core (no sockets, threads or event loop):

- `messages`: client messages decoded, server messages built; timestamps, paths, arguments.
- `outcomes`: a function's result or its error, as data for the wire.
- `protocol`: `SyncProtocol`, one connection's state machine (versions, query set, identity,
  mutation order, pings).
- `http`: the HTTP API as request -> response functions.

I/O around it:

- `auth`: user JWTs (PyJWT) and the admin key.
- `runner`: runs functions and subscriptions on a `Backend`.
- `connection`: the pump between one WebSocket and its `SyncProtocol`.
- `server`: the tornado server behind `python -m kernel_ext serve`.
"""

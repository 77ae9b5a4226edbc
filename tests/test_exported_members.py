"""The public API of API.md is exported, and every module declares `__all__`."""

from __future__ import annotations

import importlib
import pkgutil

import kernel_ext

API_NAMES = {
    "connect",
    "v",
    "define_schema",
    "define_table",
    "query",
    "mutation",
    "action",
    "internal_query",
    "internal_mutation",
    "internal_action",
    "ConvexError",
    "UNDEFINED",
    "api",
    "cron_jobs",
    "http_router",
    "http_action",
    "Response",
}


def test_public_names_exported():
    assert API_NAMES <= set(kernel_ext.__all__)
    for name in kernel_ext.__all__:
        assert hasattr(kernel_ext, name), name


def test_every_module_declares_all():
    for info in pkgutil.walk_packages(kernel_ext.__path__, "kernel_ext."):
        module = importlib.import_module(info.name)
        if info.ispkg or info.name.endswith("__main__"):
            continue
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_errors_derive_from_store_error():
    from kernel_ext import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if not isinstance(cls, type):
            assert name == "remote_error", name  # the one function: code -> remote class
            continue
        if issubclass(cls, Warning):
            continue  # warnings (StoreWarning and its kinds) are not raised as errors
        if name not in ("ConvexError", "StoreError"):
            assert issubclass(cls, errors.StoreError), name

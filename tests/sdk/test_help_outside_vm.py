"""help() and pydoc work outside a VM: rendering a module or class must not call a host function
(class attributes such as HttpContext.request_headers used to raise RuntimeError)."""

from __future__ import annotations

import importlib
import io
import pkgutil
import pydoc
import sys

import pytest

import proxywasm

MODULES = ["proxywasm"] + [
    f"proxywasm.{m.name}"
    for m in pkgutil.iter_modules(proxywasm.__path__)
    if m.name != "_bootstrap"  # VM only
]


@pytest.mark.parametrize("name", MODULES)
def test_pydoc_renders_every_module_and_class(name: str) -> None:
    module = importlib.import_module(name)
    assert pydoc.render_doc(module)
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == name:
            assert pydoc.render_doc(value)


def test_help_on_http_context_shows_its_callbacks_and_header_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    help(proxywasm.HttpContext)
    text = out.getvalue()
    assert "on_request_headers" in text
    assert "The stream's request headers (a StreamHeaders)." in text


def test_a_module_level_header_map_reprs_without_a_vm() -> None:
    from proxywasm import headers

    assert repr(headers.request_headers) == "<Headers HTTP_REQUEST_HEADERS: not readable here>"

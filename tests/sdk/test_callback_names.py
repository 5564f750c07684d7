"""`proxywasm build` refuses methods named like callbacks that are none, with file:line and the
nearest valid name (register() checks the classes inside the VM at build time)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxywasm_build.build import build
from proxywasm_build.bundle import BuildError
from proxywasm_build.cli import main
from proxywasm_host import Host, LoadError


def build_error(tmp_path: Path, source: str) -> str:
    path = tmp_path / "filter.py"
    path.write_text(textwrap.dedent(source))
    with pytest.raises(BuildError) as info:
        build(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("method", "nearest"),
    [
        ("on_request_header", "on_request_headers"),
        ("on_response_body_chunk", "on_response_body"),
        ("on_http_response", "on_response_headers"),
        ("on_http_request_headers", "on_request_headers"),
        ("on_request", "on_request_headers"),
    ],
)
def test_misnamed_http_callback(tmp_path: Path, method: str, nearest: str) -> None:
    message = build_error(
        tmp_path,
        f"""
        import proxywasm
        from proxywasm import Action, HttpContext


        @proxywasm.register
        class Auth(HttpContext):
            def {method}(self, headers, end_of_stream):
                return Action.PAUSE
        """,
    )
    assert message.startswith(f"{tmp_path / 'filter.py'}:8: Auth.{method} is not an HttpContext callback")
    assert f"did you mean {nearest}?" in message


def test_callback_of_another_kind(tmp_path: Path) -> None:
    message = build_error(
        tmp_path,
        """
        import proxywasm
        from proxywasm import HttpContext, PluginContext


        class Stream(HttpContext):
            def on_tick(self):
                pass


        @proxywasm.register
        class Plugin(PluginContext):
            http_context = Stream
        """,
    )
    assert message == (
        f"{tmp_path / 'filter.py'}:7: Stream.on_tick is a PluginContext callback: Envoy never calls it on "
        "an HttpContext; define it on a PluginContext subclass"
    )


def test_async_where_the_sdk_cannot_wait(tmp_path: Path) -> None:
    message = build_error(
        tmp_path,
        """
        import proxywasm
        from proxywasm import PluginContext


        @proxywasm.register
        class Plugin(PluginContext):
            async def on_configure(self, configuration):
                return True
        """,
    )
    assert message.startswith(f"{tmp_path / 'filter.py'}:8: Plugin.on_configure is async def, but the SDK cannot")


@pytest.mark.parametrize(
    ("definition", "line"),
    [
        ("def on_request_headers(self, headers):",
         "Auth.on_request_headers(self, headers) cannot be called as Envoy calls it: "
         "on_request_headers(self, headers, end_of_stream)"),
        ("def on_request_headers(self, headers, end_of_stream, extra):",
         "Auth.on_request_headers(self, headers, end_of_stream, extra) cannot be called as Envoy calls it: "
         "on_request_headers(self, headers, end_of_stream)"),
        ("def on_done(self, now):", "Auth.on_done(self, now) cannot be called as Envoy calls it: on_done(self)"),
    ],
)  # fmt: skip
def test_a_callback_envoy_cannot_call_as_defined(tmp_path: Path, definition: str, line: str) -> None:
    message = build_error(
        tmp_path,
        f"""
        import proxywasm
        from proxywasm import HttpContext


        @proxywasm.register
        class Auth(HttpContext):
            {definition}
                return None
        """,
    )
    assert message == f"{tmp_path / 'filter.py'}:8: {line}"


@pytest.mark.parametrize(("setting", "nearest"), [("http_contxt", "http_context"), ("failure_polcy", "failure_policy")])
def test_a_misspelt_setting(tmp_path: Path, setting: str, nearest: str) -> None:
    message = build_error(
        tmp_path,
        f"""
        import proxywasm
        from proxywasm import HttpContext, PluginContext


        class Stream(HttpContext):
            pass


        @proxywasm.register
        class Plugin(PluginContext):
            {setting} = Stream if "{setting}".startswith("http") else 0
        """,
    )
    assert message == (
        f"{tmp_path / 'filter.py'}:12: Plugin.{setting} is not a setting a PluginContext has, so it changes "
        f"nothing: did you mean {nearest}?"
    )


def test_the_settings_checked_are_the_sdks_classvars() -> None:
    from proxywasm._names import SETTINGS

    for kind, names in SETTINGS.items():
        declared = [
            name
            for base in kind.__mro__
            for name, annotation in vars(base).get("__annotations__", {}).items()
            if str(annotation).startswith("ClassVar") and not name.startswith("_")
        ]
        assert list(names) == declared, kind


def test_helpers_with_other_names_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "filter.py"
    path.write_text(
        textwrap.dedent(
            """
            import proxywasm
            from proxywasm import Action, HttpContext, PluginContext


            class Stream(HttpContext):
                def on_request_headers(self, headers, end_of_stream):
                    self.http_call("auth", self.on_auth_response)
                    return Action.PAUSE

                def on_auth_response(self, response):
                    self.resume_request()

                def on_login(self):
                    pass

                def on_response_headers(self, headers, end_of_stream=False, *rest):  # a wider signature
                    return None

                def on_done(self, *args):
                    pass

                max_tokens = 5  # the filter's own settings
                allowed = ("a", "b")


            @proxywasm.register
            class Plugin(PluginContext):
                http_context = Stream
                cpu_budget_ms = 50
                limits = {}

                def on_response(self, response):
                    pass
            """
        )
    )
    build(path)


def test_cli_prints_the_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "filter.py"
    path.write_text("import proxywasm\n\n@proxywasm.register\nclass A(proxywasm.HttpContext):\n"
                    "    def on_request_header(self, headers, end_of_stream):\n        pass\n")  # fmt: skip
    assert main(["build", str(path), "-o", str(tmp_path / "out.wasm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:5: A.on_request_header is not an HttpContext callback")
    assert not (tmp_path / "out.wasm").exists()


def test_native_mode_words_it_as_the_build_does(tmp_path: Path) -> None:
    source = """
        import proxywasm
        from proxywasm import Action, HttpContext


        @proxywasm.register
        class Auth(HttpContext):
            def on_request_header(self, headers, end_of_stream):
                return Action.PAUSE
        """
    built = build_error(tmp_path, source)
    with pytest.raises(LoadError) as native:
        Host.load(tmp_path / "filter.py", mode="native")
    assert str(native.value) == built
    assert native.value.__cause__ is None and native.value.__suppress_context__

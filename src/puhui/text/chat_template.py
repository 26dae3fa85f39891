"""Chat templates: the jinja2 text a model ships with that turns messages into its prompt.

Rendered as transformers' `apply_chat_template(..., tokenize=False)` renders them: a sandboxed,
immutable jinja2 environment with trim_blocks and lstrip_blocks, a `raise_exception` helper, a `tojson`
that does not escape HTML, `strftime_now`, loop controls and the `{% generation %}` tag. Templates come
from model files and are untrusted code: the sandbox is the point.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from ..errors import BadInput


def chat_template_from(source) -> str | None:
    """The chat template of GGUF metadata (`tokenizer.chat_template`), of a tokenizer_config.json dict
    (`chat_template`: a string, or a list of named templates, "default" preferred), or of a path: a .gguf
    file, a tokenizer_config.json, or a folder (tokenizer_config.json, chat_template.jinja, chat_template.json).
    None when there is none."""
    if isinstance(source, (str, Path)):
        return _from_path(Path(source))
    template = source.get("tokenizer.chat_template", source.get("chat_template"))
    if isinstance(template, list):  # [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default", next(iter(named.values()), None))
    return template or None


def _from_path(path: Path) -> str | None:
    if path.suffix == ".gguf":
        from ..formats.gguf import read_gguf
        return chat_template_from(read_gguf(path).metadata)
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return chat_template_from(json.load(f))
    if not path.is_dir():
        raise BadInput(f"{path}: no such file or folder")
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (path / name).is_file():
            found = _from_path(path / name)
            if found:
                return found
    return None


def _raise_exception(message):
    from jinja2.exceptions import TemplateError
    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here it just renders."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """jinja's namespace(), refusing underscore attributes (a way out of the sandbox)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=Namespace)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise BadInput(f"the chat template does not parse: {e}") from None


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", tools: list[dict] | None = None,
                documents: list[dict] | None = None, **extra) -> str:
    """The prompt `template` makes of `messages` ([{"role": "user", "content": "Hi"}, ...]).

    `extra` goes to the template as further variables (pad_token, enable_thinking ...).
    BadInput when the template raises (a role it does not accept, say)."""
    import jinja2

    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadInput(f"a chat message must be a dict with 'role' and 'content', not {message!r}",
                           param=f"messages[{i}]")
    compiled = _compile(template)
    try:
        return compiled.render(messages=messages, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except jinja2.TemplateError as e:
        raise BadInput(f"the chat template refused these messages: {e}", param="messages") from None

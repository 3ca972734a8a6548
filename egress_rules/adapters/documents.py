"""Kubernetes objects as ``kubectl get -o json|yaml`` prints them: decoding, List expansion, field access.

Owns what is common to every adapter of Kubernetes resources:

* :func:`decode_text` turns text into documents: JSON always, YAML (one or
  several ``---`` documents) when PyYAML is installed, imported only then;
* :func:`flatten` expands ``List`` objects (kubectl's ``kind: List`` and an API
  server's typed ``<Kind>List``, whose items carry no kind) into the objects;
* :class:`Fields` reads one object's fields by path and turns every problem
  into a :class:`~egress_rules.errors.ResourceError` naming the resource and
  the path (``EgressPolicy default/web: spec.destSubnet[2]``).

Fields nobody asks for are never looked at: upstream resources grow with their
versions, and an adapter reads only what the library needs.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, NoReturn, TypeVar

import attrs

from egress_rules.errors import EgressRulesError, InvalidInputError, ResourceError

T = TypeVar("T")
Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
YAML_EXTRA_HINT = "install the 'yaml' extra (pip install 'egress-rules[yaml]') or give JSON (kubectl get ... -o json)"


def render_path(path: Path) -> str:
    """``("spec", "destSubnet", 2)`` -> ``spec.destSubnet[2]``; keys that are not plain words are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _yaml(source: str) -> Any:
    # Imported here, not at module level: YAML is an optional extra.
    try:
        return importlib.import_module("yaml")
    except ImportError:
        raise EgressRulesError(source, f"looks like YAML, but PyYAML is not installed: {YAML_EXTRA_HINT}") from None


def decode_text(text: str, source: str = "resources") -> list[object]:
    """The documents of ``text``: JSON if it starts with ``{`` or ``[`` (an array is a list of documents), else YAML.

    Empty YAML documents (a trailing ``---``) are dropped. Raises
    :class:`~egress_rules.errors.InvalidInputError` naming ``source`` if the text
    does not parse, and :class:`~egress_rules.errors.EgressRulesError` if it is
    YAML and PyYAML is not installed.
    """
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        return []
    documents: list[object]
    if stripped[0] in "{[":
        try:
            decoded = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise InvalidInputError(source, f"not valid JSON: {error}") from None
        except (RecursionError, ValueError) as error:  # nesting, or a number of more than 4300 digits
            raise InvalidInputError(source, f"not valid JSON: {error}") from None
        documents = [decoded]
    else:
        yaml = _yaml(source)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            _refuse_aliases(yaml, stripped, loader, source)
            documents = list(yaml.load_all(stripped, Loader=loader))
        except yaml.YAMLError as error:
            raise InvalidInputError(source, f"not valid YAML: {error}") from None
        except InvalidInputError:
            raise
        except ValueError as error:  # lone surrogates (libyaml reads UTF-8), an integer of more than 4300 digits
            raise InvalidInputError(source, f"not valid YAML: {error}") from None
        _refuse_huge_integers(documents, source)
    result: list[object] = []
    for document in documents:
        if isinstance(document, list):
            result.extend(document)
        elif document is not None:
            result.append(document)
    return result


def _refuse_aliases(yaml: Any, text: str, loader: Any, source: str) -> None:
    """Refuse YAML aliases (``*name``): kubectl never writes them, and a few nested ones make an object so
    large that reading it (or quoting it in an error message) exhausts time and memory."""
    if "*" not in text:  # every alias is written with a '*'
        return
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            raise InvalidInputError(source, f"YAML aliases (*name) are not accepted: line {mark.line + 1}, "
                                    f"column {mark.column + 1}")


def _refuse_huge_integers(documents: list[object], source: str) -> None:
    """Refuse integers of more than 64 bits (YAML's hex, octal and base-60 forms are unbounded): no field holds
    one, and Python cannot even print one of more than 4300 digits in an error message."""
    pending: list[object] = list(documents)
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
        elif isinstance(value, int) and value.bit_length() > 64:
            raise InvalidInputError(source, f"an integer of {value.bit_length()} bits: no field holds one")


@attrs.frozen
class Located:
    """One object of the input: where it is (``documents[0].items[3]``), its apiVersion and kind, its fields."""

    where: str
    api_version: str
    kind: str
    obj: Mapping[str, Any]


def flatten(documents: Iterable[object]) -> list[Located]:
    """Every object of ``documents``, Lists expanded (nested ones too), in input order."""
    result: list[Located] = []
    for index, document in enumerate(documents):
        _expand(document, f"documents[{index}]", None, result)
    return result


def _expand(value: object, where: str, element: tuple[str, str] | None, out: list[Located]) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ResourceError(where, None, f"expected an object, got {type(value).__name__}")
    api_version, kind = value.get("apiVersion"), value.get("kind")
    # An API server's typed list (EgressPolicyList) leaves apiVersion and kind out of its items.
    if element is not None:
        api_version = element[0] if api_version is None else api_version
        kind = element[1] if kind is None else kind
    for key, item in (("apiVersion", api_version), ("kind", kind)):
        if not isinstance(item, str) or not item:
            raise ResourceError(where, key, f"expected a non-empty string, got {item!r}")
    assert isinstance(api_version, str) and isinstance(kind, str)
    if kind == "List" or (kind.endswith("List") and "items" in value):
        items = value.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            raise ResourceError(f"{kind} at {where}", "items", f"expected a list, got {type(items).__name__}")
        inner = None if kind == "List" else (api_version, kind[:-len("List")])
        for index, item in enumerate(items):
            _expand(item, f"{where}.items[{index}]", inner, out)
        return
    out.append(Located(where, api_version, kind, value))


@attrs.frozen
class Fields:
    """Typed access to the fields of one resource (or of one object inside it, at ``base``).

    Absent and ``null`` are the same: a field that is not there. Every error is a
    :class:`~egress_rules.errors.ResourceError` naming ``resource`` and the full path.
    """

    resource: str
    obj: Mapping[str, Any]
    base: Path = ()

    def fail(self, path: Path, detail: str) -> NoReturn:
        raise ResourceError(self.resource, render_path(self.base + path) or None, detail)

    def at(self, path: Path, build: Callable[[], T], *, detail_only: bool = False) -> T:
        """Run ``build``; an error it raises becomes a ResourceError at ``path``.

        With ``detail_only`` the error's own subject is dropped (for validators
        that were handed a placeholder subject).
        """
        try:
            return build()
        except EgressRulesError as error:
            detail = error.detail if detail_only else str(error)
            raise ResourceError(self.resource, render_path(self.base + path) or None, detail) from error
        except (TypeError, ValueError) as error:
            raise ResourceError(self.resource, render_path(self.base + path) or None, str(error)) from error

    def get(self, *keys: str) -> object:
        """The value at ``keys``, or ``None`` if it or an object on the way is absent or null."""
        value: object = self.obj
        for depth, key in enumerate(keys):
            if value is None:
                return None
            if not isinstance(value, Mapping):
                self.fail(keys[:depth], f"expected an object, got {type(value).__name__}")
            value = value.get(key)
        return value

    def mapping(self, *keys: str) -> Mapping[str, Any] | None:
        value = self.get(*keys)
        if value is not None and not isinstance(value, Mapping):
            self.fail(keys, f"expected an object, got {type(value).__name__}")
        return value

    def child(self, *keys: str) -> Fields:
        """The object at ``keys`` (an empty one if absent), read with paths below ``keys``."""
        return Fields(self.resource, self.mapping(*keys) or {}, self.base + keys)

    def string(self, *keys: str) -> str | None:
        """A string field; absent, null and ``""`` are all ``None`` (Go's zero value: not set)."""
        value = self.get(*keys)
        if value is not None and not isinstance(value, str):
            self.fail(keys, f"expected a string, got {value!r}")
        return value or None

    def required_string(self, *keys: str) -> str:
        value = self.string(*keys)
        if value is None:
            self.fail(keys, "missing or empty")
        return value

    def boolean(self, *keys: str) -> bool | None:
        value = self.get(*keys)
        if value is not None and not isinstance(value, bool):
            self.fail(keys, f"expected true or false, got {value!r}")
        return value

    def integer(self, *keys: str) -> int | None:
        value = self.get(*keys)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(keys, f"expected an integer, got {value!r}")
        return value

    def items(self, *keys: str) -> list[Fields]:
        """The objects of the list at ``keys`` (none if absent), each read with paths below its index."""
        result = []
        for index, item in enumerate(self._list(keys)):
            if not isinstance(item, Mapping):
                self.fail((*keys, index), f"expected an object, got {type(item).__name__}")
            result.append(Fields(self.resource, item, (*self.base, *keys, index)))
        return result

    def entries(self, *keys: str) -> list[tuple[str, Fields]]:
        """The ``name -> object`` entries of the map at ``keys``, in name order."""
        value = self.mapping(*keys) or {}
        result = []
        for name in sorted(value, key=str):
            if not isinstance(name, str):
                self.fail(keys, f"key {name!r} is not a string")
            item = value[name]
            if item is not None and not isinstance(item, Mapping):
                self.fail((*keys, name), f"expected an object, got {type(item).__name__}")
            result.append((name, Fields(self.resource, item or {}, (*self.base, *keys, name))))
        return result

    def parsed(self, keys: tuple[str, ...], parse: Callable[[str], T]) -> list[T]:
        """Each string of the list at ``keys`` through ``parse``; an error names the element's index."""
        result = []
        for index, item in enumerate(self._list(keys)):
            if not isinstance(item, str):
                self.fail((*keys, index), f"expected a string, got {item!r}")
            result.append(self.at((*keys, index), partial(parse, item)))
        return result

    def _list(self, keys: tuple[str, ...]) -> list[object]:
        value = self.get(*keys)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(keys, f"expected a list, got {type(value).__name__}")
        return value

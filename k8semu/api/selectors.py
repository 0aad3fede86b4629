"""Kubernetes label and field selectors: parsing, canonical printing and matching.

This module owns the selector languages of the API (`kubectl get -l ...`, `--field-selector`,
a ReplicaSet's `spec.selector`) and nothing else. It is pure: labels are a `Mapping[str, str]`
and fields come from a getter function, so the API server, informers, the scheduler and the
controllers all share it without any protobuf or I/O here.

Label selector syntax (what apimachinery's `labels.Parse` accepts), requirements joined by
commas (AND), whitespace ignored between tokens::

    key=value   key==value   key!=value         equality (`==` is printed as `=`)
    key in (v1, v2)          key notin (v1)     set membership; `()` is the set {""}
    key          !key                           the label exists / does not exist
    key>3        key<3                          the label's value is an integer above/below

Keys are qualified names (an optional DNS-1123 subdomain prefix and `/`, then a name of at
most 63 characters from `[A-Za-z0-9_.-]`, starting and ending alphanumeric); values are empty
or a name of the same form. `!=` and `notin` also match objects that lack the label.

Field selector syntax (`fields.ParseSelector`): `field=value`, `field==value`, `field!=value`
joined by commas; `\\`, `\\,` and `\\=` escape those characters in a value. Which fields may be
used is not decided here but by the API server, per kind (for pods: metadata.name,
metadata.namespace, spec.nodeName, status.phase, ...); it checks `FieldSelector.fields`.
An unset field reads as the empty string, so `spec.nodeName=` selects unscheduled pods.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from k8semu.api import names
from k8semu.api.errors import SelectorError

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "escape_field_value",
    "parse_field_selector",
    "parse_label_selector",
]


class Operator(enum.StrEnum):
    """How a requirement compares a label (or field) with its values."""

    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


# The operator names of the structured form (metav1.LabelSelectorRequirement.operator).
_MATCH_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}

# Go's strconv.ParseInt(s, 10, 64): an optional sign and decimal digits, within int64.
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _key_problem(key: str) -> str | None:
    """Why `key` is not a qualified name (Kubernetes' first message), or None when it is one."""
    return next(iter(names.qualified_name_errors(key)), None)


def _value_problem(value: str) -> str | None:
    """Why `value` is not a label value (Kubernetes' first message), or None when it is one."""
    return next(iter(names.label_value_errors(value)), None)


def _parse_int(text: str) -> int | None:
    if not _INT_RE.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _requirement_problem(key: str, operator: Operator, values: tuple[str, ...]) -> str | None:
    """Why (key, operator, values) is not a valid requirement, or None when it is one."""
    if problem := _key_problem(key):
        return f"invalid key {key!r}: {problem}"
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if values:
            return f"key {key!r}: values must be empty for {operator.name}"
        return None
    if operator in (Operator.IN, Operator.NOT_IN):
        if not values:
            return f"key {key!r}: values must be non-empty for {operator.name}"
    elif len(values) != 1:
        return f"key {key!r}: exactly one value is required for {operator.name}"
    if operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        if _parse_int(values[0]) is None:
            return f"key {key!r}: value {values[0]!r} of {operator.name} must be an integer"
        return None
    for value in values:
        if problem := _value_problem(value):
            return f"key {key!r}: invalid value {value!r}: {problem}"
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label.

    Invariants (checked on construction, SelectorError otherwise): `key` is a qualified name;
    `values` is sorted and without duplicates; EXISTS and DOES_NOT_EXIST have no values, IN and
    NOT_IN at least one, the others exactly one; GREATER_THAN/LESS_THAN values are integers.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Values are a set; sorting them gives one canonical form and one printed form.
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))
        if problem := _requirement_problem(self.key, self.operator, self.values):
            raise SelectorError(f"invalid label selector requirement: {problem}")

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None
            case Operator.EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.GREATER_THAN | Operator.LESS_THAN:
                have = None if value is None else _parse_int(value)
                if have is None:
                    return False
                want = int(self.values[0])
                return have > want if self.operator is Operator.GREATER_THAN else have < want
        raise AssertionError(self.operator)  # pragma: no cover - the match is exhaustive

    def __str__(self) -> str:
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(self.values)})"
            case Operator.GREATER_THAN:
                return f"{self.key}>{self.values[0]}"
            case Operator.LESS_THAN:
                return f"{self.key}<{self.values[0]}"
            case _:
                return f"{self.key}{self.operator.value}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An AND of label requirements; no requirements selects everything.

    Requirements are kept sorted by key (stable, so two requirements on one key keep their
    order), which is apimachinery's canonical order: equal selectors print the same, and
    `parse_label_selector(str(s)) == s` for every selector.
    """

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.requirements, key=lambda r: r.key))
        object.__setattr__(self, "requirements", ordered)

    @classmethod
    def everything(cls) -> LabelSelector:
        """The selector that matches every set of labels (the empty string parses to it)."""
        return cls(())

    @classmethod
    def from_match(
        cls,
        match_labels: Mapping[str, str] | None = None,
        match_expressions: Sequence[tuple[str, str, Sequence[str]]] = (),
    ) -> LabelSelector:
        """The selector of a structured `spec.selector` (matchLabels AND matchExpressions).

        `match_expressions` are (key, operator, values) with the API's operator names `In`,
        `NotIn`, `Exists` and `DoesNotExist`. Both empty selects everything; a missing
        (nil) selector, which selects nothing, is the caller's to handle.
        """
        requirements: list[Requirement] = []
        for key, value in (match_labels or {}).items():
            if problem := _requirement_problem(key, Operator.EQUALS, (value,)):
                raise SelectorError(f"invalid label selector: matchLabels: {problem}")
            requirements.append(Requirement(key, Operator.EQUALS, (value,)))
        for index, (key, name, values) in enumerate(match_expressions):
            where = f"invalid label selector: matchExpressions[{index}]"
            operator = _MATCH_OPERATORS.get(name)
            if operator is None:
                known = ", ".join(_MATCH_OPERATORS)
                raise SelectorError(f"{where}: operator {name!r} is not one of {known}")
            unique = tuple(sorted(set(values)))
            if problem := _requirement_problem(key, operator, unique):
                raise SelectorError(f"{where}: {problem}")
            requirements.append(Requirement(key, operator, unique))
        return cls(tuple(requirements))

    @property
    def is_empty(self) -> bool:
        """True when the selector has no requirements (it matches everything)."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


# --- label selector parser -------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "ident", one of the operator/punctuation strings below, or "end"
    text: str
    pos: int


_SPECIALS = frozenset("!=(),<>")
_TWO_CHAR = ("!=", "==")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
        elif text[pos : pos + 2] in _TWO_CHAR:
            tokens.append(_Token(text[pos : pos + 2], text[pos : pos + 2], pos))
            pos += 2
        elif char in _SPECIALS:
            tokens.append(_Token(char, char, pos))
            pos += 1
        else:
            start = pos
            while pos < len(text) and not text[pos].isspace() and text[pos] not in _SPECIALS:
                pos += 1
            tokens.append(_Token("ident", text[start:pos], start))
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _describe(token: _Token) -> str:
    return "end of string" if token.kind == "end" else f'"{token.text}"'


class _LabelParser:
    """Recursive descent over the token list; every error carries the offending position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def error(self, detail: str, pos: int, reason: str = "") -> SelectorError:
        """`invalid label selector "<text>": <detail> at <pos>[: <reason>]`."""
        suffix = f": {reason}" if reason else ""
        return SelectorError(f'invalid label selector "{self.text}": {detail} at {pos}{suffix}')

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> LabelSelector:
        if self.peek().kind == "end":
            return LabelSelector.everything()
        requirements = [self.requirement()]
        while (token := self.take()).kind != "end":
            if token.kind != ",":
                last = requirements[-1]
                raise self.error(
                    f'expected "," or end of string after requirement "{last}", found'
                    f" {_describe(token)}",
                    token.pos,
                )
            requirements.append(self.requirement())
        return LabelSelector(tuple(requirements))

    def key(self, after: str) -> _Token:
        token = self.take()
        if token.kind != "ident" or token.text in ("in", "notin"):
            raise self.error(f"expected a key{after}, found {_describe(token)}", token.pos)
        if problem := _key_problem(token.text):
            raise self.error(f'invalid key "{token.text}"', token.pos, problem)
        return token

    def value(self, key: str, operator: Operator) -> tuple[str, int]:
        # After an operator the keywords are plain values: `a=in` and `a in (notin)` are valid.
        token = self.peek()
        if token.kind in (",", "end"):
            value, pos = "", token.pos  # `a=` and `a!=` compare with the empty value
        elif token.kind == "ident":
            self.take()
            value, pos = token.text, token.pos
        else:
            raise self.error(
                f'expected a value for key "{key}", found {_describe(token)}', token.pos
            )
        if operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
            if _parse_int(value) is None:
                found = _describe(token) if token.kind == "ident" else "no value"
                raise self.error(
                    f'value of key "{key}" for {operator.value} must be an integer, found {found}',
                    pos,
                )
        elif problem := _value_problem(value):
            raise self.error(f'invalid value "{value}" for key "{key}"', pos, problem)
        return value, pos

    def value_set(self, key: str, keyword: _Token) -> tuple[str, ...]:
        opening = self.take()
        if opening.kind != "(":
            raise self.error(
                f'expected "(" after "{key} {keyword.text}", found {_describe(opening)}',
                opening.pos,
            )
        values: list[str] = []
        while True:
            # Every element between "(", "," and ")" is a value, possibly empty: `()` is {""}.
            token = self.peek()
            if token.kind == "ident":
                self.take()
                if problem := _value_problem(token.text):
                    raise self.error(
                        f'invalid value "{token.text}" for key "{key}"', token.pos, problem
                    )
                values.append(token.text)
            else:
                values.append("")
            token = self.take()
            if token.kind == ")":
                return tuple(values)
            if token.kind == "end":
                raise self.error('unclosed "("', opening.pos)
            if token.kind != ",":
                raise self.error(
                    f'expected "," or ")" in the values of "{key} {keyword.text}", found'
                    f" {_describe(token)}",
                    token.pos,
                )

    def requirement(self) -> Requirement:
        first = self.peek()
        if first.kind == "!":
            self.take()
            key = self.key(' after "!"')
            return Requirement(key.text, Operator.DOES_NOT_EXIST)
        key = self.key(' after ","' if self.index else "")
        token = self.peek()
        if token.kind in (",", "end"):
            return Requirement(key.text, Operator.EXISTS)
        self.take()
        simple = {
            "=": Operator.EQUALS,
            "==": Operator.EQUALS,
            "!=": Operator.NOT_EQUALS,
            ">": Operator.GREATER_THAN,
            "<": Operator.LESS_THAN,
        }
        if token.kind in simple:
            operator = simple[token.kind]
            value, _ = self.value(key.text, operator)
            return Requirement(key.text, operator, (value,))
        if token.kind == "ident" and token.text in ("in", "notin"):
            operator = Operator.IN if token.text == "in" else Operator.NOT_IN
            return Requirement(key.text, operator, self.value_set(key.text, token))
        raise self.error(
            f'expected an operator (=, ==, !=, in, notin, >, <, "," or end of string) after'
            f' key "{key.text}", found {_describe(token)}',
            token.pos,
        )


def parse_label_selector(text: str) -> LabelSelector:
    """The selector `text` denotes; the empty (or blank) string selects everything.

    Raises SelectorError naming the offending key, value or token and its 0-based position.
    """
    return _LabelParser(text).parse()


# --- field selectors -------------------------------------------------------------------------

_FIELD_ESCAPES = {"\\": "\\", ",": ",", "=": "="}
_FIELD_OPERATORS = (("!=", Operator.NOT_EQUALS), ("==", Operator.EQUALS), ("=", Operator.EQUALS))


def escape_field_value(value: str) -> str:
    """`value` with `\\`, `,` and `=` escaped, so it can stand in a field selector."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """`field` compared with `value` by EQUALS or NOT_EQUALS (the only field operators)."""

    field: str
    operator: Operator
    value: str

    def __post_init__(self) -> None:
        if self.operator not in (Operator.EQUALS, Operator.NOT_EQUALS):
            raise SelectorError(f"field selector operator {self.operator.value!r}: use = or !=")
        if not self.field or any(c.isspace() or c in "\\,=!" for c in self.field):
            raise SelectorError(f"invalid field name {self.field!r}")

    def matches(self, get: Callable[[str], str | None]) -> bool:
        have = get(self.field) or ""
        return (have == self.value) == (self.operator is Operator.EQUALS)

    def __str__(self) -> str:
        return f"{self.field}{self.operator.value}{escape_field_value(self.value)}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of field requirements, sorted by field (stable); none selects everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.requirements, key=lambda r: r.field))
        object.__setattr__(self, "requirements", ordered)

    @classmethod
    def everything(cls) -> FieldSelector:
        return cls(())

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    @property
    def fields(self) -> frozenset[str]:
        """The field names used; the API server refuses those its kind does not support."""
        return frozenset(requirement.field for requirement in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal for a match (`spec.nodeName=n1` -> "n1"), if any.

        Lets a server or cache answer `spec.nodeName=...` from an index instead of a scan.
        """
        for requirement in self.requirements:
            if requirement.field == field and requirement.operator is Operator.EQUALS:
                return requirement.value
        return None

    def matches(self, get: Callable[[str], str | None]) -> bool:
        """True when every requirement holds; `get(field)` returns None for an unset field."""
        return all(requirement.matches(get) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


def _split_terms(text: str) -> Iterable[tuple[str, int]]:
    """Split on unescaped commas; yields (term, position of the term in text)."""
    start = 0
    escaped = False
    for pos, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            yield text[start:pos], start
            start = pos + 1
    yield text[start:], start


def parse_field_selector(text: str) -> FieldSelector:
    """The field selector `text` denotes; the empty (or blank) string selects everything.

    As in Kubernetes, empty terms (`a=b,,c=d`, a trailing comma) are skipped. Whitespace
    around a field name and its value is ignored. Raises SelectorError naming the term and
    its 0-based position.
    """

    def error(detail: str, pos: int) -> SelectorError:
        return _field_error(text, detail, pos)

    requirements: list[FieldRequirement] = []
    for term, start in _split_terms(text):
        if not term.strip():
            continue
        split = _split_term(term)
        if split is None:
            raise error(f'term "{term.strip()}" has no operator (=, == or !=)', start)
        op_pos, op_text, operator = split
        field = term[:op_pos].strip()
        if not field or any(c.isspace() or c in "\\,=!" for c in field):
            raise error(f'invalid field name "{field}" in term "{term.strip()}"', start)
        raw = term[op_pos + len(op_text) :]
        value_pos = start + op_pos + len(op_text) + len(raw) - len(raw.lstrip())
        value = _unescape(raw.strip(), text, value_pos)
        requirements.append(FieldRequirement(field, operator, value))
    return FieldSelector(tuple(requirements))


def _split_term(term: str) -> tuple[int, str, Operator] | None:
    """Position and text of the first unescaped operator in `term`, if there is one."""
    escaped = False
    for pos, char in enumerate(term):
        if escaped:
            escaped = False
            continue
        if char == "\\":
            escaped = True
            continue
        for op_text, operator in _FIELD_OPERATORS:
            if term.startswith(op_text, pos):
                return pos, op_text, operator
    return None


def _field_error(text: str, detail: str, pos: int) -> SelectorError:
    return SelectorError(f'invalid field selector "{text}": {detail} at {pos}')


def _unescape(raw: str, text: str, offset: int) -> str:
    """`raw` (found at `offset` in the selector `text`) with its escapes resolved."""
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char == "\\":
            nxt = raw[pos + 1 : pos + 2]
            if nxt not in _FIELD_ESCAPES:
                what = f'escape sequence "\\{nxt}"' if nxt else 'trailing "\\"'
                raise _field_error(text, f"invalid {what} in value", offset + pos)
            out.append(_FIELD_ESCAPES[nxt])
            pos += 2
            continue
        if char == "=":
            raise _field_error(text, 'unescaped "=" in value (write \\=)', offset + pos)
        out.append(char)
        pos += 1
    return "".join(out)

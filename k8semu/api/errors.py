"""Every error k8semu.api raises, in one hierarchy.

    APIError                    base class of everything below
    +-- UnknownKindError        an apiVersion/kind, message type or resource name not in kinds.py
    +-- QuantityError           a string that is not a Kubernetes quantity (also a ValueError)
    +-- SelectorError           a label or field selector that does not parse (also a ValueError)
    +-- ManifestError           a manifest document that does not decode into an API object
        +-- ManifestSyntaxError     not YAML/JSON, a document that is not a mapping, a duplicate key
        +-- ManifestKindError       apiVersion/kind missing, not strings, or not registered
        +-- UnknownFieldError       a field the schema does not have (kubectl --validate=strict)
        +-- FieldTypeError          a value of the wrong JSON type for its field
        +-- InvalidValueError       the right type but an unparsable value (time, base64, quantity)

A ManifestError carries where it happened: `source` (a file name or "<stdin>"), `document`
(1-based position of the YAML document in the stream, empty documents counted), `kind` and
`name` of the object when known, `path` (the field path, `spec.template.spec.containers[0].image`,
map keys as `[key]`) and `message`. Its str is

    web.yaml: document 2: Deployment "web": spec.replicas: expected integer, got "three"

YAML and protobuf errors from the libraries underneath are translated at the boundary
(`raise ... from exc`); callers catch APIError or one of its subclasses, never yaml.YAMLError.
"""

from __future__ import annotations


class APIError(Exception):
    """Base class of every error raised by k8semu.api."""


class UnknownKindError(APIError):
    """A lookup in the kind registry found nothing; the message says what was asked for."""


class QuantityError(APIError, ValueError):
    """`text` is not a valid Kubernetes quantity; `field` names where it came from, if known."""

    def __init__(self, text: str, reason: str, *, field: str = "") -> None:
        self.text = text
        self.reason = reason
        self.field = field
        prefix = f"{field}: " if field else ""
        super().__init__(f"{prefix}quantity {text!r}: {reason}")


class ManifestError(APIError):
    """A manifest document that is not a valid object; see the module docstring for fields.

    The decoder raises it with `path` and `message` only; `load_all` and `from_dict` then add
    the context (`source`, `document`, `kind`, `name`) with `with_context` as it propagates.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        source: str = "",
        document: int = 0,
        kind: str = "",
        name: str = "",
    ) -> None:
        self.path = path
        self.message = message
        self.source = source
        self.document = document
        self.kind = kind
        self.name = name
        super().__init__(path, message)

    def with_context(
        self, *, source: str, document: int, kind: str = "", name: str = ""
    ) -> ManifestError:
        """Fill in the location fields that are still empty and return self."""
        self.source = self.source or source
        self.document = self.document or document
        self.kind = self.kind or kind
        self.name = self.name or name
        return self

    def __str__(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.document:
            parts.append(f"document {self.document}")
        if self.kind:
            parts.append(f'{self.kind} "{self.name}"' if self.name else self.kind)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ManifestSyntaxError(ManifestError):
    """The text is not YAML/JSON, a document is not a mapping, or a mapping repeats a key."""


class ManifestKindError(ManifestError):
    """A document's apiVersion/kind is missing, not a string, or not a registered kind."""


class UnknownFieldError(ManifestError):
    """A field that the object's schema does not have (kubectl --validate=strict rejects it)."""


class FieldTypeError(ManifestError):
    """A value of the wrong JSON type: a string where an integer belongs, a list for an object."""


class InvalidValueError(ManifestError):
    """A value of the right type that does not parse: a timestamp, base64 bytes, a quantity."""


class SelectorError(APIError, ValueError):
    """A selector that cannot be parsed or built; the message quotes it and says where."""

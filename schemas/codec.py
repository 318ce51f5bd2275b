"""Fast JSON decoders derived from the contract models: msgspec structs for the common case, pydantic
for everything else.

The pydantic models in this package stay the one source of truth. :func:`derive` reads a model's
fields, their constraints and its validators and builds a msgspec struct that accepts a *subset* of
what the model accepts, and gives the same values where it accepts:

* ids (``UUID``) are taken only in canonical form (lower-case, hyphenated) and kept as that text,
  which is what ``str(uuid)`` gives for the model's value (so ids compare and sort as the UUIDs do);
* timestamps only in the form the contract writes (``2026-11-26T10:00:00.123Z``, see
  :func:`schemas.events.parse_canonical_ms`), kept as epoch milliseconds, within the contract's bounds;
* string lengths, number bounds, literals, enums (as their values), optional and nested fields as
  declared; unknown fields are refused;
* the model's ``after`` validators run on the decoded struct (they only read attributes).

A message the fast decoder does not take is not judged by it: :meth:`FastDecoder.decode` returns
None and the caller validates with the model, whose errors (the reasons dead letters carry) are
unchanged. A model the deriver cannot mirror (a pattern, a ``before`` validator on a field that is
not a timestamp, a type it does not know) fails at import, never silently. ``tests/unit/test_codec.py``
holds the two decoders equal on a corpus of valid and broken messages.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

import annotated_types as at
import msgspec
from pydantic import AwareDatetime, BaseModel, PlainSerializer, Strict, StringConstraints

from schemas.events import parse_canonical_ms

__all__ = ["FastDecoder", "derive"]

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
#: Field validators whose whole effect the canonical timestamp check stands for (schemas.events).
_TIMESTAMP_VALIDATORS = frozenset({"_text_only", "_ms_precision"})


class _Kind:
    UUID = "uuid"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class _Derived:
    struct: type[msgspec.Struct]
    #: Fields to post-check: (name, kind) with kind "uuid" or "timestamp"; nested structs by name.
    checks: tuple[tuple[str, str, bool], ...]
    nested: tuple[tuple[str, _Derived, bool], ...]
    validators: tuple[Callable[[Any], Any], ...]


def _meta(metadata: list[Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, StringConstraints):
            if item.pattern or item.strip_whitespace or item.to_upper or item.to_lower or item.ascii_only:
                raise TypeError(f"cannot derive a fast decoder for string constraint {item!r}")
            if item.min_length is not None:
                kwargs["min_length"] = item.min_length
            if item.max_length is not None:
                kwargs["max_length"] = item.max_length
        elif isinstance(item, at.MinLen):
            kwargs["min_length"] = item.min_length
        elif isinstance(item, at.MaxLen):
            kwargs["max_length"] = item.max_length
        elif isinstance(item, at.Ge):
            kwargs["ge"] = item.ge
        elif isinstance(item, at.Le):
            kwargs["le"] = item.le
        elif isinstance(item, at.Gt):
            kwargs["gt"] = item.gt
        elif isinstance(item, at.Lt):
            kwargs["lt"] = item.lt
        elif isinstance(item, Strict | PlainSerializer):
            pass  # msgspec never coerces (a stricter decoder only sends more to the model); output only
        else:
            raise TypeError(f"cannot derive a fast decoder for constraint {item!r}")
    return kwargs


def _convert(annotation: Any, metadata: list[Any]) -> tuple[Any, str | None, _Derived | None]:
    """(msgspec type, post-check kind, nested derivation) of one annotation."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _convert(inner, [*extra, *metadata])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1 or len(get_args(annotation)) != 2:
            raise TypeError(f"cannot derive a fast decoder for {annotation!r}")
        inner_type, kind, nested = _convert(members[0], metadata)
        return inner_type | None, kind, nested
    if annotation is UUID:
        return str, _Kind.UUID, None
    if annotation is AwareDatetime:
        return str, _Kind.TIMESTAMP, None
    if origin is Literal:
        return annotation, None, None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        values = tuple(m.value for m in annotation)
        return Literal[values], None, None  # the value, as the contract writes it
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        nested = _derive(annotation)
        return nested.struct, None, nested
    if origin is list:
        (item,) = get_args(annotation)
        item_type, kind, nested = _convert(item, [])
        if kind is not None or nested is not None:
            raise TypeError(f"cannot derive a fast decoder for {annotation!r}")
        return _annotated(list[item_type], metadata), None, None  # type: ignore[valid-type]
    if origin is dict:
        key, value = get_args(annotation)
        if (key, value) != (str, str):
            raise TypeError(f"cannot derive a fast decoder for {annotation!r}")
        return _annotated(dict[str, str], metadata), None, None
    if annotation in (str, int, float, bool):
        return _annotated(annotation, metadata), None, None
    raise TypeError(f"cannot derive a fast decoder for {annotation!r}")


def _annotated(annotation: Any, metadata: list[Any]) -> Any:
    kwargs = _meta(metadata)
    return Annotated[annotation, msgspec.Meta(**kwargs)] if kwargs else annotation


_DERIVED: dict[type[BaseModel], _Derived] = {}


def _derive(model: type[BaseModel]) -> _Derived:
    if model in _DERIVED:
        return _DERIVED[model]
    if model.model_config.get("extra") != "forbid":
        raise TypeError(f"{model.__name__}: only models that forbid unknown fields are derived")
    decorators = model.__pydantic_decorators__
    timestamps: set[str] = set()
    fields: list[tuple[str, Any, Any]] = []
    checks: list[tuple[str, str, bool]] = []
    nested: list[tuple[str, _Derived, bool]] = []
    for name, info in model.model_fields.items():
        if info.alias is not None and info.alias != name:
            raise TypeError(f"{model.__name__}.{name}: aliases are not derived")
        msgspec_type, kind, sub = _convert(info.annotation, list(info.metadata))
        optional = get_origin(msgspec_type) in (Union, types.UnionType)
        if kind is not None:
            checks.append((name, kind, optional))
            if kind == _Kind.TIMESTAMP:
                timestamps.add(name)
        if sub is not None:
            nested.append((name, sub, optional))
        if info.is_required():
            fields.append((name, msgspec_type, msgspec.NODEFAULT))
        elif info.default_factory is not None:
            factory = typing.cast(Callable[[], Any], info.default_factory)
            fields.append((name, msgspec_type, msgspec.field(default_factory=factory)))
        else:
            fields.append((name, msgspec_type, info.default))
    for field_validator in decorators.field_validators.values():
        name = field_validator.cls_var_name
        if name not in _TIMESTAMP_VALIDATORS or not set(field_validator.info.fields) <= timestamps:
            raise TypeError(f"{model.__name__}: field validator {name} is not derived")
    validators = []
    for model_validator in decorators.model_validators.values():
        if model_validator.info.mode != "after":
            raise TypeError(f"{model.__name__}: {model_validator.info.mode} model validators are not derived")
        validators.append(model_validator.func)
    if decorators.validators or decorators.root_validators:
        raise TypeError(f"{model.__name__}: pydantic v1 validators are not derived")
    # Required fields first, as a class would declare them.
    fields.sort(key=lambda f: f[2] is not msgspec.NODEFAULT)
    struct = msgspec.defstruct(
        f"{model.__name__}Fast", fields, forbid_unknown_fields=True, frozen=True, module=__name__
    )
    derived = _Derived(struct, tuple(checks), tuple(nested), tuple(validators))
    _DERIVED[model] = derived
    return derived


def _check(derived: _Derived, obj: Any) -> list[int] | None:
    """Post-checks of one decoded struct; the epoch ms of its timestamps (in field order), or None."""
    stamps: list[int] = []
    for name, kind, optional in derived.checks:
        value = getattr(obj, name)
        if value is None and optional:
            if kind == _Kind.TIMESTAMP:
                stamps.append(-1)
            continue
        if kind == _Kind.UUID:
            if _CANONICAL_UUID(value) is None:
                return None
        else:
            ms = parse_canonical_ms(value)
            if ms is None:
                return None
            stamps.append(ms)
    for name, sub, optional in derived.nested:
        value = getattr(obj, name)
        if (value is not None or not optional) and _check(sub, value) is None:
            return None
    for validator in derived.validators:
        try:
            validator(obj)
        except Exception:  # whatever it is, the model says it best
            return None
    return stamps


class FastDecoder:
    """Decodes what ``model`` accepts in its common form; says "not sure" (None) for the rest."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self._derived = _derive(model)
        self.struct = self._derived.struct
        self._decode = msgspec.json.Decoder(self.struct).decode
        #: Names of the timestamp fields, in the order :meth:`decode` gives their epoch ms.
        self.timestamps = tuple(name for name, kind, _ in self._derived.checks if kind == _Kind.TIMESTAMP)

    def decode(self, data: bytes) -> tuple[Any, list[int]] | None:
        """The decoded struct and the epoch ms of its timestamp fields (in declaration order; -1 for
        a missing optional one), or None when the model must judge ``data`` itself."""
        try:
            obj = self._decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        stamps = _check(self._derived, obj)
        return None if stamps is None else (obj, stamps)


def derive(model: type[BaseModel]) -> type[msgspec.Struct]:
    """The msgspec struct derived from ``model`` (see the module docstring)."""
    return _derive(model).struct

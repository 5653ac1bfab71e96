"""What every kind of ``avstream`` model metadata shares: the key, the schema version, the pydantic base
class and the error that lists every problem of a metadata object at once, each with its key path."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from avstream.engine.errors import ModelError

METADATA_KEY = "avstream"
SCHEMA_VERSION = 1

Loc = tuple[str | int, ...]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ContractError(ModelError):
    """A metadata object breaks the schema: ``problems`` holds every (key path, message) pair found."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]], what: str = f"metadata '{METADATA_KEY}'"):
        self.source, self.problems = source, list(problems)
        # one line (pipeline validation prints a model error as one located line), whatever control
        # characters the file's keys and values hold
        text = _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], "; ".join(
            f"{path}: {message}" if path else message for path, message in self.problems))
        super().__init__(f"{source}: {what}: {text}" if what else f"{source}: {text}")


def problem(loc: Loc, message: str, value: Any = None) -> InitErrorDetails:
    """One cross-field problem, for :func:`raise_problems` inside a model validator."""
    return InitErrorDetails(type=PydanticCustomError("contract", message), loc=loc, input=value)


def raise_problems(title: str, found: list[InitErrorDetails]) -> None:
    """Raise every cross-field problem of a validator together (pydantic keeps their locations)."""
    if found:
        raise ValidationError.from_exception_data(title, found)


def _as_version(value: Any) -> Any:
    # an integer version (``"version": 2``) is read as the string "2"
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Text = Annotated[str, Field(min_length=1)]
Version = Annotated[str, BeforeValidator(_as_version), Field(min_length=1, description='a string such as "1"')]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class MetadataModel(BaseModel):
    """Strict JSON types (no "4" for 4, no true for 1), finite numbers, no unknown keys unless allowed."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class TopLevel(MetadataModel):
    """Keys every model's metadata has. Other top-level keys are kept (``raw``): tools add their own
    (``precision``, ``quantization``, ``decoder``, ``sources``)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(SCHEMA_VERSION, alias="schema", description="metadata format version")
    id: Text
    version: Version
    task: Text
    description: str = ""

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise PydanticCustomError(
                "contract", "version {got} is not supported (this engine reads {ours})",
                {"got": value, "ours": SCHEMA_VERSION})
        return value

    @property
    def ref(self) -> str:
        """The ``model`` field of results: ``id@version``."""
        return f"{self.id}@{self.version}"


_NOUNS = {"float_type": "a number", "int_type": "an integer", "int_from_float": "an integer",
          "string_type": "a string", "bool_type": "true or false", "dict_type": "an object",
          "model_type": "an object", "model_attributes_type": "an object", "list_type": "a list",
          "tuple_type": "a list", "finite_number": "a finite number"}


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested value
        return "<a value nested too deeply>"
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (for naming its allowed keys)."""
    current: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            return None
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        # Optional[X] → X
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if typing.get_origin(current) is not dict and len(args) == 1:
            current = args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _message(err: Any, root: type[BaseModel]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        holder = _model_at(root, tuple(err["loc"]))
        allowed = [f.alias or n for n, f in holder.model_fields.items()] if holder else []
        close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key{hint}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g} (got {_short(got)})"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g} (got {_short(got)})"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']:g} (got {_short(got)})"
    if kind == "string_too_short":
        return f"must be a non-empty string (got {_short(got)})"
    if kind == "literal_error":
        return f"{_short(got)} is not supported (allowed: {ctx['expected']})"
    if kind in _NOUNS:
        return f"must be {_NOUNS[kind]} (got {_short(got)})"
    if kind == "contract":
        return str(err["msg"])
    return f"{err['msg']} (got {_short(got)})"


def problems_of(exc: ValidationError, root: type[BaseModel], skip: int = 0) -> list[tuple[str, str]]:
    """(key path, message) of every error, in schema order; ``skip`` drops leading loc parts
    (the tag of a discriminated union)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])[skip:]
        line = (".".join(str(p) for p in loc), _message({**err, "loc": loc}, root))
        if line not in out:
            out.append(line)
    return out

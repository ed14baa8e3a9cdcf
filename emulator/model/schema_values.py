"""JSON values valid for a JSON Schema, as a guided-decoding model would write them.

`value_for(schema, words, seed)` builds a value keyword by keyword (types and unions, enum, const, numeric
bounds and their exclusive forms, multipleOf, string lengths, patterns, formats, array items, sizes and
uniqueness, required/optional/additional properties, nesting, anyOf/oneOf/allOf, local `$ref`/`$defs`),
then checks it with jsonschema and tries other choices until one is valid. The choices (which enum value,
which branch, which optional properties, how many items, the numbers and the words) follow the seed, so
the same prompt gives the same answer and another prompt another one. A schema nothing satisfies raises
`Unsatisfiable` with the validator's reason."""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal
from typing import Any

from jsonschema import exceptions as js_exceptions
from jsonschema import validators

from .pattern import PatternError, matching

ATTEMPTS = 24
MAX_DEPTH = 12  # past this, only required properties and minimal arrays (recursive schemas end)
DEFAULT_SPAN = 100
TEXT_KEYS = ("answer", "summary", "text", "content", "response", "explanation", "reason", "description")
_VALIDATORS: dict[str, Any] = {}


class Unsatisfiable(ValueError):
    """No value valid for the schema was found (or the schema itself is invalid)."""


def validator(schema: Any) -> Any:
    """A cached jsonschema validator (the schema's own `$schema` draft, else 2020-12), checking formats."""
    key = json.dumps(schema, sort_keys=True)
    v = _VALIDATORS.get(key)
    if v is None:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except js_exceptions.SchemaError as exc:
            raise Unsatisfiable(f"invalid JSON schema: {exc.message}") from exc
        v = cls(schema, format_checker=cls.FORMAT_CHECKER)
        if len(_VALIDATORS) > 512:
            _VALIDATORS.clear()
        _VALIDATORS[key] = v
    return v


def value_for(schema: Any, words: list[str], seed: int) -> Any:
    """A value valid for `schema`, chosen by `seed`, its strings made of `words`."""
    check = validator(schema)
    last = "no value could be built"
    for attempt in range(ATTEMPTS):
        gen = Generator(schema, words, random.Random(seed * 1_000_003 + attempt))
        try:
            value = gen.value(schema, 0)
        except Unsatisfiable as exc:
            last = str(exc)
            continue
        error = js_exceptions.best_match(check.iter_errors(value))
        if error is None:
            return value
        where = "".join(f"[{p!r}]" for p in error.absolute_path) or "the answer"
        last = f"{where}: {error.message}"
    raise Unsatisfiable(last)


class Generator:
    """One attempt at a value: a random source, the prompt's words, the root schema for `$ref`."""

    def __init__(self, root: Any, words: list[str], rng: random.Random) -> None:
        self.root = root
        self.words = words or ["answer"]
        self.rng = rng

    # -- dispatch ------------------------------------------------------------------------------
    def value(self, schema: Any, depth: int, key: str = "") -> Any:
        if schema is True or schema == {}:
            return self.text(key, {})
        if schema is False:
            raise Unsatisfiable("a `false` schema admits no value")
        if not isinstance(schema, dict):
            raise Unsatisfiable(f"not a schema: {schema!r}")
        if depth > 3 * MAX_DEPTH:
            raise Unsatisfiable("the schema nests (or recurses) too deeply")
        schema = self.flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list):
            if not schema["enum"]:
                raise Unsatisfiable("an empty enum admits no value")
            return self.rng.choice(schema["enum"])
        for word in ("anyOf", "oneOf"):
            if isinstance(schema.get(word), list) and schema[word]:
                rest = {k: v for k, v in schema.items() if k != word}
                branch = self.rng.choice(schema[word])
                return self.value(merge(rest, branch) if rest else branch, depth + 1, key)
        kind = self.pick_type(schema)
        return getattr(self, f"gen_{kind}")(schema, depth, key)

    def flatten(self, schema: dict, depth: int) -> dict:
        """Resolve `$ref` and fold `allOf` into one schema (sibling keywords kept)."""
        for _ in range(MAX_DEPTH):
            if "$ref" in schema:
                target = self.resolve(schema["$ref"])
                rest = {k: v for k, v in schema.items() if k not in ("$ref",)}
                schema = merge(target, rest) if rest else target
                if not isinstance(schema, dict):
                    return {} if schema is True else {"not": {}}
            elif isinstance(schema.get("allOf"), list):
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    merged = merge(merged, part if isinstance(part, dict) else {})
                schema = merged
            else:
                return schema
        return schema

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise Unsatisfiable(f"only local $ref is supported, not {ref!r}")
        node = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise Unsatisfiable(f"$ref {ref!r} points nowhere")
        return node

    def pick_type(self, schema: dict) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            if not real:
                return "null"
            # mostly a value; sometimes null when the schema allows it, as models do for optional data
            if "null" in kind and self.rng.random() < 0.15:
                return "null"
            return self.rng.choice(real)
        if isinstance(kind, str):
            return kind
        if any(k in schema for k in ("properties", "required", "additionalProperties", "patternProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems", "contains")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        if "multipleOf" in schema:
            return "integer"
        return "string"

    # -- scalars -------------------------------------------------------------------------------
    def gen_null(self, schema: dict, depth: int, key: str) -> None:
        return None

    def gen_boolean(self, schema: dict, depth: int, key: str) -> bool:
        return self.rng.random() < 0.5

    def gen_integer(self, schema: dict, depth: int, key: str) -> int:
        low, high = bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            for k in self.shuffled_range(first, last):
                value = k * step
                if float(value).is_integer() and low <= value <= high:
                    return int(value)
            raise Unsatisfiable(f"no multiple of {step} between {low} and {high}")
        if low > high:
            raise Unsatisfiable(f"no integer between {low} and {high}")
        return self.rng.randint(int(low), int(high))

    def gen_number(self, schema: dict, depth: int, key: str) -> float | int:
        low, high = bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0:
            d = Decimal(str(step))
            for k in self.shuffled_range(math.ceil(low / step), math.floor(high / step)):
                value = float(Decimal(k) * d)
                quotient = value / step
                if low <= value <= high and int(quotient) == quotient:  # jsonschema's own test
                    return int(value) if isinstance(step, int) else value
            raise Unsatisfiable(f"no multiple of {step} between {low} and {high}")
        if low > high:
            raise Unsatisfiable(f"no number between {low} and {high}")
        value = round(self.rng.uniform(low, high), 2)
        if not low <= value <= high or not is_inside(value, schema):
            value = (low + high) / 2
        return value

    def shuffled_range(self, first: int, last: int) -> list[int]:
        if last < first:
            return []
        if last - first > 50:
            picks = {self.rng.randint(first, last) for _ in range(20)}
            return sorted(picks, key=lambda _: self.rng.random()) + [first, last]
        values = list(range(first, last + 1))
        self.rng.shuffle(values)
        return values

    def gen_string(self, schema: dict, depth: int, key: str) -> str:
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, 10_000)))
        if low > high:
            raise Unsatisfiable(f"minLength {low} is above maxLength {high}")
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in FORMATS:
            return FORMATS[fmt](self.rng, self.words)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            return self.pattern_string(pattern, low, high)
        return fit_length(self.text(key, schema), low, high, self.words)

    def pattern_string(self, pattern: str, low: int, high: int) -> str:
        """A match of `pattern` within the length bounds: longer repeats tried as needed, and an
        unanchored pattern padded at its open end."""
        open_end = not pattern.endswith("$") or pattern.endswith("\\$")
        text = ""
        for attempt in range(40):
            try:
                text = matching(pattern, self.rng, extra=3 + attempt * max(1, low // 6 + 1))
            except PatternError as exc:
                raise Unsatisfiable(str(exc)) from exc
            if open_end and len(text) < low:
                text += "".join(self.rng.choice("abcdefghij") for _ in range(low - len(text)))
            if low <= len(text) <= high:
                return text
        return text  # the final check tells what is wrong

    def text(self, key: str, schema: dict) -> str:
        """Words of the prompt: the whole prompt for answer-like keys, a few words otherwise."""
        words = self.words
        if key.lower() in TEXT_KEYS or any(key.lower().endswith(k) for k in TEXT_KEYS):
            return " ".join(words[:60])
        start = self.rng.randrange(len(words))
        count = self.rng.randint(1, 6)
        return " ".join((words + words)[start : start + count])

    # -- containers ----------------------------------------------------------------------------
    def gen_array(self, schema: dict, depth: int, key: str) -> list:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", low + 3))
        if low > high:
            raise Unsatisfiable(f"minItems {low} is above maxItems {high}")
        room = 3 if depth < 4 else 1 if depth < MAX_DEPTH else 0  # nested arrays stay small
        count = self.rng.randint(max(low, min(1, high, room)), max(low, min(high, low + room)))
        if items is False:
            count = min(count, len(prefix))
        out: list = []
        seen: set[str] = set()
        contains = schema.get("contains")
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            if i == 0 and isinstance(contains, dict):
                sub = merge(sub if isinstance(sub, dict) else {}, contains)
            out.append(self.unique_item(sub, depth, key, seen, bool(schema.get("uniqueItems"))))
        return out

    def unique_item(self, sub: Any, depth: int, key: str, seen: set[str], unique: bool) -> Any:
        for _ in range(30):
            value = self.value(sub, depth + 1, key)
            mark = json.dumps(value, sort_keys=True)
            if not unique or mark not in seen:
                seen.add(mark)
                return value
        raise Unsatisfiable("uniqueItems: not enough distinct values for the array's minimum size")

    def gen_object(self, schema: dict, depth: int, key: str) -> dict:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        low = int(schema.get("minProperties", 0))
        high = int(schema.get("maxProperties", 10_000))
        out: dict = {}
        for name, sub in props.items():
            optional = name not in required
            skip = 0.2 + 0.05 * depth  # deeper optional data is left out more often
            if optional and (depth >= MAX_DEPTH or self.rng.random() < skip or len(out) >= high):
                continue
            out[name] = self.value(sub, depth + 1, name)
        for name in required:
            if name not in out:
                out[name] = self.value(self.schema_of_key(schema, name), depth + 1, name)
        for name, sub in props.items():  # a minimum size: the optional properties come back first
            if len(out) >= low:
                break
            if name not in out:
                out[name] = self.value(sub, depth + 1, name)
        while len(out) < low:
            name, sub = self.extra_key(schema, extra, len(out))
            out[name] = self.value(sub, depth + 1, name)
        return out

    def schema_of_key(self, schema: dict, name: str) -> Any:
        """What a required key not in `properties` must hold (patternProperties, else additional)."""
        for pattern, sub in (schema.get("patternProperties") or {}).items():
            if _search(pattern, name):
                return sub
        extra = schema.get("additionalProperties", True)
        if extra is False:
            raise Unsatisfiable(f"required {name!r} is not allowed by additionalProperties false")
        return extra

    def extra_key(self, schema: dict, extra: Any, n: int) -> tuple[str, Any]:
        for pattern, sub in (schema.get("patternProperties") or {}).items():
            try:
                return matching(pattern, self.rng), sub
            except PatternError as exc:
                raise Unsatisfiable(str(exc)) from exc
        if extra is False:
            raise Unsatisfiable("minProperties needs more keys than additionalProperties false allows")
        names = schema.get("propertyNames")
        if isinstance(names, dict) and "pattern" in names:
            return matching(names["pattern"], self.rng), extra
        return f"{self.rng.choice(self.words)}_{n}", extra


def _search(pattern: str, text: str) -> bool:
    import re

    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def bounds(schema: dict, integer: bool) -> tuple[float, float]:
    """The closed range a number must lie in (exclusive bounds moved inwards)."""
    nudge = 1 if integer else 1e-6
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if ex_low is True and low is not None:  # draft 4 boolean form
        low = low + nudge
    elif isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
        low = ex_low + nudge if low is None else max(low, ex_low + nudge)
    if ex_high is True and high is not None:
        high = high - nudge
    elif isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
        high = ex_high - nudge if high is None else min(high, ex_high - nudge)
    if low is None and high is None:
        low, high = 0, DEFAULT_SPAN
    elif low is None:
        low = high - DEFAULT_SPAN if high >= DEFAULT_SPAN or high < 0 else 0
    elif high is None:
        high = low + DEFAULT_SPAN
    if integer:
        return math.ceil(low), math.floor(high)
    return float(low), float(high)


def is_inside(value: float, schema: dict) -> bool:
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool) and value <= ex_low:
        return False
    return not (isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and value >= ex_high)


def fit_length(text: str, low: int, high: int, words: list[str]) -> str:
    """`text` grown with more words to `low` characters, then cut to `high`."""
    i = 0
    while len(text) < low:
        text = (text + " " + words[i % len(words)]).strip()
        i += 1
    text = text[:high]
    return text if len(text) >= low else text + "x" * (low - len(text))


def merge(a: Any, b: Any) -> Any:
    """Two schemas that must both hold, as one (approximate; the final check catches what it misses)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b if isinstance(a, dict) and not a else a
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "type":
            left = out[key] if isinstance(out[key], list) else [out[key]]
            right = value if isinstance(value, list) else [value]
            both = [t for t in left if t in right or (t == "integer" and "number" in right)]
            both += [t for t in right if t == "integer" and "number" in left and t not in both]
            out[key] = both if len(both) != 1 else both[0]
        elif key == "properties":
            merged = dict(out[key])
            for name, sub in value.items():
                merged[name] = merge(merged[name], sub) if name in merged else sub
            out[key] = merged
        elif key == "required":
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum"):
            out[key] = max(out[key], value)
        elif key in ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum"):
            out[key] = min(out[key], value)
        elif key == "enum":
            out[key] = [v for v in out[key] if v in value]
        elif key in ("anyOf", "oneOf", "allOf"):
            out["allOf"] = [*out.get("allOf", []), {key: value}]
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = merge(out[key], value)
    return out


def _uuid(rng: random.Random, words: list[str]) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(20, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _word(words: list[str], rng: random.Random) -> str:
    clean = ["".join(ch for ch in w.lower() if ch.isascii() and ch.isalnum()) for w in words]
    return rng.choice([w for w in clean if w] or ["answer"])


FORMATS = {
    "date-time": lambda rng, words: f"{_date(rng)}T{_time(rng)}",
    "date": lambda rng, words: _date(rng),
    "time": lambda rng, words: _time(rng),
    "email": lambda rng, words: f"{_word(words, rng)}@example.com",
    "idn-email": lambda rng, words: f"{_word(words, rng)}@example.com",
    "hostname": lambda rng, words: f"{_word(words, rng)}.example.com",
    "idn-hostname": lambda rng, words: f"{_word(words, rng)}.example.com",
    "ipv4": lambda rng, words: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng, words: f"2001:db8::{rng.randint(1, 65535):x}",
    "uri": lambda rng, words: f"https://example.com/{_word(words, rng)}",
    "uri-reference": lambda rng, words: f"/{_word(words, rng)}",
    "iri": lambda rng, words: f"https://example.com/{_word(words, rng)}",
    "url": lambda rng, words: f"https://example.com/{_word(words, rng)}",
    "uuid": _uuid,
    "duration": lambda rng, words: f"P{rng.randint(1, 30)}D",
    "json-pointer": lambda rng, words: f"/{_word(words, rng)}",
    "regex": lambda rng, words: "^[a-z]+$",
}

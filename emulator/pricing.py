"""Prices in USD per 1M tokens (references/api_reference.md section 10) and the decimal strings the
server writes costs as."""

from __future__ import annotations

from decimal import Decimal

from .config import FALLBACK_PRICE, PRICES


def cost(model: str, window: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What the tokens cost in a completion window."""
    table = PRICES.get(model, FALLBACK_PRICE)
    pin, pout = table.get(window) or table.get("realtime") or table["1h"]
    return (Decimal(prompt_tokens) * Decimal(pin) + Decimal(completion_tokens) * Decimal(pout)) / Decimal(
        1_000_000
    )


def decimal_str(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")).normalize(), "f")

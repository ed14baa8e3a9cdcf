"""What the emulator knows about each model: its kind (chat or embeddings), whether it reads images,
whether it reasons and with which efforts, and its embedding size (references/api_reference.md
section 10 lists the real names)."""

from __future__ import annotations

DEFAULT_MODELS = (
    "Qwen/Qwen3.5-9B",
    "Qwen/Qwen3.5-4B",
    "Qwen/Qwen3-14B-FP8",
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
    "openai/gpt-oss-20b",
    "Qwen/Qwen3-Embedding-8B",
)
# Served models that answer with reasoning unless told `reasoning_effort: "none"` (where allowed).
DEFAULT_REASONING_MODELS = ("openai/gpt-oss-20b", "Qwen/Qwen3-14B-FP8")

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# gpt-oss always reasons (no "none"); hybrid models (the Qwen3 and Qwen3.5 chat models, whose effort the
# server turns into the chat template's thinking flag, doubleword-api.md 4.5) can switch it off. Which
# levels besides "none" a Qwen model takes the doc does not say: these four are this emulator's reading.
MODEL_EFFORTS = {"openai/gpt-oss-20b": ("low", "medium", "high")}
HYBRID_EFFORTS = ("none", "low", "medium", "high")
DEFAULT_EFFORT = "medium"
# Reasoning tokens per effort before the prompt's own variation (up to +50%).
REASONING_TOKENS = {"minimal": 16, "low": 32, "medium": 64, "high": 160, "xhigh": 320, "max": 640}

EMBEDDING_DIMENSIONS = {"Qwen/Qwen3-Embedding-8B": 4096}
DEFAULT_EMBEDDING_DIMENSIONS = 1024
MIN_EMBEDDING_DIMENSIONS = 1
IMAGE_TOKENS = 256  # prompt tokens counted per image part


def is_embedding_model(name: str) -> bool:
    """Model type by name: anything with 'embed' in it is an EMBEDDINGS model, the rest CHAT."""
    return "embed" in name.lower()


def is_vision_model(name: str) -> bool:
    """Models that read image parts: Qwen3.5 (natively multimodal), the VL and OCR models."""
    low = name.lower()
    return "-vl-" in low or "ocr" in low or low.startswith("qwen/qwen3.5")


def is_hybrid_thinking(name: str) -> bool:
    """Qwen3 and Qwen3.5 chat models think unless told ``reasoning_effort: "none"``; their Instruct variants
    (Qwen3-VL-...-Instruct), the embedding and OCR models do not think at all."""
    low = name.lower()
    return low.startswith("qwen/qwen3") and not (
        is_embedding_model(name) or "instruct" in low or "ocr" in low
    )


def embedding_dimensions(name: str) -> int:
    return EMBEDDING_DIMENSIONS.get(name, DEFAULT_EMBEDDING_DIMENSIONS)


class Catalog:
    """The served models and which of them reason (both from the command line)."""

    def __init__(self, models: list[str], reasoning_models: list[str]) -> None:
        self.models = list(models)
        self.reasoning = set(reasoning_models)

    def __contains__(self, name: str) -> bool:
        return name in self.models

    def reasons(self, name: str) -> bool:
        return name in self.reasoning

    def efforts(self, name: str) -> tuple[str, ...] | None:
        """The reasoning efforts a model accepts, as ``GET /models?include_reasoning_capabilities=true``
        lists them: the model family's (a hybrid Qwen model lists ``none`` whether or not this emulator's
        built-in model reasons for it, see :meth:`reasons`); None: no reasoning control (any effort is
        ignored)."""
        if name in MODEL_EFFORTS:
            return MODEL_EFFORTS[name]
        if self.reasons(name) or is_hybrid_thinking(name):
            return HYBRID_EFFORTS
        return None

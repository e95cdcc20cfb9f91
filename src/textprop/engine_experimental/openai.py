"""TextGrad's `engine_experimental.openai.OpenAIEngine`, on textprop's OpenAI provider."""

from textprop.engine_experimental.base import ExperimentalEngine


class OpenAIEngine(ExperimentalEngine):
    """`OpenAIEngine("gpt-4o-mini", cache=True)`: an OpenAI model (OPENAI_API_KEY,
    OPENAI_BASE_URL)."""

    def __init__(self, model_string: str, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(f"openai/{model_string}", *args, **kwargs)
        self.model_string = model_string


__all__ = ["OpenAIEngine"]

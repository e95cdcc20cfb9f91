"""TextGrad's `engine_experimental` module path: its LiteLLM and OpenAI engines, run by
textprop's own providers (no litellm): see `textprop.engine.get_engine`'s `experimental:`."""

"""`textprop serve`'s HTTP layer, in front of a scripted engine: what the openai SDK (and so
TextGrad's ChatExternalClient) sends becomes the right textprop Request, and the reply comes
back in OpenAI's shape. The real model behind it is tested in tests/integration."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import openai
import pytest

from textprop.engines.base import Completion, Engine, Request, Usage
from textprop.engines.scripted import ScriptedEngine
from textprop.errors import EngineReplyError, EngineRequestError
from textprop.serve import BadRequest, Server, to_request


@pytest.fixture
def served() -> Iterator[tuple[ScriptedEngine, openai.OpenAI]]:
    engine = ScriptedEngine(default="hello", supports_json_schema=True, name="local:test-model")
    with Server(engine, port=0) as server:
        yield engine, openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)


def test_models_lists_the_one_served_model(served: tuple[ScriptedEngine, openai.OpenAI]) -> None:
    _, client = served
    assert [m.id for m in client.models.list()] == ["local:test-model"]


def test_an_engine_without_a_fingerprint_sends_none_and_one_with_it_sends_it() -> None:
    engine = ScriptedEngine(default="hello", name="local:test-model")
    with Server(engine, port=0) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                     "content": "hi"}])
        assert reply.system_fingerprint is None
        assert "system_fingerprint" not in client.models.list().data[0].model_dump()
    engine.system_fingerprint = "fp_0123456789ab"  # type: ignore[attr-defined]
    with Server(engine, port=0) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                     "content": "hi"}])
        assert reply.system_fingerprint == "fp_0123456789ab"
        assert client.models.list().data[0].model_dump()["system_fingerprint"] == \
            "fp_0123456789ab"


def test_textgrad_style_call_maps_to_one_request(
        served: tuple[ScriptedEngine, openai.OpenAI]) -> None:
    engine, client = served
    reply = client.chat.completions.create(
        model="local:test-model",
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "hi"}],
        temperature=0, max_tokens=20, top_p=0.99, frequency_penalty=0, presence_penalty=0,
        stop=None)
    assert reply.choices[0].message.content == "hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens >= 1
    request = engine.requests[-1]
    assert request.system_prompt == "be brief" and request.prompt == "hi"
    assert (request.temperature, request.max_tokens, request.stop) == (0.0, 20, ())


def test_json_schema_response_format_reaches_the_engine(
        served: tuple[ScriptedEngine, openai.OpenAI]) -> None:
    engine, client = served
    engine.queue({"answer": 4})
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    reply = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "2+2?"}], temperature=0,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "a", "schema": schema, "strict": True}})
    assert reply.choices[0].message.content == '{"answer": 4}'
    assert engine.requests[-1].json_schema == schema


def test_streaming_answers_in_one_chunk(served: tuple[ScriptedEngine, openai.OpenAI]) -> None:
    _, client = served
    stream = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "hello"


def test_what_the_engine_cannot_do_is_a_400(served: tuple[ScriptedEngine, openai.OpenAI]) -> None:
    engine, client = served
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}],
                                       frequency_penalty=0.5)
    engine.queue(EngineRequestError("Requested tokens (9000) exceed context window of 4096"))
    with pytest.raises(openai.BadRequestError, match="exceed context window"):
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}])


def test_request_mapping_details() -> None:
    request = to_request({"messages": [
        {"role": "developer", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                     "text": "b"}]}],
        "max_completion_tokens": 7, "stop": "END", "seed": 5})
    assert request.system_prompt == "sys" and request.prompt == "ab"
    assert (request.max_tokens, request.stop, request.seed) == (7, ("END",), 5)
    assert request.temperature == 1.0  # OpenAI's default when none is sent
    assert to_request({"messages": [{"role": "user", "content": "x"}],
                       "response_format": {"type": "json_object"}}).json_schema == {
        "type": "object"}
    for bad in ({"messages": []}, {"messages": [{"role": "tool", "content": "x"}]},
                {"messages": [{"role": "user", "content": "x"}], "n": 2}):
        with pytest.raises(BadRequest):
            to_request(bad)


def test_a_reply_that_is_not_valid_json_is_sent_as_is_with_its_token_counts() -> None:
    class CutOff(Engine):  # a JSON reply cut at max_tokens, as the local engine raises it
        name = "local:test-model"
        supports_json_schema = True

        async def acomplete(self, request: Request) -> Completion:
            cut = Completion(text='{"a": "cut he', usage=Usage(12, 5), finish_reason="length")
            raise EngineReplyError("the reply is not valid JSON", reply_text=cut.text,
                                   finish_reason="length", completion=cut)

    with Server(CutOff(), port=0) as server:
        reply = openai.OpenAI(base_url=server.base_url, api_key="x").chat.completions.create(
            model="local:test-model", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "r", "schema": {"type": "object"}}})
    assert reply.choices[0].message.content == '{"a": "cut he'
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 5)


def test_a_client_that_gives_up_cancels_its_call_and_the_server_keeps_serving() -> None:
    class Slow(Engine):
        name = "local:test-model"

        def __init__(self) -> None:
            self.cancelled = threading.Event()

        async def acomplete(self, request: Request) -> Completion:
            if request.prompt == "quick":
                return Completion(text="done")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return Completion(text="too late")

    engine = Slow()
    with Server(engine, port=0) as server:
        impatient = openai.OpenAI(base_url=server.base_url, api_key="x", timeout=0.5,
                                  max_retries=0)
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "slow"}])
        assert engine.cancelled.wait(timeout=5)  # the call stopped with its client
        patient = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        reply = patient.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "quick"}])
    assert reply.choices[0].message.content == "done"

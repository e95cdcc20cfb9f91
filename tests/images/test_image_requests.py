"""Image variables reach each provider in its own format, through real HTTP."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

import textprop as tp
from textprop.autograd import MultimodalLLMCall
from textprop.engines.anthropic import AnthropicEngine
from textprop.engines.base import Request
from textprop.engines.cache import Cache, cache_key
from textprop.engines.openai_compat import OpenAIEngine
from textprop.errors import EngineUnavailableError, GraphError
from textprop.loss import ImageQALoss
from textprop.testing.server import TestServer


def png(red: int = 255) -> bytes:
    """A valid 1x1 PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, 0, 0]))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


IMAGE = png()
B64 = base64.b64encode(IMAGE).decode()


def image_and_question():
    image = tp.Variable(IMAGE, role_description="image to answer a question about",
                        requires_grad=False)
    question = tp.Variable("What do you see?", role_description="question",
                           requires_grad=False)
    return image, question


def test_an_image_variable_knows_its_type_and_hash(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(IMAGE)
    from_file = tp.Variable(image_path=str(path), role_description="image")
    assert from_file.value == IMAGE
    assert from_file.image.media_type == "image/png"
    assert from_file.image == tp.Variable(IMAGE, role_description="image").image
    from_url = tp.Variable(image_path="https://example.org/ant.jpg", role_description="image")
    assert from_url.image.url == "https://example.org/ant.jpg"  # never downloaded here
    with pytest.raises(GraphError, match="not an image"):
        tp.Variable(b"%PDF-1.4", role_description="document")
    with pytest.raises(GraphError, match="either a value or an image_path"):
        tp.Variable("text", image_path=str(path), role_description="image")


def test_openai_gets_image_url_parts_with_a_base64_data_url():
    image, question = image_and_question()
    with TestServer(reply="a red pixel") as server:
        engine = OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="sk-test")
        answer = MultimodalLLMCall(engine)([image, question])
        body = server.requests[0].body
    assert answer.value == "a red pixel"
    assert body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            {"type": "text", "text": "What do you see?"},
        ]}],
        "temperature": 0.0,
        "seed": 0,
    }


def test_anthropic_gets_base64_image_blocks_and_url_blocks():
    image, question = image_and_question()
    by_url = tp.Variable(image_path="https://example.org/ant.jpg", role_description="image",
                         requires_grad=False)
    system = tp.Variable("Describe images.", role_description="system prompt",
                         requires_grad=False)
    with TestServer(reply="an ant") as server:
        engine = AnthropicEngine("claude-3-5-sonnet-20240620", base_url=server.url,
                                 api_key="sk-ant-test")
        MultimodalLLMCall(engine, system)([image, by_url, question])
        body = server.requests[0].body
    assert body == {
        "model": "claude-3-5-sonnet-20240620",
        "max_tokens": 1024,
        "system": "Describe images.",
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": B64}},
            {"type": "image", "source": {"type": "url", "url": "https://example.org/ant.jpg"}},
            {"type": "text", "text": "What do you see?"},
        ]}],
    }


def test_the_cache_key_includes_the_image_bytes_hash(tmp_path):
    one, other = (Request.chat([png(red), "What colour?"]) for red in (255, 0))
    assert cache_key("openai:gpt-4o", one) != cache_key("openai:gpt-4o", other)
    assert cache_key("openai:gpt-4o", one) == cache_key("openai:gpt-4o",
                                                        Request.chat([png(255), "What colour?"]))
    with TestServer(reply="red") as server:
        engine = Cache(OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="k"),
                       tmp_path / "cache.sqlite3")
        engine.complete(one)
        engine.complete(one)
        engine.complete(other)
        assert len(server.requests) == 2  # the same image again was a hit


def test_feedback_on_an_image_question_flows_to_the_text_and_carries_the_image():
    image, question = image_and_question()
    with TestServer(reply="It is a blue square.", rules=[
        ("<OBJECTIVE_FUNCTION>", "Say the colour the image shows: red."),
        ("Evaluation Instruction", "Wrong: the pixel is red."),
    ]) as server:
        engine = OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="k",
                              supports_json_schema=False)
        response = MultimodalLLMCall(engine)([image, question])
        loss = ImageQALoss("Is the answer right?", engine=engine)(
            image=image, question=question, response=response)
        loss.backward(engine)
        bodies = [r.body for r in server.requests]
    assert [g.value for g in response.gradients] == ["Say the colour the image shows: red."]
    assert not image.gradients
    evaluation = bodies[1]["messages"][1]["content"]
    assert [p["type"] for p in evaluation] == ["text", "text", "image_url", "text"]
    assert evaluation[0]["text"] == "Evaluation Instruction: Is the answer right?"
    assert evaluation[3]["text"] == "Answer: It is a blue square."
    feedback_request = bodies[2]["messages"][1]["content"]
    assert feedback_request[0] == {"type": "image_url",
                                   "image_url": {"url": f"data:image/png;base64,{B64}"}}
    assert "<image image/png" in feedback_request[1]["text"]
    assert "It is a blue square." in feedback_request[1]["text"]


def test_an_engine_that_cannot_take_images_says_so_in_one_message():
    from textprop.engines.local import LocalEngine

    local = object.__new__(LocalEngine)  # the embedded model's class, without loading it
    local.name = "local:Qwen2.5-Coder-0.5B"
    image, question = image_and_question()
    with pytest.raises(EngineUnavailableError, match="local:Qwen2.5-Coder-0.5B cannot take "
                                                     "images: this request has 1"):
        MultimodalLLMCall(local)([image, question])

    class TextOnly(tp.EngineLM):
        def generate(self, prompt, system_prompt=None, **kwargs):
            return "text"

    with pytest.raises(EngineUnavailableError, match="cannot take images"):
        MultimodalLLMCall(TextOnly())([image, question])  # no is_multimodal = True


def test_a_textgrad_multimodal_engine_gets_textgrads_content_list():
    seen = []

    class Multimodal(tp.EngineLM):
        is_multimodal = True

        def generate(self, content, system_prompt=None, **kwargs):
            seen.append(content)
            return "Hello Text from Image"

    image, question = image_and_question()
    assert MultimodalLLMCall(Multimodal())([image, question]).value == "Hello Text from Image"
    assert seen == [[IMAGE, "What do you see?"]]


def test_generate_takes_textgrads_content_keyword_with_images():
    with TestServer(reply="7") as server:
        engine = OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="k")
        assert engine.generate(content="what's 3+4", system_prompt="be brief") == "7"
        engine.generate(content=[IMAGE, "what is this"])
        bodies = [r.body["messages"] for r in server.requests]
    assert bodies[0] == [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "what's 3+4"}]
    assert bodies[1][0]["content"][0]["type"] == "image_url"

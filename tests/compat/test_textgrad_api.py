"""TextGrad's names that its notebooks and paper scripts use, with TextGrad's behaviour."""

from __future__ import annotations

import json

import pytest

import textprop as tg
from textprop.autograd.llm_ops import LLMCall_with_in_context_examples
from textprop.engines.cache import Cache
from textprop.engines.openai_compat import OpenAIEngine
from textprop.engines.stack import find_layer
from textprop.errors import ConfigError
from textprop.optimizer.optimizer import TextualGradientDescentwithMomentum
from textprop.testing.server import TestServer


def write_bbh(root, task="object_counting", n=160):
    folder = root / "bbh" / "bbh"
    folder.mkdir(parents=True)
    examples = [{"input": f"I have {i} apples. How many?", "target": str(i)} for i in range(n)]
    (folder / f"{task}.json").write_text(json.dumps({"examples": examples}))


def test_load_task_splits_bbh_as_textgrad_and_scores_by_integer_equality(tmp_path,
                                                                        monkeypatch):
    write_bbh(tmp_path)
    monkeypatch.setenv("TEXTPROP_DATA", str(tmp_path))
    from textprop.tasks import load_task

    train, val, test, eval_fn = load_task("BBH_object_counting", evaluation_api=None)
    assert (len(train), len(val), len(test)) == (50, 100, 10)
    assert train[0] == ("I have 0 apples. How many?", "0")
    assert val[0][1] == "50" and test[0][1] == "150"
    assert train.get_task_description().endswith(
        "'Answer: $VALUE' where VALUE is a numerical value.")
    prediction = tg.Variable("Counting... Answer: 7", role_description="prediction")
    right = tg.Variable("7", role_description="answer", requires_grad=False)
    wrong = tg.Variable("8", role_description="answer", requires_grad=False)
    assert eval_fn(inputs=dict(prediction=prediction, ground_truth_answer=right)).value == "1"
    assert eval_fn(inputs=dict(prediction=prediction, ground_truth_answer=wrong)).value == "0"


def test_a_missing_file_names_the_variable_and_the_file(tmp_path, monkeypatch):
    from textprop.tasks import load_instance_task, load_task

    monkeypatch.delenv("TEXTPROP_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"set TEXTPROP_DATA .* looked for "
                                          r"<TEXTPROP_DATA>/bbh/bbh/word_sorting\.json"):
        load_task("BBH_word_sorting", evaluation_api=None)
    monkeypatch.setenv("TEXTPROP_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match=rf"no file {tmp_path}/gsm8k/train\.jsonl "
                                          rf"\(from TEXTPROP_DATA="):
        load_task("GSM8K_DSPy", evaluation_api=None)
    with pytest.raises(ConfigError, match=r"mmlu/test/anatomy_test\.csv \(from data_dir="):
        load_instance_task("MMLU_anatomy", None, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="Task nope not found"):
        load_task("nope", None)


def test_other_bbh_tasks_are_judged_between_accuracy_tags(tmp_path):
    write_bbh(tmp_path, task="word_sorting")
    from textprop.tasks import load_task

    with TestServer(reply="Reasoning... <ACCURACY> 1 </ACCURACY>") as server:
        engine = OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="k")
        *_, eval_fn = load_task("BBH_word_sorting", engine, data_dir=tmp_path)
        x = tg.Variable("q", role_description="query", requires_grad=False)
        y = tg.Variable("a b", role_description="answer", requires_grad=False)
        verdict = eval_fn([x, y, tg.Variable("a b", role_description="prediction")])
        prompt = server.requests[0].body["messages"][1]["content"]
    assert eval_fn.parse_output(verdict) == "1"
    assert prompt.startswith("Below is a question from a question-answering task")
    assert prompt.endswith("**Question for the task**: q\n**Ground truth answer**: a b\n"
                           "**Reasoning and prediction from the language model**: a b")


def test_mmlu_instance_items_have_textgrads_query_objective_and_metric(tmp_path):
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    (folder / "machine_learning_test.csv").write_text('"What is 1+1?",1,2,3,4,B\n')
    from textprop.tasks import load_instance_task

    with TestServer(reply="The reasoning is sound.") as server:
        engine = OpenAIEngine("gpt-4o", base_url=server.base_url, api_key="k")
        test_set = load_instance_task("MMLU_machine_learning", engine, data_dir=tmp_path)
        question, answer, objective, metric = test_set[0]
        prediction = tg.Variable("2 is right. Answer: B", role_description="answer")
        objective(prediction)
        body = server.requests[0].body
    assert answer == "B" and metric(prediction) == 1.0
    assert question.endswith("What is 1+1?\n\nA) 1\nB) 2\nC) 3\nD) 4")
    assert body["messages"][0]["content"].startswith("You are an intelligent assistant used "
                                                     "as an evaluator")
    assert body["messages"][1]["content"] == (
        "Below is a multi-choice question and an answer. You are an expert scientist. Your "
        "job is to investigate the answer. Critically go through reasoning steps, consider "
        "your knowledge, and see if the answer is correct or if there are any critical "
        f"mistakes.\nQuestion: {question}\nAnswer by the language model: 2 is right. Answer: B")


def test_dataloader_batches_columns_and_follows_numpys_seed():
    np = pytest.importorskip("numpy")
    data = [(f"x{i}", f"y{i}") for i in range(7)]
    np.random.seed(12)
    batches = list(tg.tasks.DataLoader(data, batch_size=3))
    assert [len(b[0]) for b in batches] == [3, 3, 1]
    np.random.seed(12)
    order = np.arange(7)
    np.random.shuffle(order)
    assert [x for b in batches for x in b[0]] == [f"x{i}" for i in order]
    assert list(tg.tasks.DataLoader(["a", "b"], batch_size=5, shuffle=False)) == [["a", "b"]]


def test_get_engine_takes_textgrads_keywords(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTPROP_CACHE", str(tmp_path / "default.sqlite3"))
    with TestServer(reply="hi") as server:
        url = server.base_url
        cached = tg.get_engine(engine_name="gpt-4o", base_url=url, api_key="k")
        assert find_layer(cached, Cache).path == tmp_path / "default.sqlite3"
        assert find_layer(tg.get_engine("gpt-4o", cache=False, base_url=url), Cache) is None
        assert find_layer(tg.get_engine("gpt-4o", check_cache=False, base_url=url),
                          Cache).mode == "refresh"
        assert find_layer(tg.get_engine("gpt-4o", cache=tmp_path / "x.sqlite3", base_url=url),
                          Cache).path == tmp_path / "x.sqlite3"
        # experimental: (TextGrad's LiteLLM engines) are textprop's providers, cache off
        experimental = tg.get_engine("experimental:gpt-4o", base_url=url)
        assert experimental.name == "openai:gpt-4o"
        assert find_layer(experimental, Cache) is None
        assert tg.get_engine("experimental:anthropic/claude-3-haiku-20240307",
                             api_key="k").name == "anthropic:claude-3-haiku-20240307"
        seeded = tg.get_engine("gpt-4o", seed=42, cache=False, base_url=url)
        assert seeded.generate("hello") == "hi"
        assert server.requests[-1].body["seed"] == 42
        with pytest.raises(ConfigError, match="cache must be"):
            tg.get_engine("gpt-4o", cache=[1, 2, 3], base_url=url)
        with pytest.raises(ValueError, match="unknown engine"):
            tg.get_engine("invalid-engine")


def test_chat_external_client_uses_the_clients_server_and_key():
    from openai import OpenAI

    from textprop.engine.local_model_openai_api import ChatExternalClient

    with TestServer(reply="42") as server:
        client = OpenAI(base_url=server.base_url, api_key="lm-studio")
        engine = ChatExternalClient(client=client, model_string="NeuralBeagle14-7B")
        assert engine.generate(max_tokens=40, prompt="What is the meaning of life?") == "42"
        request = server.requests[0]
    assert request.headers["authorization"] == "Bearer lm-studio"
    assert request.body["model"] == "NeuralBeagle14-7B"
    assert request.body["max_tokens"] == 40


def test_momentum_shows_the_past_values_and_their_feedback():
    engine = tg.ScriptedEngine()
    engine.on(lambda r: r.role == "optimizer",
              lambda r: f"<IMPROVED_VARIABLE>v{len(engine.requests)}</IMPROVED_VARIABLE>")
    prompt = tg.Variable("v0", role_description="system prompt")
    optimizer = TextualGradientDescentwithMomentum(engine=engine, parameters=[prompt],
                                                   momentum_window=2)
    for feedback in ("too vague", "still vague", "add an example"):
        optimizer.zero_grad()
        prompt.gradients.add(tg.Variable(feedback, role_description="feedback"))
        optimizer.step()
    prompts = engine.prompts("optimizer")
    assert "<PAST_ITERATIONS>" not in prompts[0]
    assert ("<PAST_ITERATIONS>\nsystem prompt at step 1: v0\nFeedback at step 1: too vague\n"
            "</PAST_ITERATIONS>") in prompts[1]
    assert ("system prompt at step 1: v1\nFeedback at step 1: still vague\n"
            "system prompt at step 2: v2\nFeedback at step 2: add an example") in \
        optimizer.update_prompt("parameter_0")
    assert optimizer.state_dict()["state"]["parameter_0"]["momentum"][0] == {
        "value": "v1", "feedback": "still vague"}
    assert prompt.value == "v3"


def test_llm_call_with_in_context_examples_reads_final_tags_and_grounds_feedback():
    engine = tg.ScriptedEngine()
    engine.on(lambda r: r.role == "forward", "thinking <FINAL>Plan: step 1</FINAL>")
    engine.on(lambda r: r.role == "loss", "it misses step 2")
    engine.on(lambda r: r.role == "backward", "add step 2")
    call = LLMCall_with_in_context_examples(engine)
    query = tg.Variable("make a plan", role_description="query")
    plan = call(query, in_context_examples=["Plan: step 1, step 2"])
    assert plan.value == "Plan: step 1"
    tg.TextLoss("judge", engine)(plan).backward(engine)
    assert "<EXAMPLES>Plan: step 1, step 2</EXAMPLES>" in engine.prompts("backward")[-1]
    engine.queue("<FINAL>The plan doesn't need to be improved.</FINAL>")
    assert call(query) is None


def test_generate_graph_gives_dot_source():
    engine = tg.ScriptedEngine(default="out")
    x = tg.Variable("in <put>", role_description="question")
    y = tg.BlackboxLLM(engine)(x)
    graph = y.generate_graph()
    assert graph.source.startswith("// Computation graph starting from response from")
    assert "v0 -> v1;" in graph.source
    assert "in &lt;put&gt;" in graph.source and "Grad Fn:</b> LLMCall" in graph.source


def test_textgrads_module_paths_import():
    from textprop import logger  # noqa: F401
    from textprop.autograd.function import Function, Module  # noqa: F401
    from textprop.autograd.multimodal_ops import (  # noqa: F401
        MultimodalLLMCall,
        OrderedFieldsMultimodalLLMCall,
    )
    from textprop.autograd.string_based_ops import StringBasedFunction  # noqa: F401
    from textprop.engine.anthropic import ChatAnthropic  # noqa: F401
    from textprop.engine_experimental.litellm import LiteLLMEngine  # noqa: F401
    from textprop.optimizer.optimizer import TextualGradientDescent  # noqa: F401
    from textprop.tasks.base import DataLoader, Dataset  # noqa: F401
    from textprop.utils.image_utils import get_image_type_from_bytes

    assert get_image_type_from_bytes(b"\x89PNG\r\n\x1a\nrest") == "png"

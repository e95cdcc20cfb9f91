"""The most a run can spend, from its config and data alone: no engine is built, no call made.

`estimate(config)` bounds the calls per role (forward, loss, backward, optimizer), the
tokens and the dollars of a run under its settings and budget:

- calls: the strategy's loop counted with every branch taken (every example wrong, every
  child passing its gate, every rewrite retried `max_parse_retries` times);
- tokens: a prompt's fixed text counted as one token per UTF-8 byte (a byte-level BPE
  token, as OpenAI's, Anthropic's, Llama's and Qwen's are, holds at least one byte), a
  text an earlier call generated as its `max_tokens` (plus a margin for re-tokenization),
  a reply as its `max_tokens`, and a few tokens per message for the chat format. A role
  without `max_tokens` has no bound: its tokens and dollars are reported as None;
- metric explanations: at most the target and the answer plus `EXPLANATION_SLACK` bytes
  (what the built-in metrics write);
- dollars: the tokens at the engine's list price (`engines.metering.DEFAULT_PRICES`);
  None for an engine with no known price.

A `[budget]` max_tokens or max_cost_usd caps the totals (the budget refuses calls past it).

A chain (`[pipeline] kind = "chain"`) gets the same call bounds, with its calls per run (one
per step) and per example backward (one per input that requires grad at each step: an
optimized step's prompt, and every earlier step's output that depends on one); its tokens
are reported as unbounded. A python or trace pipeline's calls are not known ahead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from textprop.data.dataset import Splits
from textprop.engines.metering import PriceTable
from textprop.errors import ConfigError
from textprop.feedback import feedback_schema, max_chars_for
from textprop.optim.rewrite import REWRITE_SCHEMA
from textprop.prompts import render
from textprop.train.config import RunConfig
from textprop.train.pipeline import DEFAULT_ROLE

PER_MESSAGE = 8  # chat-format tokens around a message (OpenAI: 3-4; chat templates: ~5)
PER_REQUEST = 8  # tokens priming the reply
RETOKENIZE = 4  # a generated text put back in a prompt may split into a few more tokens
EXPLANATION_SLACK = 64
ROLES = ("forward", "loss", "backward", "optimizer")


@dataclass
class RoleBound:
    calls: int = 0
    input_tokens: int | None = 0
    output_tokens: int | None = 0

    def add(self, calls: int, input_tokens: int | None, output_tokens: int | None) -> None:
        self.calls += calls
        self.input_tokens = _add(self.input_tokens, _mul(calls, input_tokens))
        self.output_tokens = _add(self.output_tokens, _mul(calls, output_tokens))

    @property
    def tokens(self) -> int | None:
        return _add(self.input_tokens, self.output_tokens)


@dataclass
class Estimate:
    strategy: str
    roles: dict[str, RoleBound] = field(default_factory=dict)
    cost_usd: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    steps: int = 0

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.roles.values())

    @property
    def tokens(self) -> int | None:
        total: int | None = 0
        for r in self.roles.values():
            total = _add(total, r.tokens)
        return total

    def to_dict(self) -> dict[str, Any]:
        roles = {n: r for n, r in self.roles.items() if r.calls}
        return {
            "strategy": self.strategy, "steps": self.steps,
            "calls": {"total": self.calls, **{n: r.calls for n, r in roles.items()}},
            "tokens": {"total": self.tokens, **{n: r.tokens for n, r in roles.items()}},
            "input_tokens": {n: r.input_tokens for n, r in roles.items()},
            "output_tokens": {n: r.output_tokens for n, r in roles.items()},
            "cost_usd": dict(self.cost_usd), "notes": list(self.notes)}

    def format(self) -> str:
        unit = "proposals" if self.strategy == "pareto" else "steps"
        rows = [f"at most, for this run ({self.strategy}, {self.steps} {unit}):",
                f"{'role':<10} {'calls':>8} {'tok in':>11} {'tok out':>11} {'cost $':>10}"]
        tok_in: int | None = 0
        tok_out: int | None = 0
        for name, r in self.roles.items():
            if r.calls:
                rows.append(f"{name:<10} {r.calls:>8} {_n(r.input_tokens):>11} "
                            f"{_n(r.output_tokens):>11} {_usd(self.cost_usd.get(name)):>10}")
                tok_in, tok_out = _add(tok_in, r.input_tokens), _add(tok_out, r.output_tokens)
        rows.append(f"{'total':<10} {self.calls:>8} {_n(tok_in):>11} {_n(tok_out):>11} "
                    f"{_usd(self.cost_usd.get('total')):>10}")
        rows.append(f"tokens in all: {_n(self.tokens)}")
        return "\n".join(rows + [f"note: {n}" for n in self.notes])


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _mul(n: int, x: int | None) -> int | None:
    return None if x is None else n * x


def _n(x: int | None) -> str:
    return "unbounded" if x is None else str(x)


def _usd(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4f}"


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _gen(max_tokens: int | None) -> int | None:
    """A generated text's bound in tokens when it is put back into a prompt."""
    return None if max_tokens is None else max_tokens + RETOKENIZE


def _fill(template: str, **slots: str | int | None) -> int | None:
    """Tokens of `template` filled in: str slots as given (bytes), int slots as bounds."""
    text = render(template, **{k: v if isinstance(v, str) else "" for k, v in slots.items()})
    total: int | None = _bytes(text)
    for v in slots.values():
        if not isinstance(v, str):
            total = _add(total, v)
    return total


def _request(*parts: int | None, messages: int = 2, schema: Any = None) -> int | None:
    total: int | None = PER_REQUEST + PER_MESSAGE * messages
    for p in parts:
        total = _add(total, p)
    if schema is not None:
        total = _add(total, _bytes(json.dumps(schema)))
    return total


class _Bounds:
    """Per-call token bounds for one config and its data."""

    def __init__(self, config: RunConfig, splits: Splits) -> None:
        self.config = config
        p, o, s = config.pipeline, config.optimizer, config.strategy
        examples = [*splits.train, *splits.val, *splits.test]
        self.question = max((_bytes(p.template.format(input=e.input, **e.fields))
                             for e in examples), default=0)
        self.target = max((_bytes(e.target) for e in examples), default=0)
        self.answer = _gen(p.max_tokens)
        self.input = max((_bytes(e.input) for e in examples), default=0)
        self.role = max(_bytes(p.role_description or DEFAULT_ROLE),
                        _bytes(render("demos_output_role", input="")) + self.question
                        if s.demos else 0)
        # the system prompt as it may be after rewrites: the start, or a rewrite's reply;
        # appended instructions add up over the steps, so with edit = "append" no bound
        self.system = (max(_bytes(p.system_prompt), o.max_tokens + RETOKENIZE)
                       if o.max_tokens is not None and o.edit == "rewrite" else None)
        demos = max(s.demos, 0)
        self.demos = 0
        if demos:
            pair = _add(self.question + 2 * RETOKENIZE, self.answer)
            item = _fill("demos_item", input="", output="")
            self.demos = _add(_fill("demos_system", items="") or 0,
                              _mul(demos, _add(pair, (item or 0) + 1 + 2 * PER_MESSAGE)))
        self.system_text = _add(self.system, self.demos)
        self.feedback = _gen(o.feedback_max_tokens)
        self.judge = config.metric.name == "judge"
        self.judge_max = 400
        if self.judge:
            explanation = _gen(self.judge_max)
        else:
            explanation = _add(self.answer, self.target + EXPLANATION_SLACK)
        self.explanation = explanation

    # --- per call ------------------------------------------------------------------------
    def forward(self) -> tuple[int | None, int | None]:
        return _request(self.system_text, self.question), self.config.pipeline.max_tokens

    def loss(self) -> tuple[int | None, int | None]:
        instruction = self.config.metric.judge_instruction or ""
        context = (_fill("judge_question", question=self.question) or 0) + \
            (_fill("judge_reference", target=self.target) or 0) + 4
        prompt = _fill("judge", instruction=instruction, context=context,
                       prediction=self.answer, max_sentences="99")
        from textprop.metrics.judge import JUDGE_SCHEMA

        return (_request(prompt, _bytes(render("judge_system")), schema=JUDGE_SCHEMA),
                self.judge_max)

    def conversation(self) -> int | None:
        return _fill("conversation_llm_call", system_prompt=self.system_text,
                     prompt=self.question, output=self.answer)

    def backward(self) -> tuple[int | None, int | None]:
        o = self.config.optimizer
        focus = _fill("backward_focus", variable_role=self.role, variable_value=self.system,
                      max_sentences=str(o.feedback_sentences))
        body = max(_fill("backward_from_feedback", variable_role=self.role,
                         conversation=self.conversation(), output_role=200,
                         output_feedback=self.explanation, focus=focus) or 0,
                   _fill("backward_from_evaluation", variable_role=self.role,
                         conversation=self.conversation(), focus=focus) or 0) \
            if None not in (self.conversation(), self.explanation, focus, self.system) else None
        return self._feedback_request(body), o.feedback_max_tokens

    def reduce(self, batch: int) -> tuple[int | None, int | None]:
        o = self.config.optimizer
        items = _mul(batch, _add(_fill("reduce_item", feedback=self.feedback), 1))
        body = _fill("reduce", variable_role=self.role, count=str(batch), feedback=items,
                     max_sentences=str(o.feedback_sentences))
        return self._feedback_request(body), o.feedback_max_tokens

    def _feedback_request(self, body: int | None) -> int | None:
        o = self.config.optimizer
        reply = max(_bytes(render("reply_feedback_json")), _bytes(render("reply_feedback_text")))
        system = max(_bytes(render("backward_system")), _bytes(render("reduce_system")))
        return _request(body, reply + 2, system,
                        schema=feedback_schema(max_chars_for(o.feedback_max_tokens)))

    def optimizer(self, batch: int, failures: int = 0) -> tuple[int | None, int | None]:
        """One rewrite request, with its retries' growth: the last reply and a retry note."""
        o, memory = self.config.optimizer, self.config.optimizer.gradient_memory
        gradients = 1 if self.config.trainer.condense_batch_feedback else batch
        contexts = _mul(batch, _add(self.conversation(), _add(self.explanation, 2)))
        one = _fill("optimizer_feedback_in_context", conversation=contexts,
                    output_feedback=_add(_fill("optimizer_output_feedback",
                                               output_feedback=_mul(batch, _add(
                                                   self.explanation, 1))), 0),
                    output_role=200, variable_role=self.role, feedback=self.feedback)
        plain = _fill("optimizer_feedback_plain", feedback=self.feedback)
        feedback = _mul(gradients, _add(max(one or 0, plain or 0) if one is not None
                                        and plain is not None else None, 1))
        sections = [_fill("optimizer_update", variable_role=self.role,
                          variable_value=self.system, feedback=feedback)]
        if failures:
            item = _fill("optimizer_failure_item", input=max(self.question, self.input),
                         output=self.answer, expected=self.target, explanation=self.explanation)
            cut_off = _fill("optimizer_failures_cut_off", count="9999", total="9999")
            sections.append(_fill("optimizer_failures", variable_role=self.role,
                                  failures=_add(_mul(failures, _add(item, 1)),
                                                _add(cut_off, 2))))
        if memory:
            item = _fill("optimizer_memory_item", n="9999", feedback=_mul(gradients, _add(
                self.feedback, 1)))
            sections.append(_fill("optimizer_memory", count=str(memory),
                                  items=_mul(memory, _add(item, 1))))
        if o.constraints:
            text = "\n".join(f"Constraint {i}: {c}" for i, c in enumerate(o.constraints, 1))
            sections.append(_fill("optimizer_constraints", constraints=text))
        if o.in_context_examples:
            sections.append(_fill("optimizer_examples", variable_role=self.role,
                                  examples="\n".join(o.in_context_examples)))
        sections.append(max(_bytes(render("optimizer_reply_json")),
                            _bytes(render("optimizer_reply_tags", start_tag="<IMPROVED_VARIABLE>",
                                          end_tag="</IMPROVED_VARIABLE>"))))
        system = max(_bytes(render("optimizer_system", reply_rule=render(r, **kw)))
                     for r, kw in (("optimizer_rule_json", {}),
                                   ("optimizer_rule_tags", {"start_tag": "<IMPROVED_VARIABLE>",
                                                            "end_tag": "</IMPROVED_VARIABLE>"})))
        body: int | None = 2 * len(sections)
        for section in sections:
            body = _add(body, section)
        retry = 0 if not o.max_parse_retries else _add(
            _gen(o.max_tokens), max(_bytes(render("optimizer_retry", problem="x" * 200)),
                                    _bytes(render("optimizer_unchanged"))) + 2 * PER_MESSAGE)
        return _request(body, system, retry, schema=REWRITE_SCHEMA), o.max_tokens


def estimate(config: RunConfig, splits: Splits | None = None) -> Estimate:
    """The most `config`'s run can spend (see the module docstring)."""
    from textprop.train.build import build_splits

    kind = config.pipeline.kind
    if kind not in ("prompt", "chain"):  # user code's calls are not known ahead
        raise ConfigError(f"the estimate covers [pipeline] kind = 'prompt' and 'chain', not "
                          f"{kind!r}", source=str(config.source) if config.source else None,
                          field="pipeline.kind")
    splits = splits if splits is not None else build_splits(config)
    shape = _shape(config)
    bounds: _Bounds | _ChainBounds = (
        _Bounds(config, splits) if kind == "prompt" else _ChainBounds(config, shape))
    result = Estimate(config.strategy.kind, {r: RoleBound() for r in ROLES})
    if config.strategy.kind == "pareto":
        _pareto(config, splits, bounds, shape, result)
    else:
        _tgd(config, splits, bounds, shape, result)
    if kind == "chain":
        result.notes.append("a chain's calls are bounded; its tokens are not estimated yet")
    _price(config, result)
    b = config.budget
    if b.max_tokens is not None:
        result.notes.append(f"[budget] max_tokens = {b.max_tokens} stops the run there")
    if b.max_cost_usd is not None:
        result.notes.append(f"[budget] max_cost_usd = {b.max_cost_usd} stops the run there")
        if result.cost_usd.get("total") is None or result.cost_usd["total"] > b.max_cost_usd:
            result.cost_usd["total"] = b.max_cost_usd
    if b.max_calls is not None:
        result.notes.append(f"[budget] max_calls = {b.max_calls} caps the calls sent to "
                            "providers (cache hits are not counted)")
    appends = config.optimizer.edit == "append"
    if appends and kind == "prompt":
        result.notes.append('[optimizer] edit = "append": every accepted step adds an '
                            "instruction to the prompt, so its tokens have no bound")
    for role, r in result.roles.items():
        if r.calls and r.tokens is None and kind == "prompt" and not appends:
            result.notes.append(f"{role}: a call has no max_tokens, so its tokens have no "
                                "bound; set it in the config")
    return result


@dataclass(frozen=True)
class _Shape:
    """The LLM calls a pipeline makes: per run, and per example in the backward pass."""

    calls_per_run: int = 1
    feedback_per_example: int = 1  # one per input that requires grad, at every step
    texts: int = 1  # rewritable texts (system prompts)
    parameters: int = 1  # texts and demonstrations: each may get a batch condensed


def _shape(config: RunConfig) -> _Shape:
    p = config.pipeline
    if p.kind != "chain":
        return _Shape(parameters=2 if config.strategy.demos else 1)
    from textprop.train.pipelines.chain import ChainStep, order_steps, template_fields

    steps = order_steps([ChainStep(s.name, s.system_prompt, s.template) for s in p.steps])
    by_name = {s.name: s for s in p.steps}
    graded: set[str] = set()  # steps whose output depends on a parameter
    feedback = 0
    for step in steps:
        s = by_name[step.name]
        used = [f for f in template_fields(s.template) if f in graded]
        feedback += int(s.optimize) + len(used)  # the prompt, and each graded input
        if s.optimize or used:
            graded.add(s.name)
    texts = sum(s.optimize for s in p.steps)
    return _Shape(calls_per_run=len(p.steps), feedback_per_example=feedback, texts=texts,
                  parameters=texts + sum(s.optimize and s.demos for s in p.steps))


class _ChainBounds:
    """A chain's calls without token bounds (each step's prompt holds the others' outputs
    and their feedback; not modelled yet)."""

    def __init__(self, config: RunConfig, shape: _Shape) -> None:
        self.config, self.shape = config, shape
        self.judge = config.metric.name == "judge"

    def forward(self) -> tuple[int | None, int | None]:
        return None, None

    def loss(self) -> tuple[int | None, int | None]:
        return None, None

    def backward(self) -> tuple[int | None, int | None]:
        return None, None

    def reduce(self, batch: int) -> tuple[int | None, int | None]:
        return None, None

    def optimizer(self, batch: int, failures: int = 0) -> tuple[int | None, int | None]:
        return None, None


def _forward(result: Estimate, bounds: _Bounds | _ChainBounds, shape: _Shape, n: int) -> None:
    """`n` pipeline runs, each scored (a judge metric makes a call per run)."""
    result.roles["forward"].add(n * shape.calls_per_run, *bounds.forward())
    if bounds.judge:
        result.roles["loss"].add(n, *bounds.loss())


def _feedback(result: Estimate, bounds: _Bounds | _ChainBounds, shape: _Shape,
              batch: int) -> None:
    """The backward pass over a batch: its calls per example, one condensation per
    parameter that gets feedback from two or more examples."""
    result.roles["backward"].add(batch * shape.feedback_per_example, *bounds.backward())
    if bounds.config.trainer.condense_batch_feedback and batch >= 2:
        result.roles["backward"].add(shape.parameters, *bounds.reduce(batch))


def _tgd(config: RunConfig, splits: Splits, bounds: _Bounds | _ChainBounds, shape: _Shape,
         result: Estimate) -> None:
    t, o = config.trainer, config.optimizer
    n_val, n_test = len(splits.val), len(splits.test)
    batches = [len(b) for epoch in range(t.epochs)
               for b in splits.train.batches(t.batch_size, seed=config.run.seed + epoch)
               [:t.steps_per_epoch]]
    m = config.budget.max_metric_calls
    if m is not None:  # a step spends at least its batch, and starts only if it can pay
        spent, fit = n_val, []  # for its validation too
        for size in batches:
            if spent + size + n_val > m:
                break
            spent += size
            fit.append(size)
        batches = fit
    result.steps = len(batches)
    _forward(result, bounds, shape, n_val + n_test)  # baseline
    for batch in batches:
        _forward(result, bounds, shape, batch + n_val + (n_test if t.test_every_step else 0))
        _feedback(result, bounds, shape, batch)
        result.roles["optimizer"].add(shape.texts * (o.max_parse_retries + 1),
                                      *bounds.optimizer(batch))
    _forward(result, bounds, shape, n_test)  # the final test


def _pareto(config: RunConfig, splits: Splits, bounds: _Bounds | _ChainBounds, shape: _Shape,
            result: Estimate) -> None:
    s, o = config.strategy, config.optimizer
    n_val, n_test = len(splits.val), len(splits.test)
    n_hold = math.floor(n_val * s.holdout)
    if n_val - n_hold < 1:
        n_hold = 0
    search_val = n_val - n_hold
    mb = s.minibatch
    m = config.budget.max_metric_calls
    proposals = s.max_proposals
    if m is not None:
        # every proposal spends at least its parent's minibatch (a merge: its subsample)
        least = min(mb, len(splits.train), s.merge_subsample if s.merge else mb,
                    search_val if s.merge else mb)
        by_budget = max(m - n_val, 0) // max(least, 1)
        proposals = by_budget if proposals is None else min(proposals, by_budget)
    assert proposals is not None
    result.steps = proposals
    names = shape.parameters if s.components == "all" else 1
    merges = min(s.max_merges, proposals) if s.merge else 0
    mutations = proposals  # a merge slot may fall back to a mutation
    per_mutation = mb * (1 + s.children) + search_val
    per_merge = s.merge_subsample + search_val
    search_runs = mutations * per_mutation + merges * max(per_merge - per_mutation, 0)
    holdout_runs = s.final_candidates * n_hold
    if m is not None:  # the metric-call budget is reserved ahead: it is never overdrawn
        search_runs = min(search_runs, max(m - n_val, 0))
    _forward(result, bounds, shape, n_val + n_test)  # baseline
    _forward(result, bounds, shape, search_runs + holdout_runs)
    for _ in range(mutations):
        _feedback(result, bounds, shape, mb)
    rewrites = mutations * s.children * names * (o.max_parse_retries + 1)
    failures = min(mb, s.max_failures) if s.show_failures else 0
    result.roles["optimizer"].add(rewrites, *bounds.optimizer(mb, failures))
    _forward(result, bounds, shape, n_test)  # the final test


def _price(config: RunConfig, result: Estimate) -> None:
    prices = PriceTable()
    role_engine = {"forward": config.engine_spec("forward"),
                   "loss": config.engine_spec("feedback"),  # the judge runs on feedback's
                   "backward": config.engine_spec("feedback"),
                   "optimizer": config.engine_spec("optimizer")}
    total: float | None = 0.0
    for role, r in result.roles.items():
        if not r.calls:
            continue
        price = prices.lookup(role_engine[role])
        cost = (None if price is None or r.input_tokens is None or r.output_tokens is None
                else price.cost(r.input_tokens, r.output_tokens))
        if price is None:
            from textprop.engines.registry import public_spec

            note = f"no price known for {public_spec(role_engine[role])!r}"
            if note not in result.notes:
                result.notes.append(note)
        result.cost_usd[role] = cost
        total = None if total is None or cost is None else total + cost
    result.cost_usd["total"] = total

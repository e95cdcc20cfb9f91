"""Textual gradient descent: rewrite each parameter from the feedback it received."""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from textprop.engines.base import Message, Request
from textprop.errors import ContextWindowError, EngineReplyError
from textprop.functions.llm_call import _engine_or_default
from textprop.optim.optimizer import Optimizer
from textprop.optim.rewrite import APPEND_KEY, REWRITE_KEY, parse_rewrite, reply_schema
from textprop.prompts import render, tags_in
from textprop.variable import Variable

DEFAULT_TAGS = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
UNCHANGED = "the rewrite repeats the current value"
REPEATED = "the rewrite repeats a version already tried"
COPIED = "the instruction copies the feedback"
ANEW = (UNCHANGED, REPEATED, COPIED)  # replies worth a fresh sample rather than a repair
UNCHANGED_RETRY_TEMPERATURE = 0.8
SAMPLE_TEMPERATURE = 0.8
Edit = Literal["rewrite", "append"]
EDITS: tuple[str, ...] = get_args(Edit)
# The prompts that differ in append mode: ask for, and explain, one instruction to add.
APPEND_TEMPLATES = {name: name.replace("optimizer_", "optimizer_append_", 1) for name in (
    "optimizer_rule_json", "optimizer_rule_tags", "optimizer_reply_json",
    "optimizer_reply_tags", "optimizer_unchanged")}


@dataclass(frozen=True)
class UpdateRecord:
    """What one step did to one parameter, and why (kept in `optimizer.history`)."""

    name: str
    role_description: str
    before: str
    after: str
    feedback: str
    status: str  # "updated", "unchanged" (same text), "repeated" (an already tried text),
    #             "copied" (append mode: the feedback's words), "no_feedback", "unparseable",
    #             "too_long" (the request did not fit the writer's context window)
    reason: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextualGradientDescent(Optimizer):
    """TGD: one LLM call per parameter that received feedback.

    The update prompt shows the parameter's role and its full current value, every gradient
    with the context it came from, the constraints, the in-context examples and, with
    `gradient_memory=k`, the feedback of the last k steps. The rewrite is asked for as JSON
    when the engine supports structured output and between tags otherwise. A reply that
    can't be parsed, or that merely repeats the current value although there is feedback, is
    retried `max_parse_retries` times with the problem explained; if it still fails the
    parameter keeps its value and the record says why. It never raises for a bad reply.

    `edit="append"` asks instead for one new instruction, added at the end of the current
    value: a small writer (the 1.5B embedded model) asked for a whole new text mostly copies
    the old one back, so a search sees no new candidate (B4's first pareto cell: 20 of 22
    proposals); asked for one instruction, it proposed a new text each time in the
    restarted cell, and one that only repeats the value's own words, or copies a run of
    the feedback's, is asked again. When the instruction was asked with failures (a
    search's minibatch), such an echo is asked again from the failures alone, with no feedback and
    no list of tried versions to echo, then as fresh samples of that request: in B4's
    second pareto cell the 1.5B writer, told three times each to use its own words, copied
    the critique in 17 of 21 rewrites and made one new text.
    """

    def __init__(self, parameters: Mapping[str, Variable] | Iterable[Variable],
                 verbose: int = 0, engine: Any = None,
                 constraints: Sequence[str] | None = None,
                 new_variable_tags: Sequence[str] | None = None,
                 optimizer_system_prompt: str | None = None,
                 in_context_examples: Sequence[str] | None = None,
                 gradient_memory: int = 0, *, max_parse_retries: int = 2,
                 structured: bool | None = None, max_tokens: int | None = None,
                 temperature: float = 0.0, seed: int | None = 0,
                 edit: Edit = "rewrite") -> None:
        if edit not in EDITS:
            raise ValueError(f"edit must be one of {', '.join(EDITS)}, got {edit!r}")
        super().__init__(parameters)
        self._settings = dict(
            verbose=verbose, engine=engine, constraints=constraints,
            new_variable_tags=new_variable_tags, optimizer_system_prompt=optimizer_system_prompt,
            in_context_examples=in_context_examples, gradient_memory=gradient_memory,
            max_parse_retries=max_parse_retries, structured=structured, max_tokens=max_tokens,
            temperature=temperature, seed=seed, edit=edit)
        self.edit = edit
        self._reply_key = APPEND_KEY if edit == "append" else REWRITE_KEY
        self.engine = _engine_or_default(engine)
        self.verbose = verbose
        self.constraints = list(constraints or [])
        self.in_context_examples = list(in_context_examples or [])
        self.gradient_memory = gradient_memory
        self.tags: tuple[str, str] = tuple(new_variable_tags or DEFAULT_TAGS)  # type: ignore
        self.structured = (self.engine.supports_json_schema if structured is None
                           else structured)
        self.max_parse_retries = max_parse_retries
        self.sampling = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        self.system_prompt = self._system_prompt(optimizer_system_prompt)
        for state in self.state.values():
            state["memory"] = []
        self.history: list[UpdateRecord] = []

    def with_parameters(self, parameters: Mapping[str, Variable]) -> TextualGradientDescent:
        return TextualGradientDescent(parameters, **self._settings)

    # --- prompts -------------------------------------------------------------------------
    def _system_prompt(self, custom: str | None) -> str:
        if custom is not None:  # TextGrad's contract: {new_variable_start_tag} placeholders
            return custom.format(new_variable_start_tag=self.tags[0],
                                 new_variable_end_tag=self.tags[1])
        rule = (render(self._prompt("optimizer_rule_json")) if self.structured else
                render(self._prompt("optimizer_rule_tags"), start_tag=self.tags[0],
                       end_tag=self.tags[1]))
        return render("optimizer_system", reply_rule=rule)

    def _prompt(self, name: str) -> str:
        """The template `name`, or its twin in append mode."""
        return APPEND_TEMPLATES.get(name, name) if self.edit == "append" else name

    @property
    def constraint_text(self) -> str:
        return "\n".join(f"Constraint {i}: {c}" for i, c in enumerate(self.constraints, 1))

    def update_prompt(self, name: str, failures: str = "", tried: Sequence[str] = (), *,
                      with_feedback: bool = True) -> str:
        """The user message asking for a rewrite of parameter `name`; `failures` (rendered
        examples the current value got wrong) is shown after the feedback when given, and
        `tried` (rewrites of the same value that a search already rejected) after those.
        `with_feedback=False` leaves the feedback (and its memory) out: the rewrite is asked
        from the failures alone."""
        variable = self.named_parameters[name]
        sections = [render("optimizer_update", variable_role=variable.role_description,
                           variable_value=variable.value,
                           feedback=self._feedback_text(variable)) if with_feedback else
                    render("optimizer_update_failures_only",
                           variable_role=variable.role_description,
                           variable_value=variable.value)]
        if failures:
            sections.append(render("optimizer_failures", variable_role=variable.role_description,
                                   failures=failures))
        if tried:
            items = "\n".join(render("optimizer_tried_item", n=n,
                                     value=self._tried_text(variable.value, value))
                              for n, value in enumerate(tried, 1))
            sections.append(render("optimizer_tried", variable_role=variable.role_description,
                                   items=items))
        memory = self.state[name]["memory"] if with_feedback else []
        past = memory[-self.gradient_memory:] if self.gradient_memory > 0 else []
        if past:
            items = "\n".join(render("optimizer_memory_item", n=n, feedback=f)
                              for n, f in enumerate(past, 1))
            sections.append(render("optimizer_memory", count=len(past), items=items))
        sections.extend(self._extra_sections(name))
        if self.constraints:
            sections.append(render("optimizer_constraints", constraints=self.constraint_text))
        if self.in_context_examples:
            sections.append(render("optimizer_examples", variable_role=variable.role_description,
                                   examples="\n".join(self.in_context_examples)))
        if self.edit == "append":
            sections.append(render("optimizer_append", variable_role=variable.role_description))
        sections.append(render(self._prompt("optimizer_reply_json")) if self.structured else
                        render(self._prompt("optimizer_reply_tags"), start_tag=self.tags[0],
                               end_tag=self.tags[1]))
        return "\n\n".join(sections)

    def _tried_text(self, current: str, tried: str) -> str:
        """How a rejected version is shown: in append mode, the instruction it added."""
        if self.edit == "append" and tried.startswith(current):
            return tried[len(current):].strip()
        return tried

    def _apply_edit(self, current: str, text: str) -> str:
        """The new value from the reply's text: the text itself, or the value with the text
        added as a new line at its end."""
        return text if self.edit == "rewrite" else f"{current.rstrip()}\n{text}"

    def _extra_sections(self, name: str) -> list[str]:
        """Sections a subclass adds after the feedback memory (momentum: past values)."""
        return []

    @staticmethod
    def _feedback_text(variable: Variable) -> str:
        parts = []
        for g in variable.gradients:
            context = getattr(g, "context", None)
            if context is None:
                parts.append(render("optimizer_feedback_plain", feedback=g.value))
            else:
                note = (render("optimizer_output_feedback",
                               output_feedback=context.output_feedback)
                        if context.output_feedback.strip() else "")
                parts.append(render("optimizer_feedback_in_context",
                                    conversation=context.conversation, output_feedback=note,
                                    output_role=context.output_role,
                                    variable_role=variable.role_description,
                                    feedback=g.value))
        return "\n".join(parts)

    def update_request(self, name: str, failures: str = "", sample: int = 0,
                       tried: Sequence[str] = (), *, with_feedback: bool = True) -> Request:
        """The rewrite request; `sample` k > 0 asks for the k-th alternative rewrite, sampled
        at `SAMPLE_TEMPERATURE` with seed + k (a search's extra children)."""
        sampling = dict(self.sampling)
        if sample:
            sampling["temperature"] = max(sampling["temperature"], SAMPLE_TEMPERATURE)
            sampling["seed"] = (sampling["seed"] or 0) + sample
        return Request.chat(self.update_prompt(name, failures, tried,
                                               with_feedback=with_feedback), self.system_prompt,
                            role="optimizer",
                            json_schema=reply_schema(self._reply_key) if self.structured
                            else None, **sampling)

    # --- the step ------------------------------------------------------------------------
    async def astep(self, names: Sequence[str] | None = None) -> list[UpdateRecord]:
        """Rewrite every parameter (or those in `names`) that has feedback, concurrently;
        apply in order."""
        chosen = list(self.named_parameters) if names is None else list(names)
        records = await asyncio.gather(*(self.arewrite(name) for name in chosen))
        for record in records:
            self.named_parameters[record.name].set_value(record.after)
            if record.feedback:
                self.state[record.name]["memory"].append(record.feedback)
            if self.verbose:
                print(f"[TGD] {record.role_description}: {record.status}\n{record.after}")
        self.history.extend(records)
        return records

    async def arewrite(self, name: str, *, failures: str = "", sample: int = 0,
                       tried: Sequence[str] = ()) -> UpdateRecord:
        """One proposed rewrite of parameter `name` from its feedback, not applied.

        A reply that repeats one of `tried` is asked again, like one that repeats the current
        value: a search gains nothing from re-testing a rewrite it already rejected."""
        variable = self.named_parameters[name]
        feedback = variable.get_gradient_text()
        record = dict(name=name, role_description=variable.role_description,
                      before=variable.value, feedback=feedback)
        if not feedback.strip():
            return UpdateRecord(**record, after=variable.value, status="no_feedback",
                                reason="no feedback reached this parameter", attempts=0)
        request = self.update_request(name, failures, sample, tried)
        problem, from_failures = "", False
        for attempt in range(1, self.max_parse_retries + 2):
            try:
                value, reply_text, problem, note = await self._attempt(
                    request, variable.value, tried, feedback)
            except ContextWindowError as error:  # a long failure list, or a retry's turns
                return UpdateRecord(**record, after=variable.value, status="too_long",
                                    reason=f"the rewrite request did not fit the writer's "
                                    f"context window: {error}", attempts=attempt)
            if value is not None:
                how = ("asked again from the failures alone" if from_failures else "", note)
                return UpdateRecord(**record, after=value, status="updated",
                                    reason="; ".join(filter(None, how)), attempts=attempt)
            if self.edit == "append" and failures and problem in ANEW:
                # A reply that only echoes text from its own prompt (the feedback, a version
                # already tried, the value) is asked again from the failures alone, with
                # nothing else to echo; after that, as a fresh sample of that request rather
                # than a turn showing the writer its last reply (which a small one sends back).
                fresh = self.update_request(name, failures, sample, with_feedback=False)
                request = fresh.with_(temperature=max(fresh.temperature,
                                                      UNCHANGED_RETRY_TEMPERATURE),
                                      seed=(fresh.seed or 0) + attempt) if from_failures else fresh
                from_failures = True
                continue
            retry = (render(self._prompt("optimizer_unchanged")) if problem == UNCHANGED
                     else render("optimizer_repeated") if problem == REPEATED
                     else render("optimizer_append_copied") if problem == COPIED
                     else render("optimizer_retry", problem=problem))
            # A model that repeated itself at temperature 0 will do so again: sample (seeded).
            temperature = (max(request.temperature, UNCHANGED_RETRY_TEMPERATURE)
                           if problem in (UNCHANGED, REPEATED, COPIED)
                           else request.temperature)
            request = request.with_(temperature=temperature, messages=(
                *request.messages[:2], Message("assistant", reply_text), Message("user", retry)))
        if problem == UNCHANGED:
            return UpdateRecord(**record, after=variable.value, status="unchanged",
                                reason="the optimizer kept the text as it was",
                                attempts=self.max_parse_retries + 1)
        if problem == REPEATED:
            return UpdateRecord(**record, after=variable.value, status="repeated",
                                reason="every rewrite repeated one already tried",
                                attempts=self.max_parse_retries + 1)
        if problem == COPIED:
            return UpdateRecord(**record, after=variable.value, status="copied",
                                reason="every instruction copied the feedback",
                                attempts=self.max_parse_retries + 1)
        return UpdateRecord(**record, after=variable.value, status="unparseable",
                            reason=f"kept the old value: {problem}",
                            attempts=self.max_parse_retries + 1)

    async def _attempt(self, request: Request, current: str, tried: Sequence[str] = (),
                       feedback: str = "") -> tuple[str | None, str, str, str]:
        """One rewrite request: (the new value or None, the reply text, why not usable, how
        the value was read when the reply was imperfect)."""
        try:
            completion = await self.engine.acomplete(request)
        except EngineReplyError as error:  # e.g. a schema reply that is not JSON
            if error.completion is None or error.completion.finish_reason != "length":
                return None, error.reply_text or "", str(error), ""
            completion = error.completion  # cut off: `parse_rewrite` may still read it
        parsed = parse_rewrite(completion, self.tags, self._reply_key)
        text = completion.text
        if parsed.value is None:
            return None, text, parsed.problem, ""
        proposed = unwrapped(parsed.value) if self.edit == "append" else parsed.value
        if proposed == current or (self.edit == "append" and restates(proposed, current)):
            return None, text, UNCHANGED, ""
        if self.edit == "append" and copies(proposed, feedback):
            return None, text, COPIED, ""
        if leaked := sorted(tags_in(proposed) - tags_in(current)):
            return None, text, markup_problem(leaked), ""
        value = self._apply_edit(current, proposed)
        if value in tried or (self.edit == "append"
                              and any(restates(proposed, t) for t in tried)):
            return None, text, REPEATED, ""
        return value, text, "", parsed.note

    # --- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"state": {name: {"memory": list(s["memory"])}
                          for name, s in self.state.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for s in self.state.values():
            s["memory"] = list(s.get("memory", []))


TGD = TextualGradientDescent


def markup_problem(tags: Sequence[str]) -> str:
    """Why a rewrite that carries this prompt's own markup is refused. TextGrad's writer
    once pasted a critic's conversation into its prompt (B4, object_counting seed 2); every
    answer then ended in a copied `</LM_OUTPUT>` and the test score fell from 0.35 to 0."""
    return (f"it carries {', '.join(tags)}, markup of this prompt that is not part of the "
            "variable; the model that reads the variable would copy it into its answers")


_PREAMBLE = re.compile(r"[^:\n]{0,80}\binstructions?\b[^:\n]{0,80}:\s*", re.IGNORECASE)
_QUOTES = ("'", '"', "`")


def unwrapped(instruction: str) -> str:
    """`instruction` without a preamble that announces it ("The new instruction to add at the
    end of the variable is: '...'") and the quotes around it. The 1.5B writer wrapped 3 of
    its 16 GSM8K instructions so (B4, pareto seed 0); the wrapper reached the task model as
    is and hid from `restates` that the quoted line was the prompt's own format line."""
    match = _PREAMBLE.match(instruction)
    if match is None or not re.search(r"\b(new|add|added|adding)\b", match.group(0),
                                      re.IGNORECASE):
        return instruction
    rest = instruction[match.end():].strip()
    if len(rest) > 1 and rest[0] in _QUOTES and rest[-1] == rest[0]:
        rest = rest[1:-1].strip()
    return rest or instruction


RESTATES_SHARE = 0.9


def restates(instruction: str, text: str) -> bool:
    """Whether `instruction` adds nothing to `text`: at least RESTATES_SHARE of its words
    (three letters or more) are already there. The 1.5B writer, told not to, still often
    "adds" the answer-format line its prompt opens with; running that on a minibatch
    spends task-model calls to learn nothing. Against a version already tried it is a
    near-repeat: in B4's GSM8K pareto seed 0, proposals 5 to 12 of the seed each restated
    one of the three rejected before them, reworded, and each paid a minibatch."""
    words = re.findall(r"[a-z0-9$]{3,}", instruction.lower())
    known = set(re.findall(r"[a-z0-9$]{3,}", text.lower()))
    return bool(words) and sum(w in known for w in words) >= RESTATES_SHARE * len(words)


COPIED_RUN = 12


def copies(instruction: str, feedback: str) -> bool:
    """Whether `instruction` carries a run of COPIED_RUN or more consecutive words of
    `feedback`. The 1.5B writer in append mode often returned the critic's remark itself
    ("The structured system prompt ... should be improved by adding ...", up to 168 words
    of it, in B4's seed-0 pareto cell): appended to a system prompt, that talks to the task
    model about its prompt instead of telling it how to do the task."""
    a, b = _words(instruction), _words(feedback)
    match = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(
        0, len(a), 0, len(b))
    return match.size >= COPIED_RUN


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9$']+", text.lower())

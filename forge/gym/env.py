"""`NetworkEnv`: one network, a typed tool interface, and the Experiment Model as its physics.

    env = NetworkEnv(scenario, seed=0, model=ExperimentModel.load())
    obs = env.step({"tool": "get_ue_kpis", "args": {"ue": 3}})    # -> Observation
    obs.ok, obs.result, obs.error, obs.render()                    # render(): "<ans>{...}</ans>"

The state is the current `Scenario` plus bookkeeping (applied changes, for rollback and history).
Observe/compute calls read it; configure calls replace the Scenario with a validated copy. KPIs of
a state are the model's prediction of that Scenario, cached by `scenario_id` (in a `CachedModel`
that several envs can share, which is what makes replay verification fast). What the agent
observes at step k is that prediction plus measurement noise seeded with (seed, k); goals are
checked on the noiseless prediction.

Nothing the agent sends can crash `step`: an unknown tool, a malformed call, arguments that fail
the tool's JSON Schema, an index outside the network or a change that would make the network
invalid all return `Observation(ok=False, error={code, message, field})`, count as failed steps
and leave the state untouched.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from forge.experiment_model import ScenarioPrediction, physics
from forge.gym import handlers as H
from forge.gym import kpis as K
from forge.gym.catalogue import BY_NAME
from forge.gym.handlers import ToolError
from forge.scenario import Scenario

ERROR_CODES = ("unknown_tool", "malformed_call", "invalid_args", "out_of_range", "invalid_state",
               "internal_error")
# JSON Schema keywords whose failure means "a value outside its allowed range".
_RANGE_KEYWORDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"}
MAX_CALL_CHARS = 20_000
# Measured views a CachedModel keeps: a few episodes' worth (one per step that measured).
MEASURED_CACHE = 512


class Predictor(Protocol):
    """What the env needs from a model: `ExperimentModel` and `ClosedFormModel` both fit."""

    def predict(self, scenarios: Sequence[Scenario]) -> list[ScenarioPrediction]: ...


def model_id(model: Any) -> str:
    return str(getattr(model, "model_hash", "") or type(model).__name__)


class CachedModel:
    """A model plus an LRU cache of (prediction, KPI view) per scenario_id.

    Share one instance between envs (e.g. all replays of a verification run): scenarios repeat
    across trajectories of the same task, and the initial state of every trajectory of a
    scenario is the same.
    """

    def __init__(self, model: Predictor, maxsize: int = 4096) -> None:
        self.model: Predictor = model.model if isinstance(model, CachedModel) else model
        self.model_hash = model_id(self.model)
        self.maxsize = maxsize
        self._cache: OrderedDict[str, tuple[ScenarioPrediction, K.KpiView]] = OrderedDict()
        # Measured views by (scenario, seed, step, noise): the replay verifier measures every
        # step its episode measured, with the same seed, right after the solver did.
        self._measured: OrderedDict[tuple[str, int, int, float, float], K.KpiView] = \
            OrderedDict()
        self.hits = 0
        self.misses = 0

    def predict(self, scenarios: Sequence[Scenario]) -> list[ScenarioPrediction]:
        return [self.view(s)[0] for s in scenarios]

    def warm(self, scenarios: Sequence[Scenario]) -> None:
        """Predict the uncached scenarios in one batched call."""
        todo = {s.scenario_id: s for s in scenarios if s.scenario_id not in self._cache}
        if todo:
            preds = self.model.predict(list(todo.values()))
            for s, p in zip(todo.values(), preds, strict=True):
                self._put(s, p)

    def view(self, scn: Scenario) -> tuple[ScenarioPrediction, K.KpiView]:
        key = scn.scenario_id
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return hit
        self.misses += 1
        return self._put(scn, self.model.predict([scn])[0])

    def measured(self, scn: Scenario, seed: int, step: int, rel: float, db: float
                 ) -> K.KpiView:
        """`K.measure` of the prediction of `scn` (a pure function of its arguments: cached)."""
        key = (scn.scenario_id, seed, step, rel, db)
        m = self._measured.get(key)
        if m is not None:
            self._measured.move_to_end(key)
            return m
        pred, view = self.view(scn)
        m = self._measured[key] = K.measure(scn, pred.ues, view.phys, seed, step, rel, db)
        if len(self._measured) > MEASURED_CACHE:
            self._measured.popitem(last=False)
        return m

    def _put(self, scn: Scenario, pred: ScenarioPrediction
             ) -> tuple[ScenarioPrediction, K.KpiView]:
        view = K.build_view(scn, pred.ues, pred.physics or physics.compute(scn), pred.in_domain,
                            pred.domain_issues, pred.uncertainty)
        self._cache[scn.scenario_id] = (pred, view)
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return pred, view


@dataclass(frozen=True)
class Observation:
    ok: bool
    tool: str | None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "tool": self.tool, "result": self.result}
        return {"ok": False, "tool": self.tool, "error": self.error}

    def to_json(self) -> str:
        # Encoded once: `step` encodes to surface an unserialisable result, and the transcript
        # and the replay verifier then ask again (the result is not changed after the step).
        text: str | None = self.__dict__.get("_json")
        if text is None:
            text = json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
            object.__setattr__(self, "_json", text)
        return text

    def render(self) -> str:
        """The content of the `tool` message that carries this observation."""
        return f"<ans>{self.to_json()}</ans>"


def _error(tool: str | None, code: str, message: str, field: str | None) -> Observation:
    return Observation(ok=False, tool=tool,
                       error={"code": code, "message": message[:500], "field": field})


_VALIDATORS: dict[str, Draft202012Validator] = {}


def validator(tool: str) -> Draft202012Validator:
    v = _VALIDATORS.get(tool)
    if v is None:
        v = _VALIDATORS[tool] = Draft202012Validator(BY_NAME[tool].args)
    return v


# (tool, canonical JSON of args) known to be valid: episodes repeat the same few calls, and a
# replay repeats every call; walking a tool's schema cost ~0.2 ms a call, 4 % of a synthesis run.
_VALID_ARGS: set[tuple[str, str]] = set()
_VALID_ARGS_MAX = 8192


def schema_error(tool: str, args: Any, prefix: str = "") -> ToolError | None:
    """The most relevant JSON Schema violation of `args` as a ToolError, or None if valid."""
    try:
        key: tuple[str, str] | None = (tool, json.dumps(args, sort_keys=True))
    except (TypeError, ValueError):  # not JSON (a Python caller's object): just validate
        key = None
    if key in _VALID_ARGS:
        return None
    err: ValidationError | None = best_match(validator(tool).iter_errors(args))
    if err is None:
        if key is not None:
            if len(_VALID_ARGS) >= _VALID_ARGS_MAX:
                _VALID_ARGS.clear()
            _VALID_ARGS.add(key)
        return None
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in (err.instance or {})]
        path = ".".join(p for p in (path, missing[0] if missing else "") if p)
    elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        path = ".".join(p for p in (path, str(extra[0]) if extra else "") if p)
    code = "out_of_range" if err.validator in _RANGE_KEYWORDS else "invalid_args"
    field = prefix + path if path else (prefix.rstrip(".") or None)
    return ToolError(code, f"{tool}: {field or 'args'}: {err.message}", field)


class NetworkEnv:
    def __init__(self, scenario: Scenario, *, seed: int = 0, model: Predictor | None = None,
                 noise_rel: float = K.NOISE_REL, noise_db: float = K.NOISE_DB) -> None:
        if model is None:
            from forge.experiment_model import ExperimentModel

            model = ExperimentModel.load()
        self.model = model if isinstance(model, CachedModel) else CachedModel(model)
        self.seed = seed
        self.noise_rel = noise_rel
        self.noise_db = noise_db
        self.initial_scenario = scenario
        self.scenario = scenario
        # (scenario before the change, change record), oldest first: rollback pops the last.
        self.history: list[tuple[Scenario, dict[str, Any]]] = []
        self.steps = 0
        self.failed_steps = 0
        self._changes = 0

    # -- state access ------------------------------------------------------------------------------
    def predict_view(self, scn: Scenario) -> tuple[ScenarioPrediction, K.KpiView]:
        return self.model.view(scn)

    def truth(self) -> K.KpiView:
        """The model's noiseless KPIs of the current state (goals are checked on this)."""
        return self.model.view(self.scenario)[1]

    def prediction(self) -> ScenarioPrediction:
        return self.model.view(self.scenario)[0]

    def measured(self) -> K.KpiView:
        """What the agent measures at the current step (noise seeded with (seed, step))."""
        return self.model.measured(self.scenario, self.seed, self.steps, self.noise_rel,
                                   self.noise_db)

    @property
    def state_key(self) -> tuple[str, int]:
        """Identity of the state: the scenario and the change bookkeeping."""
        return self.scenario.scenario_id, len(self.history)

    # -- stepping --------------------------------------------------------------------------------
    def validate_args(self, tool: str, args: Any, prefix: str = "") -> dict[str, Any]:
        err = schema_error(tool, args, prefix)
        if err is not None:
            raise err
        for v in args.values():
            if isinstance(v, float) and not math.isfinite(v):
                raise ToolError("out_of_range", f"{tool}: non-finite number", prefix or None)
        return dict(args)

    def step(self, call: Any) -> Observation:
        """Execute one tool call: a dict {"tool", "args"} or its JSON text."""
        tool: str | None = None
        try:
            tool, args = self._parse_call(call)
            obs = self._dispatch(tool, args)
            obs.to_json()  # an unserialisable result is a bug: surface it as internal_error
        except ToolError as e:
            obs = _error(tool, e.code, e.message, e.field)
        except Exception as e:  # a bug in a handler must not end an agent's episode
            obs = _error(tool, "internal_error", f"{type(e).__name__}: {e}", None)
        self.steps += 1
        if not obs.ok:
            self.failed_steps += 1
        return obs

    def _parse_call(self, call: Any) -> tuple[str, dict[str, Any]]:
        if isinstance(call, str | bytes):
            if len(call) > MAX_CALL_CHARS:
                raise ToolError("malformed_call", f"call longer than {MAX_CALL_CHARS} chars")
            try:
                call = json.loads(call)
            except (ValueError, UnicodeDecodeError) as e:
                raise ToolError("malformed_call", f"call is not valid JSON: {e}") from e
        if not isinstance(call, dict):
            raise ToolError("malformed_call", "a call is a JSON object {\"tool\", \"args\"}")
        extra = sorted(set(call) - {"tool", "args"})
        if extra:
            raise ToolError("malformed_call", f"unexpected keys in call: {extra}", extra[0])
        tool = call.get("tool")
        if not isinstance(tool, str):
            raise ToolError("malformed_call", "`tool` must be a string", "tool")
        if tool not in BY_NAME:
            raise ToolError("unknown_tool", f"unknown tool {tool[:80]!r}", "tool")
        args = call.get("args", {})
        if not isinstance(args, dict):
            raise ToolError("invalid_args", "`args` must be a JSON object", "args")
        return tool, args

    def _dispatch(self, tool: str, args: dict[str, Any]) -> Observation:
        args = self.validate_args(tool, args)
        if tool == "rollback":
            return Observation(True, tool, K.round_floats(self._rollback()))
        if tool in H.CONFIGURE:
            ch = H.CONFIGURE[tool](self.scenario, args)
            self._changes += 1
            record = {"change_id": self._changes, "tool": tool, "args": args,
                      "description": ch.description}
            self.history.append((self.scenario, record))
            self.scenario = ch.scenario
            return Observation(True, tool, K.round_floats({
                "applied": True, "change_id": self._changes, "description": ch.description,
                "changed": ch.changed}))
        return Observation(True, tool, K.round_floats(H.READ[tool](self, args)))

    def _rollback(self) -> dict[str, Any]:
        if not self.history:
            raise ToolError("invalid_state", "nothing to roll back: no change was applied")
        prev, record = self.history.pop()
        self.scenario = prev
        return {"applied": True, "change_id": record["change_id"],
                "description": f"undid change {record['change_id']}: {record['description']}",
                "changes_left": len(self.history)}

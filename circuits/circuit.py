"""Circuit: nodes and scored edges of a computational graph, heads with optional roles, and how
faithful the circuit is.

Two kinds of edges, one type:
- `graph_edges` (`Edge`, {"src", "dst", "score"}): edges of `circuits.graph.Graph` by node name
  ("input", "a{L}.h{H}", "m{L}" -> "a{L}.h{H}<q>", "a{L}.kv{G}<k>", "m{L}", "logits"), as EAP
  and EAP-IG find them (`circuits.discover`); `nodes` lists the nodes they touch.
- `edges` (`CircuitEdge`): head-to-head path-patching edges with the receiving input, as Wang et
  al.'s IOI discovery finds them (`circuits.ioi`); `all_edges()` gives both as `Edge`s.
Roles (the IOI classes) label heads where a method names them; EAP circuits leave them None.
A circuit stored before nodes and graph edges existed loads with both empty.

Saved to the results store as a "circuit" run whose `result` is `Circuit.to_json()`:

    {"model": "smollm2-135m", "model_id": ..., "task": "ioi",
     "heads": [{"layer": 23, "head": 3, "role": "name_mover", "score": -0.61}, ...],
     "edges": [{"sender": {"layer": 17, "head": 4}, "receiver": {"layer": 23, "head": 3},
                "input": "q", "effect": -0.21}, ...],        # receiver "logits" for output edges
     "faithfulness": 0.87, "random_baseline": {"mean": 0.12, "std": 0.08, "n": 20},
     "n_heads_total": 270, "evaluation": {...}, "params": {...},
     "method": "path", "nodes": [...], "graph_edges": [{"src", "dst", "score"}],
     "node_info": {node: {...}}}

`node_info` keeps what a method says about a node beyond its name (a feature circuit's SAE
feature nodes: kind, hook, layer, feature, score, top-activating "contexts", "density"), so the
dashboard can show it; empty for the methods that name nodes only.

Scores and effects are in the patching results' units: the change of the normalized metric
(0 = corrupted, 1 = clean) when that head / path is corrupted; negative = the head helps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from interp.errors import InvalidInput

ROLES = (
    "name_mover",
    "negative_name_mover",
    "backup_name_mover",
    "s_inhibition",
    "induction",
    "duplicate_token",
    "previous_token",
)

# Wang et al.'s positions where each class does its work (ARENA's SEQ_POS_TO_KEEP, from the
# paper's section 3): faithfulness with positions="role" keeps a head only there.
ROLE_POSITIONS = {
    "name_mover": "end",
    "negative_name_mover": "end",
    "backup_name_mover": "end",
    "s_inhibition": "end",
    "induction": "S2",
    "duplicate_token": "S2",
    "previous_token": "S1+1",
}


@dataclass(frozen=True)
class CircuitHead:
    layer: int
    head: int
    role: str | None = None  # an IOI class (ROLES), or None where the method names no role
    score: float | None = None  # the effect that selected it (see module doc)

    def to_json(self) -> dict:
        return {"layer": self.layer, "head": self.head, "role": self.role, "score": self.score}


@dataclass(frozen=True)
class CircuitEdge:
    """sender head -> receiver head's `input` ("q", "k", "v"), or -> the logits (receiver None)."""

    sender: tuple[int, int]
    receiver: tuple[int, int] | None
    input: str
    effect: float

    def to_json(self) -> dict:
        return {
            "sender": {"layer": self.sender[0], "head": self.sender[1]},
            "receiver": "logits" if self.receiver is None
            else {"layer": self.receiver[0], "head": self.receiver[1]},
            "input": self.input,
            "effect": self.effect,
        }

    @classmethod
    def from_json(cls, data: dict) -> "CircuitEdge":
        receiver = data["receiver"]
        return cls(
            sender=(data["sender"]["layer"], data["sender"]["head"]),
            receiver=None if receiver == "logits" else (receiver["layer"], receiver["head"]),
            input=data["input"], effect=data["effect"],
        )


@dataclass(frozen=True)
class Edge:
    """A scored edge between named graph nodes (`circuits.graph`): src -> dst's input."""

    src: str
    dst: str
    score: float

    def to_json(self) -> dict:
        return {"src": self.src, "dst": self.dst, "score": self.score}

    @classmethod
    def from_json(cls, data: dict) -> "Edge":
        return cls(str(data["src"]), str(data["dst"]), float(data["score"]))


def _head_node(head: tuple[int, int] | None) -> str:
    return "logits" if head is None else f"a{head[0]}.h{head[1]}"


@dataclass
class Circuit:
    model: str
    task: str
    heads: list[CircuitHead]
    n_heads_total: int
    edges: list[CircuitEdge] = field(default_factory=list)
    model_id: str = ""
    faithfulness: float | None = None
    random_baseline: dict | None = None
    evaluation: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    prompt_hash: str = ""
    method: str = "path"
    nodes: list[str] = field(default_factory=list)
    graph_edges: list[Edge] = field(default_factory=list)
    node_info: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        seen = set()
        for h in self.heads:
            if h.role is not None and h.role not in ROLES:
                raise InvalidInput(f"unknown role {h.role!r} for head {h.layer}.{h.head}; roles: {ROLES}")
            if (h.layer, h.head) in seen:
                raise InvalidInput(f"head {h.layer}.{h.head} appears twice in the circuit")
            seen.add((h.layer, h.head))

    @property
    def head_set(self) -> set[tuple[int, int]]:
        return {(h.layer, h.head) for h in self.heads}

    def by_role(self) -> dict[str, list[tuple[int, int]]]:
        roles = defaultdict(list)
        for h in self.heads:
            roles[h.role].append((h.layer, h.head))
        return dict(roles)

    def role_of(self, layer: int, head: int) -> str | None:
        return next((h.role for h in self.heads if (h.layer, h.head) == (layer, head)), None)

    def __len__(self) -> int:
        return len(self.heads)

    def all_edges(self) -> list[Edge]:
        """Graph edges, then the path-patching head edges as `Edge`s (dst "a{L}.h{H}<input>")."""
        path = [Edge(_head_node(e.sender),
                     "logits" if e.receiver is None else f"{_head_node(e.receiver)}<{e.input}>",
                     float(e.effect)) for e in self.edges]
        return list(self.graph_edges) + path

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "model_id": self.model_id,
            "task": self.task,
            "heads": [h.to_json() for h in self.heads],
            "edges": [e.to_json() for e in self.edges],
            "faithfulness": self.faithfulness,
            "random_baseline": self.random_baseline,
            "n_heads_total": self.n_heads_total,
            "evaluation": self.evaluation,
            "params": self.params,
            "prompt_hash": self.prompt_hash,
            "method": self.method,
            "nodes": list(self.nodes),
            "graph_edges": [e.to_json() for e in self.graph_edges],
            "node_info": self.node_info,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Circuit":
        return cls(
            model=data["model"], task=data["task"], n_heads_total=data["n_heads_total"],
            heads=[CircuitHead(h["layer"], h["head"], h.get("role"), h.get("score")) for h in data["heads"]],
            edges=[CircuitEdge.from_json(e) for e in data.get("edges", [])],
            model_id=data.get("model_id", ""), faithfulness=data.get("faithfulness"),
            random_baseline=data.get("random_baseline"), evaluation=data.get("evaluation", {}),
            params=data.get("params", {}), prompt_hash=data.get("prompt_hash", ""),
            method=data.get("method", "path"), nodes=list(data.get("nodes", [])),
            graph_edges=[Edge.from_json(e) for e in data.get("graph_edges", [])],
            node_info=dict(data.get("node_info", {})),
        )

    def save(self, store, artifacts: dict | None = None) -> str:
        """Store as a completed "circuit" run (result = to_json()); returns the run id.

        artifacts: optional {name: {tensor name: tensor}} kept with the run (e.g. the patching
        maps the discovery used).
        """
        with store.run("circuit", self.model_id, {"task": self.task, **self.params},
                       self.prompt_hash) as run:
            for name, tensors in (artifacts or {}).items():
                run.add_artifact(name, tensors)
            run.set_result(self.to_json())
        return run.id

    @classmethod
    def load(cls, store, run_id: str) -> "Circuit":
        record = store.get_run(run_id)
        if record.kind != "circuit" or record.result is None or record.status != "complete":
            raise InvalidInput(f"run {run_id!r} is not a complete circuit run (kind {record.kind!r}, "
                               f"status {record.status!r})")
        return cls.from_json(record.result)

    @classmethod
    def latest(cls, store, model_id: str, task: str = "ioi", method: str | None = "path") -> "Circuit | None":
        """The newest stored circuit of `model_id` for `task` found by `method` (None: any)."""
        for record in store.list_runs(model_id=model_id, kind="circuit", status="complete"):
            if (record.result and record.result.get("task") == task
                    and method in (None, record.result.get("method", "path"))):
                return cls.from_json(record.result)
        return None

    def summary(self) -> str:
        """Roles -> heads, one line each, plus faithfulness (for the CLI and notebooks)."""
        lines = [f"{self.task} circuit of {self.model}: {len(self)} of {self.n_heads_total} heads"
                 + (f", {len(self.graph_edges)} edges ({self.method})" if self.graph_edges else "")]
        for role in ROLES:
            heads = self.by_role().get(role)
            if heads:
                lines.append(f"  {role:<20} " + ", ".join(f"{l}.{h}" for l, h in heads))
        unlabelled = self.by_role().get(None)
        if unlabelled:
            lines.append(f"  {'heads':<20} " + ", ".join(f"{l}.{h}" for l, h in unlabelled))
        if self.faithfulness is not None:
            line = f"  faithfulness {self.faithfulness:.1%}"
            if self.random_baseline:
                line += (f" (random circuits of the same size: {self.random_baseline['mean']:.1%}"
                         f" +- {self.random_baseline['std']:.1%})")
            lines.append(line)
        return "\n".join(lines)

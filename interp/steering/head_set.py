"""A saved set of heads for an edit (an ACT calibration, a PASTA profile): its JSON file.

Subclasses are dataclasses with `model_id` and `heads` [(layer, head), ...] fields and set
KIND (the JSON's "kind"), WHAT (the thing, in an error message) and MADE_BY (the command that
writes such a file). Files are written atomically, so a failure never leaves half a file.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from interp.errors import InvalidInput


class SavedHeadSet:
    KIND: str = ""
    WHAT: str = ""
    MADE_BY: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["heads"] = [list(h) for h in self.heads]
        return {"kind": self.KIND, **data}

    @classmethod
    def from_json(cls, data: dict):
        if data.get("kind") != cls.KIND or "heads" not in data or "model_id" not in data:
            raise InvalidInput(f"not {cls.WHAT} (no kind {cls.KIND!r} with model_id and heads): "
                               f"give a file written by `{cls.MADE_BY}`")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["heads"] = [tuple(h) for h in data["heads"]]
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"{path} does not exist: give {cls.WHAT} JSON written by "
                               f"`{cls.MADE_BY}`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not JSON ({exc.msg}): give {cls.WHAT} JSON written "
                               f"by `{cls.MADE_BY}`") from None
        return cls.from_json(data)

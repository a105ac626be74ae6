#!/usr/bin/env python3
"""Write the JSON Schemas of device protocol v1 to docs/schemas/ (from the pydantic models).

Run after changing a payload model; tests/test_protocol.py fails while they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.families import PLUGINS  # noqa: E402
from collector.protocol import StatusPayload  # noqa: E402

SCHEMA_DIR = ROOT / "docs" / "schemas"


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for family, plugin in PLUGINS.items():
        one = plugin.payload.model_json_schema()
        one["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        one["$id"] = f"smartunit/v1/{family}/data"
        one["description"] = (
            f"One {family} reading: {plugin.summary}. "
            f"The payload of smartunit/v1/{family}/{{device_id}}/data is "
            "one such object or a JSON array of them (a backlog). ts: epoch seconds, or an "
            "RFC 3339 time with an offset; default the time of receipt. Unknown keys are ignored."
        )
        one["examples"] = [plugin.example]
        out[f"{family}.json"] = one
    status = StatusPayload.model_json_schema()
    status["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    status["$id"] = "smartunit/v1/status"
    out["status.json"] = status
    return out


def main() -> None:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (SCHEMA_DIR / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote docs/schemas/{name}")


if __name__ == "__main__":
    main()

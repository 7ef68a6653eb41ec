"""What every benchmark does with its results: print the report, keep it as <name>.md beside the raw numbers."""
import json
from pathlib import Path


def save_report(out_dir, name: str, text: str, raw: dict) -> Path:
    """Print `text`; write <out_dir>/<name>.md and <name>.json (raw). Returns the folder."""
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text + "\n")
    (out / f"{name}.json").write_text(json.dumps(raw, indent=2))
    return out

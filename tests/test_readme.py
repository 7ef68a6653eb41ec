"""The README's snippets that need no real checkpoint or GPU run as written, on the demo's tiny checkpoint."""
import re
from pathlib import Path

from zoo.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_reference_and_mla_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        main(["demo", "--out-dir", "ckpt", "--max-new-tokens", "2"])
    except SystemExit as e:
        assert e.code == 0
    runnable = [b for b in BLOCKS if "ckpt/tiny-qwen3-vl" in b or "zoo_ref.deepseek import" in b]
    assert len(runnable) == 2
    for block in runnable:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "ckpt/copy/config.json").is_file()

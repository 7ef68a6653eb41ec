from zoo.__main__ import main


def test_demo_runs_offline_end_to_end(capsys, tmp_path):
    try:
        main(["demo", "--out-dir", str(tmp_path), "--max-new-tokens", "5"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "generated 5 tokens" in out and "no-cache forward's argmax: True" in out
    assert (tmp_path / "tiny-qwen3-vl" / "model.safetensors.index.json").is_file()

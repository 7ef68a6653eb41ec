"""The CLI end to end on tiny checkpoints: generate (with an image, and a text-only Qwen3) prints text and exits 0,
chat keeps its history over two scripted turns, explain compiles and reports, warmup exports a cache, every
command has --help."""
import io
import subprocess
import sys
import zipfile

import pytest

from tests.strategies import paired_dense
from zoo.cli import main, parser, run_chat
from zoo.demo import test_image
from zoo_ref.qwen3_vl.tiny import make_tiny_checkpoint, write_tokenizer


@pytest.fixture(scope="module")
def vl_dir(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("vl") / "tiny", seed=0)
    test_image().save(path / "picture.png")
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_generate_with_an_image_streams_text(vl_dir):
    done = run_cli("generate", "--model", vl_dir, "--prompt", "What is in the picture?", "--image",
                   vl_dir / "picture.png", "--max-new-tokens", "6", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) > 0


def test_generate_text_only_qwen3(tmp_path):
    config = {"model_type": "qwen3", "vocab_size": 104, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
              "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": True}
    _, model = paired_dense(config, seed=0)
    model.save_pretrained(tmp_path)
    write_tokenizer(tmp_path)
    done = run_cli("generate", "--model", tmp_path, "--prompt", "Hello", "--max-new-tokens", "5", "--do-sample",
                   "--seed", "3", "--device", "cpu")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    refused = run_cli("generate", "--model", tmp_path, "--prompt", "Hi", "--image", "x.png", "--device", "cpu")
    assert refused.returncode != 0 and "reads text only" in refused.stderr
    missing = run_cli("generate", "--model", tmp_path / "nope", "--prompt", "Hi", "--device", "cpu")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "is not a local checkpoint directory" in missing.stderr


def test_chat_keeps_history_over_two_turns(vl_dir, capsys):
    args = parser().parse_args(["chat", "--model", str(vl_dir), "--max-new-tokens", "4", "--device", "cpu",
                                "--system", "Be brief."])
    script = io.StringIO(f"/image {vl_dir / 'picture.png'}\nWhat is this?\nAnd the colours?\n/exit\nignored\n")
    history = run_chat(args, stdin=script)
    out = capsys.readouterr().out
    assert out.count("assistant: ") == 2 and "(attached" in out
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    assert history[1]["content"][0]["type"] == "image" and history[3]["content"][-1]["text"] == "And the colours?"


def test_compiled_chat_prefills_only_each_new_turn(vl_dir, capsys):
    """The second turn's prompt holds the first turn (its image included) and the answer: compiled, that prefix comes
    from the cache and only the rest is prefilled. Same settings as the explain test (shared compile cache)."""
    from zoo.cli import Session
    args = parser().parse_args(["chat", "--model", str(vl_dir), "--max-new-tokens", "4", "--device", "cpu",
                                "--compile", "--max-seq-len", "256"])
    session = Session(args)
    script = io.StringIO(f"/image {vl_dir / 'picture.png'}\nWhat is this?\nAnd the colours?\n/exit\n")
    run_chat(args, stdin=script, session=session)
    stats = session.runner.prefix.stats
    first_turn = len(session.inputs([{"role": "user", "content": [{"type": "image", "image": str(vl_dir /
                                                                                              "picture.png")},
                                                                   {"type": "text", "text": "What is this?"}]}])
                         ["input_ids"][0])
    assert stats["hits"] == 1 and stats["reused_tokens"] >= first_turn, (stats, first_turn)
    capsys.readouterr()


def test_explain_compiles_and_reports(vl_dir, capsys):
    main(["explain", "--model", str(vl_dir), "--image", str(vl_dir / "picture.png"), "--device", "cpu",
          "--max-seq-len", "256"])
    out = capsys.readouterr().out
    assert "zoo.explain" in out and "decode[b=1]" in out and "vision" in out


def test_warmup_compiles_and_exports_a_shippable_cache(vl_dir, tmp_path):
    """Same settings as the explain test: in this test run's shared cache the graphs may already be there; the
    export holds torch's artifacts and zoo's pass records either way."""
    export = tmp_path / "tiny.zoocache"
    done = run_cli("warmup", "--model", vl_dir, "--device", "cpu", "--max-seq-len", "256", "--export", export)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vision" in done.stdout and "decode[b=1]" in done.stdout and f"exported to {export}" in done.stdout
    names = zipfile.ZipFile(export).namelist()
    assert "torch_cache_artifacts.bin" in names and any(n.startswith("zoo_passes/") for n in names)


@pytest.mark.parametrize("command", ["demo", "generate", "chat", "explain", "warmup"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "--" in capsys.readouterr().out


def test_chat_over_real_stdin(vl_dir):
    done = subprocess.run([sys.executable, "-m", "zoo", "chat", "--model", str(vl_dir), "--max-new-tokens", "3",
                           "--device", "cpu"], input=f"/image {vl_dir / 'picture.png'}\nHi\nAgain\n", text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("assistant: ") == 2

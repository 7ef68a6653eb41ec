"""build_inputs: batches of prompts and chat conversations through the checkpoint's template, left-padded; a
batched generate equals per-prompt generates; streaming gives the non-streamed text."""
import numpy as np
import pytest
import torch
from transformers import TextIteratorStreamer, TextStreamer

from zoo.demo import test_image
from zoo_ref.qwen3_vl import Qwen3VLForConditionalGeneration, build_inputs, chat_prompt, load_tokenizer
from zoo_ref.qwen3_vl.tiny import make_tiny_checkpoint

BOUNDS = dict(min_pixels=32 * 32, max_pixels=96 * 96)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=3)
    return Qwen3VLForConditionalGeneration.from_pretrained(path), load_tokenizer(path)


def test_batched_generate_equals_per_prompt(tiny):
    model, tok = tiny
    prompts = ["What is this?", "Describe both pictures in detail, please.", "Hi"]
    images = [[test_image()], [test_image(96, 64), test_image(40, 90)], []]
    batch = build_inputs(tok, prompts, images=images, **BOUNDS)
    assert batch["input_ids"].shape[0] == 3 and batch["image_grid_thw"].shape[0] == 3
    mask = batch["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask.sum(1) < mask.shape[1]).any()  # left-padded
    together = model.generate(**batch, max_new_tokens=6, eos_token_id=[])
    for i, (text, imgs) in enumerate(zip(prompts, images)):
        alone = model.generate(**build_inputs(tok, text, images=imgs, **BOUNDS), max_new_tokens=6, eos_token_id=[])
        assert torch.equal(together[i:i + 1], alone), i


def test_conversations_use_the_checkpoint_template(tiny):
    model, tok = tiny
    image = test_image()
    one_turn = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    same = build_inputs(tok, one_turn, **BOUNDS)
    plain = build_inputs(tok, "Hi", images=[image], **BOUNDS)
    assert torch.equal(same["input_ids"], plain["input_ids"])  # the template renders what chat_prompt did
    chat = [{"role": "system", "content": "Be brief."}, *one_turn, {"role": "assistant", "content": "A picture."},
            {"role": "user", "content": [{"type": "image", "image": np.zeros((40, 60, 3), np.uint8)},
                                          {"type": "text", "text": "And this?"}]}]
    inputs = build_inputs(tok, [chat, one_turn], **BOUNDS)
    text = tok.decode(inputs["input_ids"][0][inputs["attention_mask"][0].bool()])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert "<|im_start|>assistant\nA picture.<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert inputs["image_grid_thw"].shape[0] == 3  # two in the chat, one in the second conversation
    model.generate(**inputs, max_new_tokens=2, eos_token_id=[])
    assert chat_prompt("x") == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"


def test_bad_prompts_name_the_argument(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="a batch of 2 prompts needs one images list and one video"):
        build_inputs(tok, ["a", "b"], images=[[test_image()]])
    with pytest.raises(TypeError, match="images\\[0\\] must be a PIL image, a file path or an HxWx3 uint8 array"):
        build_inputs(tok, "a", images=[3.0])
    with pytest.raises(ValueError, match="images\\[0\\]: no image file at 'missing.png'"):
        build_inputs(tok, "a", images=["missing.png"])
    with pytest.raises(TypeError, match="text must be a str, a conversation"):
        build_inputs(tok, 42)


def test_streamers_give_the_same_text(tiny, capsys):
    model, tok = tiny
    inputs = build_inputs(tok, "Hello", images=[test_image()], **BOUNDS)
    tokens = model.generate(**inputs, max_new_tokens=8, eos_token_id=[])
    model.generate(**inputs, max_new_tokens=8, eos_token_id=[], streamer=TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out.strip() == tok.decode(tokens[0]).strip()
    it = TextIteratorStreamer(tok, skip_prompt=True)
    model.generate(**inputs, max_new_tokens=8, eos_token_id=[], streamer=it)  # the iterator is filled, then ends
    assert "".join(it) == tok.decode(tokens[0])

"""`python -m zoo generate | chat | explain | warmup | demo` over a local checkpoint directory (--help of each)."""
import argparse
import sys
from pathlib import Path

DEMO_DIR = "tiny-qwen3-vl"


def model_options(p: argparse.ArgumentParser):
    p.add_argument("--model", required=True, metavar="DIR",
                   help=f"a checkpoint directory (config.json, safetensors, tokenizer); "
                        f"`python -m zoo demo --out-dir D` writes a tiny one to D/{DEMO_DIR}")
    p.add_argument("--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16 or float32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="run through zoo.compile (slow to start: it compiles)")
    p.add_argument("--max-seq-len", type=int, default=2048, help="with --compile: the static cache's length")
    p.add_argument("--cache-dir", default=None, help="with --compile: where compiled graphs persist (default "
                   "$ZOO_CACHE_DIR or ~/.cache/zoo; 'off' to compile from scratch every time)")


def generation_options(p: argparse.ArgumentParser):
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL-style penalty (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same text)")


def visual_options(p: argparse.ArgumentParser):
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image file (repeatable)")
    p.add_argument("--video", metavar="PATH", help="a folder of frames (sorted by name) or a multi-frame image (GIF)")


def parser():
    p = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tiny Qwen3-VL checkpoint, image + text -> generated tokens (offline)")
    demo.add_argument("--out-dir", help=f"keep the tiny checkpoint in OUT_DIR/{DEMO_DIR} (reusable as --model)")
    demo.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate (default 16)")
    gen = sub.add_parser("generate", help="generate from one prompt, streaming the text to stdout")
    model_options(gen)
    gen.add_argument("--prompt", required=True, help="the user's message (the checkpoint's chat template wraps it)")
    visual_options(gen)
    generation_options(gen)
    chat = sub.add_parser("chat", help="a multi-turn chat on stdin/stdout; /image PATH, /video PATH, /reset, /exit")
    model_options(chat)
    chat.add_argument("--system", help="a system prompt")
    generation_options(chat)
    explain = sub.add_parser("explain", help="compile the model, run one short generate, print zoo.explain")
    model_options(explain)
    visual_options(explain)
    warmup = sub.add_parser("warmup", help="compile once into the cache (and optionally a shippable file): later "
                                           "processes with the same settings start in seconds")
    model_options(warmup)
    warmup.add_argument("--max-batch-size", type=int, default=1, help="largest batch (its bucket is compiled)")
    warmup.add_argument("--export", metavar="FILE", help="also write the compiled graphs to FILE; install it "
                                                         "elsewhere with zoo.import_cache(FILE)")
    visual_options(warmup)
    return p


def video_frames(path):
    from PIL import Image, ImageSequence
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        if not files:
            raise SystemExit(f"--video {path}: no image frames (png/jpg/bmp/webp) in that folder")
        return [Image.open(f).convert("RGB") for f in files]
    if p.is_file():
        with Image.open(p) as img:
            return [f.convert("RGB") for f in ImageSequence.Iterator(img)]
    raise SystemExit(f"--video {path}: no such folder or file")


class Session:
    """A loaded (and optionally compiled) model with its tokenizer, and how to run one turn."""

    def __init__(self, args):
        import torch
        from transformers import AutoTokenizer

        import zoo
        from zoo_ref.auto import from_pretrained
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = from_pretrained(args.model, dtype=args.dtype, device=device)
        self.tok = AutoTokenizer.from_pretrained(args.model)
        self.visual = hasattr(self.model.config, "vision")
        self.runner = self.model
        self.compiled = getattr(args, "compile", False)
        if self.compiled:
            cache_dir = False if args.cache_dir == "off" else args.cache_dir
            self.runner = zoo.compile(self.model, max_batch_size=getattr(args, "max_batch_size", 1),
                                      max_seq_len=args.max_seq_len, cache_dir=cache_dir)

    def inputs(self, conversation):
        if self.visual:  # compiled: the torch preprocessing, pixels straight to the model's device
            from zoo.preprocess import Processor
            from zoo_ref.qwen3_vl import build_inputs
            processor = Processor(self.model.device) if self.compiled else None
            return build_inputs(self.tok, conversation, processor=processor)
        if any(isinstance(m["content"], list) and any(p["type"] != "text" for p in m["content"]) for m in conversation):
            raise SystemExit("this model reads text only: --image / --video need a Qwen3-VL checkpoint")
        messages = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                     "".join(p["text"] for p in m["content"])} for m in conversation]
        if getattr(self.tok, "chat_template", None):
            ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"]
        else:
            ids = self.tok(messages[-1]["content"], return_tensors="pt")["input_ids"]
        return {"input_ids": ids}

    def reply(self, conversation, args) -> str:
        """Generate the assistant's answer to `conversation`, streaming it to stdout; returns its text."""
        from transformers import TextStreamer
        inputs = {k: v.to(self.model.device) for k, v in self.inputs(conversation).items()}
        streamer = TextStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        tokens = self.runner.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
            streamer=streamer)
        sys.stdout.flush()
        return self.tok.decode(tokens[0], skip_special_tokens=True)


def user_turn(text, images=(), videos=()):
    parts = [{"type": "image", "image": i} for i in images] + [{"type": "video", "video": v} for v in videos]
    return {"role": "user", "content": parts + [{"type": "text", "text": text}]}


def run_generate(args):
    session = Session(args)
    videos = [video_frames(args.video)] if args.video else []
    session.reply([user_turn(args.prompt, args.image, videos)], args)


def run_chat(args, stdin=None, session=None):
    """Each turn generates from the whole conversation; compiled (--compile), a turn prefills only what follows
    the previous turn's tokens (zoo/prefix.py)."""
    stdin = stdin or sys.stdin
    session = session or Session(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    images, videos = [], []
    print("zoo chat: type a message; /image PATH or /video PATH attach to the next message; /reset, /exit",
          flush=True)
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history, images, videos = history[:1] if args.system else [], [], []
            print("(history cleared)", flush=True)
            continue
        if line.startswith(("/image ", "/video ")):
            kind, path = line.split(" ", 1)
            if kind == "/image":
                images.append(path.strip())
            else:
                videos.append(video_frames(path.strip()))
            print(f"(attached {path.strip()})", flush=True)
            continue
        history.append(user_turn(line, images, videos))
        images, videos = [], []
        print("assistant: ", end="", flush=True)
        history.append({"role": "assistant", "content": session.reply(history, args)})
    return history


def run_explain(args):
    import zoo
    args.compile = True
    session = Session(args)
    videos = [video_frames(args.video)] if args.video else []
    inputs = {k: v.to(session.model.device) for k, v in
              session.inputs([user_turn("Describe this.", args.image, videos)]).items()}
    session.runner.generate(**inputs, max_new_tokens=2)
    print(zoo.explain(session.runner))


def run_warmup(args):
    """Compile the batch bucket, the prefill and decode graphs (and the vision encoder: with a test image when no
    --image is given) by running one short generate at the largest batch."""
    import torch
    from PIL import Image

    import zoo
    args.compile = True
    session = Session(args)
    images = args.image or ([Image.new("RGB", (224, 224), (120, 60, 200))] if session.visual else [])
    videos = [video_frames(args.video)] if args.video else []
    inputs = session.inputs([user_turn("Describe this.", images, videos)])
    b = args.max_batch_size  # b copies of the prompt: images' patches and grids repeat in order, like a batch
    inputs = {k: v.repeat(b, *[1] * (v.dim() - 1)).to(session.model.device) for k, v in inputs.items()
              if isinstance(v, torch.Tensor)}
    session.runner.generate(**inputs, max_new_tokens=2)
    print(zoo.explain(session.runner))
    if args.export:
        print(f"exported to {zoo.export_cache(args.export, session.runner.compiler.cache_dir)}")


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main
        raise SystemExit(0 if demo_main(args.out_dir, args.max_new_tokens) else 1)
    from zoo_ref.errors import ZooError
    try:
        {"generate": run_generate, "chat": run_chat, "explain": run_explain, "warmup": run_warmup}[args.command](args)
    except ZooError as e:  # a bad argument, config or checkpoint: one line, no traceback
        print(f"python -m zoo {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

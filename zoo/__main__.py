"""python -m zoo demo | python -m zoo --help"""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tiny Qwen3-VL checkpoint, image + text -> generated tokens (offline)")
    demo.add_argument("--out-dir", help="keep the tiny checkpoint here instead of a temporary directory")
    demo.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main
        ok = demo_main(args.out_dir, args.max_new_tokens)
        raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

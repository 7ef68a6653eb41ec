"""Prompts -> model inputs: one prompt, a batch of prompts, or chat conversations (the checkpoint's own chat
template), with their images and videos, left-padded into one batch with its attention_mask."""
import torch

from ..errors import InputError, InputTypeError
from .processor import as_image, expand_placeholders, frame_timestamps, process_images, process_video

IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def chat_prompt(text, num_images=0, num_videos=0):
    """The Qwen chat template for one user turn with the visuals first (used when the tokenizer has none)."""
    return f"<|im_start|>user\n{IMAGE * num_images}{VIDEO * num_videos}{text}<|im_end|>\n<|im_start|>assistant\n"


def _conversation(text, images, videos):
    parts = [{"type": "image"}] * len(images) + [{"type": "video"}] * len(videos) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def _visuals_of(conversation):
    """Images and videos in the order the template renders them; content parts become placeholders only."""
    images, videos, messages = [], [], []
    for i, m in enumerate(conversation):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"conversation[{i}] must be a dict with 'role' and 'content', got {m!r:.80}")
        content = m["content"]
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    images.append(as_image(part.get("image", part.get("path", part.get("url"))),
                                           f"conversation[{i}] image"))
                elif kind == "video":
                    frames = part.get("video")
                    videos.append([as_image(f, f"conversation[{i}] video frame") for f in frames])
                elif kind != "text":
                    raise InputError(f"conversation[{i}] content parts must have type 'text', 'image' or 'video', "
                                     f"got {part!r:.80}")
            content = [{k: v for k, v in p.items() if k in ("type", "text")} for p in content]
        messages.append({"role": m["role"], "content": content})
    return messages, images, videos


def render(tokenizer, messages):
    """The checkpoint's chat template (transformers' apply_chat_template), or zoo's one-turn Qwen format."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise InputError("this tokenizer has no chat template: pass one user turn, or a tokenizer with a template")
    content = messages[0]["content"]
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    text = "".join(p.get("text", "") for p in parts)
    return chat_prompt(text, sum(p["type"] == "image" for p in parts), sum(p["type"] == "video" for p in parts))


class PILProcessor:
    """The reference preprocessing (pillow, equal to transformers'); build_inputs' default `processor`."""
    process_images = staticmethod(process_images)
    process_video = staticmethod(process_video)


def _one(tokenizer, item, images, video, video_fps, pixel_bounds, processor):
    """One row: (token ids, [(pixels, grid)] for images, [(pixels, grid)] for videos)."""
    if isinstance(item, str):
        imgs = [as_image(x, f"images[{i}]") for i, x in enumerate(images or [])]
        vids = [[as_image(f, "video frame") for f in video]] if video else []
        messages = _conversation(item, imgs, vids)
    elif isinstance(item, list):
        if images or video:
            raise InputError("a conversation carries its own images/videos as content parts; don't pass images=")
        messages, imgs, vids = _visuals_of(item)
    else:
        raise InputTypeError(f"text must be a str, a conversation (list of messages) or a list of those, got "
                        f"{type(item).__name__}")
    image = processor.process_images(imgs, **pixel_bounds) if imgs else None
    videos = [processor.process_video(v) for v in vids]
    video_grid = torch.cat([g for _, g in videos]) if videos else None
    stamps = [frame_timestamps(len(v), video_fps) for v in vids] or None
    prompt = expand_placeholders(render(tokenizer, messages), None if image is None else image[1], video_grid, stamps)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"], image, videos


def build_inputs(tokenizer, text, images=None, video=None, video_fps=2.0, pad_token_id=None, processor=None,
                 **pixel_bounds):
    """Tokenizer + prompt(s) -> dict of model inputs, left-padded with an attention_mask.

    text: one prompt (str; images: [PIL, ...], video: [frames]), a batch of prompts (list of str; images: one
    list per prompt, video: one frame list or None per prompt), a conversation (list of {"role", "content"}
    messages; content parts {"type": "image", "image": PIL/path}, {"type": "video", "video": [frames]},
    {"type": "text", "text": ...}), or a list of conversations. Images may be PIL images, paths or uint8 arrays.
    processor: what provides process_images / process_video (default: this package's, the PIL reference; zoo's
    torch one, zoo.preprocess.Processor(device), leaves the pixels on that device)."""
    is_conversation = isinstance(text, list) and text and isinstance(text[0], dict)
    if isinstance(text, str) or is_conversation:
        rows = [(text, images, video)]
    elif isinstance(text, list) and text:
        n = len(text)
        images = [None] * n if images is None else images
        videos = [None] * n if video is None else video
        if len(images) != n or len(videos) != n:
            raise InputError(f"a batch of {n} prompts needs one images list and one video (or None) per prompt; got "
                             f"{len(images)} and {len(videos)}")
        rows = list(zip(text, images, videos))
    else:
        raise InputTypeError(f"text must be a str, a conversation or a non-empty list of those, got {text!r:.80}")
    processor = processor or PILProcessor
    encoded = [_one(tokenizer, item, imgs, vid, video_fps, pixel_bounds, processor) for item, imgs, vid in rows]
    if pad_token_id is None:
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t = max(len(ids) for ids, _, _ in encoded)
    out = {"input_ids": torch.tensor([[pad_token_id] * (t - len(ids)) + ids for ids, _, _ in encoded]),
           "attention_mask": torch.tensor([[0] * (t - len(ids)) + [1] * len(ids) for ids, _, _ in encoded])}
    images = [im for _, im, _ in encoded if im is not None]
    if images:
        out["pixel_values"] = torch.cat([p for p, _ in images])
        out["image_grid_thw"] = torch.cat([g for _, g in images])
    videos = [v for _, _, vs in encoded for v in vs]
    if videos:
        out["pixel_values_videos"] = torch.cat([p for p, _ in videos])
        out["video_grid_thw"] = torch.cat([g for _, g in videos])
    return out

"""Qwen3-VL reference (the correctness oracle): plain PyTorch, Hugging Face checkpoint keys."""
from ..errors import ConfigError
from ..generation import generate
from .config import Qwen3VLConfig, TextConfig, VisionConfig
from .model import Qwen3VLForConditionalGeneration
from .positions import mrope_positions
from .processor import as_image, expand_placeholders, frame_timestamps, process_images, process_video, smart_resize
from .prompts import build_inputs, chat_prompt


def load_tokenizer(path):
    """The checkpoint directory's tokenizer (tokenizer.json / vocab files), through transformers."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


__all__ = ["ConfigError", "Qwen3VLConfig", "TextConfig", "VisionConfig", "Qwen3VLForConditionalGeneration",
           "generate", "mrope_positions", "build_inputs", "chat_prompt", "as_image", "expand_placeholders",
           "frame_timestamps", "process_images", "process_video", "smart_resize", "load_tokenizer"]

"""Qwen3-VL configuration, read from a Hugging Face config.json (transformers 4.57 and 5.x spellings)."""
from dataclasses import asdict, dataclass, field

from ..decoder import DecoderConfig, decoder_fields
from ..decoder import require as _require
from ..errors import ConfigError


@dataclass
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    num_position_embeddings: int
    deepstack_visual_indexes: list[int]
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:  # width of one row of pixel_values
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2


@dataclass
class TextConfig(DecoderConfig):
    """Qwen3's decoder config plus the interleaved M-RoPE sections (T, H, W frequencies)."""
    mrope_section: list[int] = field(default_factory=lambda: [24, 20, 20])


@dataclass
class Qwen3VLConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = True
    eos_token_id: list[int] = field(default_factory=lambda: [151645])
    pad_token_id: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Qwen3VLConfig":
        if d.get("model_type") != "qwen3_vl":
            raise ConfigError(f"expected model_type 'qwen3_vl', got {d.get('model_type')!r}")
        _require(d, ["text_config", "vision_config"], "Qwen3-VL config")
        t, v = d["text_config"], d["vision_config"]
        _require(t, ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads"], "text_config")
        _require(v, ["depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size",
                     "num_position_embeddings"], "vision_config")
        # 4.57: rope_theta + rope_scaling; 5.x: rope_parameters holding both.
        rope = dict(t.get("rope_parameters") or t.get("rope_scaling") or {})
        theta = rope.get("rope_theta", t.get("rope_theta"))
        if theta is None:
            raise ConfigError("text_config is missing required field: rope_theta (or rope_parameters.rope_theta)")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f"unsupported text rope_type {rope.get('rope_type')!r} (only 'default' M-RoPE)")
        if rope.get("mrope_interleaved", True) is not True:
            raise ConfigError("unsupported config: mrope_interleaved=false (Qwen3-VL uses interleaved M-RoPE)")
        head_dim = t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
        section = list(rope.get("mrope_section", [24, 20, 20]))
        if len(section) != 3 or not all(isinstance(n, int) and n >= 0 for n in section):
            # transformers takes H from frequencies 1, 4, ... < 3 * section[1] and W from 2, 5, ... < 3 * section[2],
            # clipped at head_dim / 2, whatever the sum: so does mrope_cos_sin
            raise ConfigError(f"mrope_section must be 3 non-negative ints (T, H, W), got {section}")
        fields = decoder_fields({"max_position_embeddings": 262144, **t, "rope_theta": theta, "rope_parameters": None,
                                 "rope_scaling": None, "head_dim": head_dim}, "text_config", qk_norm=True)
        text = TextConfig(**fields, mrope_section=section)
        vrope = v.get("rope_parameters") or {}
        vision = VisionConfig(
            depth=v["depth"], hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
            num_heads=v["num_heads"], out_hidden_size=v["out_hidden_size"],
            num_position_embeddings=v["num_position_embeddings"],
            deepstack_visual_indexes=list(v.get("deepstack_visual_indexes", [])),
            in_channels=v.get("in_channels", 3), patch_size=v.get("patch_size", 16),
            temporal_patch_size=v.get("temporal_patch_size", 2), spatial_merge_size=v.get("spatial_merge_size", 2),
            hidden_act=v.get("hidden_act", "gelu_pytorch_tanh"), rope_theta=float(vrope.get("rope_theta", 10000.0)))
        side = int(round(vision.num_position_embeddings ** 0.5))
        if side * side != vision.num_position_embeddings:
            raise ConfigError(f"num_position_embeddings {vision.num_position_embeddings} is not a square grid")
        if any(not 0 <= i < vision.depth for i in vision.deepstack_visual_indexes):
            raise ConfigError(f"deepstack_visual_indexes {vision.deepstack_visual_indexes} out of range for depth "
                              f"{vision.depth}")
        if len(vision.deepstack_visual_indexes) > text.num_hidden_layers:
            raise ConfigError("more deepstack levels than text decoder layers")
        eos = t.get("eos_token_id", d.get("eos_token_id", 151645))
        tie = d.get("tie_word_embeddings", t.get("tie_word_embeddings", True))
        return cls(text=text, vision=vision,
                   image_token_id=d.get("image_token_id", 151655), video_token_id=d.get("video_token_id", 151656),
                   vision_start_token_id=d.get("vision_start_token_id", 151652),
                   vision_end_token_id=d.get("vision_end_token_id", 151653),
                   tie_word_embeddings=bool(tie), eos_token_id=list(eos) if isinstance(eos, list) else [eos],
                   pad_token_id=t.get("pad_token_id", d.get("pad_token_id")))

    def to_dict(self) -> dict:
        """A transformers-5.x-style config.json dict (also readable by 4.57 through rope_scaling)."""
        t, v = asdict(self.text), asdict(self.vision)
        rope = {"rope_type": "default", "rope_theta": t.pop("rope_theta"),
                "mrope_section": t.pop("mrope_section"), "mrope_interleaved": True}
        for name in ("o_bias", "qk_norm", "yarn", "tie_word_embeddings", "eos_token_id", "pad_token_id"):
            t.pop(name)
        t["attention_bias"] = t.pop("qkv_bias")
        v.pop("rope_theta")
        return {
            "model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"],
            "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id, "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": {**t, "model_type": "qwen3_vl_text", "rope_parameters": rope, "rope_scaling": rope,
                            "rope_theta": rope["rope_theta"], "eos_token_id": self.eos_token_id,
                            "pad_token_id": self.pad_token_id, "tie_word_embeddings": self.tie_word_embeddings},
            "vision_config": {**v, "model_type": "qwen3_vl"},
        }

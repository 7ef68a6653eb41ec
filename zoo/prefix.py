"""Conversation prefix reuse: the K/V that a batch-1 generate leaves in the static cache serve the next generate
whose prompt starts with the same tokens and the same images at the same places; only the rest is prefilled.

What is held: the tokens whose K/V fill slots [0, L) of the cache's first row (the prompt, then every token fed
back while decoding), the vision items among them (placeholder span and content key, zoo/encoder_cache.py) and
the weights' version counters (an in-place weight update makes the K/V stale). Any other call writes the cache, so
every call forgets what was held before it runs; a batch-1 unpadded generate holds its own sequence afterwards.
"""
from zoo_ref.rope import same_frequencies_up_to


class PrefixCache:
    def __init__(self, model):
        self.model = model
        # RoPE whose frequencies follow the call's length (dynamic NTK, LongRoPE): the held K were rotated by the
        # earlier calls' frequencies, a fresh prefill rotates them by this call's; equal only while no call passed
        # the threshold: neither this prompt nor the held sequence (no call that wrote it was longer than it)
        self.same_rope_up_to = same_frequencies_up_to(model.text_config.yarn)
        self.ids = None  # [L] tokens whose K/V are in the cache, or None
        self.items, self.version = [], None
        self.stats = {"hits": 0, "reused_tokens": 0, "prefilled_tokens": 0}

    def _weights_version(self) -> int:
        return sum(p._version for p in self.model.parameters())

    def forget(self):
        self.ids = None

    def hold(self, ids, items):
        """ids: [L] the tokens whose K/V fill slots [0, L); items: [(start, end, key)] vision items among them."""
        self.ids, self.items, self.version = ids, items, self._weights_version()

    def match(self, ids, items) -> int:
        """How many leading tokens of `ids` ([T], one unpadded prompt) can be taken from the cache: the common
        prefix with the held tokens, cut at the first vision item that is not the held one (same span, same
        content), at most T - 2 (the suffix needs its last token's logits, and two tokens keep the compiled
        graph's length dynamic). 0 when nothing is held, a weight changed in place since, or the prompt or the held
        sequence is longer than the RoPE keeps its frequencies for (same_rope_up_to)."""
        if self.ids is None or self.version != self._weights_version():
            return 0
        if self.same_rope_up_to is not None and max(len(ids), len(self.ids)) > self.same_rope_up_to:
            return 0
        n = min(len(self.ids), len(ids) - 2)
        if n <= 0:
            return 0
        differ = (ids[:n] != self.ids[:n]).nonzero()
        reuse = int(differ[0]) if len(differ) else n
        for i, (start, end, key) in enumerate(items):
            if start >= reuse:
                break
            if key is None or i >= len(self.items) or self.items[i] != (start, end, key):
                reuse = start  # this item's placeholders (and all after) are prefilled again
                break
        return reuse

    def count(self, reused: int, prefilled: int):
        self.stats["hits"] += reused > 0
        self.stats["reused_tokens"] += reused
        self.stats["prefilled_tokens"] += prefilled

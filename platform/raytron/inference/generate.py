"""Batched decoding for a Megatron-Core GPTModel: greedy, sampling (temperature, top-p), beam search.

Prompts are left-padded so every next token sits at the last position; a padding mask hides the
pad slots. The KV cache is Megatron-Core's own `StaticInferenceContext` (keys/values written per
layer, `swap_key_value_dict` reorders beams); `kv_cache=False` recomputes the whole sequence each
step (the reference the cache is tested against). Beam search follows Hugging Face's
`generate(num_beams=K, early_stopping=True)`: 2K candidates a step, length penalty on finished
hypotheses, a prompt ends once K hypotheses have ended. `stop`, when given, is asked before each step
(e.g. "is anyone still waiting for this?"); once it says True, `generate` raises `Stopped`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from megatron.core.inference.contexts import StaticInferenceContext

from raytron.config import GenerationConfig


class Stopped(Exception):
    """`generate`'s `stop` said True before the continuations were done; nothing is returned."""


def _check(stop: Callable[[], bool] | None, step: int) -> None:
    if stop is not None and stop():
        raise Stopped(f"generation stopped at step {step}")


class _Decoder:
    """Feeds a left-padded batch to the model, then one token per row per step."""

    def __init__(self, model, prompts: list[list[int]], pad_id: int, max_new_tokens: int, kv_cache: bool):
        self.model = model
        device = next(model.parameters()).device
        width = max(map(len, prompts))
        self.tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        self.valid = torch.zeros_like(self.tokens, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            self.tokens[row, width - len(prompt):] = torch.tensor(prompt, device=device)
            self.valid[row, width - len(prompt):] = True
        self.context = StaticInferenceContext(len(prompts), width + max_new_tokens) if kv_cache else None

    def _forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        positions = (self.valid.cumsum(-1) - 1).clamp(min=0)[:, start:]
        length = self.valid.shape[1]
        # a query attends to earlier, non-pad keys (True = masked out, Megatron's convention)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)[start:]
        mask = (causal.unsqueeze(0) | ~self.valid.unsqueeze(1)).unsqueeze(1)
        logits = self.model(tokens, positions, mask, inference_context=self.context, runtime_gather_output=True)
        if self.context is not None:
            self.context.sequence_len_offset += tokens.shape[1]
        return logits[:, -1].float()

    def first(self) -> torch.Tensor:
        """Next-token logits after the prompts."""
        return self._forward(self.tokens, 0)

    def step(self, next_ids: torch.Tensor, keep: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Append `next_ids` (a pad slot where `keep` is False), rows first reordered by `order` (beams)."""
        if order is not None:
            self.tokens, self.valid = self.tokens[order], self.valid[order]
            if self.context is not None:
                self.context.swap_key_value_dict(order)
        self.tokens = torch.cat([self.tokens, next_ids[:, None]], dim=1)
        self.valid = torch.cat([self.valid, keep[:, None]], dim=1)
        if self.context is None:
            return self._forward(self.tokens, 0)
        return self._forward(self.tokens[:, -1:], self.tokens.shape[1] - 1)


def _nucleus(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits / config.temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # drop a token when the tokens before it already reach top_p (the first always stays)
    drop = sorted_probs.cumsum(-1) - sorted_probs >= config.top_p
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    choice = torch.multinomial(sorted_probs.cpu(), 1, generator=generator).to(logits.device)
    return order.gather(-1, choice).squeeze(-1)


@torch.no_grad()
def _greedy_or_sample(model, prompts, config: GenerationConfig, eos_id: int, pad_id: int, stop) -> list[list[int]]:
    decoder = _Decoder(model, prompts, pad_id, config.max_new_tokens, config.kv_cache)
    generator = torch.Generator().manual_seed(config.seed)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=decoder.tokens.device)
    outputs: list[list[int]] = [[] for _ in prompts]
    _check(stop, 0)
    logits = decoder.first()
    for step in range(config.max_new_tokens):
        _check(stop, step)
        next_ids = logits.argmax(-1) if config.strategy == "greedy" else _nucleus(logits, config, generator)
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                if token == eos_id:
                    done[row] = True
                else:
                    outputs[row].append(token)
        if done.all() or step == config.max_new_tokens - 1:
            break
        logits = decoder.step(torch.where(done, pad_id, next_ids), ~done)
    return outputs


@torch.no_grad()
def _beam_search(model, prompts, config: GenerationConfig, eos_id: int, pad_id: int, stop) -> list[list[int]]:
    beams = config.num_beams
    decoder = _Decoder(model, [p for p in prompts for _ in range(beams)], pad_id, config.max_new_tokens, config.kv_cache)
    device = decoder.tokens.device
    scores = torch.full((len(prompts), beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: expand only the first
    history = torch.empty(len(prompts) * beams, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in prompts]
    _check(stop, 0)
    logits = decoder.first()
    for step in range(config.max_new_tokens):
        _check(stop, step)
        vocab = logits.shape[-1]
        candidates = (scores.view(-1, 1) + torch.log_softmax(logits, dim=-1)).view(len(prompts), beams * vocab)
        top_scores, top_index = candidates.topk(2 * beams, dim=-1)
        order, next_ids, new_scores = [], [], []
        for prompt in range(len(prompts)):
            kept = []
            for score, index in zip(top_scores[prompt].tolist(), top_index[prompt].tolist(), strict=True):
                beam, token = divmod(index, vocab)
                row = prompt * beams + beam
                if len(finished[prompt]) >= beams:  # this prompt is done: keep any rows, they are ignored
                    kept.append((row, pad_id, float("-inf")))
                elif token == eos_id:
                    tokens = history[row].tolist()
                    finished[prompt].append((score / max(len(tokens), 1) ** config.length_penalty, tokens))
                else:
                    kept.append((row, token, score))
                if len(kept) == beams:
                    break
            for row, token, score in kept:
                order.append(row)
                next_ids.append(token)
                new_scores.append(score)
        order_t = torch.tensor(order, device=device)
        next_t = torch.tensor(next_ids, device=device)
        scores = torch.tensor(new_scores, device=device).view(len(prompts), beams)
        history = torch.cat([history[order_t], next_t[:, None]], dim=1)
        if all(len(f) >= beams for f in finished) or step == config.max_new_tokens - 1:
            break
        logits = decoder.step(next_t, torch.ones_like(next_t, dtype=torch.bool), order=order_t)
    outputs = []
    for prompt in range(len(prompts)):
        if len(finished[prompt]) < beams:  # hit the token limit: live beams count as hypotheses too
            length = max(history.shape[1], 1) ** config.length_penalty
            finished[prompt] += [(scores[prompt, b].item() / length, history[prompt * beams + b].tolist())
                                 for b in range(beams) if scores[prompt, b] > float("-inf")]
        outputs.append(max(finished[prompt], key=lambda pair: pair[0])[1])
    return outputs


def generate(model, prompts: list[list[int]], config: GenerationConfig, eos_id: int, pad_id: int,
             stop: Callable[[], bool] | None = None) -> list[list[int]]:
    """Continuations (prompt and EOS excluded) of each prompt, in order; raises `Stopped` once `stop()` is True."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if config.strategy == "beam":
        return _beam_search(model, prompts, config, eos_id, pad_id, stop)
    return _greedy_or_sample(model, prompts, config, eos_id, pad_id, stop)

"""Greedy decoding with a plain forward loop (no KV cache): runs on CPU and GPU alike.

Batched: prompts are left-padded so that every next token sits at the last position; finished
rows keep emitting the pad token. Stops at EOS in every row or after `max_new_tokens`.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int) -> list[list[int]]:
    """Continuations (without the prompt, EOS excluded) of each prompt under a Megatron GPTModel."""
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros_like(tokens, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = torch.tensor(prompt, device=device)
        valid[row, width - len(prompt):] = True
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    outputs: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        positions = (valid.cumsum(-1) - 1).clamp(min=0)
        # causal + padding: a query attends to earlier, non-pad keys (True = masked out, Megatron's convention)
        causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool, device=device).triu(1)
        mask = (causal.unsqueeze(0) | ~valid.unsqueeze(1)).unsqueeze(1)
        logits = model(tokens, positions, mask)
        next_ids = logits[:, -1].float().argmax(-1)
        for row in range(len(prompts)):
            if not done[row]:
                if next_ids[row].item() == eos_id:
                    done[row] = True
                else:
                    outputs[row].append(next_ids[row].item())
        if done.all():
            break
        next_ids = torch.where(done, torch.full_like(next_ids, pad_id), next_ids)
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
        valid = torch.cat([valid, ~done[:, None]], dim=1)
    return outputs

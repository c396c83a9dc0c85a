"""The weight-sync proof under vLLM's tensor parallelism, on the CPU: the trainer's tensors are split over simulated
ranks as vLLM 0.32's layers load them (``weight_loader`` of ``QKVParallelLinear``, ``MergedColumnParallelLinear``,
``RowParallelLinear``, ``VocabParallelEmbedding``/``ParallelLMHead``), each rank fingerprints its shards where
``nft.rollout.vllm.engine_shard`` places them, and the ranks' sums must equal the trainer's fingerprints, for every
element of every tensor. The stand-in layers carry vLLM's class names and the attributes its ``__init__`` sets; their
weights are cut here independently of ``engine_shard``, following vLLM's loaders."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from nft.lora import apply_lora, effective_parameters
from nft.rollout.integrity import WeightSyncError, check_fingerprints, engine_totals, trainer_fingerprints
from nft.rollout.vllm import engine_fingerprints

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 64, 96, 8, 2, 260  # 260: padded to 320 by vLLM, split over ranks
PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def trainer_model(seed: int = 0) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,  # grouped: 4 query heads per KV head; at TP=4 two ranks share each KV head
        tie_word_embeddings=False,  # an LM head of its own, vocabulary-parallel too
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def layer(cls: type, **attributes) -> nn.Module:
    module = cls()
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


# vLLM's layer classes by name, with their bases (what ``engine_shard`` reads of them)
COLUMN_PARALLEL = type("ColumnParallelLinear", (nn.Module,), {})
QKV_PARALLEL = type("QKVParallelLinear", (COLUMN_PARALLEL,), {})
MERGED_COLUMN_PARALLEL = type("MergedColumnParallelLinear", (COLUMN_PARALLEL,), {})
ROW_PARALLEL = type("RowParallelLinear", (nn.Module,), {})
VOCAB_PARALLEL = type("VocabParallelEmbedding", (nn.Module,), {})
LM_HEAD = type("ParallelLMHead", (VOCAB_PARALLEL,), {})
RMS_NORM = type("RMSNorm", (nn.Module,), {})


def holding(module: nn.Module, **tensors: torch.Tensor) -> nn.Module:
    for name, tensor in tensors.items():
        module.register_parameter(name, nn.Parameter(tensor.clone(), requires_grad=False))
    return module


def vocab_parallel(cls: type, weight: torch.Tensor, rank: int, size: int) -> nn.Module:
    """``VocabParallelEmbedding._get_indices`` and ``weight_loader``: rows padded to a multiple of 64, split evenly;
    the loader copies the real rows and zero-fills the rest (here 7.0: padding must not count, whatever it holds)."""
    padded = -(-VOCAB // 64) * 64
    per = padded // size
    start, end = min(rank * per, VOCAB), min((rank + 1) * per, VOCAB)
    local = torch.full((per, HIDDEN), 7.0, dtype=weight.dtype)
    local[: end - start] = weight[start:end]
    indices = SimpleNamespace(org_vocab_start_index=start, org_vocab_end_index=end)
    module = layer(cls, tp_rank=rank, tp_size=size, num_embeddings=VOCAB, shard_indices=indices)
    return holding(module, weight=local)


def vllm_rank(weights: dict[str, torch.Tensor], rank: int, size: int) -> nn.Module:
    """One tensor-parallel rank of vLLM's Qwen2ForCausalLM, loaded from the trainer's ``weights`` as vLLM loads them."""
    head = HIDDEN // HEADS
    q_heads = HEADS // size
    kv_heads, replicas = (1, size // KV_HEADS) if size >= KV_HEADS else (KV_HEADS // size, 1)  # QKVParallelLinear
    kv_rank = rank // replicas
    root = nn.Module()
    root.packed_modules_mapping = PACKED
    root.model = nn.Module()
    root.model.embed_tokens = vocab_parallel(VOCAB_PARALLEL, weights["model.embed_tokens.weight"], rank, size)
    root.model.norm = holding(layer(RMS_NORM), weight=weights["model.norm.weight"])
    root.lm_head = vocab_parallel(LM_HEAD, weights["lm_head.weight"], rank, size)
    root.model.layers = nn.ModuleList()
    for i in range(2):
        p = f"model.layers.{i}."
        block = nn.Module()
        block.self_attn, block.mlp = nn.Module(), nn.Module()

        def qkv(kind: str, p=p) -> torch.Tensor:  # weight_loader: q by tp_rank, k and v by tp_rank // replicas
            q = weights[f"{p}self_attn.q_proj.{kind}"].narrow(0, rank * q_heads * head, q_heads * head)
            k = weights[f"{p}self_attn.k_proj.{kind}"].narrow(0, kv_rank * kv_heads * head, kv_heads * head)
            v = weights[f"{p}self_attn.v_proj.{kind}"].narrow(0, kv_rank * kv_heads * head, kv_heads * head)
            return torch.cat([q, k, v])

        attributes = dict(num_heads=q_heads, num_kv_heads=kv_heads, num_kv_head_replicas=replicas, head_size=head)
        attributes |= dict(v_head_size=head, total_num_heads=HEADS, total_num_kv_heads=KV_HEADS)
        qkv_layer = layer(QKV_PARALLEL, tp_rank=rank, tp_size=size, **attributes)
        block.self_attn.qkv_proj = holding(qkv_layer, weight=qkv("weight"), bias=qkv("bias"))
        block.self_attn.o_proj = row_parallel(weights[f"{p}self_attn.o_proj.weight"], rank, size)
        per = INTERMEDIATE // size  # MergedColumnParallelLinear.weight_loader: a band of each part, side by side
        gate_up = [weights[f"{p}mlp.{part}_proj.weight"][rank * per : (rank + 1) * per] for part in ("gate", "up")]
        merged = layer(MERGED_COLUMN_PARALLEL, tp_rank=rank, tp_size=size, output_sizes=[INTERMEDIATE] * 2)
        block.mlp.gate_up_proj = holding(merged, weight=torch.cat(gate_up))
        block.mlp.down_proj = row_parallel(weights[f"{p}mlp.down_proj.weight"], rank, size)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            setattr(block, norm, holding(layer(RMS_NORM), weight=weights[f"{p}{norm}.weight"]))
        root.model.layers.append(block)
    return root


def row_parallel(weight: torch.Tensor, rank: int, size: int) -> nn.Module:
    out_features, in_features = weight.shape
    per = in_features // size
    attributes = dict(input_size_per_partition=per, input_size=in_features, output_size=out_features)
    module = layer(ROW_PARALLEL, tp_rank=rank, tp_size=size, **attributes)
    return holding(module, weight=weight[:, rank * per : (rank + 1) * per])


def engine_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the backend pushes: the effective weights (adapters merged), in bfloat16."""
    return dict(effective_parameters(model, torch.bfloat16))


def prove(ranks: list[nn.Module], model: nn.Module):
    size = len(ranks)
    engine = engine_totals([engine_fingerprints(r, rank, size) for rank, r in enumerate(ranks)])
    wanted = {name: (held.full_shape, held.dtype) for name, held in engine.items()}
    return check_fingerprints(engine, trainer_fingerprints(model, wanted, PACKED, torch.bfloat16))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_the_ranks_shards_add_up_to_the_trainers_fingerprint_for_every_element(size):
    model = trainer_model()
    weights = engine_weights(model)
    ranks = [vllm_rank(weights, rank, size) for rank in range(size)]
    if size == 4:  # two ranks share each KV head; the vocabulary's last rank holds 20 real rows and 60 of padding
        assert ranks[0].model.layers[0].self_attn.qkv_proj.num_kv_head_replicas == 2
        assert ranks[3].lm_head.shard_indices.org_vocab_end_index - 240 == 20
    compared = prove(ranks, model)
    assert compared.tensors == len(dict(ranks[0].named_parameters()))  # every tensor, fused and sharded ones too
    assert compared.elements == sum(p.numel() for p in model.parameters())  # every element, once


STALE = [  # (engine layer, trainer weight it holds a part of)
    ("model.layers.1.self_attn.qkv_proj", "model.layers.1.self_attn.k_proj.weight"),  # a shared KV head at TP=4
    ("model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.o_proj.weight"),
    ("model.layers.1.mlp.gate_up_proj", "model.layers.1.mlp.up_proj.weight"),
    ("model.layers.0.mlp.down_proj", "model.layers.0.mlp.down_proj.weight"),
    ("lm_head", "lm_head.weight"),
    ("model.embed_tokens", "model.embed_tokens.weight"),
    ("model.layers.0.input_layernorm", "model.layers.0.input_layernorm.weight"),  # whole on every rank
]


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize(("engine_layer", "trained"), STALE)
def test_one_stale_shard_is_caught_and_named(size, engine_layer, trained):
    """The trainer moves one weight; every rank loads it but the last, which keeps its shard of the old one."""
    model = trainer_model()
    before = engine_weights(model)
    with torch.no_grad():
        model.get_parameter(trained).add_(0.01 * torch.randn_like(model.get_parameter(trained)))
    after = engine_weights(model)
    ranks = [vllm_rank(after, rank, size) for rank in range(size - 1)] + [vllm_rank(before, size - 1, size)]
    stale = {name for name in after if not torch.equal(before[name], after[name])}
    assert stale == {trained}
    with pytest.raises(WeightSyncError, match=rf"weight sync failed: the rollout engine's {engine_layer}\.weight "):
        prove(ranks, model)
    fresh = ranks[:-1] + [vllm_rank(after, size - 1, size)]
    assert prove(fresh, model).elements == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", [2, 4])
def test_a_stale_lora_merge_is_caught(size):
    """A LoRA policy (norms frozen, adapters on the projections): the engine holds the merge of the adapters before
    an update, as a backend that merged once and never again would."""
    model = apply_lora(trainer_model(), enabled=True, rank=4, alpha=8, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn_like(p))  # adapters that change what the model computes
    merged = engine_weights(model)
    assert prove([vllm_rank(merged, rank, size) for rank in range(size)], model).tensors > 0
    with torch.no_grad():
        model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight.add_(0.01)  # an update
    stale = [vllm_rank(merged, rank, size) for rank in range(size)]
    with pytest.raises(WeightSyncError, match=r"engine's model\.layers\.1\.self_attn\.qkv_proj\.weight "):
        prove(stale, model)
    reloaded = [vllm_rank(engine_weights(model), rank, size) for rank in range(size)]
    assert prove(reloaded, model).tensors > 0


def test_shards_that_do_not_cover_a_tensor_are_an_error():
    """A layout misread (here: the last rank's band of the LM head one row short) cannot pass as a proof."""
    model = trainer_model()
    weights = engine_weights(model)
    ranks = [vllm_rank(weights, rank, 2) for rank in range(2)]
    ranks[1].lm_head.shard_indices.org_vocab_end_index -= 1
    with pytest.raises(
        WeightSyncError, match=r"shards of lm_head\.weight count 16576 elements of a \[260, 64\] tensor"
    ):
        prove(ranks, model)

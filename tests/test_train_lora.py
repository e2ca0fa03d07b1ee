"""LoRA: only the adapters train, merging keeps the logits, the saved model runs on every backend."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.train import TrainConfig, Trainer, write_dataset
from musicgen_edu.train.lora import (
    load_adapter,
    merge_lora,
    prepare_trainable,
    trainable_parameters,
)
from musicgen_edu.train.objective import CaptionEncoder, training_step

SR = 32000


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    t = np.arange(SR) / SR
    wavs = [(0.4 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220, 277, 330, 440)]
    return write_dataset(tmp_path_factory.mktemp("clips"), wavs, SR,
                         ["tone a", "tone c sharp", "tone e", "tone a high"])


def fresh(name: str = "debug"):
    base = mg.load_model(name, device="cpu", dtype="float32")
    return dataclasses.replace(base, model=copy.deepcopy(base.model), extra={})


def test_only_the_adapters_train():
    model = fresh()
    frozen = {n: p.clone() for n, p in model.model.named_parameters()}
    peft = prepare_trainable(model, lora=True, rank=4, alpha=8)
    names = list(trainable_parameters(model))
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert targets == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    tokens = torch.randint(0, 2048, (2, 4, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        training_step(model, CaptionEncoder(model), tokens, ["x", "y"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.model.named_parameters())
    base = {n.replace(".base_layer", ""): p for n, p in after.items() if "lora_" not in n}
    assert base.keys() == frozen.keys()
    assert all(torch.equal(p, frozen[n]) for n, p in base.items())       # nothing else moved
    assert any(after[n].abs().sum() > 0 for n in names if "lora_B" in n)  # B left zero
    assert peft is not None


def test_full_fine_tuning_trains_the_decoder_and_nothing_else():
    model = fresh("random-small")          # T5 768 wide, decoder 1024: a projection between
    assert prepare_trainable(model, lora=False) is None
    names = list(trainable_parameters(model))
    assert all(n.startswith(("decoder.", "enc_to_dec_proj.")) for n in names)
    assert any(n.startswith("enc_to_dec_proj.") for n in names)
    assert sum(p.numel() for p in trainable_parameters(model).values()) == sum(
        p.numel() for p in model.model.decoder.parameters()) + sum(
        p.numel() for p in model.model.enc_to_dec_proj.parameters())


def test_merged_and_unmerged_adapters_give_the_same_logits():
    model = fresh()
    peft = prepare_trainable(model, lora=True, rank=4, alpha=8)
    with torch.no_grad():                  # B starts at zero: give the adapters some effect
        for n, p in trainable_parameters(model).items():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    model.model.eval()
    tokens = torch.randint(0, 2048, (2, 4, 12), generator=torch.Generator().manual_seed(1))
    captions = CaptionEncoder(model)
    with torch.no_grad():
        unmerged = training_step(model, captions, tokens, ["pads", None])
        with peft.disable_adapter():
            plain = training_step(model, captions, tokens, ["pads", None])
        merge_lora(model, peft)
        merged = training_step(model, captions, tokens, ["pads", None])
    assert not any("lora" in n for n, _ in model.model.named_parameters())
    assert abs(unmerged.loss.item() - plain.loss.item()) > 1e-3        # the adapters matter
    torch.testing.assert_close(merged.loss, unmerged.loss, rtol=1e-5, atol=1e-5)


def test_a_lora_run_saves_a_model_both_backends_generate_identically(folder, tmp_path):
    config = TrainConfig(steps=30, batch_size=4, learning_rate=5e-3, warmup_steps=2, window=1.0,
                         hop=1.0, lora=True, lora_rank=8, checkpoint_every=30,
                         sample_seconds=0.2, save_adapter=True)
    result = Trainer("debug", folder, tmp_path / "run", config, progress=False).fit()
    assert (result.adapter_dir / "adapter_config.json").is_file()
    tuned = mg.load_model(str(result.model_dir), device="cpu")
    base = mg.load_model("debug", device="cpu")
    moved = [n for n, p in tuned.model.decoder.named_parameters()
             if not torch.equal(p, dict(base.model.decoder.named_parameters())[n])]
    assert moved and all(n.endswith("proj.weight") or ".fc" in n for n in moved)
    outs = [mg.MusicGenerator(tuned, backend=b).generate(
        ["tone e", "tone a high"], duration=0.6, seed=5, progress=False).tokens
        for b in ("transformers", "native")]
    assert torch.equal(outs[0], outs[1])
    adapted = load_adapter(result.adapter_dir)            # base model + the adapter alone
    weights = dict(tuned.model.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in adapted.model.named_parameters())
    assert sum(f.stat().st_size for f in result.adapter_dir.iterdir()) < sum(
        f.stat().st_size for f in result.model_dir.iterdir()) / 2


def test_a_folder_without_an_adapter_is_refused(tmp_path):
    with pytest.raises(mg.ModelLoadError, match="holds no LoRA adapter"):
        load_adapter(tmp_path)

"""posttrain.core.sharded: rank 0's full model after DDP or sharded (FSDP / ZeRO-3) training.

Sharded training cannot run on this CPU box (accelerate enables FSDP and DeepSpeed only on
GPU-class devices), so the sharded branch is driven with a stand-in accelerator that reports
FSDP and hands over a gathered state dict, as `Accelerator.get_state_dict` does."""

from types import SimpleNamespace

import pytest
import torch

from posttrain.core.sharded import full_model, is_sharded


def _peft_model(seed: int):
    from peft import LoraConfig, get_peft_model

    from posttrain.core.models import build_tiny_causal_lm, load_tokenizer

    torch.manual_seed(seed)
    base = build_tiny_causal_lm(load_tokenizer(), arch="qwen3")
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


class FakeAccelerator:
    def __init__(self, kind, state_dict=None, zero_stage=None):
        from accelerate.utils import DistributedType

        self.distributed_type = getattr(DistributedType, kind)
        self.state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=zero_stage))
        self._state_dict, self.gathered = state_dict, 0
        self.device = torch.device("cpu")

    def get_state_dict(self, model):
        self.gathered += 1
        return self._state_dict


def _trainer(model, acc, rank0=True):
    return SimpleNamespace(model=model, accelerator=acc, is_world_process_zero=lambda: rank0)


def test_unsharded_training_hands_over_the_trained_model_itself():
    model = _peft_model(0)
    for acc in (FakeAccelerator("NO"), FakeAccelerator("MULTI_GPU"), FakeAccelerator("DEEPSPEED", zero_stage=2)):
        assert not is_sharded(acc)
        assert full_model(_trainer(model, acc), rebuild=None) is model
        assert full_model(_trainer(model, acc, rank0=False), rebuild=None) is None
        assert acc.gathered == 0


def test_sharded_training_gathers_on_every_rank_and_rebuilds_on_rank_0():
    trained = _peft_model(0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # "training" moved the adapter away from its zero init
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    for acc in (FakeAccelerator("FSDP", state), FakeAccelerator("DEEPSPEED", state, zero_stage=3)):
        assert is_sharded(acc)
        other = full_model(_trainer(object(), acc, rank0=False), rebuild=lambda: _peft_model(1))
        assert other is None and acc.gathered == 1  # the gather is collective: every rank joins
        got = full_model(_trainer(object(), acc), rebuild=lambda: _peft_model(1))
        for k, v in got.state_dict().items():
            assert torch.equal(v, state[k]), k  # every weight, base and adapter, is the trained one
        assert {p.device for p in got.parameters()} == {acc.device}
    with pytest.raises(RuntimeError, match="rebuild"):
        full_model(_trainer(object(), FakeAccelerator("FSDP", state)), rebuild=None)
    bad = {k: v for k, v in state.items() if "lora_B" not in k}
    with pytest.raises(RuntimeError, match="missing"):
        full_model(_trainer(object(), FakeAccelerator("FSDP", bad)), rebuild=lambda: _peft_model(1))

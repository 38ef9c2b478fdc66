"""Yes/No scoring reads only the last position's two logits; it must equal the full softmax."""

import numpy as np
import torch

from posttrain.rec.scoring import score_prompts


def test_last_position_yes_no_equals_full_logits(tiny_model, tokenizer):
    prompts = [tokenizer("Will the user like it?")["input_ids"],
               tokenizer("A much longer prompt about movies and ratings, then a question?")["input_ids"],
               tokenizer("Short")["input_ids"]]
    yes, no = tokenizer("Yes")["input_ids"][0], tokenizer("No")["input_ids"][0]
    got = score_prompts(tiny_model, tokenizer, prompts, yes, no, batch_size=2)
    want = []
    with torch.inference_mode():
        for p in prompts:  # one unpadded forward each: the plain definition
            last = tiny_model(input_ids=torch.tensor([p])).logits[0, -1]
            want.append(torch.softmax(torch.stack([last[yes], last[no]]), 0)[0].item())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert len(set(np.round(got, 6))) == 3  # distinct prompts, distinct scores

"""SISTA's cache of frozen report embeddings: bounded, and a step with it equals a step without it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrcl.data.normalize import to_model_input
from cxrcl.data.phantom import make_phantom
from cxrcl.methods.registry import build_method
from cxrcl.text.similarity import label_vectors
from tests.conftest import TINY_VIT


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("ph") / "phantom", n=48, size=64)


def _step(m, phantom, rows, seed):
    m.set_batch_rows(rows, phantom)
    m.zero_grad()
    torch.manual_seed(seed)  # the same dropout draws in both models
    out = m.training_step(to_model_input(phantom.images[rows], 32), torch.Generator().manual_seed(seed))
    out["loss"].backward()
    return out, {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("similarity", ["", ":similarity=labels"])  # "": the default encoder:minilm
def test_a_step_with_the_cache_equals_a_step_without_it(phantom, similarity):
    spec = f"sista:text_max_length=64:similarity_threshold=0.5{similarity}"
    torch.manual_seed(0)
    cached = build_method(spec, TINY_VIT, 32)
    plain = build_method(spec, TINY_VIT, 32)
    plain.load_state_dict(cached.state_dict())
    plain.similarity.max_entries = 0  # no cache: every text is embedded again
    embedded = []
    original = cached.similarity.embed
    cached.similarity.embed = lambda text, device: embedded.append(text) or original(text, device)
    train = phantom.indices("train")
    first, second = train[:8], np.concatenate([train[4:8], train[8:12]])  # half of the second batch seen
    for m in (cached, plain):
        _step(m, phantom, first, 1)
    assert len(embedded) == len(cached.similarity.cache) == len(set(cached.batch_reports(8)[0]))
    assert len(plain.similarity.cache) == 0
    embedded.clear()
    (a, ga), (b, gb) = (_step(m, phantom, second, 2) for m in (cached, plain))
    assert len(embedded) == 4  # only the new reports reached the frozen model
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert ga.keys() == gb.keys() and "gate_out.weight" in ga
    for key in ga:
        torch.testing.assert_close(ga[key], gb[key], rtol=0, atol=0, msg=key)
    # the cache is no part of the checkpoint
    assert cached.state_dict().keys() == plain.state_dict().keys()
    assert not any("cache" in k or k.startswith("similarity") for k in cached.state_dict())


def test_the_cache_is_bounded_and_an_evicted_text_comes_back_the_same():
    m = build_method("sista:similarity=labels", TINY_VIT, 32)
    sim = m.similarity
    sim.max_entries = 3
    texts = ["No acute findings.", "Large left pleural effusion.", "Cardiomegaly.",
             "Right upper lobe pneumonia.", "Small pneumothorax on the left."]
    first = sim(texts, "cpu")
    assert len(sim.cache) == 3  # the three most recently used
    again = sim(texts[:1], "cpu")  # evicted: embedded afresh, the same bits
    assert len(sim.cache) == 3
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    # the same vectors as the label vectors of the whole batch at once (the former code path)
    ref = F.normalize(torch.from_numpy(label_vectors(texts)).float(), dim=-1)
    torch.testing.assert_close(first, ref, rtol=0, atol=0)

"""The harness on real tiny checkpoints: accuracies are computed from the model's own likelihoods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydoc_data.topics import topics

from synpro.data.tokenizer import encode_batch, save_tokenizer, train_bpe
from synpro.evaluation.cloze import build_builtin_task
from synpro.evaluation.harness import evaluate_checkpoint, evaluate_model
from synpro.models import ModelSpec
from synpro.spec import EvalTaskSpec

SEQ = 64
CLOZE = [EvalTaskSpec(name="synpro_cloze")]
DOCS = [text for _, text in sorted(topics.items()) if 1500 <= len(text) <= 4000]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tokenizer folder, the cloze task over 12 documents, and two saved checkpoints: one
    trained on those documents for 250 steps, one at its random initialisation."""
    from transformers import Olmo2ForCausalLM

    root = tmp_path_factory.mktemp("harness")
    held_out = DOCS[:12]
    tokenizer = train_bpe(DOCS, 1024)
    vocab = save_tokenizer(tokenizer, root / "tokenizer")
    task = build_builtin_task(held_out, root / "tasks", 60, seed=0)
    torch.manual_seed(0)
    model = Olmo2ForCausalLM(ModelSpec(preset="tiny").hf_config(vocab, SEQ))
    model.save_pretrained(root / "random")
    stream = torch.tensor([t for ids in encode_batch(tokenizer, held_out) for t in [*ids, vocab.eos_id]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        starts = torch.randint(len(stream) - SEQ, (16,), generator=generator)
        batch = torch.stack([stream[s:s + SEQ] for s in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(root / "trained")
    return root, task


def test_a_model_trained_on_the_tasks_documents_beats_chance_and_a_random_one_does_not(checkpoints):
    root, task = checkpoints
    trained = evaluate_checkpoint(root / "trained", root / "tokenizer", CLOZE, root / "tasks", batch_size=32)
    random = evaluate_checkpoint(root / "random", root / "tokenizer", CLOZE, root / "tasks", batch_size=32)
    assert trained.items == random.items == {"synpro_cloze": task.n_items}
    chance = 1 / 4
    assert trained.scores["synpro_cloze"]["acc"] > 0.6
    assert abs(random.scores["synpro_cloze"]["acc"] - chance) < 0.17  # 60 items: ~3 standard errors
    assert trained.metrics() == {"acc/synpro_cloze": trained.average, "acc/avg": trained.average}


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_the_accuracy_is_the_likelihood_ranking_of_the_choices(checkpoints, metric):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, task = checkpoints
    model = AutoModelForCausalLM.from_pretrained(root / "trained", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    items = [json.loads(line) for line in task.data_path.read_text().splitlines()][:20]
    right = []
    with torch.no_grad():
        for item in items:
            context = tokenizer(item["context"], add_special_tokens=False).input_ids
            scores = []
            for choice in item["choices"]:
                whole = tokenizer(item["context"] + choice, add_special_tokens=False).input_ids
                n = len(whole) - len(context)
                window = torch.tensor([whole[-(SEQ + 1):]])
                logp = model(window[:, :-1]).logits.log_softmax(-1)[0, -n:]
                total = logp.gather(-1, window[0, -n:, None]).sum().item()
                scores.append(total / len(choice) if metric == "acc_norm" else total)
            right.append(int(np.argmax(scores)) == item["label"])
    spec = [EvalTaskSpec(name="synpro_cloze", metric=metric)]
    scores = evaluate_model(model, tokenizer, spec, root / "tasks", batch_size=7, limit=20)
    assert scores.items == {"synpro_cloze": 20}
    assert scores.scores == {"synpro_cloze": {metric: pytest.approx(np.mean(right), abs=1e-12)}}

"""Synthetic VQA ground truth + answers for `bench/eval_score.sh`.

    python eval_score.py N OUT_DIR     writes OUT_DIR/gt.json and OUT_DIR/pred.jsonl

Two thirds OPEN, one third CLOSED (yes/no), answers of 1-12 words drawn from a medical
vocabulary, predictions that share some words with the truth; fixed seed.
"""

import json
import random
import sys
from pathlib import Path

WORDS = (
    "left right upper lower lobe lung liver kidney brain heart spleen mass nodule "
    "lesion effusion pneumothorax fracture edema ct mri x-ray t1 t2 axial coronal "
    "the a an of in with no yes not normal abnormal enlarged small large 2 3 cm mm."
).split()


def answer(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def main():
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    gt, pred = [], []
    for i in range(n):
        closed = i % 3 == 0
        truth = rng.choice(["yes", "no"]) if closed else answer(rng, rng.randint(1, 6))
        guess = rng.choice(["yes", "no", "yes, it is", "no there is not"]) if closed else (
            truth if rng.random() < 0.3 else answer(rng, rng.randint(1, 12)))
        qid = f"q{i:07d}"
        gt.append({
            "id": qid,
            "image": f"img{i % 500}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is shown?"},
                {"from": "gpt", "value": truth},
            ],
            "answer_type": "CLOSED" if closed else "OPEN",
        })
        pred.append({"question_id": qid, "prompt": "What is shown?", "text": guess,
                     "answer_id": f"a{i}", "model_id": "bench", "metadata": {}})
    (out / "gt.json").write_text(json.dumps(gt))
    with open(out / "pred.jsonl", "w") as f:
        for p in pred:
            f.write(json.dumps(p) + "\n")


if __name__ == "__main__":
    main()

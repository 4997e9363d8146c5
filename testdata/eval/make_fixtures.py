#!/usr/bin/env python3
"""Generate the VQA scoring fixtures in testdata/eval/ (run by hand).

    python3 testdata/eval/make_fixtures.py

On first run this creates testdata/eval/.venv (git-ignored), installs the pinned
packages below into it and re-executes itself with that interpreter.

torch is big. To reuse an existing torch install instead of downloading
torch==2.15.0 from PyPI into the venv, set MT_EVAL_TORCH_SITE to the
site-packages directory holding it (e.g. /work/venv-torch/lib/python3.11/site-packages)
when the venv is first created: a .pth file then puts that directory on the
venv's sys.path (after the venv's own site-packages).
Set MT_EVAL_NO_VENV=1 to run with the current interpreter as is.

Scoring is done by the ORIGINAL reference code, vendored unmodified under
reference/ (see reference/*/README.md); nothing here reimplements a metric
except the clearly marked per-row diagnostics, whose averages are asserted to
reproduce the reference aggregates bit for bit.
"""

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"

PINNED = [
    "nltk==3.9.1",
    "tabulate==0.9.0",
    "torchmetrics==1.9.0",
    "lightning-utilities==0.15.3",
]
TORCH_PIN = "torch==2.15.0"


# --------------------------------------------------------------------------
# bootstrap: own venv
# --------------------------------------------------------------------------
def _bootstrap():
    if os.environ.get("MT_EVAL_NO_VENV"):
        return
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        torch_site = os.environ.get("MT_EVAL_TORCH_SITE")
        pkgs = list(PINNED)
        if torch_site:
            site = subprocess.check_output(
                [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                text=True,
            ).strip()
            Path(site, "zz_external_torch.pth").write_text(torch_site + "\n")
        else:
            pkgs.append(TORCH_PIN)
        subprocess.check_call([str(py), "-m", "pip", "install", *pkgs])
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


_bootstrap()

# Reference imports (after bootstrap).
sys.path.insert(0, str(HERE / "reference" / "medtrinity"))
sys.path.insert(0, str(HERE / "reference" / "multimedeval"))

import collections  # noqa: E402  (used by the verbatim evaluate copy below)

import nltk  # noqa: E402
import tabulate as _tabulate_mod  # noqa: E402
import torch  # noqa: E402
import torchmetrics  # noqa: E402

# The vendored MedTrinity-25M script (unmodified). Importing it runs
# warnings.simplefilter('ignore') exactly as running it does.
import run_eval_nocandi as medtrinity  # noqa: E402
from run_eval_nocandi import (  # noqa: E402
    align_dict_lists,
    calculate_exactmatch,
    calculate_f1score,
    sentence_bleu,
    SmoothingFunction,
)
from eval_metrics.glossary import normalize_word  # noqa: E402

import utils_excerpt as mme_utils  # noqa: E402
from vqa_excerpt import VQA  # noqa: E402

assert nltk.__version__ == "3.9.1", nltk.__version__
assert torchmetrics.__version__ == "1.9.0", torchmetrics.__version__
if torch.__version__.split("+")[0] != TORCH_PIN.split("==")[1]:
    print(f"warning: torch {torch.__version__} != {TORCH_PIN}", file=sys.stderr)


# --------------------------------------------------------------------------
# evaluate_values: verbatim copy of run_eval_nocandi.evaluate
# --------------------------------------------------------------------------
# This is llava/eval/run_eval_nocandi.py::evaluate from MedTrinity-25M commit
# 79b1b03, copied line for line. The ONLY change: the two
# `results_table = tabulate([...])` statements build a dict of the same
# values (same expressions, same order) instead of a text table, so the
# numbers keep full float precision. Every line of the computation is identical.
def evaluate_values(gt, pred):
    gt, pred = align_dict_lists(gt, pred)
    assert len(gt) == len(pred), "the length of gt is the same as pred"
    scores = collections.defaultdict(list)
    closed_scores = collections.defaultdict(list)
    closed_questions_count = 0
    closed_questions_correct = 0
    for gt_item, pred_item in zip(gt, pred):
        gt_results = gt_item.get('conversations', gt_item.get('conversatons'))
        gt_value = gt_results[1]['value'].lower()
        pred_value = pred_item['text'].lower()
        answer_type = gt_item['answer_type'] if 'answer_type' in gt_item else 'OPEN'

        # Your normalization function here
        # gt_value = normalize_word(gt_value)
        # pred_value = normalize_word(pred_value)
        print(answer_type)
        if answer_type == 'OPEN':
            # Assuming calculate_exactmatch, calculate_f1score functions are defined elsewhere
            scores['exact_match'].append(calculate_exactmatch(pred_value, gt_value))
            f1_score, precision, recall = calculate_f1score(pred_value, gt_value)
            scores['f1'].append(f1_score)
            scores['precision'].append(precision)
            scores['recall'].append(recall)

            # Calculate BLEU scores with different weights
            weights = [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)]  # You can customize the weights here
            bleu_scores = [sentence_bleu([gt_value.split()], pred_value.split())]
            for w in weights:
                bleu_score = sentence_bleu([gt_value.split()], pred_value.split(), weights=w, smoothing_function=SmoothingFunction().method1)
                bleu_scores.append(bleu_score)
            scores['bleu_scores'].append(bleu_scores)
            

        #calculate 'yes/no accuracy'
        elif answer_type == 'CLOSED':
            f1_score, precision, recall = calculate_f1score(pred_value, gt_value)
            closed_scores['f1'].append(f1_score)
            closed_scores['precision'].append(precision)
            closed_scores['recall'].append(recall)
            closed_questions_count += 1
            if gt_value in pred_value:  # Check if gt_value is contained within pred_value
                closed_questions_correct += 1


    # Calculate average scores
    print(scores)
    exact_match_avg = sum(scores['exact_match']) / len(scores['exact_match'])
    f1_score_avg = sum(scores['f1']) / len(scores['f1'])
    precision_avg = sum(scores['precision']) / len(scores['precision'])
    recall_avg = sum(scores['recall']) / len(scores['recall'])

    # Calculate average BLEU scores for different weights
    bleu_scores_avg = [sum(score_list) / len(score_list) for score_list in zip(*scores['bleu_scores'])]

    # Calculate closed question accuracy
    if 'answer_type' in gt_item:
        print(f"count: {closed_questions_count}, correct: {closed_questions_correct}")
        closed_score = (closed_questions_correct / closed_questions_count) if closed_questions_count else 0
        closed_f1_score_avg = sum(closed_scores['f1']) / len(closed_scores['f1'])
        closed_precision_avg = sum(closed_scores['precision']) / len(closed_scores['precision'])
        closed_recall_avg = sum(closed_scores['recall']) / len(closed_scores['recall'])
    
        # Generate evaluation summary
        results_table = dict(  # was: tabulate([...], headers=...)
            [
                ['exact_match', exact_match_avg*100],
                ['f1', f1_score_avg*100],
                ['precision', precision_avg*100],
                ['recall', recall_avg*100],
                ['bleu', bleu_scores_avg[0]*100], 
                ['bleu_1', bleu_scores_avg[1]*100],
                ['bleu_2', bleu_scores_avg[2]*100],
                ['bleu_3', bleu_scores_avg[3]*100],
                ['yes_no_accuracy', closed_score*100],
                ['closed_f1', closed_f1_score_avg*100],
                ['closed_precision', closed_precision_avg*100],
                ['closed_recall', closed_recall_avg*100],
            ],
        )
    else:
        # Generate evaluation summary
        results_table = dict(  # was: tabulate([...], headers=...)
            [
                ['exact_match', exact_match_avg*100],
                ['f1', f1_score_avg*100],
                ['precision', precision_avg*100],
                ['recall', recall_avg*100],
                ['bleu', bleu_scores_avg[0]*100], 
                ['bleu_1', bleu_scores_avg[1]*100],
                ['bleu_2', bleu_scores_avg[2]*100],
                ['bleu_3', bleu_scores_avg[3]*100],
                # ['yes/no accuracy', closed_score*100],
                # ['Closed F1 Score', closed_f1_score_avg*100],
                # ['Closed Precision', closed_precision_avg*100],
                # ['Closed Recall', closed_recall_avg*100],
            ],
        )
    return results_table


def run_medtrinity(gt, pred):
    """evaluate_values with the reference's debug prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate_values(gt, pred)


def run_medtrinity_table(gt, pred):
    """The untouched reference evaluate() (tabulate text), for a cross-check."""
    with contextlib.redirect_stdout(io.StringIO()):
        return medtrinity.evaluate(gt, pred)


# --------------------------------------------------------------------------
# fixture data
# --------------------------------------------------------------------------
SEED = 20250217

ORGANS = ["lung", "liver", "kidney", "heart", "brain", "spleen", "pancreas",
          "bladder", "colon", "stomach", "aorta", "retina", "bone", "chest",
          "abdomen", "pelvis", "skull", "spine", "thyroid", "breast"]
MODALITIES = ["CT", "MRI", "X-ray", "ultrasound", "PET", "fundus photograph",
              "T2-weighted MRI", "contrast-enhanced CT", "histopathology"]
FINDINGS = ["nodule", "mass", "lesion", "opacity", "effusion", "fracture",
            "cyst", "edema", "hemorrhage", "calcification", "pneumothorax",
            "atelectasis", "consolidation", "infiltrate", "tumor", "stone"]
SIDES = ["left", "right", "bilateral", "upper", "lower", "central", "posterior"]
PLANES = ["axial", "coronal", "sagittal"]
FILLER = ["the", "a", "an", "is", "in", "of", "and", "with", "there", "seen",
          "present", "region", "not", "no", "shows", "image"]
NUMBERS = ["none", "zero", "one", "two", "three", "four", "five", "six",
           "seven", "eight", "nine", "ten", "eleven", "0", "1", "2", "3", "12",
           "1.5", "2.0", "0.5", "3,000", "10%"]
PUNCT_TAILS = [".", "?", "!", ",", ";", ":", "...", " .", ")", "'"]

OPEN_QUESTIONS = [
    "What modality is used to take this image?",
    "Which organ is abnormal?",
    "Where is the lesion located?",
    "What is the main finding?",
    "How many lesions are seen?",
    "In which plane is the image taken?",
    "Describe the region of interest.",
    "What abnormality is seen in the {organ}?",
]
CLOSED_QUESTIONS = [
    "Is there a {finding} in the {organ}?",
    "Is this a {modality} image?",
    "Does the image show {finding}?",
    "Is the {organ} normal?",
    "Is the lesion on the left or right?",
    "Is this an axial or coronal image?",
]

YES_VARIANTS = ["yes", "Yes", "YES", "yes.", "Yes, it is", "yes, there is",
                "I think yes", "eyes", "Yes!", "no", "No", "", "   ",
                "Yes there is a {finding}", "yess", "y", "yes yes yes",
                "The answer is yes."]
NO_VARIANTS = ["no", "No", "NO", "no.", "No there is not", "not", "nodule",
               "none", "No, it is not", "unknown", "Cannot be determined",
               "yes", "Yes", "", "\t", "no no", "There is no {finding}.",
               "I don't know", "n", "nope", "Not seen"]


def phrase(rng, lo=1, hi=6):
    pools = [ORGANS, FINDINGS, SIDES, PLANES, FILLER, NUMBERS, MODALITIES]
    n = rng.randint(lo, hi)
    words = []
    for _ in range(n):
        pool = rng.choices(pools, weights=[4, 4, 3, 1, 3, 1, 1])[0]
        words.append(rng.choice(pool))
    s = " ".join(words)
    r = rng.random()
    if r < 0.15:
        s = s + rng.choice(PUNCT_TAILS)
    elif r < 0.22:
        s = s.capitalize()
    elif r < 0.26:
        s = s.upper()
    return s


def mutate(rng, s):
    words = s.split()
    k = rng.random()
    if k < 0.18 or not words:
        return s  # exact copy
    if k < 0.28:
        return s.upper() if rng.random() < 0.5 else s.title()
    if k < 0.40 and len(words) > 1:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if k < 0.52:
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLER + FINDINGS))
        return " ".join(words)
    if k < 0.62:
        words[rng.randrange(len(words))] = rng.choice(ORGANS + SIDES + NUMBERS)
        return " ".join(words)
    if k < 0.70:
        rng.shuffle(words)
        return " ".join(words)
    if k < 0.77:
        return "The answer is " + s + rng.choice(["", ".", "!"])
    if k < 0.84:
        return s + rng.choice(PUNCT_TAILS)
    if k < 0.88:
        return " ".join(w + " " + w for w in words)
    if k < 0.90:
        return ""
    return phrase(rng)  # unrelated answer


def fill(rng, template):
    return template.format(organ=rng.choice(ORGANS), finding=rng.choice(FINDINGS),
                           modality=rng.choice(MODALITIES))


def random_pairs(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.30:
            gt = rng.choice(["yes", "no", "Yes", "No"])
            pred = fill(rng, rng.choice(YES_VARIANTS if gt.lower() == "yes" else NO_VARIANTS))
            q = fill(rng, rng.choice(CLOSED_QUESTIONS[:4]))
            out.append((q, gt, pred, "CLOSED"))
        elif r < 0.40:
            a, b = rng.sample(SIDES[:2] + PLANES[:2], 2)
            gt = a
            pred = rng.choice([a, b, a + " side", "The " + a, f"{a} or {b}", a.upper(), ""])
            q = rng.choice(CLOSED_QUESTIONS[4:])
            out.append((q, gt, pred, "CLOSED"))
        else:
            gt = phrase(rng)
            pred = mutate(rng, gt)
            q = fill(rng, rng.choice(OPEN_QUESTIONS))
            out.append((q, gt, pred, "OPEN"))
    return out


LONG_GT = (
    "The axial contrast-enhanced CT image of the abdomen shows a large, "
    "heterogeneous, hypodense mass in the right lobe of the liver measuring "
    "about 7.5 x 6.1 cm, with peripheral nodular enhancement; there is no "
    "ascites, the spleen and pancreas are unremarkable, and both kidneys "
    "enhance symmetrically (no hydronephrosis). Impression: findings are most "
    "consistent with a hemangioma, although a hypervascular metastasis cannot "
    "be excluded - correlation with MRI (T2-weighted) is recommended."
)
LONG_PRED = " ".join([LONG_GT.replace("right lobe", "left lobe")] * 2) + \
    " " + " ".join(["lesion"] * 60)

# (gt answer, pred text, answer_type) -- hand-written edge cases.
EDGE_CASES = [
    # --- CLOSED yes/no ---------------------------------------------------
    ("yes", "yes", "CLOSED"),
    ("Yes", "yes", "CLOSED"),
    ("yes", "Yes, it is", "CLOSED"),
    ("yes", "yes, it is", "CLOSED"),
    ("no", "No there is not", "CLOSED"),
    ("no", "not", "CLOSED"),
    ("no", "nodule", "CLOSED"),
    ("no", "no.", "CLOSED"),
    ("no.", "no", "CLOSED"),
    ("No.", "no, none.", "CLOSED"),
    ("no", "none", "CLOSED"),
    ("no", "unknown", "CLOSED"),
    ("no", "Cannot be determined", "CLOSED"),
    ("yes", "eyes", "CLOSED"),
    ("yes", "", "CLOSED"),
    ("no", "   ", "CLOSED"),
    ("", "yes", "CLOSED"),
    ("yes", "YES!!!", "CLOSED"),
    ("no", "No, there is no effusion.", "CLOSED"),
    ("no", "not not not", "CLOSED"),
    ("no", "no no", "CLOSED"),
    ("yes", "y e s", "CLOSED"),
    ("no", "Nothing abnormal", "CLOSED"),
    ("left", "left side", "CLOSED"),
    ("right", "left", "CLOSED"),
    ("axial", "Axial.", "CLOSED"),
    ("ct", "CT scan", "CLOSED"),
    ("1.5", "1.5 cm", "CLOSED"),
    # --- punctuation (OPEN) ----------------------------------------------
    ("left lung", "left; lung", "OPEN"),
    ("left;lung", "left lung", "OPEN"),
    ("x-ray", "x ray", "OPEN"),
    ("x-ray", "x - ray", "OPEN"),
    ("a/b ratio", "a / b ratio", "OPEN"),
    ("[mass]", "mass", "OPEN"),
    ('"quoted" text', "quoted text", "OPEN"),
    ("{brace} (paren)", "brace paren", "OPEN"),
    ("a=b+c", "a = b + c", "OPEN"),
    ("back\\slash", "back slash", "OPEN"),
    ("snake_case_word", "snake case word", "OPEN"),
    ("->arrow<-", "arrow", "OPEN"),
    ("user@host", "user host", "OPEN"),
    ("`tick`", "tick", "OPEN"),
    ("a , b", "a b", "OPEN"),
    ("a,b", "a b", "OPEN"),
    ("3,000 cells", "3000 cells", "OPEN"),
    ("3,000 cells/mm", "3000 cells mm", "OPEN"),
    ("x-ray, 3,000 views", "x ray 3000 views", "OPEN"),
    ("1,2", "1 2", "OPEN"),
    ("what? no!", "what no", "OPEN"),
    ("why?!", "why", "OPEN"),
    ("1.5 cm", "1.5cm", "OPEN"),
    ("1.5 cm", "1 5 cm", "OPEN"),
    ("e.g. nodule", "eg nodule", "OPEN"),
    ("i.e. mass", "i.e mass", "OPEN"),
    ("end.", "end", "OPEN"),
    (".5 mm", "0.5 mm", "OPEN"),
    ("5. mm", "5 mm", "OPEN"),
    ("3.14.15", "3.1415", "OPEN"),
    ("a.b.c", "abc", "OPEN"),
    ("wait...", "wait", "OPEN"),
    (".".join("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN") + ".",
     "abcdefghijklmnopqrstuvwxyzabcdefghijklmn", "OPEN"),
    ("lesion" + "." * 40, "lesion", "OPEN"),
    ("a. " * 35, "a", "OPEN"),
    ("mass: 3 cm", "mass 3 cm", "OPEN"),
    ("it's a lesion", "its lesion", "OPEN"),
    ("50% stenosis", "50 stenosis", "OPEN"),
    ("#1 & #2 | ~*^$", "1 2", "OPEN"),
    ("- left", "left", "OPEN"),
    ("left -", "left", "OPEN"),
    ("left- right", "left right", "OPEN"),
    # --- number words ----------------------------------------------------
    ("none", "0", "OPEN"),
    ("zero", "none", "OPEN"),
    ("one lesion", "1 lesion", "OPEN"),
    ("two", "2", "OPEN"),
    ("three four five", "3 4 5", "OPEN"),
    ("six seven eight nine ten", "6 7 8 9 10", "OPEN"),
    ("eleven", "11", "OPEN"),
    ("One", "ONE", "OPEN"),
    ("1", "one.", "OPEN"),
    # --- articles ----------------------------------------------------------
    ("the left kidney", "left kidney", "OPEN"),
    ("an apple a day", "apple day", "OPEN"),
    ("The", "the", "OPEN"),
    ("a", "an", "OPEN"),
    ("the the the", "the", "OPEN"),
    ("theory", "the ory", "OPEN"),
    # --- contractions ------------------------------------------------------
    ("dont", "don't", "OPEN"),
    ("cant", "can't", "OPEN"),
    ("isnt", "is not", "OPEN"),
    ("isnt", "isn't", "OPEN"),
    ("somebody'd", "somebodyd", "OPEN"),
    ("somebodyd", "somebody'd", "OPEN"),
    ("Im", "I'm", "OPEN"),
    ("im fine", "i'm fine", "OPEN"),
    ("Ive", "i've", "OPEN"),
    ("Id've seen it", "I'd've seen it", "OPEN"),
    ("wont", "will not", "OPEN"),
    ("let's see", "lets see", "OPEN"),
    # --- empty / whitespace ------------------------------------------------
    ("", "something", "OPEN"),
    ("something", "", "OPEN"),
    ("", "", "OPEN"),
    ("   ", "lung", "OPEN"),
    ("lung", " \t\n ", "OPEN"),
    ("!!!", "???", "OPEN"),
    ("...", "lung", "OPEN"),
    # --- unicode -------------------------------------------------------------
    ("épanchement pleural", "Épanchement pleural", "OPEN"),
    ("肺", "肺", "OPEN"),
    ("肺结节", "肺 结节", "OPEN"),
    ("右肺上叶结节", "右肺上叶 结节。", "OPEN"),
    ("lung 🫁", "lung", "OPEN"),
    ("🫁🫀", "🫁 🫀", "OPEN"),
    ("left\u00a0lung", "left lung", "OPEN"),
    ("left lung", "left\u3000lung", "OPEN"),
    ("left lung", "left\u2003lung\u2029", "OPEN"),
    ("left lung", "left，lung", "OPEN"),
    ("what？", "what?", "OPEN"),
    ("ＣＴ", "ct", "OPEN"),
    ("ΟΔΟΣ Σ", "οδος σ", "OPEN"),
    ("STRASSE", "straße", "OPEN"),
    ("İ", "i̇", "OPEN"),
    ("naïve cafe\u0301", "naive café", "OPEN"),
    ("zero\u200bwidth", "zero width", "OPEN"),
    ("left\x1flung", "left lung", "OPEN"),
    # --- repeated words ------------------------------------------------------
    ("lung lung lung", "lung", "OPEN"),
    ("lung", "lung lung lung", "OPEN"),
    ("mass mass", "mass lung mass", "OPEN"),
    ("left lung", "lung left", "OPEN"),
    ("right upper lobe", "right upper right upper lobe lobe", "OPEN"),
    # --- long / multi-line / case ----------------------------------------------
    (LONG_GT, LONG_PRED, "OPEN"),
    (LONG_GT, LONG_GT, "OPEN"),
    ("left lung\nright lung", "left lung\tright lung", "OPEN"),
    ("line one\r\nline two", "line 1 line 2", "OPEN"),
    ("LEFT LUNG", "left lung", "OPEN"),
    ("Left Lung", "LEFT lung.", "OPEN"),
    ("no.", "no", "OPEN"),
    ("no", "not", "OPEN"),
    ("yes", "yes", "OPEN"),
]

SPECIAL_IDS = ["9", "10", "100", "099", "Z", "a", "a1", "A1", "_x", "é1",
               "肺-1", "q 1", "q10", "q9"]


def build_main(rng):
    """Return (gt list, pred list) for the main fixture pair."""
    pairs = [(fill(rng, rng.choice(OPEN_QUESTIONS + CLOSED_QUESTIONS)), g, p, t)
             for g, p, t in EDGE_CASES]
    pairs += random_pairs(rng, 300 - len(pairs))
    rng.shuffle(pairs)

    n_extra = 8  # gt-only and pred-only items of each
    numeric = rng.sample(range(1, 4000), len(pairs) + 2 * n_extra)
    ids = SPECIAL_IDS + [str(x) for x in numeric if str(x) not in SPECIAL_IDS]
    ids = ids[: len(pairs) + 2 * n_extra]
    rng.shuffle(ids)
    common, gt_only, pred_only = ids[: len(pairs)], ids[len(pairs): len(pairs) + n_extra], ids[len(pairs) + n_extra:]

    gt_items, pred_items = [], []
    for qid, (q, g, p, t) in zip(common, pairs):
        gt_items.append({"id": qid, "image": f"{qid}.jpg",
                         "conversations": [{"from": "human", "value": "<image>\n" + q},
                                           {"from": "gpt", "value": g}],
                         "answer_type": t})
        pred_items.append({"question_id": qid, "prompt": q, "text": p})
    for qid in gt_only:
        q, g, _p, t = random_pairs(rng, 1)[0]
        gt_items.append({"id": qid, "image": f"{qid}.jpg",
                         "conversations": [{"from": "human", "value": "<image>\n" + q},
                                           {"from": "gpt", "value": g}],
                         "answer_type": t})
    for qid in pred_only:
        q, _g, p, _t = random_pairs(rng, 1)[0]
        pred_items.append({"question_id": qid, "prompt": q, "text": p})

    # A few items in the middle (never the last common id after sorting)
    # lose answer_type; the reference then scores them as OPEN.
    last_common = max(common)
    candidates = sorted(i for i, it in enumerate(gt_items)
                        if it["id"] in set(common) and it["id"] != last_common
                        and it["answer_type"] == "OPEN")
    for i in rng.sample(candidates, 5):
        del gt_items[i]["answer_type"]
    # one CLOSED-looking item without answer_type too (becomes OPEN)
    closed_c = sorted(i for i, it in enumerate(gt_items)
                      if it["id"] in set(common) and it["id"] != last_common
                      and it.get("answer_type") == "CLOSED")
    del gt_items[rng.choice(closed_c)]["answer_type"]

    rng.shuffle(gt_items)
    rng.shuffle(pred_items)
    preds = [{"question_id": it["question_id"], "prompt": it["prompt"], "text": it["text"],
              "answer_id": f"ans-{k:04d}", "model_id": "m", "metadata": {}}
             for k, it in enumerate(pred_items)]
    return gt_items, preds


NO_TYPE_PAIRS = [
    ("left lung", "left lung"),
    ("the liver", "liver"),
    ("two nodules", "2 nodules"),
    ("x-ray", "X-Ray image"),
    ("", "lung"),
    ("yes", "yes"),
    ("no", "no there is not"),
    ("axial ct", "coronal ct"),
    ("1.5 cm mass", "mass 1.5 cm"),
    ("肺", "肺"),
    ("right kidney cyst", ""),
    ("brain", "brain brain"),
    ("mri, t2", "T2 MRI"),
    ("effusion.", "effusion"),
]


def build_no_type(rng):
    ids = [9, 10, 100, 2, 1, 33, 4, 1000, 5, 6, 7, 8, 11, 12]
    extra_gt, extra_pred = [3, 101], [13, 0]
    gt_items, pred_items = [], []
    for qid, (g, p) in zip(ids, NO_TYPE_PAIRS):
        q = fill(rng, rng.choice(OPEN_QUESTIONS))
        gt_items.append({"id": qid, "image": f"{qid}.jpg",
                         "conversations": [{"from": "human", "value": "<image>\n" + q},
                                           {"from": "gpt", "value": g}]})
        pred_items.append({"question_id": qid, "prompt": q, "text": p})
    for qid in extra_gt:
        gt_items.append({"id": qid, "image": f"{qid}.jpg",
                         "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                           {"from": "gpt", "value": "unmatched gt"}]})
    for qid in extra_pred:
        pred_items.append({"question_id": qid, "prompt": "What is shown?", "text": "unmatched pred"})
    rng.shuffle(gt_items)
    rng.shuffle(pred_items)
    preds = [{"question_id": it["question_id"], "prompt": it["prompt"], "text": it["text"],
              "answer_id": f"ans-{k:04d}", "model_id": "m", "metadata": {}}
             for k, it in enumerate(pred_items)]
    return gt_items, preds


# --------------------------------------------------------------------------
# per-row diagnostics (same calls as evaluate_values makes)
# --------------------------------------------------------------------------
def medtrinity_rows(gt, pred):
    gt_a, pred_a = align_dict_lists(gt, pred)
    rows = []
    for g, p in zip(gt_a, pred_a):
        gt_value = g["conversations"][1]["value"].lower()
        pred_value = p["text"].lower()
        t = g["answer_type"] if "answer_type" in g else "OPEN"
        f1, prec, rec = calculate_f1score(pred_value, gt_value)
        if t == "OPEN":
            em = calculate_exactmatch(pred_value, gt_value)
            bleu = [sentence_bleu([gt_value.split()], pred_value.split())]
            for w in [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)]:
                bleu.append(sentence_bleu([gt_value.split()], pred_value.split(), weights=w,
                                          smoothing_function=SmoothingFunction().method1))
            rows.append({"id": g["id"], "answer_type": t, "exact_match": em, "f1": f1,
                         "precision": prec, "recall": rec, "bleu": bleu})
        else:
            rows.append({"id": g["id"], "answer_type": t, "f1": f1, "precision": prec,
                         "recall": rec, "correct": gt_value in pred_value})
    return rows


def check_rows_against_aggregate(rows, agg, with_closed):
    open_rows = [r for r in rows if r["answer_type"] == "OPEN"]
    closed_rows = [r for r in rows if r["answer_type"] == "CLOSED"]
    avg = lambda xs: sum(xs) / len(xs)  # noqa: E731
    exp = {
        "exact_match": avg([r["exact_match"] for r in open_rows]) * 100,
        "f1": avg([r["f1"] for r in open_rows]) * 100,
        "precision": avg([r["precision"] for r in open_rows]) * 100,
        "recall": avg([r["recall"] for r in open_rows]) * 100,
    }
    for k, name in enumerate(["bleu", "bleu_1", "bleu_2", "bleu_3"]):
        exp[name] = avg([r["bleu"][k] for r in open_rows]) * 100
    if with_closed:
        exp["yes_no_accuracy"] = (sum(r["correct"] for r in closed_rows) / len(closed_rows)) * 100
        exp["closed_f1"] = avg([r["f1"] for r in closed_rows]) * 100
        exp["closed_precision"] = avg([r["precision"] for r in closed_rows]) * 100
        exp["closed_recall"] = avg([r["recall"] for r in closed_rows]) * 100
    assert exp == agg, (exp, agg)


# --------------------------------------------------------------------------
# multimedeval
# --------------------------------------------------------------------------
class FixtureVQA(VQA):
    """The vendored multimedeval VQA task fed from an aligned gt/pred pair."""

    def __init__(self, gt_values):
        super().__init__()
        self._gt_values = gt_values

    def __getitem__(self, idx):
        return {"sample": self._gt_values[idx]}

    def get_correct_answer(self, sample):
        return sample


class _Answer:
    def __init__(self, text):
        self.text = text


def run_multimedeval(gt, pred):
    # multimedeval has no id alignment of its own: this harness pairs items
    # with run_eval_nocandi.align_dict_lists, like the llava-med scorer.
    gt_a, pred_a = align_dict_lists(gt, pred)
    assert len(gt_a) == len(pred_a), "harness: the length of gt is the same as pred"
    task = FixtureVQA([g["conversations"][1]["value"] for g in gt_a])
    predictions = [{"idx": i, "answer": _Answer(p["text"])} for i, p in enumerate(pred_a)]
    out = task.evaluate(predictions)
    m = out.metrics
    log = out.answer_log[1:]

    rows = []
    for g, p, entry in zip(gt_a, pred_a, log):
        clean_correct = mme_utils.clean_str(g["conversations"][1]["value"])
        clean_predicted = mme_utils.clean_str(p["text"])
        closed = clean_correct in ["yes", "no"]
        closed_correct = None
        if closed:
            # the closed-question test of VQA.evaluate, restated for the row dump
            ct = set(clean_correct.split()) - {""}
            pt = set(clean_predicted.split()) - {""}
            if ct == {"no"}:
                ct.add("not")
            closed_correct = (len(pt & ct) / len(ct) if ct else 0) >= 0.4
        # double-precision BLEU-1 (same formula as torchmetrics, no float32)
        pt_tok, ct_tok = clean_predicted.split(), clean_correct.split()
        match = sum((Counter(pt_tok) & Counter(ct_tok)).values())
        if match == 0:
            bleu_f64 = 0.0
        else:
            bp = 1.0 if len(pt_tok) > len(ct_tok) else math.exp(1 - len(ct_tok) / len(pt_tok))
            bleu_f64 = bp * (match / len(pt_tok))
        rows.append({"id": g["id"], "clean_correct": clean_correct,
                     "clean_predicted": clean_predicted, "f1": entry[2],
                     "recall": entry[4], "bleu": entry[3], "bleu_f64": bleu_f64,
                     "closed": closed, "closed_correct": closed_correct})

    n_closed = sum(r["closed"] for r in rows)
    n_open = len(rows) - n_closed
    assert sum(r["closed_correct"] for r in rows if r["closed"]) / n_closed == m["closedQuestionsAccuracy"] if n_closed else True
    summary = {
        "bleu": m["bleu"] * 100,
        "f1": m["F1"] * 100,
        "recall": m["recall"] * 100,
        "closed_accuracy": m["closedQuestionsAccuracy"] * 100,
        "open_recall": m["openQuestionsRecall"] * 100,
        "open_accuracy": m["openQuestionsAccuracy"] * 100,
        "bleu_f64": (sum(r["bleu_f64"] for r in rows) / len(rows) * 100) if rows else 0,
        "n_open": n_open,
        "n_closed": n_closed,
    }
    return summary, rows


# --------------------------------------------------------------------------
# crash probes
# --------------------------------------------------------------------------
def _gt(i, v, t="OPEN"):
    d = {"id": i, "image": "x.jpg",
         "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": v}]}
    if t is not None:
        d["answer_type"] = t
    return d


def _pr(i, v):
    return {"question_id": i, "prompt": "Q", "text": v, "answer_id": "a", "model_id": "m", "metadata": {}}


def crash_probes():
    probes = [
        ("no OPEN item (all CLOSED)", [_gt("1", "yes", "CLOSED"), _gt("2", "no", "CLOSED")],
         [_pr("1", "yes"), _pr("2", "no")]),
        ("answer_type present on the last item but no CLOSED item (all answer_type OPEN)",
         [_gt("1", "lung"), _gt("2", "liver")], [_pr("1", "lung"), _pr("2", "liver")]),
        ("no common id", [_gt("1", "lung")], [_pr("2", "lung")]),
        ("gt ids int, pred ids str (no common id)", [_gt(1, "lung")], [_pr("1", "lung")]),
        ("empty gt and pred", [], []),
        ("duplicate id in gt only", [_gt("1", "lung", None), _gt("1", "liver", None)], [_pr("1", "lung")]),
        ("mixed int/str ids", [_gt(1, "lung", None), _gt("2", "liver", None)], [_pr(1, "lung"), _pr("2", "liver")]),
        ("pred text null", [_gt("1", "lung", None)], [_pr("1", None)]),
        ("gt conversations with one turn",
         [{"id": "1", "conversations": [{"from": "human", "value": "Q"}]}], [_pr("1", "lung")]),
        ("answer_type 'closed' (lower case): the item is silently skipped (counted nowhere)",
         [_gt("1", "lung"), _gt("2", "yes", "closed"), _gt("3", "no", "CLOSED")],
         [_pr("1", "lung"), _pr("2", "no"), _pr("3", "no")]),
    ]
    out = []
    for name, g, p in probes:
        try:
            res = run_medtrinity(g, p)
            result = {"ok": res}
        except Exception as e:  # noqa: BLE001
            result = {"exception": f"{type(e).__name__}: {e}"}
        try:
            mres, _ = run_multimedeval(g, p)
            mm = {"ok": mres}
        except Exception as e:  # noqa: BLE001
            mm = {"exception": f"{type(e).__name__}: {e}"}
        out.append({"name": name, "gt": g, "pred": p, "medtrinity": result, "multimedeval": mm})
    return out


def row_crashes(pairs):
    """Per-row metric calls on every edge case; returns the ones that raise."""
    bad = []
    for g, p, _t in pairs:
        gv, pv = g.lower(), p.lower()
        try:
            calculate_exactmatch(pv, gv)
            calculate_f1score(pv, gv)
            sentence_bleu([gv.split()], pv.split())
            for w in [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)]:
                sentence_bleu([gv.split()], pv.split(), weights=w,
                              smoothing_function=SmoothingFunction().method1)
            run_multimedeval([_gt("1", g)], [_pr("1", p)])
        except Exception as e:  # noqa: BLE001
            bad.append((g, p, f"{type(e).__name__}: {e}"))
    return bad


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
def dump_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def dump_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def counts(gt, pred):
    gids = {g["id"] for g in gt}
    pids = {p["question_id"] for p in pred}
    return len([g for g in gt if g["id"] not in pids]), len([p for p in pred if p["question_id"] not in gids])


def main():
    bad = row_crashes(EDGE_CASES + [(g, p, None) for g, p in NO_TYPE_PAIRS])
    if bad:
        for b in bad:
            print("reference crashes on", repr(b), file=sys.stderr)
        raise SystemExit("remove the crashing inputs from EDGE_CASES / NO_TYPE_PAIRS "
                         "and list them in README.md")

    rng = random.Random(SEED)
    gt, pred = build_main(rng)
    gt_nt, pred_nt = build_no_type(rng)

    dump_json(HERE / "gt.json", gt)
    dump_jsonl(HERE / "pred.jsonl", pred)
    dump_json(HERE / "gt-no-type.json", gt_nt)
    dump_jsonl(HERE / "pred-no-type.jsonl", pred_nt)

    # Read the files back exactly as the reference script does.
    def load(gt_path, pred_path):
        return (json.load(open(gt_path, "r")), medtrinity.load_jsonl(pred_path))

    for gname, pname, suffix, with_closed in [
        ("gt.json", "pred.jsonl", "", True),
        ("gt-no-type.json", "pred-no-type.jsonl", "-no-type", False),
    ]:
        g, p = load(HERE / gname, HERE / pname)
        agg = run_medtrinity(g, p)
        assert ("yes_no_accuracy" in agg) == with_closed
        table = run_medtrinity_table(g, p)  # untouched evaluate(): same numbers, rounded
        tab_vals = [float(line.split()[-1]) for line in table.splitlines()[2:]]
        assert len(tab_vals) == len(agg)
        for a, b in zip(agg.values(), tab_vals):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (a, b)

        rows = medtrinity_rows(g, p)
        check_rows_against_aggregate(rows, agg, with_closed)
        ug, up = counts(g, p)
        agg = dict(agg)
        agg["n_open"] = sum(r["answer_type"] == "OPEN" for r in rows)
        agg["n_closed"] = sum(r["answer_type"] == "CLOSED" for r in rows)
        agg["n_unmatched_gt"] = ug
        agg["n_unmatched_pred"] = up
        dump_json(HERE / f"expected-llava-med{suffix}.json", agg)
        dump_jsonl(HERE / f"expected-llava-med{suffix}-rows.jsonl", rows)

        msum, mrows = run_multimedeval(g, p)
        dump_json(HERE / f"expected-multimedeval{suffix}.json", msum)
        dump_jsonl(HERE / f"expected-multimedeval{suffix}-rows.jsonl", mrows)

    # normalize_word on every gt and pred string (first occurrence order)
    seen, norm = set(), []
    for g, p in [(gt, pred), (gt_nt, pred_nt)]:
        for s in [it["conversations"][1]["value"] for it in g] + [it["text"] for it in p]:
            if s not in seen:
                seen.add(s)
                n = normalize_word(s)
                # the scorer lower-cases before normalising; it makes no difference here
                assert n == normalize_word(s.lower()), s
                assert n == mme_utils.clean_str(s), s
                norm.append({"input": s, "normalized": n})
    dump_jsonl(HERE / "expected-normalize.jsonl", norm)

    probes = crash_probes()
    dump_json(HERE / "expected-crashes.json", probes)

    names = sorted(p.name for p in HERE.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
    for n in names:
        print(f"{(HERE / n).stat().st_size:8d}  {n}")
    print(f"versions: python {sys.version.split()[0]}, nltk {nltk.__version__}, "
          f"tabulate {_tabulate_mod.__version__}, torchmetrics {torchmetrics.__version__}, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()

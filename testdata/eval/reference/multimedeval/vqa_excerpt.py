# Verbatim excerpt of multimedeval/task_families.py from the PyPI package
# multimedeval==1.0.0 (MIT License, Copyright (c) 2024 Corentin Royer; see LICENSE).
# Everything below the "BEGIN VERBATIM" marker is lines 97-240 of that file,
# byte for byte (class VQA: __init__, _preprocess, get_correct_answer, evaluate).
# The header only supplies the names those lines use: the real torchmetrics
# BLEUScore and nltk WordNetLemmatizer (constructed but never used by
# evaluate), clean_str from the verbatim utils excerpt, and minimal stand-ins
# for multimedeval's Benchmark base class and EvaluationOutput dataclass
# (which hold no scoring logic).
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List

from nltk.stem import WordNetLemmatizer
from torchmetrics.text import BLEUScore

from utils_excerpt import clean_str


class Benchmark:
    """Stand-in for multimedeval.utils.Benchmark (dataset plumbing only)."""

    def __init__(self, **kwargs):
        pass


@dataclass
class EvaluationOutput:
    """Stand-in for multimedeval.utils.EvaluationOutput."""

    metrics: Dict[str, Any]
    answer_log: List[Any] = field(default_factory=list)


# ---- BEGIN VERBATIM multimedeval/task_families.py lines 97-240 ----
class VQA(Benchmark):
    """A benchmark for Visual Question Answering tasks."""

    def __init__(self, **kwargs):
        """Initialize the VQA task."""
        super().__init__(**kwargs)
        self.bleu = BLEUScore(n_gram=1)
        self.task = "VQA"
        self.wnl = WordNetLemmatizer()

    def _preprocess(self, text):
        tokenized_text = set(text.split())
        tokenized_text.discard("")
        return tokenized_text

    @abstractmethod
    def get_correct_answer(self, sample):
        """Get the correct answer for the sample.

        Args:
            sample: The sample to get the correct answer for.
        """

    def evaluate(self, predictions):
        """Evaluate the predictions against the ground truth.

        Args:
            predictions: The predictions made by the model.

        Returns:
            The evaluation output.
        """
        answers_log = [
            [
                "correct",
                "predicted",
                "F1",
                "BLEU",
                "recall",
                "correct tokens",
                "predicted tokens",
            ]
        ]
        bleu_scores = []
        f1 = []
        recall = []
        closed_questions = []
        closed_questions_correct = 0

        for prediction in predictions:
            answer = prediction["answer"].text
            idx = prediction["idx"]
            sample = self[idx]["sample"]

            # Compute the number of tokens recalled in the answer
            clean_correct = clean_str(self.get_correct_answer(sample))
            clean_predicted = clean_str(answer)

            predicted_tokens = self._preprocess(clean_predicted)
            correct_tokens = self._preprocess(clean_correct)

            current_precision = (
                len(predicted_tokens.intersection(correct_tokens))
                / len(predicted_tokens)
                if len(predicted_tokens) > 0
                else 0
            )
            current_recall = (
                len(predicted_tokens.intersection(correct_tokens)) / len(correct_tokens)
                if len(correct_tokens) > 0
                else 0
            )
            current_f1 = (
                2
                * (current_precision * current_recall)
                / (current_precision + current_recall + 1e-8)
            )
            f1.append(current_f1)
            recall.append(current_recall)

            current_bleu = self.bleu([clean_predicted], [[clean_correct]]).item()
            bleu_scores.append(current_bleu)

            # If the question is closed, decide if it is correct or not
            if clean_correct in ["yes", "no"]:
                closed_questions.append(True)

                if correct_tokens == {"no"}:
                    correct_tokens.add("not")

                closed_q_recall = (
                    len(predicted_tokens.intersection(correct_tokens))
                    / len(correct_tokens)
                    if len(correct_tokens) > 0
                    else 0
                )
                if closed_q_recall >= 0.4:
                    closed_questions_correct += 1
            else:
                closed_questions.append(False)

            answers_log.append(
                (
                    self.get_correct_answer(sample),
                    answer,
                    current_f1,
                    current_bleu,
                    current_recall,
                    correct_tokens,
                    predicted_tokens,
                )
            )

        # Compute the accuracy for closed questions
        open_questions_recall = []
        open_questions_accuracy = 0
        for idx, is_closed in enumerate(closed_questions):
            if not is_closed:
                open_questions_recall.append(recall[idx])
                if recall[idx] >= 0.75:
                    open_questions_accuracy += 1

        metrics = {
            "bleu": sum(bleu_scores) / len(bleu_scores) if len(bleu_scores) > 0 else 0,
            "F1": sum(f1) / len(f1) if len(f1) > 0 else 0,
            "recall": sum(recall) / len(recall) if len(recall) > 0 else 0,
            "closedQuestionsAccuracy": (
                closed_questions_correct / sum(closed_questions)
                if sum(closed_questions) > 0
                else 0
            ),
            "openQuestionsRecall": (
                sum(open_questions_recall) / len(open_questions_recall)
                if len(open_questions_recall) > 0
                else 0
            ),
            "openQuestionsAccuracy": (
                open_questions_accuracy / len(open_questions_recall)
                if len(open_questions_recall) > 0
                else 0
            ),
        }

        return EvaluationOutput(answer_log=answers_log, metrics=metrics)

"""The seq2seq chatbot (Vinyals & Le 2015): `hf-neuralconv train` (also the LSTM language model and the reverse
model p(M|R)) and `hf-neuralconv evaluate`, its test perplexity next to KenLM Kneser-Ney n-gram LMs."""

from .evaluate import evaluate_model
from .ngram import kenlm_perplexity, train_kenlm
from .train import train

__all__ = ["evaluate_model", "kenlm_perplexity", "train", "train_kenlm"]

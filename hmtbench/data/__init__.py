"""Long-document corpora (``--dataset``) and their tokenization into whole documents."""

from hmtbench.data.corpora import CORPORA, Corpus, load_corpus
from hmtbench.data.tokenize import TokenizedCorpus, tokenize_corpus

__all__ = ["CORPORA", "Corpus", "TokenizedCorpus", "load_corpus", "tokenize_corpus"]

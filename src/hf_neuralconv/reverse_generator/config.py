"""The settings of the reverse-generator experiment (Liu et al. 2019): the attack set-up (which black-box chatbot,
which reward) saved beside a generator, the reference corpus, and the REINFORCE run.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gensim.parsing.preprocessing import STOPWORDS

from ..core.building import training_texts
from ..data.dialogue import load_chitchat
from ..metrics.embedding_similarity import EmbeddingSimilarityReward, train_word_vectors
from .environments import DialogueEnvironment, GradioEnvironment, OpenAIChatEnvironment, PipelineEnvironment

SETUP_FILE = "attack_setup.json"
REFERENCE_CORPUS_FILE = "reference_corpus.jsonl"
WORD_VECTORS_CACHE = Path.home() / ".cache" / "hf-neuralconv" / "word2vec"
TARGET_SAMPLINGS = ("distinct", "frequency", "length-balanced")
ENVIRONMENT_APIS = ("auto", "openai", "gradio")


@dataclass
class AttackSetupArguments:
    """The black-box chatbot D and the reward of Liu et al. (2019, Sections 4.2.1 and 4.2.4)."""

    environment: str = field(
        default="outputs/seq2seq-full",
        metadata={"help": "The chatbot: a saved model directory (answering greedily, as a black box), the base URL "
                          "of an OpenAI-compatible API (ending in /v1: `hf-neuralconv serve`, vLLM, TGI, ...) or the "
                          "URL of a running Gradio app (e.g. our Space, http://127.0.0.1:7860)."},
    )
    environment_api: str = field(
        default="auto",
        metadata={"help": "How a URL is spoken to: 'openai' (chat completions), 'gradio', or 'auto' (openai for a "
                          "URL ending in /v1, else gradio)."},
    )
    environment_model: str | None = field(
        default=None, metadata={"help": "The model id an OpenAI-compatible API is asked for (default: its only one)."}
    )
    environment_api_key_env: str | None = field(
        default=None,
        metadata={"help": "The environment variable holding the OpenAI-compatible API's key (the key itself is "
                          "never written to a recipe or to attack_setup.json)."},
    )
    environment_request: str = field(
        default='{"temperature": 0}',
        metadata={"help": "JSON object of more fields for every chat-completions request (default: greedy "
                          'decoding); e.g. {"temperature": 0, "max_tokens": 32}.'},
    )
    environment_concurrency: int = field(default=8, metadata={"help": "Requests in flight at once over HTTP."})
    gradio_api_name: str = field(default="/chat", metadata={"help": "The Gradio endpoint answering a message."})
    gradio_extra_inputs: str = field(
        default="[]",
        metadata={"help": "JSON list of the endpoint's inputs after the message; our Space's /chat: "
                          '["greedy", 5, 1.0, 0.9, 32, 2, 1] (a persona model: its persona first).'},
    )
    environment_batch_size: int = field(default=256, metadata={"help": "Inputs a local chatbot decodes at once."})
    word_vectors: str | None = field(
        default=None,
        metadata={"help": "word2vec-format vectors for the reward (e.g. GoogleNews, as the paper); default: Word2Vec "
                          "trained on the chitchat training split with gensim, cached in ~/.cache/hf-neuralconv."},
    )
    stopwords: str = field(
        default="gensim",
        metadata={"help": "Words the similarity ignores besides punctuation: 'gensim' (its English list), 'none' "
                          "(punctuation only, as the paper) or a file with one word a line."},
    )
    reward_threshold: float = field(default=0.5, metadata={"help": "Rewards below it become 0 (the paper's 0.5)."})

    def __post_init__(self):
        try:
            extra = json.loads(self.gradio_extra_inputs)
        except json.JSONDecodeError as error:
            raise ValueError(f"`gradio_extra_inputs` must be a JSON list: {error.msg}.") from None
        if not isinstance(extra, list):
            raise ValueError(f"`gradio_extra_inputs` must be a JSON list, got {self.gradio_extra_inputs!r}.")
        try:
            request = json.loads(self.environment_request)
        except json.JSONDecodeError as error:
            raise ValueError(f"`environment_request` must be a JSON object: {error.msg}.") from None
        if not isinstance(request, dict):
            raise ValueError(f"`environment_request` must be a JSON object, got {self.environment_request!r}.")
        if self.environment_api not in ENVIRONMENT_APIS:
            raise ValueError(f"`environment_api` must be one of {ENVIRONMENT_APIS}, got {self.environment_api!r}.")
        if self.environment_concurrency < 1:
            raise ValueError(f"`environment_concurrency` must be >= 1, got {self.environment_concurrency}.")
        if self.stopwords not in ("gensim", "none") and not Path(self.stopwords).is_file():
            raise ValueError(f"`stopwords` must be 'gensim', 'none' or a word-list file; {self.stopwords} is none.")

    def make_environment(self) -> DialogueEnvironment:
        """The chatbot as a black box: over HTTP for a URL (an OpenAI-compatible API or a Gradio app), else a local
        model answering greedily."""
        if self.environment.startswith(("http://", "https://")):
            api = self.environment_api
            if api == "auto":
                api = "openai" if self.environment.rstrip("/").endswith("/v1") else "gradio"
            if api == "openai":
                return OpenAIChatEnvironment(self.environment, self.environment_model, self.environment_api_key_env,
                                             json.loads(self.environment_request), self.environment_concurrency)
            return GradioEnvironment(self.environment, self.gradio_api_name, json.loads(self.gradio_extra_inputs),
                                     max_concurrency=self.environment_concurrency)
        if not Path(self.environment).is_dir():
            raise FileNotFoundError(
                f"{self.environment}: the environment is neither a model directory nor an http(s) URL (an "
                "OpenAI-compatible API's base URL ending in /v1, or a Gradio app)."
            )
        # A local greedy model is deterministic: an empty reply is its answer, not a dropped request to retry.
        return PipelineEnvironment(self.environment, self.environment_batch_size,
                                   generate_kwargs={"strategy": "greedy"}, accept_empty_replies=True)

    def stopword_list(self) -> frozenset[str]:
        if self.stopwords == "gensim":
            return frozenset(STOPWORDS)
        if self.stopwords == "none":
            return frozenset()
        return frozenset(line.strip() for line in Path(self.stopwords).read_text().splitlines() if line.strip())

    def make_reward(self, threshold: float | None = None) -> EmbeddingSimilarityReward:
        """Eq. 2 with these settings (`threshold=-1`: the similarity itself, for Figure 2 and Table 1)."""
        vectors = self.word_vectors
        if vectors is None:
            texts = training_texts(load_chitchat()["train"])
            vectors = train_word_vectors(texts, cache_dir=WORD_VECTORS_CACHE)
        return EmbeddingSimilarityReward(vectors, self.stopword_list(),
                                         self.reward_threshold if threshold is None else threshold)

    def save(self, directory: Path) -> None:
        (directory / SETUP_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "AttackSetupArguments":
        path = Path(directory) / SETUP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {directory} is not a reverse generator of `reverse-pretrain`.")
        return cls(**json.loads(path.read_text()))


@dataclass
class ReferenceCorpusArguments:
    """The reference corpus of Section 5.1.2 (the paper: 160K posts) and its held-out part for validation."""

    reference_corpus: str | None = field(
        default=None,
        metadata={"help": "Reuse this reference corpus (a JSONL of `output`, `input` pairs, e.g. an earlier run's "
                          f"{REFERENCE_CORPUS_FILE}) instead of querying the chatbot again."},
    )
    num_reference_messages: int = field(default=40000, metadata={"help": "Training-split messages fed to D."})
    max_message_words: int = field(default=20, metadata={"help": "Longer messages are left out (the generator "
                                                                 "writes inputs of a few words)."})
    validation_fraction: float = 0.05
    reference_seed: int = 0
    vocab_size: int = field(default=20000, metadata={"help": "Vocabulary of a new generator (no init model)."})

    def __post_init__(self):
        if self.num_reference_messages < 2 or not 0.0 < self.validation_fraction < 1.0:
            raise ValueError("`num_reference_messages` must be >= 2 and `validation_fraction` in (0, 1).")


@dataclass
class ReinforceRunArguments:
    """Which pre-trained generator REINFORCE starts from, and how many reference outputs it targets."""

    generator: str = field(default="outputs/reverse-generator/pretrained",
                           metadata={"help": "A `reverse-pretrain` output directory."})
    max_targets: int | None = field(default=None, metadata={"help": "Use a seeded sample of this many targets."})
    target_sampling: str = field(
        default="distinct",
        metadata={"help": "Which reference outputs are targets, how often: 'distinct' (each once), 'frequency' (every "
                          "output, duplicates included: the paper's 160K), 'length-balanced' (the distinct outputs of "
                          "Section 5.2's length buckets, each bucket as often as the largest; longer ones left out)."},
    )

    def __post_init__(self):
        if self.target_sampling not in TARGET_SAMPLINGS:
            raise ValueError(f"`target_sampling` must be one of {', '.join(TARGET_SAMPLINGS)}; got "
                             f"{self.target_sampling!r}.")
        if self.max_targets is not None and self.max_targets < 1:
            raise ValueError(f"`max_targets` must be at least 1, got {self.max_targets}.")

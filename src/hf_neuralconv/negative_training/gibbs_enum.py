"""gibbs-enum: white-box search for trigger inputs that make a chatbot say a target (He & Glass 2020, Appendix A,
Algorithm 3; He & Glass 2019), on any backbone: our LSTM, any encoder-decoder, any causal LM.

For a target y of m tokens (`</s>` included) gibbs-enum looks for a trigger x of n words minimising

    L(x; y) = -(1/m) sum_t log P(y_t | y_<t, x) + lambda_in * R(x),                         (Eq. 7)
    R(x)    = -(1/(n+1)) sum_t log P_LM(x_t | x_<t)        (x closed by </s>; Eq. 8)

one position at a time (Eq. 9). For position t the one-hot x_t is treated as continuous and the gradient of
-L with respect to it (Eq. 10) picks the G most promising words; each is tried and the best kept if it lowers L.
Sweeps over the n positions repeat until one brings no improvement, at most T times; R random initialisations
(for io hits: samples of the input LM) are run and the best trigger is returned. Paper settings: n <= 15,
G = 100, T = 5, R = 5, lambda_in = 1 for io hits and 0 otherwise.

The trigger is the user message of a one-message chat in the model's chat format (`hits.TriggerFrame`: what the
model reads before and after it); a causal model reads the target after it in the same sequence.

Batching: the R restarts of `targets_per_batch` targets are searched together; the G candidates of one position
of all of them are scored in one forward pass (`targets_per_batch * R * G` rows), so `targets_per_batch` trades
memory for speed. A candidate differs from its trigger at position t only, so the tokens before t are read once
per trigger where the backbone reads left to right: a left-to-right LSTM encoder's outputs and state
(`EncodedPrefix`), a causal model's key/value cache or LSTM state (`CachedPrefix`); the gradient pass and the G
candidates read on from there. Bidirectional encoders (BART, T5, ours with `bidirectional_encoder`) read whole
sources. The gradient with respect to the one-hot x_t is E x dL/de_t (e_t the input embedding of x_t, E the
embedding module's output for every token, so a scaled embedding such as BART's counts its scale), plus, through
the LM, the log-probability the LM gives each word at t. Only tokens a user can type are candidates
(`hits.trigger_vocabulary`: never a special token), and never the current word.
"""

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..core.checks import check_eval_mode, check_same_vocabulary
from ..core.scoring import pad_ids, target_log_probs
from ..data.tokenization import start_id
from ..metrics.hit_criteria import PairScores
from ..models.lstm.modeling_lstm import CACHE_NAME, LSTMEncoder, LSTMEncoderOutput
from .hits import TriggerFrame, input_log_probs, score_pairs, trigger_frame, trigger_vocabulary


@contextmanager
def embedding_leaf(embedding: nn.Module):
    """While active, the first output of `embedding` (the source's: an encoder runs before its decoder, and a
    causal model embeds its input once) is replaced by a detached copy that requires grad, collected in the yielded
    list for `torch.autograd.grad`."""
    leaves = []

    def hook(module, args, output):
        if leaves:
            return None
        leaves.append(output.detach().requires_grad_(True))
        return leaves[-1]

    handle = embedding.register_forward_hook(hook)
    try:
        yield leaves
    finally:
        handle.remove()


def source_embedding(model: PreTrainedModel) -> nn.Module:
    """The module that embeds the source: an encoder-decoder's encoder embedding (BART's encoder has its own module
    over the shared weights), a causal model's input embedding."""
    if getattr(model.config, "is_encoder_decoder", False):
        encoder = model.get_encoder()
        if hasattr(encoder, "get_input_embeddings"):
            return encoder.get_input_embeddings()
    return model.get_input_embeddings()


@torch.no_grad()
def embedding_matrix(model: PreTrainedModel) -> torch.Tensor:
    """What the source embedding module gives for every token id (its weight times a scale where it has one)."""
    embedding = source_embedding(model)
    return embedding(torch.arange(embedding.weight.size(0), device=embedding.weight.device)).float()


@dataclass
class CachedPrefix:
    """A causal model's cache (key/values, or our LSTM LM's state) after the first `length` tokens of some rows."""

    cache: object
    length: int

    def rows(self, index: torch.LongTensor) -> "CachedPrefix":
        """A cache of rows `index`, of its own: a forward pass extends the cache it is given. Only the cache's
        structure is copied; `reorder_cache` then selects the rows into new tensors (caches rebind their tensors,
        never write into them), so the prefix is copied once, not twice."""
        shared: dict[int, torch.Tensor] = {}
        _collect_tensors(self.cache, shared, set())
        cache = copy.deepcopy(self.cache, memo=shared)
        cache.reorder_cache(index)
        return CachedPrefix(cache, self.length)


def _collect_tensors(value, found: dict[int, torch.Tensor], seen: set[int]) -> None:
    """Every tensor inside a cache object, by id (a `copy.deepcopy` memo that keeps them shared)."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        found[id(value)] = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_tensors(item, found, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_tensors(item, found, seen)
    elif hasattr(value, "__dict__"):
        _collect_tensors(vars(value), found, seen)


@dataclass
class EncodedPrefix:
    """A left-to-right LSTM encoder's reading of the first `length` source tokens of some rows: its outputs there
    (attention memory) and its state after them, from which the rest of each row is read."""

    outputs: torch.Tensor  # (rows, length, hidden)
    hidden: torch.Tensor  # (layers, rows, hidden), nn.LSTM's layout
    cell: torch.Tensor

    @property
    def length(self) -> int:
        return self.outputs.size(1)

    def rows(self, index: torch.LongTensor) -> "EncodedPrefix":
        """The readings of rows `index` (repeated as often as they appear)."""
        return EncodedPrefix(self.outputs[index], self.hidden[:, index], self.cell[:, index])


@torch.no_grad()
def encode_prefix(model: PreTrainedModel, frame: TriggerFrame, triggers: torch.LongTensor,
                  position: int) -> EncodedPrefix | CachedPrefix | None:
    """The model's reading of what comes before the trigger and the words of `triggers` before `position` (none of
    them changes while position `position` is searched); None where that cannot be shared: an empty reading, or an
    encoder that does not read left to right (bidirectional, or a transformer encoder)."""
    before = torch.tensor(frame.before, dtype=torch.long, device=triggers.device).expand(triggers.size(0), -1)
    read = torch.cat([before, triggers[:, :position]], dim=1)
    if read.size(1) == 0:
        return None
    if frame.causal:
        return CachedPrefix(model(input_ids=read, use_cache=True)[CACHE_NAME], read.size(1))
    encoder = model.get_encoder()
    if not isinstance(encoder, LSTMEncoder) or encoder.config.bidirectional_encoder:
        return None
    output = encoder(read)
    return EncodedPrefix(output.last_hidden_state, output.final_hidden.transpose(0, 1).contiguous(),
                         output.final_cell.transpose(0, 1).contiguous())


def output_loss(model: PreTrainedModel, sources: torch.LongTensor, labels: torch.LongTensor, causal: bool,
                encoded: EncodedPrefix | CachedPrefix | None = None) -> torch.Tensor:
    """-(1/m) sum_t log P(y_t | y_<t, x), Eq. 7's first term, per row. `sources` are whole sources, or with
    `encoded` (one reading per row) the tokens after the read ones; a causal model reads the target after them."""
    if causal:
        targets = labels.masked_fill(labels.eq(-100), model.config.eos_token_id)
        causal_labels = torch.cat([labels.new_full(sources.shape, -100), labels], dim=1)
        input_ids = torch.cat([sources, targets], dim=1)
        cache = {} if encoded is None else {CACHE_NAME: encoded.cache}
        read = input_ids.size(1) + (0 if encoded is None else encoded.length)
        log_probs, _ = target_log_probs(model, input_ids, input_ids.new_ones(input_ids.size(0), read), causal_labels,
                                        **cache)
    elif encoded is None:
        log_probs, _ = target_log_probs(model, sources, torch.ones_like(sources), labels)
    else:
        rest = model.get_encoder()(sources, initial_state=(encoded.hidden, encoded.cell))
        memory = torch.cat([encoded.outputs, rest.last_hidden_state], dim=1)
        encoder_outputs = LSTMEncoderOutput(memory, rest.final_hidden, rest.final_cell)
        log_probs, _ = target_log_probs(model, None, memory.new_ones(memory.shape[:2]), labels,
                                        encoder_outputs=encoder_outputs)
    return -log_probs.sum(dim=1) / labels.ne(-100).sum(dim=1)


def _unread(frame: TriggerFrame, triggers: torch.LongTensor, encoded) -> torch.LongTensor:
    rows = triggers.size(0)
    before, after = (torch.tensor(part, dtype=torch.long, device=triggers.device).expand(rows, -1)
                     for part in (frame.before, frame.after))
    sources = torch.cat([before, triggers, after], dim=1)
    return sources if encoded is None else sources[:, encoded.length :]


def trigger_loss(
    model: PreTrainedModel,
    frame: TriggerFrame,
    triggers: torch.LongTensor,
    labels: torch.LongTensor,
    input_lm: PreTrainedModel | None = None,
    lambda_in: float = 0.0,
    encoded: EncodedPrefix | CachedPrefix | None = None,
) -> torch.Tensor:
    """L(x; y) of Eq. 7 for every row of `triggers` (equal-length token ids) and `labels` (targets with `</s>`,
    right-padded with -100): one forward pass of the model (reading on from `encoded`, one reading per row, when
    given), and of the input LM when `lambda_in` > 0."""
    loss = output_loss(model, _unread(frame, triggers, encoded), labels, frame.causal, encoded)
    if lambda_in:
        lengths = torch.full((triggers.size(0),), triggers.size(1), device=triggers.device)
        lm_log_probs, _ = input_log_probs(input_lm, triggers, lengths)
        loss = loss - lambda_in * lm_log_probs.mean(dim=1)
    return loss


def candidate_scores(
    model: PreTrainedModel,
    frame: TriggerFrame,
    triggers: torch.LongTensor,
    labels: torch.LongTensor,
    position: int,
    input_lm: PreTrainedModel | None = None,
    lambda_in: float = 0.0,
    encoded: EncodedPrefix | CachedPrefix | None = None,
    embeddings: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of -L(x; y) with respect to the one-hot word at `position` of each trigger (Eq. 10), shape
    (rows, vocabulary), and L itself; one forward and backward pass for all rows (from `encoded`, the reading of
    the tokens before `position`, when given), model weights untouched. `embeddings`: the `embedding_matrix` of
    the model and of the input LM, when the caller keeps them."""
    if embeddings is None:
        embeddings = (embedding_matrix(model), embedding_matrix(input_lm) if lambda_in else None)
    sources = _unread(frame, triggers, encoded)
    with torch.enable_grad():
        if encoded is not None and frame.causal:
            encoded = encoded.rows(torch.arange(triggers.size(0), device=triggers.device))  # keep the original
        with embedding_leaf(source_embedding(model)) as source_embeddings:
            loss = output_loss(model, sources, labels, frame.causal, encoded)
        leaves = [source_embeddings[0]]
        if lambda_in:
            lengths = torch.full((triggers.size(0),), triggers.size(1), device=triggers.device)
            with embedding_leaf(input_lm.get_input_embeddings()) as lm_embeddings:
                lm_log_probs, lm_distributions = input_log_probs(input_lm, triggers, lengths)
            loss = loss - lambda_in * lm_log_probs.mean(dim=1)
            leaves.append(lm_embeddings[0])
        gradients = torch.autograd.grad(loss.sum(), leaves)
    # d(-L)/d onehot[v] = -E[v] . dL/de: the source word sits after the prefix (in what is read after `encoded`);
    # the LM reads it after <s>.
    word_index = len(frame.before) + position - (0 if encoded is None else encoded.length)
    scores = -gradients[0][:, word_index].float() @ embeddings[0].T
    if lambda_in:
        scores -= gradients[1][:, position + 1].float() @ embeddings[1].T
        # x_t is also the word the LM predicts at t: log P_LM(x_t | x_<t) is linear in the one-hot.
        scores += lambda_in / (triggers.size(1) + 1) * lm_distributions[:, position].detach()
    return scores.float(), loss.detach()


@torch.no_grad()
def sample_triggers(
    input_lm: PreTrainedModel, count: int, length: int, allowed: torch.LongTensor, generator: torch.Generator
) -> torch.LongTensor:
    """`count` triggers of `length` tokens sampled from the input LM after `<s>` (its start token, as
    `hits.input_log_probs` reads), from the `allowed` tokens only."""
    device = input_lm.device
    banned = torch.ones(input_lm.config.vocab_size, dtype=torch.bool, device=device)
    banned[allowed.to(device)] = False
    tokens = torch.full((count, 1), start_id(input_lm.config), device=device)
    state, words = None, []
    for _ in range(length):
        output = input_lm(input_ids=tokens, use_cache=True, **{CACHE_NAME: state})
        state = output[CACHE_NAME]
        probabilities = output.logits[:, -1].float().masked_fill(banned, -torch.inf).softmax(dim=-1)
        tokens = torch.multinomial(probabilities.cpu(), 1, generator=generator).to(device)
        words.append(tokens)
    return torch.cat(words, dim=1)


@dataclass
class TriggerSearchResult:
    """The best trigger found for each target (token ids of the user message, without the chat format around it),
    its loss L(x*; y) of Eq. 7 and the scores the hit criteria read."""

    triggers: list[list[int]]
    losses: torch.Tensor
    scores: PairScores


def gibbs_enum(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    targets: Sequence[Sequence[int]],
    trigger_length: int = 15,
    num_candidates: int = 100,
    max_sweeps: int = 5,
    num_restarts: int = 5,
    input_lm: PreTrainedModel | None = None,
    lambda_in: float = 0.0,
    init_from_lm: bool = False,
    targets_per_batch: int = 8,
    candidate_batch_size: int | None = None,
    reuse_prefix: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> TriggerSearchResult:
    """Algorithm 3 for every target (ids ending with `</s>`); see the module docstring.

    Args:
        trigger_length: n, the number of words of a trigger.
        num_candidates: G, the words tried per position, chosen by the gradient.
        max_sweeps: T, sweeps over the positions at most (a restart stops after a sweep without improvement).
        num_restarts: random initialisations per target; the best result is kept.
        input_lm: a causal LM over the model's vocabulary: needed for `lambda_in` > 0 or `init_from_lm`, and then
            also scores the found triggers (`scores.input_log_likelihood`).
        lambda_in: weight of the LM regulariser R(x) (paper: 1 when searching for io hits, else 0).
        init_from_lm: start from LM samples (paper: for io hits) instead of uniformly drawn words.
        targets_per_batch: targets searched together (memory: `targets_per_batch * num_restarts * G` rows).
        candidate_batch_size: rows of candidates per forward pass (default: all of a position in one pass; 1 scores
            the candidates one by one).
        reuse_prefix: read the tokens before the changed position once per trigger, for its gradient pass and all
            its candidates (causal models and left-to-right LSTM encoders; bidirectional encoders always read
            whole sources). False reads every candidate whole: with `candidate_batch_size=1`, the naive reference
            of `benchmarks/negative_training.py`.
        seed: seeds the initialisations; the search is otherwise deterministic.
        progress: show a tqdm bar over the targets.
    """
    if trigger_length < 1:
        raise ValueError(f"`trigger_length` must be at least 1 word, got {trigger_length}.")
    for name, value in (("num_candidates", num_candidates), ("max_sweeps", max_sweeps),
                        ("num_restarts", num_restarts), ("targets_per_batch", targets_per_batch),
                        ("candidate_batch_size", 1 if candidate_batch_size is None else candidate_batch_size)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    if lambda_in < 0:
        raise ValueError(f"`lambda_in` must be >= 0, got {lambda_in}.")
    if not targets or any(len(target) == 0 for target in targets):
        raise ValueError("gibbs-enum needs at least one target, and no empty target.")
    check_eval_mode(model, "chatbot")
    if (lambda_in or init_from_lm) and input_lm is None:
        raise ValueError("`lambda_in` > 0 and `init_from_lm` need the input LM (`input_lm=`).")
    if input_lm is not None:
        check_same_vocabulary(model.config, input_lm.config, "chatbot", "input LM")
        check_eval_mode(input_lm, "input LM")

    device = model.device
    allowed = trigger_vocabulary(tokenizer).to(device)
    num_candidates = min(num_candidates, len(allowed) - 1)
    banned = torch.ones(model.config.vocab_size, dtype=torch.bool, device=device)
    banned[allowed] = False
    frame = trigger_frame(model, tokenizer)
    embeddings = (embedding_matrix(model), embedding_matrix(input_lm) if lambda_in else None)
    generator = torch.Generator().manual_seed(seed)
    found, losses = [], []
    with tqdm(total=len(targets), desc="gibbs-enum", disable=not progress) as bar:
        for start in range(0, len(targets), targets_per_batch):
            chunk = targets[start : start + targets_per_batch]
            labels = pad_ids(chunk, -100, device).repeat_interleave(num_restarts, dim=0)
            if init_from_lm:
                triggers = sample_triggers(input_lm, labels.size(0), trigger_length, allowed, generator).to(device)
            else:
                draws = torch.randint(len(allowed), (labels.size(0), trigger_length), generator=generator)
                triggers = allowed[draws.to(device)]
            loss = _search(model, frame, triggers, labels, input_lm, lambda_in, num_candidates, max_sweeps, banned,
                           candidate_batch_size, reuse_prefix, embeddings)
            best = loss.view(len(chunk), num_restarts).argmin(dim=1)
            rows = torch.arange(len(chunk), device=device) * num_restarts + best
            found += triggers[rows].tolist()
            losses.append(loss[rows].cpu())
            bar.update(len(chunk))
    scores = score_pairs(model, frame, found, targets, input_lm, batch_size=targets_per_batch * num_restarts)
    return TriggerSearchResult(found, torch.cat(losses), scores)


def _search(
    model, frame, triggers, labels, input_lm, lambda_in, num_candidates, max_sweeps, banned, candidate_batch_size,
    reuse_prefix, embeddings,
) -> torch.Tensor:
    """Coordinate descent of Algorithm 3 on all rows at once, `triggers` updated in place; returns L per row."""
    rows, length = triggers.shape
    loss = torch.full((rows,), torch.inf, device=triggers.device)
    active = torch.ones(rows, dtype=torch.bool, device=triggers.device)
    for _ in range(max_sweeps):
        improved = torch.zeros_like(active)
        for position in range(length):
            index = active.nonzero().squeeze(1)
            current = triggers[index]
            encoded = encode_prefix(model, frame, current, position) if reuse_prefix else None
            scores, loss[index] = candidate_scores(
                model, frame, current, labels[index], position, input_lm, lambda_in, encoded, embeddings
            )
            scores = scores.masked_fill(banned, -torch.inf)
            scores.scatter_(1, current[:, position : position + 1], -torch.inf)  # trying the current word is moot
            words = scores.topk(num_candidates, dim=1).indices  # (k, G)
            owners = torch.arange(words.numel(), device=words.device) // num_candidates  # candidate i varies i // G
            candidates = current[owners]
            candidates[:, position] = words.reshape(-1)
            candidate_labels = labels[index][owners]
            chunk = candidate_batch_size or len(candidates)
            with torch.no_grad():
                candidate_loss = torch.cat([
                    trigger_loss(model, frame, candidates[start : start + chunk],
                                 candidate_labels[start : start + chunk], input_lm, lambda_in,
                                 None if encoded is None else encoded.rows(owners[start : start + chunk]))
                    for start in range(0, len(candidates), chunk)
                ]).view(-1, num_candidates)
            best_loss, best = candidate_loss.min(dim=1)
            better = best_loss < loss[index]
            changed = index[better]
            triggers[changed, position] = words[better, best[better]]
            loss[changed] = best_loss[better]
            improved[changed] = True
        active &= improved
        if not active.any():
            break
    return loss


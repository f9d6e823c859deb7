"""The model-agnostic core every method builds on; it imports nothing paper-specific.

* `chat_format` — how a chat history becomes a model's input (the one reader of a conversation) and the settings a
  saved model directory carries about it;
* `scoring` — the one scorer of replies given inputs: teacher-forced token / sequence log-probabilities, batched and
  padding-safe, with or without gradients;
* `run_dir` — a run's output directory: checked before any work, results with the machine, exported pipeline code;
* `arguments` — the recipe dataclasses and the YAML recipe parser; `building` — corpus splits, tokenized examples
  and the model a recipe describes; `loading` — a saved model directory, loaded with clear errors;
* `trainer` — `ConversationTrainer`, the base of every method's trainer; `evaluation` — perplexity and the reply
  metrics; `model_card`, `plotting`, `checks`.

Where a second kind of backbone (a transformers causal LM or encoder-decoder) plugs in: `chat_format` (how a history
becomes input ids, and where the reply starts) and `scoring` (log p(reply | history), teacher-forced) are the two
places that know the LSTM encoder-decoder reads a source and predicts a target; a causal LM is a second branch of
each (the reply follows the formatted history in one sequence, labels masked to the reply), not a change to the
methods that call them.

The submodules are imported where they are used (`from hf_neuralconv.core.scoring import sequence_log_probs`), so
that reading a chat does not load the training stack.
"""

"""How much of an MTASK-M run's perplexity gain its speaker vectors carry (Luan et al. 2017, Eq. 1): the target
speakers' dev and test perplexity (`speaker_perplexities`, Table 1's measure) read with each speaker's own vector,
then with the generic speaker's vector in its place. What is left of the gain over the baseline with the generic
vector comes from the rest of the MTASK-M training (more updates, the autoencoder task on the targets' text).

Usage: python scripts/speaker_vector_ablation.py RECIPE.yaml MTASK_M_RUN_DIR [...]
       (RECIPE: the runs' mtask-m recipe, for the data protocol; prints one JSON line a run)
"""

import json
import sys

from hf_neuralconv.persona.config import parse_speaker_adaptation_recipe
from hf_neuralconv.persona.evaluation import SpeakerModel, speaker_perplexities
from hf_neuralconv.persona.experiment import adaptation_data
from hf_neuralconv.persona.speakers import GENERIC_SPEAKER


def pooled(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "per_speaker"}


def main(recipe: str, run_dirs: list[str]) -> None:
    _, data_args, _, adaptation_args = parse_speaker_adaptation_recipe(recipe)
    data, _ = adaptation_data(data_args, adaptation_args)
    for run_dir in run_dirs:
        run = SpeakerModel.load(run_dir, device="cpu")
        if run.mode != "mtask-m":
            raise SystemExit(f"{run_dir} is a {run.mode} run: only MTASK-M runs have speaker vectors.")
        own = speaker_perplexities(run, data, data_args, use_cpu=True)
        generic = run.vocabulary.index(GENERIC_SPEAKER)
        run.as_speaker = lambda speaker: generic  # every target speaker read as the generic speaker
        as_generic = speaker_perplexities(run, data, data_args, use_cpu=True)
        print(json.dumps({"run": run_dir, "own_vector": pooled(own), "generic_vector": pooled(as_generic)}))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])

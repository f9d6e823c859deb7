#!/bin/bash
# Every hf-neuralconv command and recipe at toy sizes on the real corpus, in dependency order, into OUT:
#   bash scripts/smoke_commands.sh OUT [REPO]
# REPO (default: this checkout) is the tree whose src/ runs, so two trees (e.g. two commits, `git worktree add`) can
# be run into two folders and compared with `python scripts/compare_runs.py OUT_A OUT_B`; PYTHON (default:
# REPO/.venv/bin/python) is the interpreter. Resumable: a step whose output exists is skipped. About 4 minutes on 2
# idle CPU cores.
set -euo pipefail
O=$(realpath -m "$1"); R=$(realpath "${2:-$(dirname "$0")/..}")
mkdir -p "$O"
export PYTHONPATH=$R/src TOKENIZERS_PARALLELISM=false HF_DATASETS_DISABLE_PROGRESS_BARS=1
CLI="${PYTHON:-$R/.venv/bin/python} -m hf_neuralconv.cli"
cd "$R"
log() { echo "== $(date +%T) $*" >&2; }
step() { local name=$1 out=$2; shift 2; if [ -s "$out" ]; then return 0; fi; log "$name"; "$@" > "$out.tmp"; mv -f "$out.tmp" "$out"; }
SMALL="max_train_examples=3000 max_eval_examples=200 num_train_epochs=1 embedding_size=32 hidden_size=32 projection_size=0 per_device_train_batch_size=32 per_device_eval_batch_size=64 logging_steps=20 report_to=none"
step train $O/train.json $CLI train recipes/seq2seq/quickstart.yaml output_dir=$O/chat $SMALL vocab_size=3000
[ -s $O/eval.json ] || $CLI evaluate $O/chat --ngram-orders 3 --output $O/eval.json --overwrite > /dev/null
step chat $O/chat_sample.txt $CLI chat $O/chat --prompts recipes/seq2seq/probes.txt --seed 0
$CLI chat $O/chat --prompts recipes/seq2seq/probes.txt --strategy beam --num-return-sequences 2 > $O/chat_beam.txt
step anti-lm $O/antilm.json $CLI train recipes/mmi/anti_lm.yaml output_dir=$O/antilm tokenizer_name_or_path=$O/chat $SMALL
step reverse $O/reverse.json $CLI train recipes/mmi/reverse.yaml output_dir=$O/reverse tokenizer_name_or_path=$O/chat $SMALL
step mmi-tune $O/tune.json $CLI mmi-tune $O/chat --reverse-model $O/reverse --output-dir $O/tuned --max-inputs 20 --num-beams 4
[ -s $O/diversity.json ] || $CLI diversity-report $O/tuned --anti-lm $O/antilm --max-inputs 20 --num-beams 4 --batch-size 8 --output $O/diversity.json --overwrite > /dev/null
$CLI chat $O/tuned --prompts recipes/seq2seq/probes.txt --strategy mmi-bidi > $O/chat_mmi_bidi.txt
$CLI chat $O/chat --prompts recipes/seq2seq/probes.txt --strategy mmi-antilm --anti-lm $O/antilm > $O/chat_mmi_antilm.txt
head -4 src/hf_neuralconv/resources/malicious_targets/test_500.txt > $O/targets.txt
step attack $O/attack.json $CLI attack $O/chat $O/targets.txt --trigger-length 3 --num-candidates 10 --max-sweeps 1 --num-restarts 1 --output $O/pairs.jsonl
NEG="model_name_or_path=$O/chat max_train_examples=500 max_eval_examples=100 per_device_train_batch_size=16 report_to=none bf16=false max_context_turns=1 max_source_length=32"
step neg-frequent $O/negfreq.json $CLI negative-train recipes/negative_training/frequent.yaml output_dir=$O/negfreq $NEG max_steps=3 eval_strategy=no save_strategy=no frequency_window=20
step neg-malicious $O/negmal.json $CLI negative-train recipes/negative_training/malicious.yaml output_dir=$O/negmal $NEG max_steps=2 targets_file=$O/targets.txt trigger_length=3 num_candidates=10 max_sweeps=1 num_restarts=1 max_target_passes=1 negative_batch_size=4
PERSONA="num_target_speakers=2 max_train_examples=2000 embedding_size=32 hidden_size=32 num_layers=1 vocab_size=3000 per_device_train_batch_size=32 per_device_eval_batch_size=64 num_beams=2 max_new_tokens=8 max_eval_inputs=10 report_to=none logging_steps=10"
step persona-baseline $O/p_baseline.json $CLI persona-train recipes/persona_mtask/baseline.yaml output_dir=$O/p/baseline $PERSONA max_steps=30 eval_steps=15 save_steps=15
step persona-mtask-m $O/p_mtaskm.json $CLI persona-train recipes/persona_mtask/mtask_m.yaml base_model=$O/p/baseline output_dir=$O/p/mtask-m $PERSONA speaker_embedding_size=8 max_steps=20 eval_steps=10 save_steps=10
step persona-mtask-s $O/p_mtasks.json $CLI persona-train recipes/persona_mtask/mtask_s.yaml base_model=$O/p/baseline output_dir=$O/p/mtask-s $PERSONA max_steps=10 eval_steps=5 save_steps=5
step persona-report $O/p_report.txt $CLI persona-report $O/p/baseline $O/p/mtask-m $O/p/mtask-s --samples 2 --output $O/p_report.json
REV="embedding_size=32 hidden_size=32 num_layers=1 per_device_train_batch_size=16 report_to=none"
step reverse-pretrain $O/rg_pre.json $CLI reverse-pretrain recipes/reverse_generator/pretrain.yaml output_dir=$O/rg/pre environment=$O/chat stopwords=none num_reference_messages=300 num_train_epochs=1 $REV
step reverse-train $O/rg_rl.json $CLI reverse-train recipes/reverse_generator/reinforce.yaml output_dir=$O/rg/rl generator=$O/rg/pre max_steps=3 num_samples=2 per_device_train_batch_size=4 report_to=none target_sampling=distinct
step reverse-evaluate $O/rg_eval.txt $CLI reverse-evaluate $O/rg/pre $O/rg/rl --output-dir $O/rg/eval --targets-per-bucket 2 --beam-sizes 2 --num-messages 40
step reverse-attack $O/rg_attack.json $CLI reverse-attack $O/rg/rl $O/targets.txt --output $O/rg/found.jsonl --num-beams 2 --skip-unscorable
log done

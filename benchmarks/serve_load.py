"""Load on the chatbot's two HTTP faces: `hf-neuralconv serve` (OpenAI-compatible) and the Gradio Space.

Each target runs in its own process on a free loopback port and serves the model of HF_NEURALCONV_MODEL (default:
outputs/seq2seq-full, or its newest checkpoint). `--sessions` clients chat at once, `--turns` messages each, greedy
decoding, 16 new tokens, 2 context turns; a client sends its next message when the previous reply arrives. Latency is
the wall time of one request, queueing included; the CPU seconds of the target's process and of the clients during
the load tell where the machine's 2 cores went. Afterwards every reply is checked against
`pipeline("conversational")` answering that client's own history alone (`mismatched_replies`: a wrong or leaked
history, or a batch that changed a reply). The targets, one after another in one run:

  space_unbatched   the Space answering one chat turn per model call (HF_NEURALCONV_MAX_BATCH_SIZE=1: the Space as
                    it was before it batched)
  space             the Space, concurrent turns decoded together (batches of up to 32)
  (Space clients: Gradio's REST API over plain HTTP, one session id each; `--space-client gradio_client` uses one
  `gradio_client.Client` each, whose own CPU cost on the same 2 cores then caps what is measured)
  server            `hf-neuralconv serve` (batches of up to 32), clients posting JSON to /v1/chat/completions

Every target runs `--repeats` times, interleaved; the figures are medians, a speed-up the median of the ratios within
each round. Goals: the server >= 5 x the unbatched Space's requests/s with p95 <= 1.5 s; the Space >= 3 x its
unbatched self; no errors and no mismatched reply anywhere.

Run:  .venv/bin/python benchmarks/serve_load.py           (50 sessions x 3 turns; writes results/serve_load.json)
      .venv/bin/python benchmarks/serve_load.py --tiny    (a tiny random model, 5 sessions; checks the script)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import _common as common
import numpy as np
import psutil
from gradio_client import Client

MAX_NEW_TOKENS = 16
CONTEXT_TURNS = 2
MAX_BATCH_SIZE = 32
TARGETS = ("space_unbatched", "space", "server")
GOALS = {"server_speedup": 5.0, "server_p95_s": 1.5, "space_speedup": 3.0}


def cpu_seconds(times) -> float:
    return times.user + times.system


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(target: str, model: str, port: int) -> subprocess.Popen:
    """The target's process, serving `model` on `port`, once it answers HTTP."""
    env = {**os.environ, "HF_NEURALCONV_MODEL": model, "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "HF_NEURALCONV_MAX_BATCH_SIZE": "1" if target == "space_unbatched"
           else str(MAX_BATCH_SIZE)}
    if target == "server":
        command = [sys.executable, "-m", "hf_neuralconv.cli", "serve", model, "--port", str(port), "--model-name",
                   "chatbot", "--max-batch-size", str(MAX_BATCH_SIZE), "--log-level", "warning"]
        ready = f"http://127.0.0.1:{port}/health"
    else:
        command = [sys.executable, str(common.ROOT / "spaces" / "app.py")]
        ready = f"http://127.0.0.1:{port}/"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(ready, timeout=2)
            return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{target} did not start: {process.stderr.read()[-2000:]}") from None
            time.sleep(0.5)


def server_reply(url: str, history: list[dict]) -> str:
    body = json.dumps({"model": "chatbot", "messages": history, "temperature": 0, "max_tokens": MAX_NEW_TOKENS,
                       "context_turns": CONTEXT_TURNS}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def space_reply(url: str, message: str, session: str) -> str:
    """The Space's reply through Gradio's REST API (`/gradio_api/call/chat`): one POST, then the event stream; the
    session id keeps the client's history in the Space."""
    body = json.dumps({"data": [message, "greedy", 5, 1.0, 0.9, MAX_NEW_TOKENS, CONTEXT_TURNS, 1],
                       "session_hash": session}).encode()
    request = urllib.request.Request(f"{url}/gradio_api/call/chat", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/chat/{event}", timeout=120) as response:
        stream = response.read().decode()
    kind = re.findall(r"^event: (\w+)", stream, re.MULTILINE)[-1]
    data = json.loads(re.findall(r"^data: (.*)$", stream, re.MULTILINE)[-1])
    if kind != "complete":
        raise RuntimeError(f"the Space answered {kind}: {data}")
    return data[0]


def run_sessions(target: str, url: str, sessions: int, turns: int, space_client: str) -> tuple[list[list[dict]], float]:
    """Every session's records (message, reply, latency, error), and the wall time from the first request to the
    last reply. gradio_client clients connect before the clock starts."""
    use_gradio_client = target != "server" and space_client == "gradio_client"
    clients = [Client(url, verbose=False) if use_gradio_client else None for _ in range(sessions)]
    gate = threading.Barrier(sessions + 1)

    def session(number: int) -> list[dict]:
        gate.wait()
        history, records = [], []
        for turn in range(turns):
            message = common.PROMPTS[(number + turn) % len(common.PROMPTS)]
            history.append({"role": "user", "content": message})
            started = time.perf_counter()
            try:
                if target == "server":
                    reply = server_reply(url, history)
                elif use_gradio_client:  # the Space keeps the history of each client's session itself
                    reply, _ = clients[number].predict(message, "greedy", 5, 1.0, 0.9, MAX_NEW_TOKENS, CONTEXT_TURNS,
                                                       1, api_name="/chat")
                else:
                    reply = space_reply(url, message, f"load-{target}-{number}")
                error = None
            except Exception as exception:  # a failed request is the measurement, not a crash of the benchmark
                reply, error = None, f"{type(exception).__name__}: {exception}"
            records.append({"message": message, "reply": reply, "latency_s": time.perf_counter() - started,
                            "error": error})
            if error:
                break  # the session's history is unknown after a failure
            history.append({"role": "assistant", "content": reply})
        return records

    with ThreadPoolExecutor(sessions) as pool:
        futures = [pool.submit(session, number) for number in range(sessions)]
        gate.wait()
        started = time.perf_counter()
        results = [future.result() for future in futures]
        wall = time.perf_counter() - started
    for client in clients:
        if client is not None:
            client.close()
    return results, wall


def mismatched_replies(pipe, sessions: list[list[dict]]) -> int:
    """Replies that differ from the pipeline's answer to the session's own history, asked alone."""
    mismatches = 0
    for records in sessions:
        history = []
        for record in records:
            if record["error"]:
                break
            history.append({"role": "user", "content": record["message"]})
            expected = pipe(history, strategy="greedy", max_new_tokens=MAX_NEW_TOKENS, context_turns=CONTEXT_TURNS)
            mismatches += record["reply"] != expected[0]["generated_text"][-1]["content"]
            history.append({"role": "assistant", "content": record["reply"]})
    return mismatches


def summary(sessions: list[list[dict]], wall: float, mismatches: int) -> dict:
    records = [record for session in sessions for record in session]
    latencies = np.array([record["latency_s"] for record in records if not record["error"]])
    errors = [record["error"] for record in records if record["error"]]
    return {
        "requests": len(records), "errors": len(errors), "error_messages": errors[:5],
        "mismatched_replies": mismatches, "wall_s": wall, "requests_per_s": len(records) / wall,
        "latency": {name: float(function(latencies)) if len(latencies) else None for name, function in (
            ("p50_s", lambda a: np.percentile(a, 50)), ("p95_s", lambda a: np.percentile(a, 95)),
            ("max_s", np.max), ("mean_s", np.mean))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every target, interleaved; medians reported")
    parser.add_argument("--space-client", choices=["rest", "gradio_client"], default="rest",
                        help="how clients reach the Space: Gradio's REST API over plain HTTP (light), or one "
                             "gradio_client.Client each (about 0.18 CPU-s a request in the clients)")
    opts = common.parse_options(parser, "tiny random model, 5 sessions, one run: checks the script", sessions=5,
                                repeats=1)
    info = common.machine_info()
    if opts.tiny:
        model = common.save_tiny_chatbot()
    else:
        given = common.model_from_env(common.TRAINED_DIR)
        resolved = common.resolve_model_dir(common.Path(given))
        if resolved is None:
            sys.exit(f"{given}: no trained model (hf-neuralconv train recipes/seq2seq/full.yaml)")
        model = str(resolved)
    if json.loads((common.Path(model) / "config.json").read_text()).get("num_speakers"):
        sys.exit(f"{model}: a persona model; this benchmark's clients send no persona (measure a chatbot without "
                 "speakers)")
    runs = {target: [] for target in TARGETS}
    for _ in range(opts.repeats):  # the targets in turn, then again: a slow spell of the machine hits them all
        for target in TARGETS:
            process = start(target, model, port := free_port())
            served, here = psutil.Process(process.pid).cpu_times(), psutil.Process().cpu_times()
            try:
                sessions, wall = run_sessions(target, f"http://127.0.0.1:{port}", opts.sessions, opts.turns,
                                              opts.space_client)
                # CPU seconds spent during the load by the target's process and by this one (the clients)
                cpu = {"target_process_cpu_s": cpu_seconds(psutil.Process(process.pid).cpu_times())
                       - cpu_seconds(served),
                       "clients_cpu_s": cpu_seconds(psutil.Process().cpu_times()) - cpu_seconds(here)}
            finally:
                process.terminate()
                process.wait(60)
            runs[target].append({"sessions": sessions, "wall": wall, "cpu": cpu})
            print(f"{target}: {sum(map(len, sessions)) / wall:.1f} requests/s", flush=True)

    from hf_neuralconv.core.loading import load_model_dir
    from hf_neuralconv.pipelines.conversational import ConversationalPipeline

    loaded, tokenizer = load_model_dir(model)
    pipe = ConversationalPipeline(model=loaded, tokenizer=tokenizer)
    repeats = {target: [{**summary(run["sessions"], run["wall"], mismatched_replies(pipe, run["sessions"])),
                         **run["cpu"]} for run in target_runs] for target, target_runs in runs.items()}
    measured = {target: {
        "requests_per_s": common.median(r["requests_per_s"] for r in rows),
        "p50_s": common.median(r["latency"]["p50_s"] for r in rows),
        "p95_s": common.median(r["latency"]["p95_s"] for r in rows),
        "errors": sum(r["errors"] for r in rows), "mismatched_replies": sum(r["mismatched_replies"] for r in rows),
        "target_process_cpu_s_per_request": common.median(r["target_process_cpu_s"] / r["requests"] for r in rows),
        "clients_cpu_s_per_request": common.median(r["clients_cpu_s"] / r["requests"] for r in rows),
    } for target, rows in repeats.items()}

    def speedup(target: str) -> float:  # the median over repeats of the paired ratio to the unbatched Space
        return common.median(a["requests_per_s"] / b["requests_per_s"]
                             for a, b in zip(repeats[target], repeats["space_unbatched"], strict=True))

    goals = {
        "server_speedup_over_unbatched_space": {"value": speedup("server"), "threshold": GOALS["server_speedup"],
                                                "meets_goal": speedup("server") >= GOALS["server_speedup"]},
        "server_p95_s": {"value": measured["server"]["p95_s"], "threshold": GOALS["server_p95_s"],
                         "meets_goal": measured["server"]["p95_s"] <= GOALS["server_p95_s"]},
        "space_speedup_over_unbatched_space": {"value": speedup("space"), "threshold": GOALS["space_speedup"],
                                               "meets_goal": speedup("space") >= GOALS["space_speedup"]},
        "zero_errors": {"value": sum(m["errors"] for m in measured.values()), "threshold": 0,
                        "meets_goal": all(m["errors"] == 0 for m in measured.values())},
        "replies_match_own_history": {"value": sum(m["mismatched_replies"] for m in measured.values()),
                                      "threshold": 0,
                                      "meets_goal": all(m["mismatched_replies"] == 0 for m in measured.values())},
    }
    payload = {
        "benchmark": "serve_load",
        "tiny": opts.tiny,
        "model": common.relative_to_root(common.Path(model)),
        "sessions": opts.sessions,
        "turns_per_session": opts.turns,
        "decoding": {"strategy": "greedy", "max_new_tokens": MAX_NEW_TOKENS, "context_turns": CONTEXT_TURNS},
        "max_batch_size": MAX_BATCH_SIZE,
        "space_client": opts.space_client,
        "repeats": opts.repeats,
        "targets": measured,
        "runs": repeats,
        "goals": goals,
        "meets_all_goals": all(goal["meets_goal"] for goal in goals.values()),
        "machine": common.finish_machine_info(info),
    }
    path = common.write_results("serve_load", payload, opts.output)
    common.print_table(["target (medians)", "errors", "mismatched", "p50 s", "p95 s", "req/s", "target CPU ms/req",
                        "clients CPU ms/req"],
                       [[target, m["errors"], m["mismatched_replies"], m["p50_s"], m["p95_s"], m["requests_per_s"],
                         1e3 * m["target_process_cpu_s_per_request"], 1e3 * m["clients_cpu_s_per_request"]]
                        for target, m in measured.items()])
    common.print_goals(goals)
    print(f"results in {path}")


if __name__ == "__main__":
    main()

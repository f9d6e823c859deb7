"""Load on the Gradio Space: many concurrent chat sessions through `gradio_client`, errors and latency.

The Space (spaces/app.py, `build_demo`) is started in this process on a free loopback port with the model of
HF_NEURALCONV_MODEL (default: outputs/seq2seq-quickstart, the README's main command's model). `--sessions` clients,
each its own Gradio session, chat concurrently: `--turns` messages each, greedy decoding, so every reply can be
checked afterwards against the pipeline answering that session's own history (`mismatched_replies`: a reply that
differs would mean a wrong or leaked history). Latency is the wall time of one `Client.predict` call, queueing
included (the Space runs one model call at a time).

Run:  .venv/bin/python benchmarks/space_load.py           (50 sessions x 3 turns; writes results/space_load.json)
      .venv/bin/python benchmarks/space_load.py --tiny    (seconds: a tiny random model, 5 sessions; checks the script)
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import _common as common
import numpy as np
from gradio_client import Client

MAX_NEW_TOKENS = 16
CONTEXT_TURNS = 2


def load_space():
    spec = importlib.util.spec_from_file_location("space_app", common.ROOT / "spaces" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chat_session(url: str, session: int, turns: int, persona: str | None) -> list[dict]:
    """One Gradio session: `turns` messages; each request's message, reply, latency and error."""
    client = Client(url, verbose=False)
    records = []
    for turn in range(turns):
        message = common.PROMPTS[(session + turn) % len(common.PROMPTS)]
        started = time.perf_counter()
        try:
            # The Space has a persona input only for a persona model.
            reply, _ = client.predict(message, *([] if persona is None else [persona]), "greedy", 5, 1.0, 0.9,
                                      MAX_NEW_TOKENS, CONTEXT_TURNS, 1, api_name="/chat")
            error = None
        except Exception as exception:  # a failed request is the measurement, not a crash of the benchmark
            reply, error = None, f"{type(exception).__name__}: {exception}"
        records.append({"message": message, "reply": reply, "latency_s": time.perf_counter() - started,
                        "error": error})
        if error:
            break  # the session's history is unknown after a failure
    return records


def mismatched_replies(pipe, sessions: list[list[dict]], persona: str | None) -> int:
    """Replies that differ from the pipeline's answer to the session's own history."""
    options = {"strategy": "greedy", "max_new_tokens": MAX_NEW_TOKENS, "context_turns": CONTEXT_TURNS}
    if persona is not None:
        options["speaker"] = persona if pipe.speakers else int(persona)
    mismatches = 0
    for records in sessions:
        history = []
        for record in records:
            if record["error"]:
                break
            history.append({"role": "user", "content": record["message"]})
            expected = pipe(history, **options)[0]["generated_text"][-1]["content"]
            mismatches += record["reply"] != expected
            history.append({"role": "assistant", "content": record["reply"]})
    return mismatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    opts = common.parse_options(parser, "tiny random model and 5 sessions: checks the script")
    info = common.machine_info()
    space = load_space()
    sessions_count = 5 if opts.tiny else opts.sessions
    model = common.save_tiny_chatbot() if opts.tiny else common.model_from_env(space.DEFAULT_MODEL)
    pipe = space.load_pipeline(model)
    persona = (space.persona_choices(pipe) or [None])[0]
    demo = space.build_demo(pipe, model)
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        started = time.perf_counter()
        start_gate = threading.Barrier(sessions_count)

        def run(session: int) -> list[dict]:
            start_gate.wait()  # every session starts at once
            return chat_session(demo.local_url, session, opts.turns, persona)

        with ThreadPoolExecutor(sessions_count) as pool:
            sessions = list(pool.map(run, range(sessions_count)))
        wall = time.perf_counter() - started
    finally:
        demo.close()

    records = [record for session in sessions for record in session]
    latencies = np.array([record["latency_s"] for record in records if not record["error"]])
    errors = [record["error"] for record in records if record["error"]]
    mismatches = mismatched_replies(pipe, sessions, persona)
    latency = {
        "p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p95_s": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "max_s": float(latencies.max()) if len(latencies) else None,
        "mean_s": float(latencies.mean()) if len(latencies) else None,
    }
    goals = {
        "zero_errors": {"value": len(errors), "threshold": 0, "meets_goal": not errors},
        "replies_match_own_history": {"value": mismatches, "threshold": 0, "meets_goal": mismatches == 0},
    }
    payload = {
        "benchmark": "space_load",
        "tiny": opts.tiny,
        "model": model,
        "sessions": sessions_count,
        "turns_per_session": opts.turns,
        "requests": len(records),
        "errors": len(errors),
        "error_messages": errors[:5],
        "mismatched_replies": mismatches,
        "latency": latency,
        "wall_s": wall,
        "requests_per_s": len(records) / wall,
        "decoding": {"strategy": "greedy", "max_new_tokens": MAX_NEW_TOKENS, "context_turns": CONTEXT_TURNS},
        "goals": goals,
        "meets_all_goals": all(goal["meets_goal"] for goal in goals.values()),
        "machine": common.finish_machine_info(info),
    }
    path = common.write_results("space_load", payload, opts.output)
    common.print_table(["sessions", "requests", "errors", "mismatched", "p50 s", "p95 s", "req/s"],
                       [[sessions_count, len(records), len(errors), mismatches, latency["p50_s"], latency["p95_s"],
                         payload["requests_per_s"]]])
    print(f"results in {path}")


if __name__ == "__main__":
    main()

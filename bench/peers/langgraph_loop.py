"""The LangGraph peer of bench:iterations: the same scripted turns, checkpointed per step.

Reads one JSON object on stdin: {"turns": [...], "prompts": {"first": ..., "next": ...},
"iterations": N, "runs": R, "database": PATH}.
A StateGraph whose single node plays one turn and appends it to the transcript and to the
iteration records, looping back until N turns are played. The checkpointer is SqliteSaver on a
WAL file with synchronous=FULL, and the graph runs with durability="sync", so every step's
checkpoint is committed (fsync'd) before the next step starts: the same promise a durable agent
iteration makes. R runs go at once as R threads of this process sharing the one saver, after one untimed warm-up run.

Prints one JSON object on stdout: {"iterationMs": [...], "totalIterations": N*R,
"wallClockS": S, "version": "..."}, where each sample is the time from one step's start to the
next's (the last: to the run's end), so every sample covers one full step and its checkpoint.
"""

import json
import operator
import sqlite3
import sys
import threading
import time
from importlib.metadata import version
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph


class LoopState(TypedDict):
    iteration: int
    transcript: Annotated[list[dict[str, str]], operator.add]
    records: Annotated[list[dict[str, Any]], operator.add]


def build_graph(request: dict[str, Any], starts: dict[str, list[float]], saver: SqliteSaver):
    turns, iterations, prompts = request["turns"], int(request["iterations"]), request["prompts"]

    def play_turn(state: LoopState, config: RunnableConfig) -> dict[str, Any]:
        starts[config["configurable"]["thread_id"]].append(time.perf_counter())
        started_at_ms = time.time() * 1000
        iteration = state["iteration"] + 1
        turn = turns[(iteration - 1) % len(turns)]
        prompt = prompts["next"] if state["transcript"] else prompts["first"]
        usage = turn.get("usage", {})
        record = {
            "iteration": iteration,
            "startedAtMs": started_at_ms,
            "endedAtMs": time.time() * 1000,
            "text": turn.get("text", ""),
            "status": "ok",
            "tokensIn": usage.get("inputTokens", 0),
            "tokensOut": usage.get("outputTokens", 0),
            "costUsd": turn.get("costUsd", 0),
        }
        return {
            "iteration": iteration,
            "transcript": [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["text"]}],
            "records": [record],
        }

    def next_step(state: LoopState) -> str:
        return "play_turn" if state["iteration"] < iterations else END

    graph = StateGraph(LoopState)
    graph.add_node("play_turn", play_turn)
    graph.add_edge(START, "play_turn")
    graph.add_conditional_edges("play_turn", next_step)
    return graph.compile(checkpointer=saver)


def main() -> int:
    request = json.load(sys.stdin)
    iterations, runs = int(request["iterations"]), int(request["runs"])
    connection = sqlite3.connect(request["database"], check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    saver = SqliteSaver(connection)
    saver.setup()
    starts: dict[str, list[float]] = {}
    ends: dict[str, float] = {}
    graph = build_graph(request, starts, saver)

    def run(thread_id: str) -> None:
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": iterations + 10}
        result = graph.invoke({"iteration": 0, "transcript": [], "records": []}, config, durability="sync")
        ends[thread_id] = time.perf_counter()
        if len(result["records"]) != iterations:
            raise RuntimeError(f"run {thread_id} recorded {len(result['records'])} of {iterations} iterations")

    # One run first, untimed, pays for the first compile, connection and table pages.
    starts["warm-up"] = []
    run("warm-up")
    thread_ids = [f"run-{index}" for index in range(runs)]
    for thread_id in thread_ids:
        starts[thread_id] = []
    threads = [threading.Thread(target=run, args=(thread_id,)) for thread_id in thread_ids]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_clock_s = time.perf_counter() - began
    if len(ends) != runs + 1:
        print(f"{runs + 1 - len(ends)} of {runs} runs failed", file=sys.stderr)
        return 1

    iteration_ms: list[float] = []
    for thread_id in thread_ids:
        marks = [*starts[thread_id], ends[thread_id]]
        iteration_ms.extend((later - earlier) * 1000 for earlier, later in zip(marks, marks[1:]))
    connection.close()
    json.dump(
        {
            "iterationMs": iteration_ms,
            "totalIterations": runs * iterations,
            "wallClockS": wall_clock_s,
            "version": f"langgraph {version('langgraph')}, langgraph-checkpoint-sqlite {version('langgraph-checkpoint-sqlite')}",
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

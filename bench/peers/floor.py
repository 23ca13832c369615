"""The physical floor of bench:iterations: what one durable write costs on this disk.

Usage: python3 floor.py COMMITS FOLDER. In FOLDER (on the disk the benchmark's databases use) it
times COMMITS single-row SQLite transactions on a WAL file with synchronous=FULL, each committed
and fsync'd before the next, and as many fsync'd appends of a record-sized line to a plain file.
Prints one JSON object on stdout: {"commitMs": [...], "appendMs": [...], "sqlite": "3.x"}.
Only the standard library, so the floor is measured even where no peer can be installed.
"""

import json
import os
import sqlite3
import sys
import time

RECORD = json.dumps(
    {
        "iteration": 1,
        "text": "Read the task program and listed the files to look at. Next: inspect the first file.",
        "status": "ok",
        "tokensIn": 420,
        "tokensOut": 38,
        "costUsd": 0.0012,
    }
)


def time_commits(path: str, commits: int) -> list[float]:
    # Autocommit mode: each INSERT is its own transaction, committed when it returns.
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    samples = []
    for _ in range(commits):
        began = time.perf_counter()
        connection.execute("INSERT INTO records (body) VALUES (?)", (RECORD,))
        samples.append((time.perf_counter() - began) * 1000)
    connection.close()
    return samples


def time_appends(path: str, appends: int) -> list[float]:
    line = (RECORD + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples = []
    try:
        for _ in range(appends):
            began = time.perf_counter()
            os.write(descriptor, line)
            os.fsync(descriptor)
            samples.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(descriptor)
    return samples


def main() -> int:
    if len(sys.argv) != 3 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        print("usage: floor.py COMMITS FOLDER (COMMITS a whole number from 1)", file=sys.stderr)
        return 2
    commits, folder = int(sys.argv[1]), sys.argv[2]
    json.dump(
        {
            "commitMs": time_commits(os.path.join(folder, "floor.sqlite"), commits),
            "appendMs": time_appends(os.path.join(folder, "floor.log"), commits),
            "sqlite": sqlite3.sqlite_version,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

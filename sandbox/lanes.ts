/**
 * Bounded execution lanes: at most `size` calls run at once across all trajectories, and the calls
 * of one trajectory run one after another in arrival order. A trajectory that waits (for approval,
 * for a budget resume) holds no lane: lanes are taken per call, not per trajectory.
 */
export class ExecutionLanes {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly tails = new Map<string, Promise<unknown>>();

  constructor(readonly size: number) {}

  /** Calls running now. */
  get executing(): number {
    return this.running;
  }

  /** Calls waiting for a free lane. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Runs `task` after the trajectory's earlier calls, in a free lane. */
  run<T>(trajectoryId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(trajectoryId) ?? Promise.resolve();
    const next = previous.then(
      () => this.inLane(task),
      () => this.inLane(task),
    );
    const tail = next.catch(() => undefined);
    this.tails.set(trajectoryId, tail);
    void tail.then(() => {
      if (this.tails.get(trajectoryId) === tail) this.tails.delete(trajectoryId);
    });
    return next;
  }

  private async inLane<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.size) this.running += 1;
    // A waiter is handed the lane of the call that ends, so a newcomer cannot slip in between.
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next === undefined) this.running -= 1;
      else next();
    }
  }
}

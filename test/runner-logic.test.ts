import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  budgetLimitsSchema,
  guardLimitsSchema,
  permissionPolicySchema,
  type BudgetLimits,
  type GuardLimits,
  type PermissionPolicy,
} from '../common/agent-input';
import type { PendingPermission } from '../common/agent-run-types';
import { MAX_COOLDOWN_WAIT_S } from '../common/constants';
import {
  applyBudgetOverrides,
  budgetWarnings,
  checkBudgets,
  currentWarningKeys,
  formatTokens,
  formatUsd,
  utcDay,
  type BudgetUsage,
} from '../workflows/budgets';
import {
  assessIteration,
  circuitCooldownS,
  failureSignature,
  initialGuardState,
  isEmptyIteration,
  nextWaitS,
  normalizeSummary,
  type GuardedIteration,
  type GuardState,
} from '../workflows/guards';
import {
  allDecided,
  canonicalTool,
  closeRequests,
  decidePermission,
  denialResultText,
  describeToolCall,
  expireRequests,
  matchesRule,
  MAX_EARLY_DECISIONS,
  msUntilNextExpiry,
  newPermissionBook,
  newRequestId,
  nextExpiry,
  openRequest,
  READ_ONLY_TOOLS,
  receiveDecision,
  ruleSubject,
  undecidedRequests,
  type ToolCallShape,
} from '../workflows/permission-policy';

const LIMITS: GuardLimits = guardLimitsSchema.parse({});

function ok(summary: string): GuardedIteration {
  return { status: 'ok', text: summary, summary };
}

function errored(message: string): GuardedIteration {
  return {
    status: 'error',
    text: `\n[ERROR: ${message}]`,
    summary: `[ERROR: ${message}]`,
    failure: { message },
  };
}

/** Feeds iterations through the guards in order; returns the final state and the first stop. */
function run(iterations: GuardedIteration[], limits: GuardLimits = LIMITS) {
  let state: GuardState = initialGuardState();
  for (const [index, iteration] of iterations.entries()) {
    const result = assessIteration(state, iteration, limits);
    state = result.state;
    if (result.stop) return { state, stop: result.stop, stoppedAt: index + 1 };
  }
  return { state, stop: undefined, stoppedAt: undefined };
}

describe('failure guards', () => {
  it('stops after 3 identical failures', () => {
    const result = run([errored('boom'), errored('boom'), errored('boom'), errored('boom')]);
    assert.equal(result.stoppedAt, 3);
    assert.equal(result.stop?.exitReason, 'repeated_failures');
    assert.match(result.stop?.message ?? '', /^3 consecutive identical failures; last signature: boom$/);
  });

  it('stops after 4 mixed failures although no signature repeats 3 times', () => {
    const result = run([errored('a'), errored('b'), errored('a'), errored('b'), errored('a')]);
    assert.equal(result.stoppedAt, 4);
    assert.equal(result.stop?.exitReason, 'repeated_failures');
    assert.equal(result.stop?.message, '4 consecutive failures (mixed signatures); last signature: b');
  });

  it('counts the alternation of [Failed …] and [Circuit breaker …] markers as mixed failures', () => {
    const failed = ok('Working. [Failed after 3 retries: 529 overloaded]');
    const breaker = ok('[Circuit breaker OPEN for anthropic. Cooldown: 120s]');
    const result = run([failed, breaker, failed, breaker]);
    assert.equal(result.stoppedAt, 4);
    assert.match(result.stop?.message ?? '', /mixed signatures/);
  });

  it('a success resets both counters', () => {
    const afterSuccess = run([errored('a'), errored('a'), ok('fine')]);
    assert.deepEqual(afterSuccess.state, {
      sameFailures: 0,
      anyFailures: 0,
      lastSignature: null,
      recentSummaries: ['fine'],
      emptyIterations: 0,
    });
    const result = run([errored('a'), errored('a'), ok('fine'), errored('a'), errored('a'), errored('b')]);
    assert.equal(result.stop, undefined);
    assert.equal(result.state.anyFailures, 3);
    assert.equal(result.state.sameFailures, 1);
  });

  it('a different signature restarts the same-signature count at 1', () => {
    const result = run([errored('a'), errored('a'), errored('b')]);
    assert.equal(result.stop, undefined);
    assert.equal(result.state.sameFailures, 1);
    assert.equal(result.state.lastSignature, 'b');
    assert.equal(result.state.anyFailures, 3);
  });

  it('the [Failed …] text marker counts as a failure with the marker as signature', () => {
    const iteration = ok('I tried. [FAILED: rate limited by upstream] See you.');
    assert.equal(failureSignature(iteration), '[FAILED: rate limited by upstream]');
    assert.equal(
      failureSignature(ok('[circuit breaker open, cooldown 5s]')),
      '[circuit breaker open, cooldown 5s]',
    );
  });

  it('a word merely starting with Failed is no marker', () => {
    assert.equal(failureSignature(ok('[Failedover to replica]')), null);
    assert.equal(failureSignature(ok('Failed tests: 2')), null);
  });

  it('the marker wins over the failure message as signature', () => {
    const iteration: GuardedIteration = {
      status: 'error',
      text: 'partial [Failed: upstream 500]\n[ERROR: model call failed]',
      summary: '',
      failure: { message: 'model call failed', type: 'ModelError' },
    };
    assert.equal(failureSignature(iteration), '[Failed: upstream 500]');
  });

  it('a structured failure fails the iteration even when its status is ok', () => {
    const iteration: GuardedIteration = {
      status: 'ok',
      text: 'x',
      summary: 'x',
      failure: { message: 'tools down' },
    };
    assert.equal(failureSignature(iteration), 'tools down');
  });

  it('an error without a failure message still has a signature', () => {
    assert.equal(failureSignature({ status: 'error', text: '', summary: '(no output)' }), 'error');
  });

  it('a successful iteration and a permission iteration have no signature', () => {
    assert.equal(failureSignature(ok('all good')), null);
    assert.equal(failureSignature({ status: 'permission', text: 'denied', summary: 'denied' }), null);
  });

  it('signature is cut to 80 characters', () => {
    const long = 'x'.repeat(200);
    assert.equal(failureSignature(errored(long)), 'x'.repeat(80));
    const marker = `[Failed ${'y'.repeat(200)}]`;
    assert.equal(failureSignature(ok(marker))?.length, 80);
  });

  it('messages differing only after 80 characters are the same failure', () => {
    const prefix = 'p'.repeat(80);
    const result = run([errored(`${prefix}1`), errored(`${prefix}2`), errored(`${prefix}3`)]);
    assert.equal(result.stoppedAt, 3);
    assert.match(result.stop?.message ?? '', /identical/);
  });

  it('honours configured limits', () => {
    const limits = { ...LIMITS, sameFailureLimit: 1, anyFailureLimit: 10 };
    assert.equal(run([errored('a')], limits).stoppedAt, 1);
    const mixed = { ...LIMITS, sameFailureLimit: 10, anyFailureLimit: 2 };
    assert.equal(run([errored('a'), errored('b')], mixed).stoppedAt, 2);
  });

  it('names the identical failures when both limits trip at once', () => {
    const limits = { ...LIMITS, sameFailureLimit: 4, anyFailureLimit: 4 };
    const result = run([errored('a'), errored('a'), errored('a'), errored('a')], limits);
    assert.equal(result.stoppedAt, 4);
    assert.match(result.stop?.message ?? '', /^4 consecutive identical failures/);
  });

  it('returns a new state and leaves the given one alone', () => {
    const state = initialGuardState();
    const frozen = structuredClone(state);
    assessIteration(state, errored('a'), LIMITS);
    assessIteration(state, ok('x'), LIMITS);
    assert.deepEqual(state, frozen);
    assert.notEqual(initialGuardState(), initialGuardState());
  });

  it('keeps its state as plain JSON', () => {
    const { state } = run([ok('a'), errored('b')]);
    assert.deepEqual(JSON.parse(JSON.stringify(state)), state);
  });
});

describe('stagnation guard', () => {
  it('stops when the last 3 successful summaries are identical', () => {
    const result = run([ok('Task complete.'), ok('Task complete.'), ok('Task complete.')]);
    assert.equal(result.stoppedAt, 3);
    assert.equal(result.stop?.exitReason, 'stagnation');
    assert.match(result.stop?.message ?? '', /^the same summary 3 iterations in a row: "Task complete\."$/);
  });

  it('does not stop while summaries differ', () => {
    const result = run([ok('a'), ok('b'), ok('a'), ok('b'), ok('a')]);
    assert.equal(result.stop, undefined);
    assert.deepEqual(result.state.recentSummaries, ['a', 'b', 'a']);
  });

  it('stagnation only counts successful iterations, and failures leave the window untouched', () => {
    const limits = { ...LIMITS, sameFailureLimit: 10, anyFailureLimit: 10 };
    const result = run([ok('done'), errored('x'), ok('done'), errored('y'), ok('done')], limits);
    assert.equal(result.stoppedAt, 5);
    assert.equal(result.stop?.exitReason, 'stagnation');
    const failing = run([ok('done'), ok('done'), errored('x')], limits);
    assert.deepEqual(failing.state.recentSummaries, ['done', 'done']);
  });

  it('(no output) clears the window', () => {
    const result = run([ok('done'), ok('done'), ok('(no output)'), ok('done'), ok('done')]);
    assert.equal(result.stop, undefined);
    assert.deepEqual(result.state.recentSummaries, ['done', 'done']);
    assert.equal(run([ok('done'), ok('done'), ok('  (No Output) ')]).state.recentSummaries.length, 0);
  });

  it('an empty summary clears the window', () => {
    const result = run([ok('done'), ok('done'), ok('   '), ok('done')]);
    assert.equal(result.stop, undefined);
    assert.deepEqual(result.state.recentSummaries, ['done']);
  });

  it('window 0 and 1 disable stagnation', () => {
    const same = Array.from({ length: 10 }, () => ok('same'));
    for (const stagnationWindow of [0, 1]) {
      const result = run(same, { ...LIMITS, stagnationWindow });
      assert.equal(result.stop, undefined, `window ${stagnationWindow}`);
      assert.deepEqual(result.state.recentSummaries, []);
    }
  });

  it('window 2 stops at the second identical summary and a larger window waits longer', () => {
    assert.equal(run([ok('x'), ok('x')], { ...LIMITS, stagnationWindow: 2 }).stoppedAt, 2);
    const five = run(
      Array.from({ length: 6 }, () => ok('x')),
      { ...LIMITS, stagnationWindow: 5 },
    );
    assert.equal(five.stoppedAt, 5);
    assert.match(five.stop?.message ?? '', /5 iterations in a row/);
  });

  it('whitespace and case differences are the same summary but punctuation is not', () => {
    assert.equal(normalizeSummary('  Task\n\tCOMPLETE.  No   more. '), 'task complete. no more.');
    const same = run([ok('Task complete.'), ok('task   complete.'), ok('TASK\ncomplete.\n')]);
    assert.equal(same.stop?.exitReason, 'stagnation');
    const punctuated = run([ok('Done.'), ok('Done!'), ok('Done.')]);
    assert.equal(punctuated.stop, undefined);
  });

  it('keeps only the last N summaries', () => {
    const result = run([ok('a'), ok('b'), ok('c'), ok('d')]);
    assert.deepEqual(result.state.recentSummaries, ['b', 'c', 'd']);
  });
});

describe('empty-output guard', () => {
  const empty: GuardedIteration = { status: 'ok', text: '', summary: '(no output)' };

  it('stops with no_output after 3 iterations in a row with no text and no tool call', () => {
    const result = run([empty, { ...empty, text: '  \n ' }, empty]);
    assert.equal(result.stoppedAt, 3);
    assert.equal(result.stop?.exitReason, 'no_output');
    assert.equal(result.stop?.message, 'no text and no tool call 3 iterations in a row');
  });

  it('does not count an iteration that called tools without a word, nor one that failed', () => {
    const working: GuardedIteration = { ...empty, toolCalls: 2 };
    assert.equal(isEmptyIteration(working), false);
    assert.equal(isEmptyIteration({ ...empty, status: 'error', failure: { message: 'down' } }), false);
    assert.equal(isEmptyIteration(ok('(no output)')), false, 'a model that writes the words is not silent');
    assert.equal(run([empty, empty, working, empty, empty]).stop, undefined);
  });

  it('starts the row again after text or a failure', () => {
    const limits = { ...LIMITS, sameFailureLimit: 10, anyFailureLimit: 10 };
    assert.equal(run([empty, empty, ok('said something'), empty, empty], limits).stop, undefined);
    assert.equal(run([empty, empty, errored('x'), empty, empty], limits).stop, undefined);
    assert.equal(run([empty, empty, ok('x'), empty, empty, empty], limits).stoppedAt, 6);
  });

  it('honours emptyWindow, and 0 disables the guard', () => {
    const many = Array.from({ length: 12 }, () => empty);
    assert.equal(run(many, { ...LIMITS, emptyWindow: 1 }).stoppedAt, 1);
    assert.equal(run(many, { ...LIMITS, emptyWindow: 10 }).stoppedAt, 10);
    const disabled = run(many, { ...LIMITS, emptyWindow: 0 });
    assert.equal(disabled.stop, undefined);
    assert.equal(disabled.state.emptyIterations, 12);
  });

  it('counts on from guard state carried without the count', () => {
    const carried: GuardState = { sameFailures: 0, anyFailures: 0, lastSignature: null, recentSummaries: [] };
    const first = assessIteration(carried, empty, LIMITS);
    assert.equal(first.state.emptyIterations, 1);
    assert.equal(first.stop, undefined);
  });

  it('an empty iteration still clears the stagnation window', () => {
    const result = run([ok('done'), ok('done'), empty, ok('done'), ok('done')]);
    assert.equal(result.stop, undefined);
    assert.deepEqual(result.state.recentSummaries, ['done', 'done']);
  });
});

describe('circuit breaker and waits', () => {
  const options = { intervalS: 2, errorBackoffS: 10 };

  it('waits the interval after a success and the error backoff after an error', () => {
    assert.equal(nextWaitS(ok('fine'), options), 2);
    assert.equal(nextWaitS(errored('boom'), options), 10);
    assert.equal(nextWaitS({ status: 'permission', text: '', summary: '' }, options), 2);
  });

  it('reads the cooldown from the text marker', () => {
    assert.equal(circuitCooldownS(ok('[Circuit breaker OPEN for api. Cooldown: 12.5s]')), 12.5);
    assert.equal(circuitCooldownS(ok('circuit breaker open — cooldown:7 s')), 7);
    assert.equal(circuitCooldownS(ok('[Circuit breaker CLOSED]')), undefined);
    assert.equal(circuitCooldownS(ok('nothing here')), undefined);
  });

  it('prefers the structured cooldown over the text', () => {
    const iteration: GuardedIteration = {
      status: 'error',
      text: '[Circuit breaker OPEN. Cooldown: 50s]',
      summary: '',
      failure: { message: 'open', type: 'CircuitOpen', cooldownS: 20 },
    };
    assert.equal(circuitCooldownS(iteration), 20);
  });

  it('falls back to the failure message when the text has no marker', () => {
    const iteration: GuardedIteration = {
      status: 'error',
      text: '',
      summary: '',
      failure: { message: 'Circuit breaker OPEN for model. Cooldown: 30s' },
    };
    assert.equal(circuitCooldownS(iteration), 30);
  });

  it('cooldown wait is max(interval, min(C+1, 300))', () => {
    const breaker = (cooldownS: number): GuardedIteration => ({
      status: 'ok',
      text: '',
      summary: '',
      failure: { message: 'open', cooldownS },
    });
    assert.equal(nextWaitS(breaker(120), options), 121);
    assert.equal(nextWaitS(breaker(0.5), options), 2);
    assert.equal(nextWaitS(breaker(1000), options), MAX_COOLDOWN_WAIT_S);
    assert.equal(nextWaitS(breaker(299.5), options), MAX_COOLDOWN_WAIT_S);
    assert.equal(nextWaitS(breaker(1000), { intervalS: 600, errorBackoffS: 10 }), 600);
  });

  it('an errored iteration with a cooldown waits at least the error backoff', () => {
    const iteration: GuardedIteration = { ...errored('open'), failure: { message: 'open', cooldownS: 3 } };
    assert.equal(nextWaitS(iteration, options), 10);
    const longer: GuardedIteration = { ...errored('open'), failure: { message: 'open', cooldownS: 60 } };
    assert.equal(nextWaitS(longer, options), 61);
  });
});

const ASK: PermissionPolicy = permissionPolicySchema.parse({});
const AUTO: PermissionPolicy = permissionPolicySchema.parse({ mode: 'auto-approve' });

function bash(command: string): ToolCallShape {
  return { tool: 'bash', arguments: { command } };
}

function policy(mode: PermissionPolicy['mode'], rules: PermissionPolicy['rules']): PermissionPolicy {
  return permissionPolicySchema.parse({ mode, rules });
}

describe('permission rules', () => {
  it('maps aliases to their tool', () => {
    assert.equal(canonicalTool('terminal'), 'bash');
    assert.equal(canonicalTool('terminal_stateful'), 'bash_stateful');
    assert.equal(canonicalTool('write_file'), 'write_file');
  });

  it('matches a rule against the main argument of each tool', () => {
    assert.equal(ruleSubject(bash('ls -la')), 'ls -la');
    assert.equal(ruleSubject({ tool: 'bash_stateful', arguments: { command: 'make' } }), 'make');
    assert.equal(ruleSubject({ tool: 'read_file', arguments: { path: 'src/a.ts' } }), 'src/a.ts');
    assert.equal(ruleSubject({ tool: 'write_file', arguments: { path: 'b.md', content: 'x' } }), 'b.md');
    assert.equal(
      ruleSubject({ tool: 'tmux', arguments: { action: 'send_keys', keys: 'ls', session: 'main' } }),
      'send_keys ls',
    );
    assert.equal(ruleSubject({ tool: 'tmux', arguments: { action: 'capture' } }), 'capture');
    assert.equal(
      ruleSubject({ tool: 'search', arguments: { z: 1, a: { d: 2, c: 3 } } }),
      '{"a":{"c":3,"d":2},"z":1}',
    );
  });

  it('falls back to the whole arguments when the main one is not a string', () => {
    assert.equal(ruleSubject({ tool: 'bash', arguments: { cmd: 'rm -rf /' } }), '{"cmd":"rm -rf /"}');
  });

  it('matches the examples of the policy documentation', () => {
    assert.ok(matchesRule({ action: 'allow', match: 'bash(git status*)' }, bash('git status --short')));
    assert.ok(!matchesRule({ action: 'allow', match: 'bash(git status*)' }, bash('git push')));
    assert.ok(!matchesRule({ action: 'allow', match: 'bash(git status*)' }, bash('echo; git status')));
    assert.ok(
      matchesRule({ action: 'deny', match: 'bash(*rm -rf /*)' }, bash('cd x && rm -rf / --no-preserve-root')),
    );
    assert.ok(
      matchesRule(
        { action: 'ask', match: 'write_file(*)' },
        { tool: 'write_file', arguments: { path: 'a' } },
      ),
    );
    assert.ok(matchesRule({ action: 'ask', match: '*' }, { tool: 'anything', arguments: {} }));
    assert.ok(matchesRule({ action: 'ask', match: 'bash' }, bash('whatever')));
  });

  it('a star matches slashes, spaces and newlines; a question mark exactly one character', () => {
    assert.ok(matchesRule({ action: 'deny', match: 'bash(*secret*)' }, bash('cat /etc/x\ncat ~/secret/key')));
    assert.ok(
      matchesRule(
        { action: 'allow', match: 'read_file(src/?.ts)' },
        { tool: 'read_file', arguments: { path: 'src/a.ts' } },
      ),
    );
    assert.ok(
      !matchesRule(
        { action: 'allow', match: 'read_file(src/?.ts)' },
        { tool: 'read_file', arguments: { path: 'src/ab.ts' } },
      ),
    );
    assert.ok(
      !matchesRule(
        { action: 'allow', match: 'read_file(src/?.ts)' },
        { tool: 'read_file', arguments: { path: 'src/.ts' } },
      ),
    );
  });

  it('matches the whole subject, not a part of it', () => {
    assert.ok(!matchesRule({ action: 'allow', match: 'bash(ls)' }, bash('ls -la')));
    assert.ok(matchesRule({ action: 'allow', match: 'bash(ls)' }, bash('ls')));
  });

  it('treats regular-expression characters in a glob literally', () => {
    const rule = { action: 'allow' as const, match: 'bash(echo $(date) [a-z]+ {1} a|b ^x.y\\z)' };
    assert.ok(matchesRule(rule, bash('echo $(date) [a-z]+ {1} a|b ^x.y\\z')));
    assert.ok(!matchesRule(rule, bash('echo $(date) b+ {1} a ^xzy\\z')));
    assert.ok(!matchesRule({ action: 'allow', match: 'bash(a.c)' }, bash('abc')));
  });

  it('a star matches the empty string and a question mark one whole character', () => {
    assert.ok(matchesRule({ action: 'allow', match: 'bash(*)' }, bash('')));
    assert.ok(matchesRule({ action: 'allow', match: 'bash(ls*)' }, bash('ls')));
    assert.ok(matchesRule({ action: 'allow', match: 'bash(**ls**)' }, bash('ls')));
    assert.ok(matchesRule({ action: 'allow', match: 'bash(echo ?)' }, bash('echo 🚀')));
    assert.ok(!matchesRule({ action: 'allow', match: 'bash(echo ?)' }, bash('echo ')));
  });

  it('answers a many-star rule on a long command without backtracking blow-up', () => {
    const rule = { action: 'deny' as const, match: 'bash(*a*a*a*a*a*a*a*a*b)' };
    assert.ok(!matchesRule(rule, bash('a'.repeat(50_000))));
    assert.ok(matchesRule(rule, bash(`${'a'.repeat(50_000)}b`)));
  });

  it('globs the tool part over tool names', () => {
    assert.ok(matchesRule({ action: 'ask', match: '*_file' }, { tool: 'write_file', arguments: {} }));
    assert.ok(
      matchesRule({ action: 'ask', match: 'bash*' }, { tool: 'bash_stateful', arguments: { command: 'x' } }),
    );
    assert.ok(
      !matchesRule({ action: 'ask', match: 'bash' }, { tool: 'bash_stateful', arguments: { command: 'x' } }),
    );
  });

  it('a bash rule covers the terminal alias, and a terminal rule covers bash', () => {
    const terminal: ToolCallShape = { tool: 'terminal', arguments: { command: 'rm -rf build' } };
    assert.ok(matchesRule({ action: 'deny', match: 'bash(rm *)' }, terminal));
    assert.ok(matchesRule({ action: 'deny', match: 'terminal(rm *)' }, bash('rm -rf build')));
    assert.equal(
      decidePermission(policy('auto-approve', [{ action: 'deny', match: 'bash(rm *)' }]), terminal).action,
      'deny',
    );
  });

  it('applies the first matching rule', () => {
    const rules: PermissionPolicy['rules'] = [
      { action: 'allow', match: 'bash(git status*)' },
      { action: 'deny', match: 'bash(git *)' },
      { action: 'ask', match: 'bash' },
    ];
    assert.deepEqual(decidePermission(policy('ask', rules), bash('git status')), {
      action: 'allow',
      reason: 'rule allow bash(git status*)',
      rule: 'allow bash(git status*)',
    });
    assert.equal(decidePermission(policy('ask', rules), bash('git push')).rule, 'deny bash(git *)');
    assert.equal(decidePermission(policy('auto-approve', rules), bash('ls')).action, 'ask');
  });

  it('a deny rule holds in auto-approve mode', () => {
    const verdict = decidePermission(
      policy('auto-approve', [{ action: 'deny', match: 'bash(*rm -rf /*)' }]),
      bash('rm -rf /'),
    );
    assert.deepEqual(verdict, {
      action: 'deny',
      reason: 'rule deny bash(*rm -rf /*)',
      rule: 'deny bash(*rm -rf /*)',
    });
  });

  it('auto-approve allows what no rule stops', () => {
    assert.deepEqual(decidePermission(AUTO, bash('make deploy')), {
      action: 'allow',
      reason: 'auto-approve mode',
    });
  });

  it('read-only tools pass in ask mode and the rest ask', () => {
    assert.deepEqual([...READ_ONLY_TOOLS].sort(), ['finish', 'read_file']);
    assert.deepEqual(decidePermission(ASK, { tool: 'read_file', arguments: { path: 'a' } }), {
      action: 'allow',
      reason: 'read-only tool',
    });
    assert.equal(decidePermission(ASK, { tool: 'finish', arguments: {} }).action, 'allow');
    assert.deepEqual(decidePermission(ASK, bash('ls')), { action: 'ask', reason: 'ask mode' });
    assert.equal(decidePermission(ASK, { tool: 'write_file', arguments: { path: 'a' } }).action, 'ask');
  });

  it('rules apply to read-only tools too', () => {
    const rules: PermissionPolicy['rules'] = [{ action: 'deny', match: 'read_file(*.env)' }];
    assert.equal(
      decidePermission(policy('ask', rules), { tool: 'read_file', arguments: { path: '.env' } }).action,
      'deny',
    );
  });

  it('describes a call in one line of at most 200 characters', () => {
    assert.equal(describeToolCall(bash('git status')), 'bash: git status');
    assert.equal(
      describeToolCall({ tool: 'write_file', arguments: { path: 'notes.md', content: 'x' } }),
      'write_file: notes.md',
    );
    assert.equal(
      describeToolCall({ tool: 'tmux', arguments: { action: 'send_keys', keys: 'ls' } }),
      'tmux: send_keys ls',
    );
    assert.equal(describeToolCall(bash('echo a\n  echo b')), 'bash: echo a echo b');
    const long = describeToolCall(bash('x'.repeat(500)));
    assert.equal(long.length, 200);
    assert.ok(long.endsWith('…'));
  });

  it('request IDs are pr_ and 16 hex digits, the same for the same random source', () => {
    const seeded = (seed: number) => () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed / 2_147_483_648;
    };
    const first = newRequestId(seeded(42));
    assert.match(first, /^pr_[0-9a-f]{16}$/);
    assert.equal(newRequestId(seeded(42)), first);
    assert.notEqual(newRequestId(seeded(43)), first);
    assert.equal(
      newRequestId(() => 0),
      'pr_0000000000000000',
    );
    assert.equal(
      newRequestId(() => 0.9999999999),
      'pr_ffffffffffffffff',
    );
    assert.equal(
      newRequestId(() => 1),
      'pr_ffffffffffffffff',
    );
  });
});

const T0 = '2026-11-21T10:00:00.000Z';

function at(seconds: number): string {
  return new Date(Date.parse(T0) + seconds * 1000).toISOString();
}

function request(requestId: string, timeoutS = 1800): PendingPermission {
  return {
    requestId,
    tool: 'bash',
    input: { command: 'make' },
    rationale: 'bash: make',
    iteration: 1,
    requestedAt: T0,
    expiresAt: at(timeoutS),
  };
}

const ID_A = 'pr_000000000000000a';
const ID_B = 'pr_000000000000000b';

describe('permission requests', () => {
  it('records a decision on an open request', () => {
    const book = newPermissionBook();
    assert.deepEqual(openRequest(book, request(ID_A)), {});
    assert.equal(allDecided(book, [ID_A]), false);
    assert.equal(
      receiveDecision(book, { requestId: ID_A, approve: true, by: 'ana', note: 'ok' }, at(5)),
      'decided',
    );
    assert.equal(allDecided(book, [ID_A]), true);
    assert.deepEqual(book.pending[0]?.decision, {
      approve: true,
      timedOut: false,
      by: 'ana',
      note: 'ok',
      at: at(5),
    });
  });

  it('applies a decision that arrived before its request was opened', () => {
    const book = newPermissionBook();
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: true, by: 'ana' }, at(1)), 'held');
    assert.equal(book.early.length, 1);
    const opened = openRequest(book, request(ID_A));
    assert.deepEqual(opened.decision, { approve: true, timedOut: false, by: 'ana', at: at(1) });
    assert.equal(book.early.length, 0);
    assert.equal(allDecided(book, [ID_A]), true);
  });

  it('applies held payloads in the order they came', () => {
    const book = newPermissionBook();
    receiveDecision(book, { requestId: ID_A, extendS: 60 }, at(1));
    receiveDecision(book, { requestId: ID_B, approve: true }, at(2));
    assert.deepEqual(openRequest(book, request(ID_A, 100)), {});
    assert.equal(book.pending[0]?.expiresAt, at(160));
    assert.deepEqual(
      book.early.map((early) => early.requestId),
      [ID_B],
    );
  });

  it('holds at most 32 early payloads and drops the oldest', () => {
    const book = newPermissionBook();
    for (let index = 0; index < MAX_EARLY_DECISIONS + 3; index++) {
      const requestId = `pr_${index.toString(16).padStart(16, '0')}`;
      receiveDecision(book, { requestId, approve: false }, at(index));
    }
    assert.equal(book.early.length, MAX_EARLY_DECISIONS);
    assert.equal(book.early[0]?.requestId, `pr_${(3).toString(16).padStart(16, '0')}`);
  });

  it('extend moves expiry later', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A, 1800));
    assert.equal(receiveDecision(book, { requestId: ID_A, extendS: 600 }, at(10)), 'extended');
    assert.equal(book.pending[0]?.expiresAt, at(2400));
    assert.equal(allDecided(book, [ID_A]), false);
    assert.equal(receiveDecision(book, { requestId: ID_A, extendS: 30.5 }, at(20)), 'extended');
    assert.equal(nextExpiry(book), at(2430.5));
  });

  it('a payload with approve decides even when it also extends', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A));
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: false, extendS: 60 }, at(1)), 'decided');
    assert.equal(book.pending[0]?.expiresAt, at(1800));
  });

  it('ignores a second decision, and an extension of a decided request', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A));
    receiveDecision(book, { requestId: ID_A, approve: false }, at(1));
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: true }, at(2)), 'ignored');
    assert.equal(receiveDecision(book, { requestId: ID_A, extendS: 60 }, at(3)), 'ignored');
    assert.equal(book.pending[0]?.decision?.approve, false);
    assert.equal(book.pending[0]?.expiresAt, at(1800));
  });

  it('ignores a payload that neither decides nor extends', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A));
    assert.equal(receiveDecision(book, { requestId: ID_A }, at(1)), 'ignored');
    assert.equal(receiveDecision(book, { requestId: ID_B }, at(1)), 'ignored');
    assert.equal(book.early.length, 0);
  });

  it('times out undecided requests past their expiry as denials', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A, 60));
    openRequest(book, request(ID_B, 120));
    assert.deepEqual(expireRequests(book, at(59)), []);
    const expired = expireRequests(book, at(60));
    assert.deepEqual(
      expired.map((entry) => entry.requestId),
      [ID_A],
    );
    assert.deepEqual(expired[0]?.decision, { approve: false, timedOut: true, at: at(60) });
    assert.equal(allDecided(book, [ID_A]), true);
    assert.equal(allDecided(book, [ID_A, ID_B]), false);
    assert.deepEqual(expireRequests(book, at(61)), []);
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: true }, at(62)), 'ignored');
  });

  it('a decision that arrives before the expiry was processed still counts', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A, 60));
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: true }, at(90)), 'decided');
    assert.deepEqual(expireRequests(book, at(90)), []);
    assert.equal(book.pending[0]?.decision?.approve, true);
  });

  it('names the next expiry among undecided requests and the time until it', () => {
    const book = newPermissionBook();
    assert.equal(nextExpiry(book), undefined);
    assert.equal(msUntilNextExpiry(book, Date.parse(T0)), undefined);
    openRequest(book, request(ID_A, 300));
    openRequest(book, request(ID_B, 120));
    assert.equal(nextExpiry(book), at(120));
    assert.equal(msUntilNextExpiry(book, Date.parse(at(20))), 100_000);
    assert.equal(msUntilNextExpiry(book, Date.parse(at(500))), 1);
    receiveDecision(book, { requestId: ID_B, approve: true }, at(30));
    assert.equal(nextExpiry(book), at(300));
  });

  it('lists undecided requests without decisions for the status query', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A));
    openRequest(book, request(ID_B));
    receiveDecision(book, { requestId: ID_B, approve: true }, at(1));
    assert.deepEqual(undecidedRequests(book), [request(ID_A)]);
  });

  it('an ID never opened is never decided', () => {
    assert.equal(allDecided(newPermissionBook(), [ID_A]), false);
    assert.equal(allDecided(newPermissionBook(), []), true);
  });

  it('closing requests returns them and ignores late answers for them', () => {
    const book = newPermissionBook();
    openRequest(book, request(ID_A));
    openRequest(book, request(ID_B));
    receiveDecision(book, { requestId: ID_A, approve: true }, at(1));
    const closed = closeRequests(book, [ID_A]);
    assert.deepEqual(
      closed.map((entry) => entry.requestId),
      [ID_A],
    );
    assert.deepEqual(
      book.pending.map((entry) => entry.requestId),
      [ID_B],
    );
    assert.equal(receiveDecision(book, { requestId: ID_A, approve: false }, at(2)), 'ignored');
    assert.equal(book.early.length, 0);
  });

  it('keeps the whole book as plain JSON', () => {
    const book = newPermissionBook();
    receiveDecision(book, { requestId: ID_B, approve: true }, at(0));
    openRequest(book, request(ID_A));
    receiveDecision(book, { requestId: ID_A, approve: true, note: 'fine' }, at(1));
    closeRequests(book, [ID_A]);
    assert.deepEqual(JSON.parse(JSON.stringify(book)), book);
  });

  it('says why a call was refused', () => {
    assert.equal(
      denialResultText({ approve: false, timedOut: false, at: T0 }),
      'Denied: user rejected this operation',
    );
    assert.equal(
      denialResultText({ approve: false, timedOut: false, note: 'use the staging DB', at: T0 }),
      'Denied: user rejected this operation (use the staging DB)',
    );
    assert.match(denialResultText({ approve: false, timedOut: true, at: T0 }), /timed out/);
  });
});

const BUDGETS: BudgetLimits = budgetLimitsSchema.parse({});
const UNLIMITED: BudgetLimits = { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 0, dailyCostUsd: 0 };

function usage(
  sessionTokens: number,
  sessionCostUsd: number,
  dailyTokens = 0,
  dailyCostUsd = 0,
): BudgetUsage {
  return {
    session: { tokens: sessionTokens, costUsd: sessionCostUsd },
    daily: { tokens: dailyTokens, costUsd: dailyCostUsd },
  };
}

describe('budgets', () => {
  it('a limit of 0 is unlimited', () => {
    assert.deepEqual(checkBudgets(UNLIMITED, usage(1e12, 1e9, 1e12, 1e9), { tokens: 1e9, costUsd: 1e6 }), {
      exceeded: false,
    });
    assert.deepEqual(budgetWarnings(UNLIMITED, usage(1e12, 1e9, 1e12, 1e9), [], '2026-11-21'), []);
  });

  it('is exceeded when usage reaches the limit, not before', () => {
    assert.deepEqual(checkBudgets(BUDGETS, usage(199_999, 0)), { exceeded: false });
    assert.deepEqual(checkBudgets(BUDGETS, usage(200_000, 0)), {
      exceeded: true,
      budget: 'sessionTokens',
      reason: 'session token budget reached: 200,000 of 200,000 tokens',
    });
    const over = checkBudgets(BUDGETS, usage(200_512, 0));
    assert.ok(over.exceeded);
    assert.equal(over.reason, 'session token budget reached: 200,512 of 200,000 tokens');
  });

  it('checks session tokens, session cost, daily tokens, daily cost in that order', () => {
    const all = usage(300_000, 5, 3_000_000, 50);
    const names = [];
    let limits = { ...BUDGETS };
    for (;;) {
      const check = checkBudgets(limits, all);
      if (!check.exceeded) break;
      names.push(check.budget);
      limits = { ...limits, [check.budget]: 0 };
    }
    assert.deepEqual(names, ['sessionTokens', 'sessionCostUsd', 'dailyTokens', 'dailyCostUsd']);
  });

  it('names costs in dollars', () => {
    const check = checkBudgets(BUDGETS, usage(0, 2.5));
    assert.ok(check.exceeded);
    assert.equal(check.reason, 'session cost budget reached: $2.50 of $2.00');
  });

  it('is exceeded when the next request would reach the limit', () => {
    const check = checkBudgets(BUDGETS, usage(0, 0, 0, 19.8), { tokens: 0, costUsd: 0.4 });
    assert.deepEqual(check, {
      exceeded: true,
      budget: 'dailyCostUsd',
      reason: 'daily cost budget would be exceeded by the next request: $19.80 + $0.40 of $20.00',
    });
    const tokens = checkBudgets(BUDGETS, usage(199_000, 0), { tokens: 1_000, costUsd: 0 });
    assert.ok(tokens.exceeded);
    assert.equal(
      tokens.reason,
      'session token budget would be exceeded by the next request: 199,000 + 1,000 of 200,000 tokens',
    );
    assert.deepEqual(checkBudgets(BUDGETS, usage(199_000, 0), { tokens: 999, costUsd: 0 }), {
      exceeded: false,
    });
  });

  it('a projection of 0 is the plain check', () => {
    assert.deepEqual(checkBudgets(BUDGETS, usage(199_999, 1.99)), { exceeded: false });
  });

  it('keeps the reason within 300 characters', () => {
    const check = checkBudgets({ ...UNLIMITED, sessionTokens: 1 }, usage(10 ** 200, 0));
    assert.ok(check.exceeded);
    assert.ok(check.reason.length <= 300);
  });

  it('formats figures the same on every machine', () => {
    assert.equal(formatTokens(0), '0');
    assert.equal(formatTokens(1_234_567), '1,234,567');
    assert.equal(formatTokens(999), '999');
    assert.equal(formatUsd(19.8), '$19.80');
    assert.equal(formatUsd(0), '$0.00');
    assert.equal(formatUsd(0.0042), '$0.0042');
  });

  it('warns once as usage crosses 80 %', () => {
    const warnings = budgetWarnings(BUDGETS, usage(160_000, 0), [], '2026-11-21');
    assert.deepEqual(warnings, [
      {
        budget: 'sessionTokens',
        fraction: 0.8,
        message: 'session token budget 80% used: 160,000 of 200,000 tokens',
        keys: ['sessionTokens:0.8'],
      },
    ]);
    assert.deepEqual(budgetWarnings(BUDGETS, usage(170_000, 0), ['sessionTokens:0.8'], '2026-11-21'), []);
    assert.deepEqual(budgetWarnings(BUDGETS, usage(159_999, 0), [], '2026-11-21'), []);
  });

  it('warns again at 95 % after the 80 % warning', () => {
    const warnings = budgetWarnings(BUDGETS, usage(190_000, 0), ['sessionTokens:0.8'], '2026-11-21');
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.fraction, 0.95);
    assert.deepEqual(warnings[0]?.keys, ['sessionTokens:0.8', 'sessionTokens:0.95']);
  });

  it('crossing 95 % at once gives one warning whose keys cover 80 % too', () => {
    const warnings = budgetWarnings(BUDGETS, usage(0, 1.95), [], '2026-11-21');
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.message, 'session cost budget 95% used: $1.95 of $2.00');
    const warned = warnings.flatMap((warning) => warning.keys);
    assert.deepEqual(warned, ['sessionCostUsd:0.8', 'sessionCostUsd:0.95']);
    assert.deepEqual(budgetWarnings(BUDGETS, usage(0, 1.99), warned, '2026-11-21'), []);
  });

  it('warns about several budgets at once', () => {
    const warnings = budgetWarnings(BUDGETS, usage(160_000, 1.6, 1_600_000, 16), [], '2026-11-21');
    assert.deepEqual(
      warnings.map((warning) => warning.budget),
      ['sessionTokens', 'sessionCostUsd', 'dailyTokens', 'dailyCostUsd'],
    );
  });

  it('daily warnings fire again on a new day', () => {
    const first = budgetWarnings(BUDGETS, usage(0, 0, 0, 19), [], '2026-11-21');
    assert.deepEqual(first[0]?.keys, ['dailyCostUsd:2026-11-21:0.8', 'dailyCostUsd:2026-11-21:0.95']);
    const warned = first.flatMap((warning) => warning.keys);
    assert.deepEqual(budgetWarnings(BUDGETS, usage(0, 0, 0, 19), warned, '2026-11-21'), []);
    const nextDay = budgetWarnings(BUDGETS, usage(0, 0, 0, 19), warned, '2026-11-22');
    assert.deepEqual(nextDay[0]?.keys, ['dailyCostUsd:2026-11-22:0.8', 'dailyCostUsd:2026-11-22:0.95']);
  });

  it('forgets daily warning keys of other days but keeps session ones', () => {
    const keys = ['sessionTokens:0.8', 'dailyTokens:2026-11-20:0.8', 'dailyCostUsd:2026-11-21:0.95'];
    assert.deepEqual(currentWarningKeys(keys, '2026-11-21'), [
      'sessionTokens:0.8',
      'dailyCostUsd:2026-11-21:0.95',
    ]);
  });

  it('applies overrides that are given and keeps the rest', () => {
    assert.deepEqual(applyBudgetOverrides(BUDGETS, undefined), BUDGETS);
    assert.deepEqual(applyBudgetOverrides(BUDGETS, { sessionTokens: 500_000, dailyCostUsd: 0 }), {
      ...BUDGETS,
      sessionTokens: 500_000,
      dailyCostUsd: 0,
    });
    assert.deepEqual(applyBudgetOverrides(BUDGETS, { sessionCostUsd: undefined, dailyTokens: -1 }), BUDGETS);
    const limits = { ...BUDGETS };
    applyBudgetOverrides(limits, { sessionTokens: 1 });
    assert.deepEqual(limits, BUDGETS);
  });

  it('an override lifts a pause on the next check', () => {
    const spent = usage(250_000, 0);
    assert.equal(checkBudgets(BUDGETS, spent).exceeded, true);
    assert.equal(checkBudgets(applyBudgetOverrides(BUDGETS, { sessionTokens: 0 }), spent).exceeded, false);
    assert.equal(
      checkBudgets(applyBudgetOverrides(BUDGETS, { sessionTokens: 240_000 }), spent).exceeded,
      true,
    );
  });

  it('names the UTC day of an instant', () => {
    assert.equal(utcDay(Date.parse('2026-11-21T23:59:59.999Z')), '2026-11-21');
    assert.equal(utcDay(Date.parse('2026-11-22T00:00:00.000Z')), '2026-11-22');
    assert.equal(utcDay(Date.parse('2026-11-22T01:00:00+02:00')), '2026-11-21');
  });
});

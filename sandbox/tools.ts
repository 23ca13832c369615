import type { FileHandle } from 'node:fs/promises';
import { z } from 'zod';
import {
  OUTPUT_FLOOD_FACTOR,
  runInBubblewrap,
  sandboxHostIdentity,
  type BubblewrapResult,
} from './bubblewrap';
import { DEFAULT_SANDBOX_TOTALS, describeLimitKill, type SandboxTotals } from './sandbox-watchdog';
import { runBashStateful, runTmux } from './stateful-tools';
import {
  bashArgumentsSchema,
  bashStatefulArgumentsSchema,
  parseToolArguments,
  readFileArgumentsSchema,
  tmuxArgumentsSchema,
  writeFileArgumentsSchema,
} from './tool-arguments';
import {
  clampTimeoutS,
  MAX_FILE_CHARS,
  MAX_STREAM_CHARS,
  isSandboxTool,
  SandboxError,
  TRUNCATION_MARKER,
  type ToolCall,
  type ToolResult,
} from './tool-call';
import { reportNetworkRefusals, type NetworkEgress } from './network-proxy';
import { runUnsandboxed } from './unsandboxed';
import { diskQuotaRefusal } from './workspace-quota';
import { createWorkspaceFile, errorCode, openWorkspaceFile } from './workspace-paths';

/**
 * The tools a sandbox server runs itself: `bash` in bubblewrap (or, with `--unsafe-no-sandbox`
 * where bubblewrap is not usable, on the host), `read_file` and `write_file` on the
 * host inside the workspace, `bash_stateful` and `tmux` in the trajectory's long-lived sandbox
 * (`stateful-tools.ts`). Every tool-level problem (bad arguments, a refused path, a failing or
 * timed-out command) comes back as a `{ success: false, error }` result for the model to read.
 */

/**
 * How `bash` commands are isolated: in bubblewrap, or (`none`, a server started with
 * `--unsafe-no-sandbox` where bubblewrap is not usable) on the host with `unsandboxed.ts`, where
 * absolute `/workspace/...` paths do not map and the tools that need a long-lived sandbox are refused.
 */
export type SandboxIsolation = 'bubblewrap' | 'none';

/** Bytes read from a file per read call, decoded as UTF-8 as they come. */
const READ_CHUNK_BYTES = 64 * 1024;

/**
 * Runs one sandbox tool call in the workspace folder `workspaceRoot` and returns its result. Never
 * throws for a tool-level problem; it rethrows only when `signal` aborts (the server is shutting
 * down or the activity was cancelled), since cancellation is not something the model should read as
 * a result. With `isolation` 'none', `bash` runs on the host and `bash_stateful` and `tmux` fail.
 * Commands of a run with the network on go out through a proxy of `network`, the server's egress
 * (with its operator's `allowCidrs`); the process's default egress unless given.
 */
export async function runSandboxTool(
  call: ToolCall,
  workspaceRoot: string,
  signal: AbortSignal,
  isolation: SandboxIsolation = 'bubblewrap',
  totals: SandboxTotals = DEFAULT_SANDBOX_TOTALS,
  network?: NetworkEgress,
): Promise<ToolResult> {
  if (!isSandboxTool(call.tool)) return failure(call, `Unknown tool: ${call.tool}`);
  if (isolation === 'none' && (call.tool === 'bash_stateful' || call.tool === 'tmux')) {
    return failure(call, `${call.tool} needs bubblewrap: this sandbox server runs with --unsafe-no-sandbox`);
  }
  try {
    switch (call.tool) {
      case 'bash': {
        const parsed = parseToolArguments(call.tool, call.arguments, bashArgumentsSchema);
        if (!parsed.ok) return failure(call, parsed.error);
        return await runBash(call, parsed.value, workspaceRoot, signal, isolation, totals, network);
      }
      case 'read_file': {
        const parsed = parseToolArguments(call.tool, call.arguments, readFileArgumentsSchema);
        if (!parsed.ok) return failure(call, parsed.error);
        return await readWorkspaceFile(call, parsed.value, workspaceRoot);
      }
      case 'write_file': {
        const parsed = parseToolArguments(call.tool, call.arguments, writeFileArgumentsSchema);
        if (!parsed.ok) return failure(call, parsed.error);
        const refusal = await writeQuotaRefusal(workspaceRoot, parsed.value.content, totals);
        if (refusal !== undefined) return failure(call, refusal);
        return await writeWorkspaceFile(call, parsed.value, workspaceRoot);
      }
      case 'bash_stateful': {
        const parsed = parseToolArguments(call.tool, call.arguments, bashStatefulArgumentsSchema);
        if (!parsed.ok) return failure(call, parsed.error);
        return await runBashStateful(call, parsed.value, workspaceRoot, signal, totals, network);
      }
      case 'tmux': {
        const parsed = parseToolArguments(call.tool, call.arguments, tmuxArgumentsSchema);
        if (!parsed.ok) return failure(call, parsed.error);
        return await runTmux(call, parsed.value, workspaceRoot, signal, totals, network);
      }
    }
  } catch (error) {
    if (signal.aborted) throw error;
    return failure(call, describeFailure(error));
  }
}

async function runBash(
  call: ToolCall,
  parsed: z.infer<typeof bashArgumentsSchema>,
  workspaceRoot: string,
  signal: AbortSignal,
  isolation: SandboxIsolation,
  totals: SandboxTotals,
  network: NetworkEgress | undefined,
): Promise<ToolResult> {
  const timeoutS = clampTimeoutS(call.timeoutS ?? parsed.timeout);
  const result =
    isolation === 'none'
      ? await runUnsandboxed(parsed.command, { workspace: workspaceRoot, timeoutS, signal })
      : await runInBubblewrap(parsed.command, {
          workspace: workspaceRoot,
          timeoutS,
          policy: call.policy,
          signal,
          totals,
          ...(network === undefined ? {} : { network }),
        });
  let output = withMarker(result.stdout, result.stdoutTruncated);
  if (result.stderr.length > 0) output += `\n[stderr]\n${withMarker(result.stderr, result.stderrTruncated)}`;
  const metadata = {
    exitCode: result.exitCode,
    durationMs: result.durationMs,
    truncated: result.truncated,
    timedOut: result.timedOut,
    ...(result.outputLimitExceeded ? { outputLimitExceeded: true } : {}),
    ...(result.limitExceeded === undefined ? {} : { limitExceeded: result.limitExceeded }),
  };
  const error = bashError(result, timeoutS);
  const toolResult: ToolResult =
    error === undefined
      ? { callId: call.callId, success: true, output, metadata }
      : { callId: call.callId, success: false, output, error, metadata };
  return reportNetworkRefusals(toolResult, result.networkRefused ?? []);
}

function bashError(result: BubblewrapResult, timeoutS: number): string | undefined {
  if (result.timedOut) return `Command timed out after ${timeoutS}s`;
  if (result.limitExceeded !== undefined) return describeLimitKill(result.limitExceeded);
  if (result.outputLimitExceeded) {
    return `Command killed: output over ${MAX_STREAM_CHARS * OUTPUT_FLOOD_FACTOR} characters`;
  }
  if (result.exitCode !== 0) return `Exit code: ${result.exitCode}`;
  return undefined;
}

function withMarker(text: string, truncated: boolean): string {
  return truncated ? `${text}\n${TRUNCATION_MARKER}` : text;
}

/**
 * Reads a text file of the workspace: `limit` characters (at most MAX_FILE_CHARS) from character
 * `offset`. It reads only as far as needed, so a huge file costs no more than the part returned.
 * Opened with {@link openWorkspaceFile}: no symlink is ever followed by the kernel on the way, and
 * `O_NONBLOCK` keeps a FIFO a command left behind from hanging the server.
 */
async function readWorkspaceFile(
  call: ToolCall,
  parsed: z.infer<typeof readFileArgumentsSchema>,
  workspaceRoot: string,
): Promise<ToolResult> {
  const { handle, stats } = await openWorkspaceFile(workspaceRoot, parsed.path);
  try {
    const limit = Math.min(parsed.limit ?? MAX_FILE_CHARS, MAX_FILE_CHARS);
    const { text, truncated } = await readCharacters(handle, parsed.offset, limit);
    return {
      callId: call.callId,
      success: true,
      output: text,
      metadata: {
        path: parsed.path,
        offset: parsed.offset,
        chars: text.length,
        truncated,
        ...(truncated ? { nextOffset: parsed.offset + text.length } : {}),
        fileBytes: stats.size,
      },
    };
  } finally {
    await handle.close();
  }
}

async function readCharacters(
  handle: FileHandle,
  offset: number,
  limit: number,
): Promise<{ text: string; truncated: boolean }> {
  const decoder = new TextDecoder('utf-8');
  let toSkip = offset;
  let text = '';
  for (;;) {
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(READ_CHUNK_BYTES), 0, READ_CHUNK_BYTES);
    let chunk =
      bytesRead === 0 ? decoder.decode() : decoder.decode(buffer.subarray(0, bytesRead), { stream: true });
    if (toSkip > 0) {
      const skipped = Math.min(toSkip, chunk.length);
      chunk = chunk.slice(skipped);
      toSkip -= skipped;
    }
    text += chunk;
    if (text.length > limit) return { text: text.slice(0, limit), truncated: true };
    if (bytesRead === 0) return { text, truncated: false };
  }
}

/**
 * Writes a text file of the workspace, creating its parent folders.
 *
 * The write happens on the host (no sandbox start per write), through {@link createWorkspaceFile}:
 * no symlink is ever followed by the kernel on the way. What it creates is then handed to the
 * sandbox's host user with `fchown` (see `handOverToSandbox`): when the server runs as root,
 * commands run as host uid 65534 and could not otherwise change or delete a file the model wrote.
 * New files are 0644 and folders 0755: owned by that user, they need nothing wider.
 */
async function writeWorkspaceFile(
  call: ToolCall,
  parsed: z.infer<typeof writeFileArgumentsSchema>,
  workspaceRoot: string,
): Promise<ToolResult> {
  const identity = sandboxHostIdentity();
  const handle = await createWorkspaceFile(workspaceRoot, parsed.path, identity);
  try {
    await handle.writeFile(parsed.content, 'utf8');
    if (identity !== undefined) await handle.chown(identity.uid, identity.gid);
  } finally {
    await handle.close();
  }
  const bytes = Buffer.byteLength(parsed.content, 'utf8');
  return {
    callId: call.callId,
    success: true,
    output: `Wrote ${bytes} bytes to ${parsed.path}`,
    metadata: { path: parsed.path, chars: parsed.content.length, bytes },
  };
}

/**
 * Why a `write_file` of `content` is refused by the workspace's disk quota, or undefined. Checked
 * before the write starts; the workspace is measured afresh, since no watchdog runs between calls.
 */
async function writeQuotaRefusal(
  workspaceRoot: string,
  content: string,
  totals: SandboxTotals,
): Promise<string | undefined> {
  return diskQuotaRefusal(workspaceRoot, totals.diskQuotaBytes, Buffer.byteLength(content, 'utf8'));
}

function failure(call: ToolCall, error: string): ToolResult {
  return { callId: call.callId, success: false, output: '', error, metadata: {} };
}

/**
 * One line for an unexpected failure: the sandbox area's own message (a refused path reads "Access
 * denied: path outside workspace"), or the system error without the host path it names.
 */
function describeFailure(error: unknown): string {
  if (error instanceof SandboxError) return error.message;
  const message = error instanceof Error ? error.message : String(error);
  // "ENOTDIR: not a directory, mkdir '/srv/…/workspace/a/b'": the part before the host path.
  return errorCode(error) === undefined ? message : (message.split(', ')[0] ?? message);
}

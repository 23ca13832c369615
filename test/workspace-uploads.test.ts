import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { inspectArchive, unpackArchive, UnsafeArchiveError } from '../sandbox/archive-unpack';
import { SANDBOX_USER_ID } from '../sandbox/bubblewrap';
import { SandboxServer } from '../sandbox/sandbox-server';
import { createTarGzip, readTarEntries, type TarEntry } from '../sandbox/tar-archive';
import type { ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';

/**
 * The workspace routes of a real sandbox server over HTTP, with real bubblewrap for the commands:
 * uploads checked whole before they are kept, hostile archives refused with nothing written
 * outside, prepare exactly once, info, archives that round-trip, and diffs by file and by git
 * run inside the sandbox.
 */

const TOKEN = 'workspace-uploads-token';
const WORKSPACE_LIMIT_BYTES = 10 * 1024 * 1024;
const UPLOAD_LIMIT_BYTES = 4 * 1024 * 1024;
const PULL_LIMIT_BYTES = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

let base: string;
let root: string;
let canary: string;
let server: SandboxServer;
let baseUrl: string;

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function put(data: Buffer, digest = sha256(data)) {
  const response = await request(`${baseUrl}/uploads/${digest}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/gzip' },
    body: data,
  });
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

async function post(route: string, body: unknown) {
  const response = await request(`${baseUrl}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

async function get(route: string, query: Record<string, string>) {
  const response = await request(`${baseUrl}${route}?${new URLSearchParams(query).toString()}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  return response;
}

async function getJson(route: string, query: Record<string, string>) {
  const response = await get(route, query);
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

async function bash(trajectoryId: string, command: string): Promise<ToolResult> {
  const { status, body } = await post('/execute', {
    callId: `call-${randomUUID()}`,
    trajectoryId,
    tool: 'bash',
    arguments: { command },
    timeoutS: 60,
  });
  assert.equal(status, 200);
  return body as unknown as ToolResult;
}

function file(name: string, data: string | Buffer, mode = 0o644): TarEntry {
  return { name, data: Buffer.from(data), mode, uid: 0, gid: 0, mtimeMs: Date.now() };
}

/** One raw ustar header block, for entries `createTarGzip` will not write. */
function rawHeader(fields: { name: string; type: string; size?: number; linkName?: string }): Buffer {
  const block = Buffer.alloc(512);
  block.write(fields.name, 0, 100, 'utf8');
  block.write('0000644\0', 100, 'ascii');
  block.write('0000000\0', 108, 'ascii');
  block.write('0000000\0', 116, 'ascii');
  block.write(`${(fields.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 'ascii');
  block.write(
    `${Math.floor(Date.now() / 1000)
      .toString(8)
      .padStart(11, '0')}\0`,
    136,
    'ascii',
  );
  block.write(fields.type, 156, 'ascii');
  if (fields.linkName !== undefined) block.write(fields.linkName, 157, 100, 'utf8');
  block.write('ustar\0', 257, 'ascii');
  block.write('00', 263, 'ascii');
  block.fill(0x20, 148, 156);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  block.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

/** A header and its data padded to whole blocks. */
function rawEntry(
  fields: { name: string; type: string; linkName?: string },
  data: Buffer = Buffer.alloc(0),
): Buffer {
  const padding = (512 - (data.length % 512)) % 512;
  return Buffer.concat([rawHeader({ ...fields, size: data.length }), data, Buffer.alloc(padding)]);
}

function paxData(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + String(Buffer.byteLength(body)).length;
  if (String(length).length !== String(Buffer.byteLength(body)).length) length += 1;
  return Buffer.from(`${length}${body}`);
}

function rawArchive(...entries: Buffer[]): Buffer {
  return gzipSync(Buffer.concat([...entries, Buffer.alloc(1024)]));
}

/** Every path under `folder`, with its kind, owner and mode, sorted: what a test compares trees by. */
async function tree(folder: string, prefix = ''): Promise<string[]> {
  const lines: string[] = [];
  for (const name of (await readdir(folder)).sort()) {
    const full = path.join(folder, name);
    const stats = await lstat(full);
    const relative = `${prefix}${name}`;
    if (stats.isSymbolicLink()) lines.push(`${relative} -> ${await readlink(full)}`);
    else if (stats.isDirectory()) {
      lines.push(`${relative}/`);
      lines.push(...(await tree(full, `${relative}/`)));
    } else lines.push(`${relative} ${(stats.mode & 0o777).toString(8)} ${sha256(await readFile(full))}`);
  }
  return lines;
}

function trajectoryFolder(trajectoryId: string): string {
  return path.join(root, 'trajectories', trajectoryId);
}

function workspaceOf(trajectoryId: string): string {
  return path.join(trajectoryFolder(trajectoryId), 'workspace');
}

async function exists(location: string): Promise<boolean> {
  return lstat(location).then(
    () => true,
    () => false,
  );
}

describe('workspace uploads, prepare, info, archive and diff', () => {
  before(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'agents-workspace-uploads-'));
    root = path.join(base, 'root');
    canary = path.join(base, 'canary');
    await mkdir(canary);
    server = new SandboxServer({
      root,
      token: TOKEN,
      lanes: 4,
      runTool: runSandboxTool,
      uploadLimitBytes: UPLOAD_LIMIT_BYTES,
      pullLimitBytes: PULL_LIMIT_BYTES,
      workspaceLimitBytes: WORKSPACE_LIMIT_BYTES,
    });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
  });

  after(async () => {
    await server.close();
    await rm(base, { recursive: true, force: true });
  });

  describe('refuses each hostile upload with its reason and writes nothing outside', () => {
    const outside = path.join(os.tmpdir(), `agents-upload-target-${randomUUID()}`);

    /** Uploads, expects the refusal, and checks nothing was kept nor written outside. */
    async function refused(archive: Buffer, status: number, error: string | RegExp): Promise<void> {
      const answer = await put(archive);
      assert.equal(answer.status, status, JSON.stringify(answer.body));
      if (typeof error === 'string') assert.equal(answer.body.error, error);
      else assert.match(String(answer.body.error), error);
      assert.deepEqual(await readdir(canary), [], 'something was written next to the sandbox root');
      assert.equal(await exists(outside), false, `${outside} was written`);
      const kept = (await readdir(path.join(root, 'uploads'))).filter((name) => !name.endsWith('.json'));
      assert.ok(!kept.includes(`${sha256(archive)}.tar.gz`), 'a refused upload was kept');
      assert.deepEqual(
        kept.filter((name) => name.startsWith('.incoming-')),
        [],
        'a temporary upload was left behind',
      );
    }

    it('refuses a ../ name', async () => {
      await refused(
        await createTarGzip([file('ok.txt', 'ok'), file('../canary/evil', 'x')]),
        400,
        'Unsafe archive: ../canary/evil: a ".." in the name',
      );
    });

    it('refuses a ../ name hidden in a PAX path', async () => {
      const pax = paxData('path', '../../canary/evil');
      await refused(
        rawArchive(
          rawEntry({ name: 'PaxHeader', type: 'x' }, pax),
          rawEntry({ name: 'innocent', type: '0' }, Buffer.from('x')),
        ),
        400,
        'Unsafe archive: ../../canary/evil: a ".." in the name',
      );
    });

    it('refuses a ../ name hidden in a GNU long name', async () => {
      const long = Buffer.from('../../canary/evil\0');
      await refused(
        rawArchive(
          rawEntry({ name: '././@LongLink', type: 'L' }, long),
          rawEntry({ name: 'innocent', type: '0' }, Buffer.from('x')),
        ),
        400,
        'Unsafe archive: ../../canary/evil: a ".." in the name',
      );
    });

    it('refuses an absolute name', async () => {
      await refused(
        await createTarGzip([file(outside, 'x')]),
        400,
        `Unsafe archive: ${outside}: an absolute name`,
      );
    });

    it('refuses a symlink to an absolute path and a file written through it', async () => {
      await refused(
        await createTarGzip([
          { type: 'symlink', name: 'out', linkTarget: path.dirname(outside), uid: 0, gid: 0, mtimeMs: 0 },
          file(`out/${path.basename(outside)}`, 'x'),
        ]),
        400,
        `Unsafe archive: out: a symlink to the absolute path "${path.dirname(outside)}"`,
      );
    });

    it('refuses a relative symlink climbing out with ../..', async () => {
      await refused(
        await createTarGzip([
          { type: 'symlink', name: 'sub/up', linkTarget: '../../canary', uid: 0, gid: 0, mtimeMs: 0 },
          file('sub/up/evil', 'x'),
        ]),
        400,
        'Unsafe archive: sub/up: a symlink leaving the folder: "../../canary"',
      );
    });

    it('refuses a symlink that climbs after a name, which only the kernel could resolve', async () => {
      await refused(
        await createTarGzip([
          { type: 'symlink', name: 'sub/self', linkTarget: '..', uid: 0, gid: 0, mtimeMs: 0 },
          { type: 'symlink', name: 'sub/escape', linkTarget: 'self/../..', uid: 0, gid: 0, mtimeMs: 0 },
        ]),
        400,
        'Unsafe archive: sub/escape: a symlink target with ".." after a name: "self/../.."',
      );
    });

    it('refuses a later entry written through a symlink of the same archive', async () => {
      await refused(
        await createTarGzip([
          { type: 'directory', name: 'real', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0 },
          { type: 'symlink', name: 'alias', linkTarget: 'real', uid: 0, gid: 0, mtimeMs: 0 },
          file('alias/file', 'x'),
        ]),
        400,
        'Unsafe archive: alias/file: an entry through the symlink "alias"',
      );
    });

    it('refuses a hard link', async () => {
      await refused(
        rawArchive(rawEntry({ name: 'passwd', type: '1', linkName: '/etc/passwd' })),
        400,
        'Unsafe archive: passwd: a hard link',
      );
    });

    it('refuses character and block devices and FIFOs', async () => {
      await refused(
        rawArchive(rawEntry({ name: 'null', type: '3' })),
        400,
        'Unsafe archive: null: a character device',
      );
      await refused(
        rawArchive(rawEntry({ name: 'disk', type: '4' })),
        400,
        'Unsafe archive: disk: a block device',
      );
      await refused(rawArchive(rawEntry({ name: 'pipe', type: '6' })), 400, 'Unsafe archive: pipe: a FIFO');
    });

    it('refuses a GNU sparse file', async () => {
      await refused(
        rawArchive(rawEntry({ name: 'holes', type: 'S' }, Buffer.alloc(10))),
        400,
        'Unsafe archive: holes: a sparse file',
      );
    });

    it('refuses a 5 GB file on its header, before reading its data, in an archive cut after a few blocks', async () => {
      const declared = 5_000_000_000;
      const cut = gzipSync(
        Buffer.concat([rawHeader({ name: 'huge.bin', type: '0', size: declared }), Buffer.alloc(3 * 512, 1)]),
      );
      const started = Date.now();
      await refused(
        cut,
        413,
        `Unpacked size ${declared} bytes over the workspace limit of ${WORKSPACE_LIMIT_BYTES} bytes`,
      );
      assert.ok(Date.now() - started < 10_000);
    });

    it('stops a gzip bomb at the workspace limit', async () => {
      const megabyte = Buffer.alloc(1024 * 1024);
      const bomb = await createTarGzip(
        Array.from({ length: 40 }, (_, index) => file(`zeros-${index}`, megabyte)),
      );
      assert.ok(bomb.length < UPLOAD_LIMIT_BYTES, 'the bomb is small compressed');
      await refused(
        bomb,
        413,
        `Unpacked size ${11 * 1024 * 1024} bytes over the workspace limit of ${WORKSPACE_LIMIT_BYTES} bytes`,
      );
    });

    it('refuses an archive of too many entries', async () => {
      const header = rawEntry({ name: 'x', type: '5' });
      const entries = Array.from({ length: 100_001 }, (_, index) => {
        const block = Buffer.from(header);
        return rawHeaderNamed(block, `d${index}/`);
      });
      await refused(rawArchive(...entries), 413, 'Archive over 100000 entries');
    });

    it('refuses a duplicate entry', async () => {
      await refused(
        await createTarGzip([file('twice.txt', 'first'), file('twice.txt', 'second')]),
        400,
        'Unsafe archive: twice.txt: a duplicate entry',
      );
    });

    it('refuses an upload over its limit and one whose body does not match its digest', async () => {
      const big = randomBytes(UPLOAD_LIMIT_BYTES + 1024);
      const over = await put(big);
      assert.equal(over.status, 413);
      assert.equal(over.body.error, `Upload over ${UPLOAD_LIMIT_BYTES} bytes`);
      const archive = await createTarGzip([file('a.txt', 'a')]);
      const claimed = sha256(Buffer.from('something else'));
      const mismatch = await put(archive, claimed);
      assert.equal(mismatch.status, 400);
      assert.equal(
        mismatch.body.error,
        `Upload digest mismatch: the body hashes to ${sha256(archive)}, not ${claimed}`,
      );
      await refused(Buffer.from('not a gzip at all'), 400, /^Invalid archive: not a gzip stream/);
    });
  });

  it('prepares a workspace from a good upload once, owned by the sandbox user, and cleans a stale staging folder', async () => {
    const archive = await createTarGzip([
      { type: 'directory', name: 'src', mode: 0o755, uid: 0, gid: 0, mtimeMs: 0 },
      file('src/main.sh', '#!/bin/sh\necho hello\n', 0o755),
      file('src/setuid', 'x', 0o4755),
      file('docs/readme.md', 'line one\nline two\n'),
      { type: 'symlink', name: 'readme', linkTarget: 'docs/readme.md', uid: 0, gid: 0, mtimeMs: 0 },
    ]);
    const digest = sha256(archive);
    const uploaded = await put(archive);
    assert.equal(uploaded.status, 200, JSON.stringify(uploaded.body));
    assert.deepEqual(uploaded.body, {
      digest,
      archiveBytes: archive.length,
      files: 3,
      folders: 2,
      symlinks: 1,
      unpackedBytes: 21 + 1 + 18,
    });
    // Idempotent: the body of a repeated upload is not even looked at.
    const again = await put(Buffer.from('ignored'), digest);
    assert.deepEqual(again, uploaded);
    const download = await get(`/uploads/${digest}`, {});
    assert.equal(download.headers['content-type'], 'application/gzip');
    assert.equal(sha256(Buffer.from(await download.body.arrayBuffer())), digest);
    const unknownDigest = sha256(randomBytes(8));
    const missing = await getJson(`/uploads/${unknownDigest}`, {});
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error, `No upload ${unknownDigest} on this server`);

    const trajectoryId = `agent-good-${randomUUID()}`;
    // What a crash in the middle of an earlier prepare left behind.
    await mkdir(path.join(trajectoryFolder(trajectoryId), '.staging-crashed', 'half'), { recursive: true });
    await writeFile(path.join(trajectoryFolder(trajectoryId), '.staging-crashed', 'half', 'file'), 'partial');
    const prepared = await post('/workspaces/prepare', { trajectoryId, digest });
    assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
    assert.deepEqual(prepared.body, { trajectoryId, digest, files: 3, bytes: 40, prepared: 'now' });
    assert.deepEqual(
      (await readdir(trajectoryFolder(trajectoryId))).filter((name) => name.startsWith('.staging-')),
      [],
    );
    const workspace = workspaceOf(trajectoryId);
    assert.deepEqual(await tree(workspace), [
      'docs/',
      `docs/readme.md 644 ${sha256(Buffer.from('line one\nline two\n'))}`,
      'readme -> docs/readme.md',
      'src/',
      `src/main.sh 755 ${sha256(Buffer.from('#!/bin/sh\necho hello\n'))}`,
      `src/setuid 755 ${sha256(Buffer.from('x'))}`,
    ]);
    if (isRoot) {
      for (const entry of ['', 'docs', 'docs/readme.md', 'readme', 'src', 'src/main.sh']) {
        assert.equal(
          (await lstat(path.join(workspace, entry))).uid,
          SANDBOX_USER_ID,
          `${entry} is not the sandbox's`,
        );
      }
    }
    const run = await bash(trajectoryId, './src/main.sh && cat readme && echo changed > docs/readme.md');
    assert.equal(run.success, true, run.error);
    assert.equal(run.output, 'hello\nline one\nline two\n');

    const twice = await post('/workspaces/prepare', { trajectoryId, digest });
    assert.equal(twice.status, 200);
    assert.equal(twice.body.prepared, 'before');
    assert.equal(
      await readFile(path.join(workspace, 'docs/readme.md'), 'utf8'),
      'changed\n',
      'prepared twice',
    );

    const other = await createTarGzip([file('other.txt', 'other')]);
    assert.equal((await put(other)).status, 200);
    const conflict = await post('/workspaces/prepare', { trajectoryId, digest: sha256(other) });
    assert.equal(conflict.status, 409);
    assert.equal(
      conflict.body.error,
      `The workspace of ${trajectoryId} already holds files not from upload ${sha256(other)}`,
    );

    const busy = `agent-busy-${randomUUID()}`;
    assert.equal((await bash(busy, 'echo mine > mine.txt')).success, true);
    const occupied = await post('/workspaces/prepare', { trajectoryId: busy, digest });
    assert.equal(occupied.status, 409);
    assert.equal(
      occupied.body.error,
      `The workspace of ${busy} already holds files not from upload ${digest}`,
    );

    const unknown = await post('/workspaces/prepare', {
      trajectoryId: `agent-none-${randomUUID()}`,
      digest: unknownDigest,
    });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error, `No upload ${unknownDigest} on this server`);
  });

  it('finishes a prepare that crashed after its rename onto the workspace instead of refusing it', async () => {
    const archive = await createTarGzip([file('crash.txt', 'crash\n')]);
    assert.equal((await put(archive)).status, 200);
    const trajectoryId = `agent-crash-${randomUUID()}`;
    assert.equal((await post('/workspaces/prepare', { trajectoryId, digest: sha256(archive) })).status, 200);
    // The state a crash between the two renames leaves: the workspace in place, its origin still pending.
    await rename(
      path.join(trajectoryFolder(trajectoryId), 'origin.json'),
      path.join(trajectoryFolder(trajectoryId), 'origin.pending.json'),
    );
    const retried = await post('/workspaces/prepare', { trajectoryId, digest: sha256(archive) });
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body.prepared, 'now');
    assert.equal(await exists(path.join(trajectoryFolder(trajectoryId), 'origin.json')), true);
    assert.equal(await readFile(path.join(workspaceOf(trajectoryId), 'crash.txt'), 'utf8'), 'crash\n');
    const info = await getJson('/workspaces/info', { trajectoryId });
    assert.equal((info.body.origin as Record<string, unknown>).digest, sha256(archive));
  });

  it('reports info, archives a workspace that round-trips without a link out, and refuses one over the pull limit', async () => {
    const archive = await createTarGzip([file('a.txt', 'alpha\n'), file('deep/b.txt', 'beta\n')]);
    assert.equal((await put(archive)).status, 200);
    const trajectoryId = `agent-archive-${randomUUID()}`;
    assert.equal((await post('/workspaces/prepare', { trajectoryId, digest: sha256(archive) })).status, 200);
    const made = await bash(
      trajectoryId,
      'mkdir -p empty tools && printf x > tools/run && chmod 755 tools/run && ln -s /etc/passwd passwd && ln -s ../a.txt deep/up && ln -s ../../.. deep/far',
    );
    assert.equal(made.success, true, made.error);

    const info = await getJson('/workspaces/info', { trajectoryId });
    assert.equal(info.status, 200);
    assert.equal(info.body.files, 3);
    assert.equal(info.body.bytes, 6 + 5 + 1);
    const origin = info.body.origin as Record<string, unknown>;
    assert.equal(origin.digest, sha256(archive));
    assert.equal(origin.files, 2);
    assert.equal(origin.bytes, 11);
    assert.ok(!('manifest' in origin));
    const noSlot = await getJson('/workspaces/info', { trajectoryId: 'agent-never-seen' });
    assert.equal(noSlot.status, 404);
    assert.equal(noSlot.body.error, 'No active slot for trajectory agent-never-seen');

    const response = await get('/workspaces/archive', { trajectoryId, path: '.' });
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['content-type'], 'application/gzip');
    const pulled = await mkdtemp(path.join(base, 'pulled-'));
    const summary = await unpackArchive(response.body as AsyncIterable<Buffer>, pulled, {
      maxUnpackedBytes: PULL_LIMIT_BYTES,
      maxEntries: 1000,
    });
    assert.deepEqual(summary.skipped, []);
    const expected = (await tree(workspaceOf(trajectoryId))).filter(
      (line) => !line.startsWith('passwd ->') && !line.startsWith('deep/far ->'),
    );
    assert.deepEqual(await tree(pulled), expected);
    assert.ok(expected.includes('deep/up -> ../a.txt'));

    const sub = await get('/workspaces/archive', { trajectoryId, path: 'deep' });
    const names: string[] = [];
    for await (const entry of readTarEntries(sub.body as AsyncIterable<Buffer>)) names.push(entry.path);
    assert.deepEqual(names, ['b.txt']);

    assert.equal((await bash(trajectoryId, 'head -c 2000000 /dev/zero > big.bin')).success, true);
    const tooLarge = await getJson('/workspaces/archive', { trajectoryId });
    assert.equal(tooLarge.status, 413);
    assert.equal(
      tooLarge.body.error,
      `Archive over ${PULL_LIMIT_BYTES} bytes: ${2_000_000 + 12} bytes in 4 files`,
    );
  });

  it('unpacks with skipUnsafe by leaving out and listing a link to /etc/passwd', async () => {
    const archive = await createTarGzip([
      file('kept.txt', 'kept'),
      { type: 'symlink', name: 'passwd', linkTarget: '/etc/passwd', uid: 0, gid: 0, mtimeMs: 0 },
      file('../canary/evil', 'x'),
    ]);
    const destination = await mkdtemp(path.join(base, 'skip-'));
    const summary = await unpackArchive(
      chunksOf(archive),
      destination,
      { maxUnpackedBytes: 1000, maxEntries: 10 },
      { skipUnsafe: true },
    );
    assert.deepEqual(summary.skipped, [
      { path: 'passwd', reason: 'a symlink to the absolute path "/etc/passwd"' },
      { path: '../canary/evil', reason: 'a ".." in the name' },
    ]);
    assert.equal(summary.files, 1);
    assert.deepEqual(await readdir(destination), ['kept.txt']);
    assert.deepEqual(await readdir(canary), []);
    await assert.rejects(
      inspectArchive(chunksOf(archive), { maxUnpackedBytes: 1000, maxEntries: 10 }),
      UnsafeArchiveError,
    );
  });

  it('diffs a workspace file by file against its upload, and against nothing without one', async () => {
    const archive = await createTarGzip([
      file('kept.txt', 'same\n'),
      file('story.txt', 'one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n'),
      file('gone.txt', 'bye\n'),
      file('image.bin', Buffer.from([0, 1, 2, 3])),
    ]);
    assert.equal((await put(archive)).status, 200);
    const trajectoryId = `agent-files-diff-${randomUUID()}`;
    assert.equal((await post('/workspaces/prepare', { trajectoryId, digest: sha256(archive) })).status, 200);
    const changed = await bash(
      trajectoryId,
      "sed -i 's/^two$/TWO/' story.txt && rm gone.txt && echo new > added.txt && printf '\\0\\9' > image.bin",
    );
    assert.equal(changed.success, true, changed.error);
    const diff = await getJson('/workspaces/diff', { trajectoryId });
    assert.equal(diff.status, 200, JSON.stringify(diff.body));
    assert.equal(diff.body.kind, 'files');
    assert.equal(diff.body.base, `sha256:${sha256(archive)}`);
    assert.deepEqual(diff.body.changes, [
      { path: 'added.txt', change: 'added' },
      { path: 'gone.txt', change: 'deleted' },
      { path: 'image.bin', change: 'modified' },
      { path: 'story.txt', change: 'modified' },
    ]);
    assert.equal(diff.body.truncated, false);
    assert.equal(
      diff.body.text,
      [
        '--- /dev/null',
        '+++ b/added.txt',
        '@@ -0,0 +1,1 @@',
        '+new',
        '--- a/gone.txt',
        '+++ /dev/null',
        '@@ -1,1 +0,0 @@',
        '-bye',
        'Binary or large files a/image.bin and b/image.bin differ',
        '--- a/story.txt',
        '+++ b/story.txt',
        '@@ -1,5 +1,5 @@',
        ' one',
        '-two',
        '+TWO',
        ' three',
        ' four',
        ' five',
        '',
      ].join('\n'),
    );

    const bare = `agent-bare-${randomUUID()}`;
    assert.equal((await bash(bare, 'echo hi > hello.txt')).success, true);
    const fromNothing = await getJson('/workspaces/diff', { trajectoryId: bare });
    assert.equal(fromNothing.body.base, '');
    assert.deepEqual(fromNothing.body.changes, [{ path: 'hello.txt', change: 'added' }]);
  });

  it('reads long names and link targets as GNU tar, PAX and this server write them', async () => {
    const source = await mkdtemp(path.join(base, 'long-names-'));
    const longFolder = 'f'.repeat(120);
    const longName = `${longFolder}/${'n'.repeat(150)}.txt`;
    await mkdir(path.join(source, longFolder));
    await writeFile(path.join(source, longName), 'long\n');
    const longTarget = `${'./'.repeat(60)}${longName}`;
    await symlink(longTarget, path.join(source, 'link'));
    for (const format of ['gnu', 'pax']) {
      const archive = execFileSync('tar', [`--format=${format}`, '-czf', '-', '-C', source, '.']);
      const entries: Array<[string, string, string]> = [];
      for await (const entry of readTarEntries(chunksOf(archive)))
        entries.push([entry.path, entry.type, entry.linkTarget]);
      assert.deepEqual(
        entries.sort(),
        [
          ['./', 'directory', ''],
          [`./${longFolder}/`, 'directory', ''],
          [`./${longName}`, 'file', ''],
          ['./link', 'symlink', longTarget],
        ].sort(),
        format,
      );
    }
    const ours = await createTarGzip([
      file(longName, 'long\n'),
      { type: 'symlink', name: 'link', linkTarget: longTarget, uid: 0, gid: 0, mtimeMs: 0 },
    ]);
    const listed = execFileSync('tar', ['-tvzf', '-'], { input: ours, encoding: 'utf8' });
    assert.match(listed, new RegExp(`${longName}\\n`));
    assert.match(listed, new RegExp(`link -> ${longTarget.replaceAll('.', '\\.')}\\n`));
  });

  describe('a git workspace', () => {
    let digest: string;
    let commit: string;

    before(async () => {
      const repository = await mkdtemp(path.join(base, 'repository-'));
      const git = (...args: string[]) =>
        execFileSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', ...args], {
          cwd: repository,
          encoding: 'utf8',
        }).trim();
      git('init', '-q', '-b', 'main');
      await writeFile(path.join(repository, 'app.txt'), 'version 1\n');
      git('add', '.');
      git('commit', '-q', '-m', 'initial');
      commit = git('rev-parse', 'HEAD');
      // The system tar, as a user's machine would make the upload.
      const archive = execFileSync('tar', ['-czf', '-', '-C', repository, '.']);
      digest = sha256(archive);
      assert.equal((await put(archive)).status, 200);
    });

    it('shows a commit made in the sandbox in the log and the diff, made by the agent identity', async () => {
      const trajectoryId = `agent-git-${randomUUID()}`;
      const prepared = await post('/workspaces/prepare', { trajectoryId, digest, commit });
      assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
      assert.equal(prepared.body.commit, commit);
      const work = await bash(
        trajectoryId,
        "echo 'version 2' > app.txt && git commit -qam 'agent change' && echo extra > notes.txt && git log -1 --format='%an <%ae>'",
      );
      assert.equal(work.success, true, work.output);
      assert.equal(work.output.trim(), 'durable-agents <agent@durable-agents.invalid>');
      const diff = await getJson('/workspaces/diff', { trajectoryId });
      assert.equal(diff.status, 200, JSON.stringify(diff.body));
      assert.equal(diff.body.kind, 'git');
      assert.equal(diff.body.base, commit);
      assert.deepEqual(diff.body.changes, [
        { path: 'app.txt', change: 'modified' },
        { path: 'notes.txt', change: 'added' },
      ]);
      const text = String(diff.body.text);
      assert.match(
        text,
        new RegExp(`^\\$ git log --oneline ${commit}\\.\\.HEAD\\n[0-9a-f]+ agent change\\n`),
      );
      assert.match(text, /\$ git status --short\n\?\? notes\.txt\n/);
      assert.match(text, /-version 1\n\+version 2\n/);
      assert.equal(diff.body.truncated, false);
    });

    it('runs a hostile .git/config in the sandbox, never on the host', async () => {
      const trajectoryId = `agent-git-hostile-${randomUUID()}`;
      assert.equal((await post('/workspaces/prepare', { trajectoryId, digest, commit })).status, 200);
      const markers = ['pager', 'external', 'fsmonitor', 'filter'].map((kind) =>
        path.join(os.tmpdir(), `agents-git-${kind}-${randomUUID()}`),
      );
      const configured = await bash(
        trajectoryId,
        [
          `git config core.pager 'touch ${markers[0]}; cat'`,
          `git config diff.external '/bin/sh -c "touch ${markers[1]}"'`,
          `git config core.fsmonitor 'touch ${markers[2]}; true'`,
          // Not turned off by any option: git runs a clean filter on the file it compares.
          `git config filter.evil.clean 'touch ${markers[3]}; touch /workspace/.filter-ran; cat'`,
          "echo 'app.txt filter=evil' > .gitattributes",
          'echo changed > app.txt',
        ].join(' && '),
      );
      assert.equal(configured.success, true, configured.output);
      const diff = await getJson('/workspaces/diff', { trajectoryId });
      assert.equal(diff.status, 200, JSON.stringify(diff.body));
      assert.match(String(diff.body.text), /-version 1\n\+changed\n/);
      for (const marker of markers)
        assert.equal(await exists(marker), false, `${marker} was written on the host`);
      assert.ok((await stat(workspaceOf(trajectoryId))).isDirectory());
    });
  });
});

/** A buffer as the stream of chunks the archive functions read. */
function chunksOf(data: Buffer): AsyncIterable<Buffer> {
  return Readable.from([data]) as AsyncIterable<Buffer>;
}

/** A copy of a raw header block with another name (and its checksum redone). */
function rawHeaderNamed(block: Buffer, name: string): Buffer {
  block.fill(0, 0, 100);
  block.write(name, 0, 100, 'utf8');
  block.fill(0x20, 148, 156);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  block.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

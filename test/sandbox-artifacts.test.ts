import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  archiveArtifacts,
  ArtifactTooLargeError,
  listArtifacts,
  MAX_ARTIFACT_BYTES,
  readArtifact,
} from '../sandbox/artifacts';
import { ACCESS_DENIED_MESSAGE } from '../sandbox/workspace-paths';

let workspace: string;

describe('workspace artifacts', () => {
  before(async () => {
    workspace = await mkdtemp(path.join(os.tmpdir(), 'agents-artifacts-'));
    await mkdir(path.join(workspace, 'report', 'figures'), { recursive: true });
    await writeFile(path.join(workspace, 'report', 'summary.md'), '# Findings\n');
    await writeFile(
      path.join(workspace, 'report', 'figures', 'plot.png'),
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]),
    );
    await symlink('/etc/passwd', path.join(workspace, 'report', 'escape'));
  });

  after(async () => {
    await rm(workspace, { recursive: true, force: true });
  });

  it('lists a folder, recursively when asked, reporting symlinks without following them', async () => {
    const flat = await listArtifacts(workspace, 'report', false);
    assert.deepEqual(
      flat.entries.map((entry) => [entry.path, entry.type]),
      [
        ['report/escape', 'symlink'],
        ['report/figures', 'directory'],
        ['report/summary.md', 'file'],
      ],
    );
    const deep = await listArtifacts(workspace, '/workspace/report', true);
    assert.ok(deep.entries.some((entry) => entry.path === 'report/figures/plot.png' && entry.size === 7));
    assert.equal(deep.truncated, false);
  });

  it('reads text as text and binary as base64, with size, mime type and hash', async () => {
    const text = await readArtifact(workspace, 'report/summary.md', { sha256: true });
    assert.deepEqual(
      { ...text },
      {
        path: 'report/summary.md',
        encoding: 'text',
        content: '# Findings\n',
        truncated: false,
        bytes: 11,
        fileSize: 11,
        mime: 'text/markdown',
        sha256: createHash('sha256').update('# Findings\n').digest('hex'),
      },
    );
    const binary = await readArtifact(workspace, 'report/figures/plot.png');
    assert.equal(binary.encoding, 'base64');
    assert.deepEqual(Buffer.from(binary.content, 'base64'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2]));
    assert.equal(binary.mime, 'image/png');
  });

  it('refuses paths outside the workspace, through .. or a symlink', async () => {
    await assert.rejects(readArtifact(workspace, '../../etc/passwd'), { message: ACCESS_DENIED_MESSAGE });
    await assert.rejects(readArtifact(workspace, 'report/escape'), { message: ACCESS_DENIED_MESSAGE });
    await assert.rejects(listArtifacts(workspace, '/etc', false), { message: ACCESS_DENIED_MESSAGE });
  });

  it('archives the regular files of a folder as tar.gz, leaving symlinks out', async () => {
    const archive = await archiveArtifacts(workspace, 'report');
    const listing = path.join(workspace, '..', `${path.basename(workspace)}.tar.gz`);
    await writeFile(listing, archive);
    try {
      const { stdout } = await promisify(execFile)('tar', ['--list', '--gzip', '--file', listing]);
      assert.deepEqual(stdout.trim().split('\n').sort(), ['report/figures/plot.png', 'report/summary.md']);
    } finally {
      await rm(listing, { force: true });
    }
  });

  it('refuses an archive over the size limit', async () => {
    await writeFile(path.join(workspace, 'big.bin'), Buffer.alloc(MAX_ARTIFACT_BYTES + 1));
    try {
      await assert.rejects(archiveArtifacts(workspace, '.'), ArtifactTooLargeError);
    } finally {
      await rm(path.join(workspace, 'big.bin'));
    }
  });
});

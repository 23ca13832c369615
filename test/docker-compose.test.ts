import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const ROOT = path.resolve(__dirname, '..');

interface ComposeService {
  image?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  deploy?: { replicas?: number };
}

/**
 * No Docker engine runs on this project's machines, so the Compose file is validated with
 * compose-go, the library behind `docker compose config` (tools/compose-config, a Go program).
 */
describe('docker-compose.yml', () => {
  it('is a valid Compose project with Temporal on PostgreSQL, the Web UI, setup, a sandbox server and workers', async () => {
    const { stdout } = await promisify(execFile)('go', ['run', '.', path.join(ROOT, 'docker-compose.yml')], {
      cwd: path.join(ROOT, 'tools', 'compose-config'),
      env: { ...process.env, AGENTS_SANDBOX_TOKEN: 'compose-test-token' },
      maxBuffer: 10 * 1024 * 1024,
    });
    const project = JSON.parse(stdout) as { services: Record<string, ComposeService> };
    const { services } = project;
    assert.deepEqual(Object.keys(services).sort(), [
      'agents-setup',
      'postgresql',
      'sandbox',
      'temporal',
      'temporal-ui',
      'worker',
    ]);
    assert.equal(services.temporal?.environment?.DB, 'postgres12');
    assert.equal(services.temporal?.depends_on?.postgresql?.condition, 'service_healthy');
    assert.deepEqual(services.worker?.entrypoint, ['bin/agents']);
    assert.deepEqual(services.worker?.command, ['worker']);
    assert.equal(services.worker?.environment?.TEMPORAL_ADDRESS, 'temporal:7233');
    assert.equal(services.worker?.depends_on?.['agents-setup']?.condition, 'service_completed_successfully');
    assert.deepEqual(services['agents-setup']?.command, ['setup']);
    assert.deepEqual(services.sandbox?.command, ['sandbox', '--host', '0.0.0.0', '--port', '7300']);
    assert.equal(services.worker?.environment?.AGENTS_SANDBOX_URLS, 'http://sandbox:7300');
    assert.equal(services.worker?.environment?.AGENTS_SANDBOX_TOKEN, 'compose-test-token');
    assert.equal(services['temporal-ui']?.environment?.TEMPORAL_ADDRESS, 'temporal:7233');
  });
});

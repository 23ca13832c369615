import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLUSTER_SERVER_VERSION } from './helpers/temporal-cluster';

const ROOT = path.resolve(__dirname, '..');

interface ComposeService {
  image?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  deploy?: { replicas?: number };
  volumes?: unknown[];
}

/**
 * No Docker engine runs on this project's machines, so the Compose file is validated with
 * compose-go, the library behind `docker compose config` (tools/compose-config, a Go program).
 */
describe('docker-compose.yml', () => {
  it("is a valid Compose project: Temporal on PostgreSQL as separate services at the tests' server version, setup, the Web UI, two sandbox servers and workers", async () => {
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
      'sandbox-1',
      'sandbox-2',
      'temporal',
      'temporal-history',
      'temporal-matching',
      'temporal-namespace',
      'temporal-schema',
      'temporal-ui',
      'temporal-worker',
      'worker',
    ]);
    const version = CLUSTER_SERVER_VERSION.replace(/^v/, '');
    const servers = ['temporal', 'temporal-matching', 'temporal-history', 'temporal-worker'];
    for (const name of servers) {
      const service = services[name];
      assert.equal(service?.image, `temporalio/server:${version}`, name);
      assert.equal(service?.environment?.DB, 'postgres12', name);
      assert.equal(
        service?.depends_on?.['temporal-schema']?.condition,
        'service_completed_successfully',
        name,
      );
    }
    assert.deepEqual(
      servers.map((name) => services[name]?.environment?.TEMPORAL_SERVICES),
      ['frontend', 'matching', 'history', 'worker'],
    );
    assert.equal(services['temporal-history']?.deploy?.replicas, 2);
    assert.equal(services['temporal-schema']?.image, `temporalio/admin-tools:${version}`);
    assert.equal(services['temporal-schema']?.depends_on?.postgresql?.condition, 'service_healthy');
    assert.equal(
      services['agents-setup']?.depends_on?.['temporal-namespace']?.condition,
      'service_completed_successfully',
    );
    assert.ok(!JSON.stringify(project).includes('auto-setup'), 'no deprecated auto-setup image');
    assert.deepEqual(services.worker?.entrypoint, ['bin/agents']);
    assert.deepEqual(services.worker?.command, ['worker']);
    assert.equal(services.worker?.environment?.TEMPORAL_ADDRESS, 'temporal:7233');
    assert.equal(services.worker?.depends_on?.['agents-setup']?.condition, 'service_completed_successfully');
    assert.deepEqual(services['agents-setup']?.command, ['setup']);
    for (const name of ['sandbox-1', 'sandbox-2']) {
      assert.deepEqual(services[name]?.command, ['sandbox', '--host', '0.0.0.0', '--port', '7300'], name);
    }
    assert.notDeepEqual(services['sandbox-1']?.volumes, services['sandbox-2']?.volumes, 'a volume each');
    assert.equal(
      services.worker?.environment?.AGENTS_SANDBOX_URLS,
      'http://sandbox-1:7300,http://sandbox-2:7300',
    );
    assert.equal(services.worker?.environment?.AGENTS_SANDBOX_TOKEN, 'compose-test-token');
    assert.equal(services['temporal-ui']?.environment?.TEMPORAL_ADDRESS, 'temporal:7233');
  });
});

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, type CliResult } from './helpers/cli';

/**
 * What `agents` loads before it does anything: help, the version and usage errors load no command
 * and none of Temporal's packages, and no command that does not run a worker loads the worker. The
 * modules are read from the `agents` process itself, through a `--require` hook that writes the
 * files Node loaded when it exits, so a top-level import added back fails here, not in a benchmark.
 * These runs are from the sources (AGENTS_CLI_FROM_SOURCE=1), where each file is a module of its
 * own; the bundle users run keeps the same order of loading (see bin/run-cli.cjs), and is tested
 * at the end.
 */
/**
 * Runs `body` with the address of a server that accepts connections and answers nothing: a command
 * that reaches it has got as far as connecting, and gives up within its deadline.
 */
async function withMuteServer(body: (address: string) => Promise<void>): Promise<void> {
  const server: Server = createServer((socket) => socket.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const { port } = server.address() as AddressInfo;
    await body(`127.0.0.1:${port}`);
  } finally {
    server.close();
  }
}

describe('agents start-up', () => {
  let folder: string;
  let hook: string;
  let bundleCache: string;
  /** The environment of a run from the bundle, kept in this test's own cache folder. */
  let fromBundle: NodeJS.ProcessEnv;

  before(async () => {
    folder = await mkdtemp(path.join(os.tmpdir(), 'agents-startup-'));
    hook = path.join(folder, 'loaded-modules.cjs');
    await writeFile(
      hook,
      "process.on('exit', () => require('node:fs').writeFileSync(process.env.LOADED_MODULES_FILE, Object.keys(require.cache).join('\\n')));\n",
    );
    bundleCache = path.join(folder, 'bundle');
    fromBundle = { AGENTS_CLI_FROM_SOURCE: '', AGENTS_CLI_CACHE: bundleCache };
  });
  after(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  let runs = 0;
  /** Runs `agents …` with the hook; its result and every file its process loaded, root-relative for the project's own. */
  async function loadedBy(
    args: string[],
    environment: NodeJS.ProcessEnv = {},
  ): Promise<{ result: CliResult; modules: string[] }> {
    runs += 1;
    const list = path.join(folder, `modules-${runs}.txt`);
    const result = await runCli(args, {
      ...process.env,
      AGENTS_HOME: path.join(folder, 'home'),
      AGENTS_CLI_FROM_SOURCE: '1',
      ...environment,
      NODE_OPTIONS: `--require ${hook}`,
      LOADED_MODULES_FILE: list,
    });
    const root = path.resolve(__dirname, '..');
    const modules = (await readFile(list, 'utf8'))
      .split('\n')
      .map((file) => (file.startsWith(`${root}/`) ? file.slice(root.length + 1) : file));
    return { result, modules };
  }

  const temporalPackages = (modules: string[]) => modules.filter((file) => file.includes('/@temporalio/'));
  const workerModules = (modules: string[]) =>
    modules.filter(
      (file) => /\/@temporalio\/(worker|core-bridge)\//.test(file) || file.startsWith('worker/'),
    );
  const commandModules = (modules: string[]) =>
    modules.filter((file) => file.startsWith('client/commands/') && file !== 'client/commands/index.ts');

  for (const args of [['--version'], ['--help'], ['status', '--help'], ['nonsense'], ['status', '--nope']]) {
    it(`agents ${args.join(' ')} loads no command module, no zod and none of Temporal's packages`, async () => {
      const { result, modules } = await loadedBy(args);
      assert.notEqual(result.stdout + result.stderr, '', 'the command said something');
      assert.ok(modules.includes('client/cli.ts'), `the hook saw the CLI: ${modules.join(', ')}`);
      assert.deepEqual(commandModules(modules), []);
      assert.deepEqual(temporalPackages(modules), []);
      assert.deepEqual(
        modules.filter((file) => file.includes('/node_modules/zod/')),
        [],
      );
    });
  }

  it('agents templates loads its own command and no Temporal client or worker', async () => {
    const { result, modules } = await loadedBy(['templates']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(commandModules(modules), ['client/commands/templates.ts']);
    assert.deepEqual(
      temporalPackages(modules).filter((file) => /\/@temporalio\/(client|worker|core-bridge)\//.test(file)),
      [],
    );
  });

  it('agents status connects with the Temporal client and never loads the worker', async () => {
    await withMuteServer(async (address) => {
      const { result, modules } = await loadedBy(['status', 'someone'], { TEMPORAL_ADDRESS: address });
      assert.equal(result.code, 1);
      assert.match(result.stderr, /Cannot reach Temporal/);
      assert.ok(
        modules.some((file) => file.includes('/@temporalio/client/')),
        'the client was loaded',
      );
      assert.deepEqual(workerModules(modules), []);
    });
  });
  /** The bundle's manifest in the test's cache folder: which bundle is current, and what it was built from. */
  async function readManifest(): Promise<{ bundle: string; inputs: Array<[string, number, number]> }> {
    return JSON.parse(await readFile(path.join(bundleCache, 'manifest.json'), 'utf8')) as {
      bundle: string;
      inputs: Array<[string, number, number]>;
    };
  }

  it('builds the bundle on the first run, then runs it, answering as the sources do', async () => {
    const fromSource = await loadedBy(['--version']);
    const first = await loadedBy(['--version'], fromBundle);
    const { bundle } = await readManifest();
    const second = await loadedBy(['--version'], fromBundle);
    assert.equal(first.result.code, 0, first.result.stderr);
    assert.equal(first.result.stdout, fromSource.result.stdout);
    assert.equal(second.result.stdout, fromSource.result.stdout);
    assert.equal((await readManifest()).bundle, bundle, 'the second run reused the bundle');
    assert.ok(second.modules.includes(path.join(bundleCache, bundle)), 'the second run ran the bundle');
    assert.deepEqual(
      second.modules.filter((file) => file.endsWith('.ts')),
      [],
      'no TypeScript source was loaded',
    );
    const templates = await loadedBy(['templates'], fromBundle);
    assert.equal(templates.result.code, 0, templates.result.stderr);
    assert.equal(templates.result.stdout, (await loadedBy(['templates'])).result.stdout);
  });

  it('rebuilds the bundle before running when a file it was built from changed', async () => {
    await loadedBy(['--version'], fromBundle);
    const manifest = await readManifest();
    // As if client/cli.ts had been edited since: its recorded modification time no longer matches.
    const entry = manifest.inputs.find(([file]) => file === 'client/cli.ts');
    assert.ok(entry !== undefined, 'the manifest lists client/cli.ts');
    entry[1] = 0;
    await writeFile(path.join(bundleCache, 'manifest.json'), JSON.stringify(manifest));
    const { result, modules } = await loadedBy(['--version'], fromBundle);
    assert.equal(result.code, 0, result.stderr);
    const rebuilt = await readManifest();
    assert.notEqual(rebuilt.bundle, manifest.bundle);
    assert.ok(modules.includes(path.join(bundleCache, rebuilt.bundle)), 'the run ran the new bundle');
    await assert.rejects(readFile(path.join(bundleCache, manifest.bundle)), 'the old bundle is gone');
  });

  it('agents status from the bundle connects and never loads the worker', async () => {
    await withMuteServer(async (address) => {
      const { result, modules } = await loadedBy(['status', 'someone'], {
        ...fromBundle,
        TEMPORAL_ADDRESS: address,
      });
      assert.equal(result.code, 1);
      assert.match(result.stderr, /Cannot reach Temporal/);
      assert.deepEqual(workerModules(modules), []);
    });
  });
});

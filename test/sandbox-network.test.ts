import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { request } from 'undici';
import { loadConfig } from '../client/config';
import { describeZodError, sandboxPolicySchema } from '../common/agent-input';
import { hostMatchesPattern, isHostPattern } from '../common/host-patterns';
import { sandboxHostIdentity } from '../sandbox/bubblewrap';
import { addressPolicy, addressRefusal, parseCidr, vettedLookup } from '../sandbox/network-addresses';
import { findRelay, serverNetworkEgress, type HostResolver } from '../sandbox/network-proxy';
import { SandboxServer } from '../sandbox/sandbox-server';
import { DEFAULT_SANDBOX_TOTALS } from '../sandbox/sandbox-watchdog';
import type { SandboxPolicy, ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { freePort, startTestTemporal, type TestTemporal } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';

/**
 * The sandbox's network boundary: every command has a network namespace of its own, and with the
 * network on its only way out is the sandbox server's proxy, which refuses loopback, private,
 * link-local and the host's own addresses after resolving names. The attacks run in real
 * bubblewrap through a real sandbox server, against real listeners on the host (a Temporal dev
 * server among them) and a test host in a network namespace this file creates.
 */

const execFileAsync = promisify(execFile);
const TOKEN = 'network-test-token-0123456789';

/** The proxy as commands inside the sandbox reach it. */
const PROXY = 'http://127.0.0.1:3128';

/** curl options that send a request through the proxy whatever its host (NO_PROXY lists loopback). */
const VIA_PROXY = `--noproxy '' -x ${PROXY}`;

describe('the address classifier', () => {
  const policy = addressPolicy();

  it('refuses every address class that reaches the host or its networks', () => {
    const expected: Array<[string, string]> = [
      ['0.0.0.0', 'an unspecified address'],
      ['0.1.2.3', 'an unspecified address'],
      ['::', 'an unspecified address'],
      ['127.0.0.1', 'a loopback address'],
      ['127.255.0.9', 'a loopback address'],
      ['::1', 'a loopback address'],
      ['169.254.169.254', 'the cloud metadata address'],
      ['fd00:ec2::254', 'the cloud metadata address'],
      ['100.100.100.200', 'the cloud metadata address'],
      ['169.254.1.1', 'a link-local address'],
      ['fe80::1', 'a link-local address'],
      ['fe80::1%eth0', 'a link-local address'],
      ['10.0.0.1', 'a private address'],
      ['172.16.0.1', 'a private address'],
      ['172.31.255.254', 'a private address'],
      ['192.168.1.1', 'a private address'],
      ['fc00::1', 'a private address'],
      ['fd12:3456::1', 'a private address'],
      ['100.64.0.1', 'a shared (CGNAT) address'],
      ['100.127.255.255', 'a shared (CGNAT) address'],
      ['224.0.0.1', 'a multicast address'],
      ['239.255.255.250', 'a multicast address'],
      ['ff02::1', 'a multicast address'],
      ['240.0.0.1', 'a reserved address'],
      ['255.255.255.255', 'the broadcast address'],
    ];
    for (const [address, reason] of expected) assert.equal(addressRefusal(address, policy), reason, address);
  });

  it('refuses IPv6 forms that carry a refused IPv4 address', () => {
    const expected: Array<[string, string]> = [
      ['::ffff:127.0.0.1', 'a loopback address (IPv4 127.0.0.1 inside)'],
      ['::ffff:7f00:1', 'a loopback address (IPv4 127.0.0.1 inside)'],
      ['::ffff:0:10.0.0.1', 'a private address (IPv4 10.0.0.1 inside)'],
      ['::127.0.0.1', 'a loopback address (IPv4 127.0.0.1 inside)'],
      ['64:ff9b::169.254.169.254', 'the cloud metadata address (IPv4 169.254.169.254 inside)'],
      ['2002:c0a8:101::1', 'a private address (IPv4 192.168.1.1 inside)'],
      ['2002:7f00:1::', 'a loopback address (IPv4 127.0.0.1 inside)'],
    ];
    for (const [address, reason] of expected) assert.equal(addressRefusal(address, policy), reason, address);
    // The same forms with a public IPv4 address inside are public.
    assert.equal(addressRefusal('::ffff:8.8.8.8', policy), undefined);
    assert.equal(addressRefusal('64:ff9b::808:808', policy), undefined);
  });

  it('lets public addresses through, and this host’s own addresses never', () => {
    for (const address of [
      '8.8.8.8',
      '1.1.1.1',
      '198.51.100.7',
      '2606:4700::1111',
      '172.32.0.1',
      '100.128.0.1',
    ]) {
      assert.equal(addressRefusal(address, policy), undefined, address);
    }
    for (const entries of Object.values(os.networkInterfaces())) {
      for (const entry of entries ?? []) {
        assert.notEqual(addressRefusal(entry.address, policy), undefined, entry.address);
      }
    }
    const external = externalAddress();
    if (external !== undefined) assert.equal(addressRefusal(external, policy), 'an address of this host');
  });

  it('lifts a refusal only for the ranges an operator lists', () => {
    const allowing = addressPolicy({ allowCidrs: ['10.213.0.0/24', '127.0.0.1', 'fd12::/64'] });
    assert.equal(addressRefusal('10.213.0.2', allowing), undefined);
    assert.equal(addressRefusal('::ffff:10.213.0.2', allowing), undefined);
    assert.equal(addressRefusal('10.213.1.2', allowing), 'a private address');
    assert.equal(addressRefusal('127.0.0.1', allowing), undefined);
    assert.equal(addressRefusal('127.0.0.2', allowing), 'a loopback address');
    assert.equal(addressRefusal('fd12::9', allowing), undefined);
    assert.equal(addressRefusal('fd13::9', allowing), 'a private address');
    assert.deepEqual(parseCidr('10.213.0.0/24'), { bytes: [10, 213, 0, 0], prefixLength: 24 });
    for (const bad of ['10.0.0.0/33', '10.0.0/8', 'fd12::/129', 'example.org/8', '10.0.0.0/8/1', '']) {
      assert.throws(() => parseCidr(bad), /Invalid CIDR range/, bad);
    }
  });

  it('vets every address a name resolves to and answers the one it checked', async () => {
    const answers: Record<string, Array<{ address: string; family: number }>> = {
      'mixed.test': [
        { address: '198.51.100.7', family: 4 },
        { address: '127.0.0.1', family: 4 },
      ],
      'public.test': [{ address: '198.51.100.7', family: 4 }],
    };
    const resolveHost: HostResolver = (hostname) => Promise.resolve(answers[hostname] ?? []);
    const resolving = addressPolicy({ resolveHost });
    assert.deepEqual(await vettedLookup('mixed.test', resolving), {
      allowed: false,
      reason: 'mixed.test resolves to 127.0.0.1, a loopback address',
    });
    assert.deepEqual(await vettedLookup('Public.Test.', resolving), {
      allowed: true,
      address: '198.51.100.7',
      family: 4,
    });
    // Shorthand forms the system resolver reads as loopback.
    for (const name of ['localhost', '127.1', '0177.0.0.1', '0x7f000001', '[::ffff:127.0.0.1]', '[::1]']) {
      const vetted = await vettedLookup(name, policy);
      assert.equal(vetted.allowed, false, name);
      assert.match(vetted.allowed ? '' : vetted.reason, /a loopback address/, name);
    }
  });
});

describe('allow-list patterns', () => {
  it('matches exact names, subdomains of a wildcard (not its apex) and IP literals', () => {
    assert.ok(hostMatchesPattern('registry.npmjs.org', 'registry.npmjs.org'));
    assert.ok(hostMatchesPattern('Registry.NPMJS.org.', 'registry.npmjs.org'));
    assert.ok(!hostMatchesPattern('evil-registry.npmjs.org', 'registry.npmjs.org'));
    assert.ok(hostMatchesPattern('api.github.com', '*.github.com'));
    assert.ok(hostMatchesPattern('a.b.github.com', '*.github.com'));
    assert.ok(!hostMatchesPattern('github.com', '*.github.com'));
    assert.ok(!hostMatchesPattern('evilgithub.com', '*.github.com'));
    assert.ok(!hostMatchesPattern('github.com.evil.org', '*.github.com'));
    assert.ok(hostMatchesPattern('198.51.100.2', '198.51.100.2'));
    assert.ok(hostMatchesPattern('[2001:db8::1]', '2001:DB8:0::1'));
    assert.ok(!hostMatchesPattern('198.51.100.20', '198.51.100.2'));
    assert.ok(!hostMatchesPattern('0xc6336402', '198.51.100.2'));
  });

  it('accepts the three pattern forms in a run policy and says what is accepted otherwise', () => {
    for (const pattern of [
      'registry.npmjs.org',
      '*.github.com',
      '198.51.100.2',
      '2001:db8::1',
      'localhost',
    ]) {
      assert.ok(isHostPattern(pattern), pattern);
    }
    for (const pattern of [
      '',
      '*',
      '*.com',
      'a b',
      'http://x.org',
      'x.org/path',
      '*.*.x.org',
      '127.1',
      '-x.org',
    ]) {
      assert.ok(!isHostPattern(pattern), pattern);
    }
    assert.deepEqual(sandboxPolicySchema.parse({ network: true }), { network: true });
    assert.deepEqual(sandboxPolicySchema.parse({}), { network: false });
    assert.deepEqual(sandboxPolicySchema.parse({ network: { allow: ['*.github.com'] } }), {
      network: { allow: ['*.github.com'] },
    });
    const problem = (network: unknown): string => {
      const parsed = sandboxPolicySchema.safeParse({ network });
      assert.ok(parsed.error !== undefined);
      return describeZodError(parsed.error);
    };
    assert.match(
      problem({ allow: ['http://x.org'] }),
      /^network\.allow\.0: must be a host name \(registry\.npmjs\.org\)/,
    );
    assert.match(problem({ allow: [] }), /^network\.allow: must list at least one host/);
    const tooMany = Array.from({ length: 101 }, (_, index) => `h${index}.example.org`);
    assert.match(problem({ allow: tooMany }), /^network\.allow: must list at most 100 hosts/);
    assert.equal(problem('yes'), 'network: must be true, false or { "allow": [hosts] }');
  });
});

describe('the operator’s allowed ranges', () => {
  it('come from AGENTS_SANDBOX_ALLOW_CIDRS, and a bad one is refused with what is accepted', () => {
    const environment = { HOME: os.homedir(), AGENTS_SANDBOX_ALLOW_CIDRS: '10.213.0.0/24, fd12::/64' };
    assert.deepEqual(loadConfig(environment).sandbox.allowCidrs, ['10.213.0.0/24', 'fd12::/64']);
    assert.equal(loadConfig({ HOME: os.homedir() }).sandbox.allowCidrs, undefined);
    assert.throws(
      () => loadConfig({ HOME: os.homedir(), AGENTS_SANDBOX_ALLOW_CIDRS: '10.213.0.0/24,internal' }),
      /AGENTS_SANDBOX_ALLOW_CIDRS\.1: must be comma-separated CIDR ranges, such as 10\.213\.0\.0\/24,fd12::\/64/,
    );
  });
});

/** A non-loopback IPv4 address of this host's own interfaces (outside the test's namespace link). */
function externalAddress(): string | undefined {
  for (const [name, entries] of Object.entries(os.networkInterfaces())) {
    if (name.startsWith('vnt')) continue;
    const found = entries?.find((entry) => entry.family === 'IPv4' && !entry.internal);
    if (found !== undefined) return found.address;
  }
  return undefined;
}

/** A real sandbox server with its own network settings, and calls to it over HTTP. */
class NetworkTestServer {
  baseUrl = '';
  private server: SandboxServer | undefined;
  private root = '';

  constructor(private readonly settings: { allowCidrs?: string[]; resolveHost?: HostResolver } = {}) {}

  get port(): number {
    return Number(new URL(this.baseUrl).port);
  }

  async start(): Promise<void> {
    this.root = await mkdtemp(path.join(os.tmpdir(), 'agents-network-test-'));
    const network = serverNetworkEgress(this.root, { ...this.settings, owner: sandboxHostIdentity() });
    this.server = new SandboxServer({
      root: this.root,
      token: TOKEN,
      lanes: 4,
      runTool: (call, workspace, signal) =>
        runSandboxTool(call, workspace, signal, 'bubblewrap', DEFAULT_SANDBOX_TOTALS, network),
    });
    this.baseUrl = `http://127.0.0.1:${await this.server.listen(0)}`;
  }

  async close(): Promise<void> {
    await this.server?.close();
    if (this.root !== '') await rm(this.root, { recursive: true, force: true });
  }

  async run(
    command: string,
    network: SandboxPolicy['network'],
    options: { tool?: 'bash' | 'bash_stateful'; trajectoryId?: string } = {},
  ): Promise<ToolResult> {
    const response = await request(`${this.baseUrl}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({
        callId: randomUUID(),
        trajectoryId: options.trajectoryId ?? `network-${randomUUID()}`,
        tool: options.tool ?? 'bash',
        arguments: { command },
        timeoutS: 30,
        policy: { network },
      }),
    });
    const text = await response.body.text();
    assert.equal(response.statusCode, 200, text);
    return JSON.parse(text) as ToolResult;
  }

  /** Asserts the server still answers after an attack. */
  async assertHealthy(): Promise<void> {
    const response = await request(`${this.baseUrl}/health`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(response.statusCode, 200);
    assert.equal(((await response.body.json()) as { status: string }).status, 'ok');
  }
}

/** A listener that counts the connections it gets: the proof that an attack got nowhere. */
class CountingListener {
  connections = 0;
  private readonly server: TcpServer = createTcpServer((socket) => {
    this.connections += 1;
    socket.end('reached\n');
  });

  async listen(host: string, port = 0): Promise<number> {
    this.server.listen(port, host);
    await once(this.server, 'listening');
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.close();
    await once(this.server, 'close');
  }
}

/**
 * A raw proxy request written by bash to the relay (`exec 3<>/dev/tcp/…`), so the proxy sees the
 * destination exactly as written, with no client normalizing it first; prints the status line.
 */
function rawConnect(target: string): string {
  return `exec 3<>/dev/tcp/127.0.0.1/3128; printf 'CONNECT ${target} HTTP/1.1\\r\\nHost: ${target}\\r\\n\\r\\n' >&3; IFS= read -r status <&3; echo "\${status%$'\\r'}"; cat <&3`;
}

/** The test host: a network namespace joined to this host by a veth pair, running an HTTP server. */
class TestHost {
  readonly namespace = `agents-network-test-${randomBytes(3).toString('hex')}`;
  readonly hostSide = `vnt${randomBytes(3).toString('hex')}h`;
  readonly namespaceSide = `vnt${randomBytes(3).toString('hex')}n`;
  readonly publicAddress = '198.51.100.2';
  readonly hostPublicAddress = '198.51.100.1';
  readonly privateAddress = '10.213.0.2';
  port = 0;
  private server: ChildProcess | undefined;

  async start(port: number): Promise<void> {
    this.port = port;
    const ip = (...args: string[]) => execFileAsync('ip', args);
    const inside = (...args: string[]) => execFileAsync('ip', ['netns', 'exec', this.namespace, ...args]);
    await ip('netns', 'add', this.namespace);
    await ip('link', 'add', this.hostSide, 'type', 'veth', 'peer', 'name', this.namespaceSide);
    await ip('link', 'set', this.namespaceSide, 'netns', this.namespace);
    await ip('addr', 'add', `${this.hostPublicAddress}/24`, 'dev', this.hostSide);
    await ip('addr', 'add', '10.213.0.1/24', 'dev', this.hostSide);
    await ip('link', 'set', this.hostSide, 'up');
    await inside('ip', 'addr', 'add', `${this.publicAddress}/24`, 'dev', this.namespaceSide);
    await inside('ip', 'addr', 'add', `${this.privateAddress}/24`, 'dev', this.namespaceSide);
    await inside('ip', 'link', 'set', this.namespaceSide, 'up');
    await inside('ip', 'link', 'set', 'lo', 'up');
    const script = `require('node:http').createServer((request, response) => response.end('served by the test host at ' + request.socket.localAddress + ' for ' + request.headers.host + request.url + '\\n')).listen(${port}, '0.0.0.0', () => console.log('listening'));`;
    this.server = spawn('ip', ['netns', 'exec', this.namespace, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    this.server.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    await waitFor('the test host to listen', () => output.includes('listening'), 15_000);
  }

  async close(): Promise<void> {
    if (this.server !== undefined && this.server.exitCode === null) {
      this.server.kill('SIGKILL');
      await once(this.server, 'exit');
    }
    await execFileAsync('ip', ['link', 'del', this.hostSide]).catch(() => undefined);
    await execFileAsync('ip', ['netns', 'del', this.namespace]).catch(() => undefined);
  }
}

const isRoot = process.getuid?.() === 0;
const hasRelay = findRelay() !== undefined;
const skipReason = !isRoot
  ? 'needs root to create the test host network namespace'
  : !hasRelay
    ? 'needs socat for the network relay'
    : false;

/** The suite's name, with the reason when it cannot run here. */
const networkSuiteName = `a sandbox with the network on${skipReason === false ? '' : ` (skipped: ${skipReason})`}`;

describe(networkSuiteName, { skip: skipReason }, () => {
  let temporal: TestTemporal;
  const tcpListener = new CountingListener();
  const wideListener = new CountingListener();
  const decoy = new CountingListener();
  let tcpPort: number;
  let widePort: number;
  let httpServer: HttpServer;
  let httpPort: number;
  let httpRequests = 0;
  const testHost = new TestHost();
  const server = new NetworkTestServer();
  const allowingServer = new NetworkTestServer({ allowCidrs: ['10.213.0.0/24'] });
  let resolutions = 0;
  const rebindingServer = new NetworkTestServer({
    // The first answer is the test host, every later one loopback: a rebinding name.
    resolveHost: (hostname) => {
      if (hostname !== 'rebind.test') return Promise.resolve([]);
      resolutions += 1;
      return Promise.resolve([
        { address: resolutions === 1 ? testHost.publicAddress : '127.0.0.1', family: 4 },
      ]);
    },
  });
  /** Ports of services on the host's loopback that a run must never reach. */
  let hostPorts: Record<string, number>;

  before(async () => {
    temporal = await startTestTemporal();
    tcpPort = await tcpListener.listen('127.0.0.1');
    widePort = await wideListener.listen('0.0.0.0');
    httpServer = createHttpServer((_request, response) => {
      httpRequests += 1;
      response.end('host loopback http\n');
    });
    httpServer.listen(0, '127.0.0.1');
    await once(httpServer, 'listening');
    httpPort = (httpServer.address() as AddressInfo).port;
    // The test host serves on a port that is also taken on this host's loopback by a decoy: a
    // proxy that connected by name again, after the check, would land on the decoy.
    const sharedPort = await freePort();
    await decoy.listen('127.0.0.1', sharedPort);
    await testHost.start(sharedPort);
    await server.start();
    await allowingServer.start();
    await rebindingServer.start();
    hostPorts = {
      'a plain TCP listener': tcpPort,
      'an HTTP server': httpPort,
      'the sandbox server itself': server.port,
      'the Temporal frontend (gRPC)': temporal.config.temporal.port,
      'the Temporal Web UI': temporal.config.temporal.uiPort,
    };
  });

  after(async () => {
    await rebindingServer.close();
    await allowingServer.close();
    await server.close();
    await testHost.close();
    await decoy.close();
    await tcpListener.close();
    await wideListener.close();
    httpServer.closeAllConnections();
    httpServer.close();
    await temporal?.close();
  });

  it('cannot open a TCP connection to any listener on the host loopback', async () => {
    for (const [name, port] of Object.entries(hostPorts)) {
      const result = await server.run(`echo hello > /dev/tcp/127.0.0.1/${port} && echo connected`, true);
      assert.equal(result.success, false, `${name}: ${result.output}`);
      assert.match(result.output, /Connection refused/, name);
      assert.doesNotMatch(result.output, /^connected/, name);
    }
    assert.equal(tcpListener.connections, 0);
    assert.equal(httpRequests, 0);
    await server.assertHealthy();
  });

  it('is refused by the proxy for every host loopback service, by HTTP and by CONNECT, and is told why', async () => {
    for (const [name, port] of Object.entries(hostPorts)) {
      const viaEnvironment = await server.run(
        `NO_PROXY= no_proxy= curl -sS -m 10 -w '\\n%{http_code}\\n' http://127.0.0.1:${port}/`,
        true,
      );
      assert.match(
        viaEnvironment.output,
        /^Blocked by the sandbox's network policy: 127\.0\.0\.1:\d+ is a loopback address\n+403\n/,
        name,
      );
      assert.deepEqual(
        viaEnvironment.metadata.networkRefused,
        [`127.0.0.1:${port} is a loopback address`],
        name,
      );
      assert.match(
        viaEnvironment.output,
        new RegExp(`\\[network\\] refused: 127\\.0\\.0\\.1:${port} is a loopback address`),
      );

      const viaFlag = await server.run(
        `curl -sS -m 10 ${VIA_PROXY} -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:${port}/`,
        true,
      );
      assert.match(viaFlag.output, /^403\n/, name);

      const tunnel = await server.run(`curl -sS -m 10 -p ${VIA_PROXY} http://127.0.0.1:${port}/`, true);
      assert.equal(tunnel.success, false, name);
      assert.match(tunnel.output, /CONNECT tunnel failed, response 403/, name);
      assert.deepEqual(tunnel.metadata.networkRefused, [`127.0.0.1:${port} is a loopback address`], name);
    }
    assert.equal(tcpListener.connections, 0);
    assert.equal(httpRequests, 0);
    await server.assertHealthy();
  });

  it('cannot speak gRPC to the Temporal frontend, directly or through a tunnel', async () => {
    const grpcPort = temporal.config.temporal.port;
    const grpc = (extra: string) =>
      `curl -sS -m 10 ${extra} --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @/dev/null -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:${grpcPort}/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo`;
    // The same request from the host reaches the frontend: the attack is real.
    const { stdout } = await execFileAsync('bash', ['-c', grpc('')]);
    assert.equal(stdout.trim(), '200');

    const direct = await server.run(grpc(''), true);
    assert.equal(direct.success, false);
    assert.match(direct.output, /Failed to connect|Couldn't connect/);
    const tunnelled = await server.run(grpc(`-p ${VIA_PROXY}`), true);
    assert.equal(tunnelled.success, false);
    assert.match(tunnelled.output, /CONNECT tunnel failed, response 403/);
    const forwarded = await server.run(`NO_PROXY= no_proxy= ${grpc('')}`, true);
    assert.equal(forwarded.output.trim().split('\n')[0], '403');
    await server.assertHealthy();
    // The frontend is untouched and still serves the host.
    assert.ok((await temporal.connection.workflowService.getSystemInfo({})).capabilities !== undefined);
  });

  it('refuses names and spellings that resolve to loopback, after resolving them', async () => {
    for (const target of ['localhost', '127.1', '0177.0.0.1', '0x7f000001', '[::ffff:127.0.0.1]', '[::1]']) {
      const result = await server.run(rawConnect(`${target}:${tcpPort}`), true);
      assert.match(result.output, /^HTTP\/1\.1 403 Forbidden\n/, target);
      assert.match(result.output, /Blocked by the sandbox's network policy: .* a loopback address/, target);
    }
    const named = await server.run(`curl -sS -m 10 ${VIA_PROXY} http://localhost:${httpPort}/`, true);
    assert.match(
      named.output,
      new RegExp(
        `^Blocked by the sandbox's network policy: localhost:${httpPort} resolves to (127\\.0\\.0\\.1|::1), a loopback address`,
      ),
    );
    assert.equal(tcpListener.connections, 0);
    assert.equal(httpRequests, 0);
    await server.assertHealthy();
  });

  it("refuses this host's own non-loopback addresses", async () => {
    const own = [externalAddress(), testHost.hostPublicAddress].filter((address) => address !== undefined);
    assert.ok(own.length > 0);
    for (const address of own) {
      const direct = await server.run(`echo hello > /dev/tcp/${address}/${widePort} && echo connected`, true);
      assert.equal(direct.success, false, address);
      assert.match(direct.output, /Network is unreachable|Connection refused/, address);
      const proxied = await server.run(`curl -sS -m 10 ${VIA_PROXY} http://${address}:${widePort}/`, true);
      assert.match(
        proxied.output,
        new RegExp(
          `^Blocked by the sandbox's network policy: ${address.replaceAll('.', '\\.')}:${widePort} is an address of this host`,
        ),
      );
    }
    assert.equal(wideListener.connections, 0);
    await server.assertHealthy();
  });

  it('reaches an allowed destination by HTTP and by CONNECT', async () => {
    const target = `http://${testHost.publicAddress}:${testHost.port}/page`;
    for (const network of [true, { allow: [testHost.publicAddress] }] satisfies Array<
      SandboxPolicy['network']
    >) {
      const viaEnvironment = await server.run(`curl -sS -m 10 ${target}`, network);
      assert.equal(viaEnvironment.success, true, viaEnvironment.output);
      assert.equal(
        viaEnvironment.output,
        `served by the test host at ${testHost.publicAddress} for ${testHost.publicAddress}:${testHost.port}/page\n`,
      );
      assert.equal(viaEnvironment.metadata.networkRefused, undefined);
      const tunnelled = await server.run(`curl -sS -m 10 -p ${target}`, network);
      assert.equal(tunnelled.success, true, tunnelled.output);
      assert.match(tunnelled.output, /^served by the test host at 198\.51\.100\.2/);
    }
    assert.equal(decoy.connections, 0);
    await server.assertHealthy();
  });

  it('refuses what is outside the allow list, and the host even when listed, with a clear message', async () => {
    const network = { allow: [testHost.publicAddress, testHost.hostPublicAddress, 'localhost'] };
    const result = await server.run(
      [
        `curl -sS -m 10 http://${testHost.hostPublicAddress}:${widePort}/`,
        `curl -sS -m 10 http://localhost:${tcpPort}/ --noproxy ''`,
        `curl -sS -m 10 https://example.org/ || true`,
        `curl -sS -m 10 http://${testHost.publicAddress}:${testHost.port}/ok`,
      ].join('; '),
      network,
    );
    const allowList = `(${network.allow.join(', ')})`;
    assert.deepEqual(result.metadata.networkRefused, [
      `${testHost.hostPublicAddress}:${widePort} is an address of this host`,
      `localhost:${tcpPort} resolves to 127.0.0.1, a loopback address`,
      `example.org is not in the run's allow list ${allowList}`,
    ]);
    assert.match(
      result.output,
      new RegExp(
        `\\[network\\] refused: example\\.org is not in the run's allow list \\(${allowList.slice(1, -1).replaceAll('.', '\\.')}\\)`,
      ),
    );
    assert.match(result.output, /served by the test host at 198\.51\.100\.2 for .*\/ok/);
    assert.equal(wideListener.connections, 0);
    assert.equal(tcpListener.connections, 0);
    await server.assertHealthy();
  });

  it('refuses a private test host by default and reaches it when the operator lists its range', async () => {
    const target = `http://${testHost.privateAddress}:${testHost.port}/private`;
    const refused = await server.run(`curl -sS -m 10 ${target}`, true);
    assert.match(
      refused.output,
      /^Blocked by the sandbox's network policy: 10\.213\.0\.2:\d+ is a private address/,
    );
    const reached = await allowingServer.run(`curl -sS -m 10 ${target}`, true);
    assert.equal(reached.success, true, reached.output);
    assert.match(reached.output, /^served by the test host at 10\.213\.0\.2 for 10\.213\.0\.2:\d+\/private/);
    // The listed range lifts nothing else.
    const loopback = await allowingServer.run(
      `curl -sS -m 10 ${VIA_PROXY} http://127.0.0.1:${httpPort}/`,
      true,
    );
    assert.match(loopback.output, /is a loopback address/);
    assert.equal(httpRequests, 0);
    await server.assertHealthy();
    await allowingServer.assertHealthy();
  });

  it('resolves a name once per connection and connects to the address it checked', async () => {
    resolutions = 0;
    const target = `http://rebind.test:${testHost.port}/rebind`;
    const first = await rebindingServer.run(`curl -sS -m 10 -p ${VIA_PROXY} ${target}`, {
      allow: ['rebind.test'],
    });
    assert.equal(first.success, true, first.output);
    assert.equal(
      first.output,
      `served by the test host at ${testHost.publicAddress} for rebind.test:${testHost.port}/rebind\n`,
    );
    assert.equal(resolutions, 1);
    // The name now answers loopback: the next connection is refused, and nothing reached the decoy.
    const second = await rebindingServer.run(`curl -sS -m 10 ${VIA_PROXY} ${target}`, {
      allow: ['rebind.test'],
    });
    assert.match(
      second.output,
      new RegExp(
        `^Blocked by the sandbox's network policy: rebind\\.test:${testHost.port} resolves to 127\\.0\\.0\\.1, a loopback address`,
      ),
    );
    assert.equal(resolutions, 2);
    assert.equal(decoy.connections, 0);
    await rebindingServer.assertHealthy();
  });

  it('holds the same boundary in the stateful shell, call after call', async () => {
    const trajectoryId = `network-stateful-${randomUUID()}`;
    const stateful = { tool: 'bash_stateful' as const, trajectoryId };
    const direct = await server.run(
      `echo hello > /dev/tcp/127.0.0.1/${tcpPort} && echo connected`,
      true,
      stateful,
    );
    assert.equal(direct.success, false);
    assert.match(direct.output, /Connection refused/);
    const proxied = await server.run(
      `curl -sS -m 10 ${VIA_PROXY} http://127.0.0.1:${httpPort}/`,
      true,
      stateful,
    );
    assert.match(
      proxied.output,
      /^Blocked by the sandbox's network policy: 127\.0\.0\.1:\d+ is a loopback address/,
    );
    assert.deepEqual(proxied.metadata.networkRefused, [`127.0.0.1:${httpPort} is a loopback address`]);
    for (let call = 0; call < 2; call += 1) {
      const reached = await server.run(
        `curl -sS -m 10 http://${testHost.publicAddress}:${testHost.port}/stateful`,
        true,
        stateful,
      );
      assert.equal(reached.success, true, reached.output);
      assert.match(reached.output, /^served by the test host at 198\.51\.100\.2/);
      assert.equal(reached.metadata.networkRefused, undefined);
    }
    const outside = await server.run(
      `curl -sS -m 10 http://${testHost.publicAddress}:${testHost.port}/`,
      { allow: ['registry.npmjs.org'] },
      stateful,
    );
    assert.equal(outside.metadata.sessionStarted, 'policy-changed');
    assert.deepEqual(outside.metadata.networkRefused, [
      `${testHost.publicAddress} is not in the run's allow list (registry.npmjs.org)`,
    ]);
    assert.equal(tcpListener.connections, 0);
    assert.equal(httpRequests, 0);
    await server.assertHealthy();
  });

  it('gives a command with the network off no way out at all', async () => {
    const result = await server.run(
      `ls /run/agents-network 2>&1; echo "proxy=\${HTTP_PROXY:-none}"; curl -sS -m 5 ${VIA_PROXY} http://${testHost.publicAddress}:${testHost.port}/`,
      false,
    );
    assert.equal(result.success, false);
    assert.match(result.output, /No such file or directory\nproxy=none\n/);
    assert.match(result.output, /Failed to connect|Couldn't connect/);
    await server.assertHealthy();
  });
});

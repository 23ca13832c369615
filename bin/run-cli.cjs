'use strict';
/**
 * Starts the `agents` CLI (client/cli.ts) from one esbuild bundle of it, compiled with a V8 code
 * cache (JavaScript, CommonJS, run by bin/agents). Loading the TypeScript sources one by one through
 * tsx, and zod, Temporal's client, gRPC and protobufjs file by file, took a second before
 * `agents status` could connect; one file whose compiled code is cached takes a fraction of that.
 *
 * The bundle is never stale: it records every file it was built from, and the folders holding
 * them (so a file added beside them counts), and is rebuilt before the command runs as soon as one
 * of them changed; a fresh clone builds it on its first run. It lives in node_modules/.cache, next
 * to the packages it holds, so `npm ci` starts it afresh; AGENTS_CLI_CACHE names another folder.
 * Commands that run a worker or load a user's TypeScript tools (`WORKER_COMMANDS`) run from the
 * sources through tsx, as does every command when the bundle cannot be built or written, or with
 * AGENTS_CLI_FROM_SOURCE=1 (stack traces then name the TypeScript files).
 */
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const ROOT = path.resolve(__dirname, '..');
const ENTRY = path.join(ROOT, 'client', 'cli.ts');
/** Where the bundle lives: AGENTS_CLI_CACHE when set (a read-only checkout, tests), else here. */
const CACHE_DIR =
  process.env.AGENTS_CLI_CACHE || path.join(ROOT, 'node_modules', '.cache', 'durable-agents-cli');
const MANIFEST = path.join(CACHE_DIR, 'manifest.json');
const LOCK = path.join(CACHE_DIR, 'build.lock');
/** A build lock older than this was left by a process that died: it is taken over. */
const STALE_LOCK_MS = 120_000;

/**
 * Commands that run from the sources: a worker needs the one copy of Temporal's packages that
 * `@temporalio/worker` uses (a bundled copy would be a second one, with its own activity context),
 * and `tool-server` loads the user's TypeScript module, which needs tsx's hook.
 */
const WORKER_COMMANDS = new Set(['dev', 'worker', 'demo', 'tool-server']);

/**
 * Packages kept out of the bundle: native code (`@temporalio/worker` and what it loads, the local
 * model), and tools that are only ever loaded from node_modules.
 */
const EXTERNAL_PACKAGES = [
  '@temporalio/worker',
  '@temporalio/core-bridge',
  '@swc/core',
  'node-llama-cpp',
  'esbuild',
  'tsx',
  'typescript',
  'playwright-core',
];

/** The command's name as client/cli.ts reads it: the first argument that is not `--verbose`. */
function commandName(argv) {
  return argv.find((argument) => argument !== '--verbose');
}

/** `[mtimeMs, size]` of a file or folder, or undefined when it is gone. */
function fingerprint(file) {
  const stats = fs.statSync(file, { throwIfNoEntry: false });
  return stats === undefined ? undefined : [stats.mtimeMs, stats.size];
}

/** The manifest of the current bundle when every file and folder it was built from is unchanged. */
function freshManifest() {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(MANIFEST, 'utf8'));
  } catch {
    return undefined;
  }
  if (manifest.node !== process.version) return undefined;
  for (const [relative, mtimeMs, size] of manifest.inputs) {
    // Concatenated, not path.join: the manifest's paths are already normal, and there are hundreds.
    const current = fingerprint(`${ROOT}${path.sep}${relative}`);
    if (current === undefined || current[0] !== mtimeMs || current[1] !== size) return undefined;
  }
  return manifest;
}

/**
 * esbuild plugin: `__dirname` and `__filename` keep meaning the source file's folder and path (the
 * CLI finds package.json and the built-in templates that way), not the bundle's.
 */
const sourceLocationPlugin = {
  name: 'source-location',
  setup(build) {
    build.onLoad({ filter: /\.(ts|js|cjs)$/ }, (args) => {
      const contents = fs.readFileSync(args.path, 'utf8');
      if (!/__dirname|__filename/.test(contents)) return undefined;
      const prelude = `var __dirname = ${JSON.stringify(path.dirname(args.path))}, __filename = ${JSON.stringify(args.path)};`;
      return { contents: `${prelude}${contents}`, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
    });
  },
};

/** Builds the bundle under a lock; its manifest, or undefined when another process is building it. */
async function buildBundle() {
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  let lock;
  try {
    lock = fs.openSync(LOCK, 'wx');
  } catch (error) {
    if (error.code !== 'EEXIST') throw error;
    const age = Date.now() - (fingerprint(LOCK)?.[0] ?? 0);
    if (age < STALE_LOCK_MS) return undefined;
    fs.rmSync(LOCK, { force: true });
    lock = fs.openSync(LOCK, 'wx');
  }
  try {
    const esbuild = require('esbuild');
    const id = `${Date.now().toString(36)}-${process.pid}`;
    const bundle = path.join(CACHE_DIR, `cli-${id}.js`);
    const result = await esbuild.build({
      absWorkingDir: ROOT,
      entryPoints: [ENTRY],
      outfile: bundle,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: `node${process.versions.node.split('.')[0]}`,
      external: EXTERNAL_PACKAGES,
      plugins: [sourceLocationPlugin],
      // Smaller to read and compile; names are kept, so stack traces (--verbose) still say where.
      minifyWhitespace: true,
      minifySyntax: true,
      legalComments: 'none',
      charset: 'ascii',
      metafile: true,
      logLevel: 'silent',
    });
    // Plain ASCII, as asked of esbuild, reads as latin1 several times faster than as UTF-8.
    const ascii = fs.readFileSync(bundle).every((byte) => byte < 0x80);
    const files = [...Object.keys(result.metafile.inputs), path.relative(ROOT, __filename)];
    const folders = [...new Set(files.map((file) => path.dirname(file)))];
    const inputs = [...files, ...folders].map((relative) => [
      relative,
      ...fingerprint(path.join(ROOT, relative)),
    ]);
    const manifest = {
      node: process.version,
      bundle: path.basename(bundle),
      encoding: ascii ? 'latin1' : 'utf8',
      inputs,
    };
    const temporary = `${MANIFEST}.${id}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(manifest));
    fs.renameSync(temporary, MANIFEST);
    // Earlier bundles and their code caches: a process still running one has already read it.
    for (const entry of fs.readdirSync(CACHE_DIR)) {
      if (entry.startsWith('cli-') && !entry.startsWith(`cli-${id}.`)) {
        fs.rmSync(path.join(CACHE_DIR, entry), { force: true });
      }
    }
    return manifest;
  } finally {
    fs.closeSync(lock);
    fs.rmSync(LOCK, { force: true });
  }
}

/**
 * The code cache of a bundle: V8's compiled code of the functions earlier runs used, and what those
 * runs covered (see `loadBundle`). V8 checks that a cache matches its script by length and V8
 * version only, hence one cache per bundle file, named after it.
 */
function readCodeCache(cacheFile) {
  try {
    const file = fs.readFileSync(cacheFile);
    const headerLength = file.readUInt32LE(0);
    const header = JSON.parse(file.subarray(4, 4 + headerLength).toString('utf8'));
    return { covered: header.covered, data: file.subarray(4 + headerLength) };
  } catch {
    return { covered: [], data: undefined };
  }
}

/** Writes a code cache; a failure only means that the next run compiles more itself. */
function writeCodeCache(cacheFile, covered, data) {
  try {
    const header = Buffer.from(JSON.stringify({ covered }), 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32LE(header.length, 0);
    const temporary = `${cacheFile}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, Buffer.concat([length, header, data]));
    fs.renameSync(temporary, cacheFile);
  } catch {
    // A read-only or full disk: the bundle still runs, compiled from its source where need be.
  }
}

/**
 * When a run adds to the code cache: at exit, or once it has run this long, whichever comes first,
 * so that a command that runs on (`watch`) or is killed (a benchmark stops `status` once it has
 * connected) still leaves its compiled code.
 */
const CODE_CACHE_AFTER_MS = 1000;

/**
 * Loads the bundle as the CommonJS module it is, compiled with its code cache; returns its exports
 * (undefined when the file is gone). A run that did what no run behind the cache did writes the
 * cache again, with the code it compiled added: what a run did is its command's name and the
 * modules outside the bundle it required (Node's built-ins among them), so `agents status --help`
 * or a usage error, which load no command's code, do not stand for `agents status`.
 */
function loadBundle(manifest, name) {
  const bundle = path.join(CACHE_DIR, manifest.bundle);
  const cacheFile = `${bundle.slice(0, -'.js'.length)}.v8`;
  let source;
  try {
    source = fs.readFileSync(bundle, manifest.encoding);
  } catch {
    // Removed by a rebuild since the manifest was read: this run takes the sources.
    return undefined;
  }
  const cache = readCodeCache(cacheFile);
  const script = new vm.Script(Module.wrap(source), {
    filename: bundle,
    ...(cache.data === undefined ? {} : { cachedData: cache.data }),
  });
  const covered = new Set(cache.data !== undefined && !script.cachedDataRejected ? cache.covered : []);
  const done = new Set();
  const bundleRequire = Module.createRequire(bundle);
  const trackedRequire = Object.assign((id) => {
    done.add(`require:${id}`);
    return bundleRequire(id);
  }, bundleRequire);
  const bundleModule = new Module(bundle, module);
  bundleModule.filename = bundle;
  bundleModule.paths = Module._nodeModulePaths(path.dirname(bundle));
  Module._cache[bundle] = bundleModule;
  script
    .runInThisContext()
    .call(
      bundleModule.exports,
      bundleModule.exports,
      trackedRequire,
      bundleModule,
      bundle,
      path.dirname(bundle),
    );
  bundleModule.loaded = true;
  const cli = bundleModule.exports;
  // Help, the version and unknown names are one case: the CLI without a command.
  done.add(`command:${name !== undefined && cli.isCommand(name) ? name : ''}`);
  let written = false;
  const addToCache = () => {
    if (written) return;
    written = true;
    if ([...done].every((item) => covered.has(item))) return;
    writeCodeCache(cacheFile, [...new Set([...covered, ...done])], script.createCachedData());
  };
  setTimeout(addToCache, CODE_CACHE_AFTER_MS).unref();
  process.once('exit', addToCache);
  return cli;
}

/** client/cli.ts through tsx's CommonJS hook (not its ES module hooks, which start a loader thread). */
function loadFromSource() {
  require(path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cjs', 'index.cjs'));
  return require(ENTRY);
}

/** The CLI's module: from the bundle, built first if it is missing or stale, else from the sources. */
async function loadCli(argv) {
  const name = commandName(argv);
  if (process.env.AGENTS_CLI_FROM_SOURCE === '1' || WORKER_COMMANDS.has(name ?? '')) return loadFromSource();
  let manifest = freshManifest();
  if (manifest === undefined) {
    try {
      manifest = await buildBundle();
    } catch {
      // esbuild missing or failing (a syntax error shows when tsx loads the file), or a read-only
      // node_modules: the sources still run.
    }
  }
  return (manifest === undefined ? undefined : loadBundle(manifest, name)) ?? loadFromSource();
}

const argv = process.argv.slice(2);
loadCli(argv)
  .then((cli) => cli.main(argv))
  .then(
    (code) => process.exit(code),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );

#!/usr/bin/env node
// Peer benchmark: node-redlock (npm `redlock`, with ioredis) on the servers rlock-bench started.
// Prints one JSON record per line, in rlock-bench's format (bench/stats.h), for bench/render.py.
//
//   node bench/peers/node_redlock.js --ports P1,..,P5 --proxy-ports Q1,..,Q5
//       [--scenarios S1,S2,S3,S4] [--iters N] [--proxy-iters N] [--s4-seconds X]
//
// S1 single server; S2 quorum of 3 and 5; S3 single and quorum-5 through the latency proxies;
// S4 4 processes on one key, N = 1 and 3, at redlock's default retry pacing (200 ms +- 100 ms) and
// at a tuned one (1 ms +- 1 ms). Both use retryCount -1 (retry until acquired) instead of the default
// 10, so a wait is measured to the end rather than cut at ~2 s. The packages come from bench/node/
// (scripts/bench.sh installs them there from bench/node/package-lock.json).
'use strict';

const path = require('path');
const fs = require('fs');
const { fork } = require('child_process');
const { createRequire } = require('module');

const nodeDir = path.join(__dirname, '..', 'node');
const req = createRequire(path.join(nodeDir, 'package.json'));
const Redlock = req('redlock').default;
const Redis = req('ioredis');

const HOST = '127.0.0.1';
const TTL_MS = 10000; // S1-S3
const S4_TTL_MS = 5000; // as rlock-bench's S4
const STOP_GRACE_MS = 2000;
const PROCESSES = 4;
const IMPL = 'node-redlock';
const SETTINGS = {
  default: { retryCount: -1 },
  tuned: { retryCount: -1, retryDelay: 1, retryJitter: 1 },
};

function parseArgs(argv) {
  const a = { scenarios: 'S1,S2,S3,S4', iters: 5000, 'proxy-iters': 300, 's4-seconds': 10, 'proxy-latency-ms': 1 };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    a[argv[i].slice(2)] = argv[i + 1];
  }
  a.ports = (a.ports || '').split(',').filter(Boolean).map(Number);
  a['proxy-ports'] = (a['proxy-ports'] || '').split(',').filter(Boolean).map(Number);
  a.scenarios = new Set(a.scenarios.split(','));
  for (const k of ['iters', 'proxy-iters', 's4-seconds', 'proxy-latency-ms']) a[k] = Number(a[k]);
  return a;
}

// ---- statistics, as in bench/stats.h -----------------------------------------------------------
const QUANTILES = [];
for (let p = 0; p <= 98; p += 2) QUANTILES.push(p);
QUANTILES.push(99, 99.5, 99.9, 100);

function percentile(sorted, p) {
  if (!sorted.length) return 0;
  if (p <= 0) return sorted[0];
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

function summarize(values) {
  const v = Float64Array.from(values).sort();
  const n = v.length;
  const r4 = (x) => Number(x.toPrecision(6));
  if (!n) return { n: 0, mean: 0, median: 0, p99: 0, min: 0, max: 0, cdf: [] };
  let sum = 0;
  for (const x of v) sum += x;
  return {
    n,
    mean: r4(sum / n),
    median: r4(percentile(v, 50)),
    p99: r4(percentile(v, 99)),
    min: r4(v[0]),
    max: r4(v[n - 1]),
    cdf: QUANTILES.map((q) => [q, r4(percentile(v, q))]),
  };
}

const nowNs = () => process.hrtime.bigint(); // CLOCK_MONOTONIC, as C++ steady_clock
const usSince = (t0) => Number(nowNs() - t0) / 1000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function makeClients(ports) {
  const clients = ports.map((port) => new Redis({ host: HOST, port, lazyConnect: true }));
  for (const c of clients) {
    c.on('error', () => {}); // reported through the failed operations instead
    await c.connect();
    await c.ping();
  }
  return clients;
}

function makeRedlock(clients, settings) {
  const r = new Redlock(clients, settings);
  r.on('error', () => {}); // redlock emits every failed vote (also "resource locked") as an event
  return r;
}

// ---- S1-S3: uncontended acquire + release ---------------------------------------------------------
async function uncontended(a, { id, scenario, variant, ports, proxyMs, iters, baseline, alsoVs }) {
  const clients = await makeClients(ports);
  const redlock = makeRedlock(clients, {});
  const key = `bench:${id}`;
  const warmup = Math.max(10, Math.min(1000, Math.floor(iters / 10)));
  const lat = [];
  let errors = 0;
  let firstError = '';
  let begin = 0n;
  for (let i = 0; i < warmup + iters; i++) {
    if (i === warmup) begin = nowNs();
    const t0 = nowNs();
    try {
      const lock = await redlock.acquire([key], TTL_MS);
      await lock.release();
    } catch (e) {
      errors++;
      if (!firstError) firstError = String(e && e.message);
    }
    if (i >= warmup) lat.push(usSince(t0));
  }
  const seconds = Number(nowNs() - begin) / 1e9;
  await redlock.quit().catch(() => {});
  emit({
    kind: 'result', id, scenario, impl: IMPL, variant, servers: ports.length, proxy_latency_ms: proxyMs,
    settings: 'defaults', baseline, also_vs: alsoVs || [], ratio_of: 'latency', iterations: iters,
    errors, first_error: firstError, latency_us: summarize(lat), ops_per_s: iters / seconds,
  });
}

// ---- S4: PROCESSES processes on one key -----------------------------------------------------------
async function s4Child() {
  const cfg = JSON.parse(process.argv[3]);
  const clients = await makeClients(cfg.ports);
  const redlock = makeRedlock(clients, SETTINGS[cfg.setting]);
  // Warm up on a private key: connections made, scripts cached.
  for (let i = 0; i < 20; i++) await (await redlock.acquire([`${cfg.key}:warm:${cfg.index}`], TTL_MS)).release();
  const start = await new Promise((resolve) => {
    process.once('message', (m) => resolve(BigInt(m.start)));
    process.send({ ready: true });
  });
  const end = start + BigInt(Math.round(cfg.seconds * 1e9));
  while (nowNs() < start) await new Promise((r) => setTimeout(r, 0));
  const waits = [];
  const enters = [];
  const exits = [];
  let errors = 0;
  let lastDone = nowNs();
  // An acquire still pending STOP_GRACE_MS after the end is abandoned (counted as a timeout): with
  // retryCount -1 a split vote on a quorum can otherwise wait for the TTL or longer.
  let finished = false;
  const finish = (stuck) => {
    if (finished) return;
    finished = true;
    process.send({ waits, enters, exits, errors, timeouts: stuck ? 1 : 0, lastDone: String(lastDone - start) },
      () => process.exit(0));
  };
  const stop = setTimeout(() => finish(true), Number(end - nowNs()) / 1e6 + STOP_GRACE_MS);
  while (nowNs() < end && !finished) {
    const t0 = nowNs();
    let lock;
    try {
      lock = await redlock.acquire([cfg.key], S4_TTL_MS);
    } catch (e) {
      errors++;
      continue;
    }
    if (finished) return;
    const t1 = nowNs();
    // critical section: only its bounds are recorded (enter after acquire, exit before release)
    const t2 = nowNs();
    waits.push(Number(t1 - t0) / 1000);
    enters.push(Number(t1 - start));
    exits.push(Number(t2 - start));
    try {
      await lock.release();
    } catch (e) {
      errors++;
    }
    lastDone = nowNs();
  }
  clearTimeout(stop);
  finish(false);
}

// Overlaps and hand-offs from the holders' [enter, exit] intervals on the shared monotonic clock.
function analyseIntervals(intervals) {
  intervals.sort((x, y) => x.enter - y.enter);
  let overlaps = 0;
  let handoffs = 0;
  let maxExit = -Infinity;
  for (let i = 0; i < intervals.length; i++) {
    const iv = intervals[i];
    if (iv.enter < maxExit) overlaps++;
    maxExit = Math.max(maxExit, iv.exit);
    if (i > 0 && intervals[i - 1].proc !== iv.proc) handoffs++;
  }
  return { overlaps, handoffShare: intervals.length > 1 ? handoffs / (intervals.length - 1) : 0 };
}

async function contention(a, n, setting) {
  const id = `S4/n${n}/${IMPL}/${setting}`;
  const cfgBase = { ports: a.ports.slice(0, n), setting, seconds: a['s4-seconds'], key: `bench:${id}:${process.pid}` };
  const children = [];
  for (let i = 0; i < PROCESSES; i++) {
    const child = fork(__filename, ['--s4-child', JSON.stringify({ ...cfgBase, index: i })], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const ready = new Promise((resolve) => child.once('message', resolve));
    const result = new Promise((resolve, reject) => {
      child.on('message', (m) => { if (!m.ready) resolve(m); });
      child.on('exit', (code) => reject(new Error(`S4 child exited with ${code}`)));
    });
    result.catch(() => {});
    children.push({ child, ready, result });
  }
  await Promise.all(children.map((c) => c.ready));
  const start = nowNs() + 100000000n;
  for (const c of children) c.child.send({ start: String(start) });
  const results = await Promise.all(children.map((c) => c.result));
  const waits = [];
  const intervals = [];
  let errors = 0;
  let timeouts = 0;
  let lastDone = 0;
  results.forEach((r, proc) => {
    timeouts += r.timeouts;
    waits.push(...r.waits);
    for (let i = 0; i < r.enters.length; i++) intervals.push({ enter: r.enters[i], exit: r.exits[i], proc });
    errors += r.errors;
    lastDone = Math.max(lastDone, Number(r.lastDone));
  });
  const { overlaps, handoffShare } = analyseIntervals(intervals);
  const seconds = Math.max(lastDone / 1e9, a['s4-seconds']);
  const rate = intervals.length / seconds;
  emit({
    kind: 'result', id, scenario: 'S4', impl: IMPL, variant: `n${n}`, servers: n, proxy_latency_ms: 0,
    settings: setting === 'default' ? 'retry 200+-100 ms (default)' : 'retry 1+-1 ms',
    baseline: `S4/n${n}/raw-spin`, ratio_of: 'throughput', processes: PROCESSES, seconds, ttl_ms: S4_TTL_MS,
    acquisitions: intervals.length, acquisitions_per_s: rate, ops_per_s: rate, wait_us: summarize(waits),
    handoff_share: handoffShare, overlaps, lost_updates: null, errors, timeouts,
  });
}

function version(pkg) {
  try {
    return JSON.parse(fs.readFileSync(path.join(nodeDir, 'node_modules', pkg, 'package.json'), 'utf8')).version.replace(/^v/, '');
  } catch (e) {
    return 'unknown';
  }
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const pm = a['proxy-latency-ms'];
  emit({ kind: 'info', impl: IMPL, versions: { node: process.version.replace(/^v/, ''), redlock: version('redlock'), ioredis: version('ioredis') } });
  const runs = [];
  if (a.scenarios.has('S1'))
    runs.push({ id: `S1/${IMPL}`, scenario: 'S1', variant: 'single', ports: a.ports.slice(0, 1), proxyMs: 0, iters: a.iters, baseline: 'S1/raw' });
  if (a.scenarios.has('S2'))
    for (const n of [3, 5])
      runs.push({ id: `S2/q${n}/${IMPL}`, scenario: 'S2', variant: `quorum-${n}`, ports: a.ports.slice(0, n), proxyMs: 0, iters: a.iters, baseline: `S2/q${n}/raw` });
  if (a.scenarios.has('S3')) {
    runs.push({ id: `S3/single/${IMPL}`, scenario: 'S3', variant: 'single via proxy', ports: a['proxy-ports'].slice(0, 1), proxyMs: pm, iters: a['proxy-iters'], baseline: 'S3/single/raw' });
    runs.push({ id: `S3/q5/${IMPL}`, scenario: 'S3', variant: 'quorum-5 via proxies', ports: a['proxy-ports'].slice(0, 5), proxyMs: pm, iters: a['proxy-iters'], baseline: `S3/single/${IMPL}`, alsoVs: ['S3/q5/raw'] });
  }
  let failed = false;
  for (const r of runs) {
    try {
      await uncontended(a, r);
    } catch (e) {
      failed = true;
      process.stderr.write(`node_redlock ${r.id}: ${e.stack || e}\n`);
    }
  }
  if (a.scenarios.has('S4')) {
    for (const n of [1, 3]) {
      for (const setting of ['default', 'tuned']) {
        try {
          await contention(a, n, setting);
        } catch (e) {
          failed = true;
          process.stderr.write(`node_redlock S4 n${n} ${setting}: ${e.stack || e}\n`);
        }
      }
    }
  }
  process.exit(failed ? 1 : 0);
}

if (process.argv[2] === '--s4-child') {
  s4Child().catch((e) => {
    process.stderr.write(`node_redlock S4 child: ${e.stack || e}\n`);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    process.stderr.write(`node_redlock: ${e.stack || e}\n`);
    process.exit(1);
  });
}

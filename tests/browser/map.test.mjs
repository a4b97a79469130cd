// Real-browser end-to-end test of the live map page served at `GET /`.
//
// Starts the service binary (embedded simulator) on a free loopback port,
// drives Debian's headless Chromium with playwright-core, and checks that the
// map draws H3 hexagons, that the scripted stadium surge shows up, and that
// clicking the stadium cell opens a details panel whose multiplier and
// explanation match `GET /v1/cells/{cell}` for the same decision tick.
//
// Plain Node script: exit code 0 = pass, non-zero = fail (with a message).
//
// Environment:
//   PRIMETIME_BIN        service binary (default ../../target/debug/primetime,
//                        relative to this file)
//   CHROMIUM_PATH        browser executable (default /usr/bin/chromium)
//   PRIMETIME_ARTIFACTS  where screenshots go (default <repo>/.ci/artifacts)
//   MAP_TEST_TIMEOUT_MS  timeout of the "hexagons drawn" and "stadium surged"
//                        waits (default 60000 each)

import { spawn } from 'node:child_process';
import { existsSync, accessSync, constants as fsConstants, mkdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const STADIUM = '88283082adfffff';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const BIN = process.env.PRIMETIME_BIN
  ? path.resolve(process.env.PRIMETIME_BIN)
  : path.resolve(HERE, '..', '..', 'target', 'debug', 'primetime');
const ARTIFACTS = process.env.PRIMETIME_ARTIFACTS
  ? path.resolve(process.env.PRIMETIME_ARTIFACTS)
  : path.join(REPO, '.ci', 'artifacts');
const WAIT_MS = positiveInt('MAP_TEST_TIMEOUT_MS', 60_000);
const HEALTH_MS = 20_000;
// Whole-run watchdog: nothing below may hang CI, whatever breaks.
const WATCHDOG_MS = HEALTH_MS + 2 * WAIT_MS + 120_000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

const t0 = Date.now();
const since = (t = t0) => ((Date.now() - t) / 1000).toFixed(1);
const log = (msg) => console.log(`[map.test +${since()}s] ${msg}`);

class TestFailure extends Error {}
const fail = (msg) => {
  throw new TestFailure(msg);
};

function positiveInt(name, dflt) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`map.test: ${name}=${raw} is not a positive integer (milliseconds)`);
    process.exit(2);
  }
  return n;
}

// ---------------------------------------------------------------- server

let server = null; // { child, pid, output: string[], exited: null | {code, signal} }

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function startServer(port) {
  const child = spawn(BIN, ['serve', '--http-addr', `127.0.0.1:${port}`], {
    env: { ...process.env, PRIMETIME_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const s = { child, pid: child.pid, output: [], exited: null, spawnError: null };
  const keep = (stream) => (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (line.trim() === '') continue;
      s.output.push(`${stream}: ${line}`);
      if (s.output.length > 200) s.output.shift();
    }
  };
  child.stdout.on('data', keep('stdout'));
  child.stderr.on('data', keep('stderr'));
  child.on('error', (e) => {
    s.spawnError = e;
  });
  child.on('exit', (code, signal) => {
    s.exited = { code, signal };
  });
  return s;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// Stops the server we started, by its PID: SIGTERM, then SIGKILL after 5 s.
async function stopServer() {
  const s = server;
  if (!s || !s.pid) return;
  if (s.exited) return;
  try {
    process.kill(s.pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + 5_000;
  while (!s.exited && Date.now() < deadline) await sleep(50);
  if (!s.exited) {
    log(`server pid ${s.pid} ignored SIGTERM for 5 s: SIGKILL`);
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    const hard = Date.now() + 5_000;
    while (!s.exited && Date.now() < hard) await sleep(50);
  }
  if (alive(s.pid) && !s.exited) fail(`server pid ${s.pid} still running after SIGKILL`);
}

// Last resort when the process exits on a path that skipped `finally`.
process.on('exit', () => {
  if (server && server.pid && !server.exited) {
    try {
      process.kill(server.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

// A GET without keep-alive (fetch's pooled idle connections would make the
// server's graceful shutdown wait for them).
function httpGet(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

async function waitHealthy(base) {
  const deadline = Date.now() + HEALTH_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (server.spawnError) fail(`could not start ${BIN}: ${server.spawnError.message}`);
    if (server.exited) {
      fail(`server exited before it was healthy (code ${server.exited.code}, signal ${server.exited.signal})`);
    }
    try {
      const r = await httpGet(`${base}/healthz`, 2_000);
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = e.code || e.message;
    }
    await sleep(100);
  }
  fail(`GET /healthz did not answer 200 within ${HEALTH_MS / 1000} s (last: ${last})`);
}

async function apiCell(base, cell) {
  const r = await httpGet(`${base}/v1/cells/${cell}`, 5_000);
  if (r.status !== 200) fail(`GET /v1/cells/${cell} answered HTTP ${r.status}: ${r.body.slice(0, 200)}`);
  try {
    return JSON.parse(r.body);
  } catch (e) {
    fail(`GET /v1/cells/${cell} answered invalid JSON (${e.message}): ${r.body.slice(0, 200)}`);
  }
}

// ---------------------------------------------------------------- browser

const problems = { pageErrors: [], consoleErrors: [], external: [] };

function checkProblems() {
  const lines = [];
  for (const u of problems.external) lines.push(`request to a non-127.0.0.1 host (aborted): ${u}`);
  for (const e of problems.pageErrors) lines.push(`page error: ${e}`);
  for (const e of problems.consoleErrors) lines.push(`console error: ${e}`);
  if (lines.length) fail(`the page is not clean:\n  ${lines.join('\n  ')}`);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Polls `probe` (returns { done, state }) until done, failing at once on any
// page problem or server exit, and with the last seen state on timeout.
async function waitUntil(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  let state = 'not probed yet';
  for (;;) {
    checkProblems();
    if (server.exited) fail(`server exited while waiting for ${what} (code ${server.exited.code})`);
    let res;
    try {
      res = await probe();
    } catch (e) {
      if (e instanceof TestFailure) throw e;
      // Navigation or re-render races: report if it persists.
      res = { done: false, state: `probe error: ${e.message.split('\n')[0]}` };
    }
    state = res.state;
    if (res.done) return res;
    if (Date.now() >= deadline) break;
    await sleep(250);
  }
  checkProblems();
  fail(`timed out after ${(timeoutMs / 1000).toFixed(1)} s waiting for ${what} (last seen: ${state})`);
}

// Everything the test reads off the map in one evaluation (atomic w.r.t. the
// page's own scripts).
function readMap(stadium) {
  const polys = [...document.querySelectorAll('svg#map polygon.cell')];
  const bad = [];
  let stadiumMult = null;
  for (const p of polys) {
    const cell = p.getAttribute('data-cell');
    const m = p.getAttribute('data-multiplier');
    const pts = (p.getAttribute('points') || '').trim().split(/[\s,]+/).filter(Boolean).length;
    if (!/^[0-9a-f]{15}$/.test(cell || '')) bad.push(`data-cell=${JSON.stringify(cell)}`);
    else if (m === null || m.trim() === '' || !Number.isFinite(Number(m))) bad.push(`${cell}: data-multiplier=${JSON.stringify(m)}`);
    else if (pts < 6) bad.push(`${cell}: points has ${pts} numbers`);
    if (cell === stadium) stadiumMult = m === null ? null : Number(m);
  }
  return {
    svg: !!document.querySelector('svg#map'),
    count: polys.length,
    bad: bad.slice(0, 5),
    nbad: bad.length,
    stadiumMult,
  };
}

function readPanel() {
  const el = (id) => document.getElementById(id);
  const text = (id) => (el(id) ? el(id).textContent.trim() : null);
  const details = el('details');
  let visible = false;
  if (details) {
    const cs = getComputedStyle(details);
    const r = details.getBoundingClientRect();
    visible = cs.display !== 'none' && cs.visibility !== 'hidden' && Number(cs.opacity) > 0 && r.width > 0 && r.height > 0 && !details.hidden;
  }
  return {
    exists: !!details,
    visible,
    tick: details ? details.getAttribute('data-tick') : null,
    cell: text('detail-cell'),
    multiplier: text('detail-multiplier'),
    features: text('detail-features'),
    raw: text('detail-raw'),
    guardrails: text('detail-guardrails'),
    modelVersion: text('detail-model-version'),
    tickText: text('detail-tick'),
    stale: text('detail-stale'),
  };
}

function readHeader() {
  const text = (id) => {
    const e = document.getElementById(id);
    return e ? e.textContent.trim() : null;
  };
  return {
    watermark: text('watermark'),
    lag: text('lag'),
    eventsPerS: text('events-per-s'),
    rejects: text('rejects'),
  };
}

// ---------------------------------------------------------------- test

async function main() {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    fail(`playwright-core is not installed (run \`npm ci\` in ${HERE}): ${e.message}`);
  }
  if (!existsSync(CHROMIUM)) fail(`no browser at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  try {
    accessSync(BIN, fsConstants.X_OK);
  } catch {
    fail(`no executable service binary at ${BIN} (cargo build -p primetime, or set PRIMETIME_BIN)`);
  }

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  server = startServer(port);
  log(`started ${path.relative(process.cwd(), BIN) || BIN} serve --http-addr 127.0.0.1:${port} (pid ${server.pid})`);
  const tServer = Date.now();
  await waitHealthy(base);
  log(`GET /healthz = 200 after ${since(tServer)} s`);

  let browser = null;
  let page = null;
  let screenshotOk = false;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
    log(`launched Chromium ${browser.version()}`);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // Only the service itself may be contacted: anything else is aborted and
    // fails the test (the page must be self-contained).
    await context.route('**', (route) => {
      const url = route.request().url();
      let host = null;
      try {
        host = new URL(url).hostname;
      } catch {
        /* not a URL: treat as external */
      }
      if (host === '127.0.0.1') return route.continue();
      problems.external.push(url);
      return route.abort('blockedbyclient');
    });
    page = await context.newPage();
    page.on('pageerror', (e) => problems.pageErrors.push(e.stack || String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') {
        const loc = m.location();
        problems.consoleErrors.push(`${m.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
      }
    });
    page.on('websocket', (ws) => {
      let host = null;
      try {
        host = new URL(ws.url()).hostname;
      } catch {
        /* treat as external */
      }
      if (host !== '127.0.0.1') problems.external.push(ws.url());
    });

    const resp = await page.goto(`${base}/`, { waitUntil: 'load', timeout: 30_000 });
    if (!resp) fail('GET / gave no response');
    if (resp.status() !== 200) fail(`GET / answered HTTP ${resp.status()}`);
    const ctype = resp.headers()['content-type'] || '';
    if (!ctype.startsWith('text/html')) fail(`GET / answered content-type ${JSON.stringify(ctype)}, not text/html`);
    const tPage = Date.now();
    log(`opened ${base}/ (HTTP 200, ${ctype})`);
    checkProblems();

    // 1. Hexagons.
    const hex = await waitUntil('hexagons (svg#map polygon.cell)', WAIT_MS, async () => {
      const m = await page.evaluate(readMap, STADIUM);
      if (m.nbad > 0) fail(`${m.nbad} of ${m.count} hexagons are malformed, e.g. ${m.bad.join('; ')}`);
      return { done: m.count > 0, state: m.svg ? `svg#map with ${m.count} polygon.cell` : 'no svg#map', count: m.count };
    });
    log(`${hex.count} hexagons drawn after ${since(tPage)} s on the page`);

    // 2. The stadium surge.
    const surge = await waitUntil(`stadium cell ${STADIUM} drawn with data-multiplier > 1`, WAIT_MS, async () => {
      const m = await page.evaluate(readMap, STADIUM);
      if (m.nbad > 0) fail(`${m.nbad} of ${m.count} hexagons are malformed, e.g. ${m.bad.join('; ')}`);
      const state = `${m.count} hexagons, stadium ${m.stadiumMult === null ? 'not drawn' : `at ${m.stadiumMult}`}`;
      return { done: m.stadiumMult !== null && m.stadiumMult > 1, state, count: m.count, mult: m.stadiumMult };
    });
    const surgeAfter = since(tServer);
    log(`stadium surged to ${surge.mult} (${surge.count} hexagons) ${surgeAfter} s after server start`);

    // 3. Click it; the details panel must agree with the API for the same tick.
    const sel = `svg#map polygon.cell[data-cell="${STADIUM}"]`;
    let matched = null;
    const attempts = [];
    for (let attempt = 1; attempt <= 5 && !matched; attempt++) {
      try {
        await page.click(sel, { timeout: 5_000 });
      } catch (e) {
        log(`click on the stadium polygon failed (${e.message.split('\n')[0]}); dispatching a click event instead`);
        await page.dispatchEvent(sel, 'click');
      }
      const panel = (
        await waitUntil(`#details visible with #detail-cell containing ${STADIUM}`, 10_000, async () => {
          const p = await page.evaluate(readPanel);
          const state = p.exists
            ? `#details ${p.visible ? 'visible' : 'hidden'}, #detail-cell=${JSON.stringify(p.cell)}`
            : 'no #details';
          return { done: p.visible && (p.cell || '').includes(STADIUM), state, p };
        })
      ).p;
      const api = await apiCell(base, STADIUM);
      attempts.push(`panel tick ${panel.tick} multiplier ${panel.multiplier}; API since_tick ${api.since_tick} multiplier ${api.multiplier}`);
      if (panel.tick === null || panel.tick === '') fail('#details has no data-tick attribute (the tick of the shown decision)');
      if (String(api.since_tick) !== String(panel.tick)) {
        log(`attempt ${attempt}: ticks differ (${attempts.at(-1)}); retrying`);
        await sleep(500);
        continue;
      }
      const shown = Number.parseFloat(panel.multiplier);
      if (!Number.isFinite(shown)) fail(`#detail-multiplier is not a number: ${JSON.stringify(panel.multiplier)}`);
      if (Math.abs(shown - api.multiplier) > 1e-9) {
        fail(`panel multiplier ${panel.multiplier} != API multiplier ${api.multiplier} for tick ${api.since_tick}`);
      }
      matched = { panel, api };
    }
    if (!matched) fail(`panel and API never showed the same tick in 5 attempts:\n  ${attempts.join('\n  ')}`);
    const { panel, api } = matched;
    log(`panel shows ${panel.multiplier} for tick ${panel.tick} = API ${api.multiplier} since_tick ${api.since_tick}`);

    // 4. The explanation.
    const missing = ['features', 'raw', 'guardrails', 'modelVersion', 'tickText', 'stale'].filter((k) => panel[k] === null);
    if (missing.length) {
      const ids = { features: 'detail-features', raw: 'detail-raw', guardrails: 'detail-guardrails', modelVersion: 'detail-model-version', tickText: 'detail-tick', stale: 'detail-stale' };
      fail(`details panel lacks ${missing.map((k) => `#${ids[k]}`).join(', ')}`);
    }
    for (const word of ['supply', 'requests_5m']) {
      if (!panel.features.includes(word)) fail(`#detail-features does not mention ${word}: ${JSON.stringify(panel.features)}`);
    }
    for (const [id, v] of [['detail-raw', panel.raw], ['detail-model-version', panel.modelVersion], ['detail-tick', panel.tickText], ['detail-stale', panel.stale]]) {
      if (v === '') fail(`#${id} is empty`);
    }
    if (!panel.modelVersion.includes(api.model_version)) {
      fail(`#detail-model-version ${JSON.stringify(panel.modelVersion)} does not show the API's model_version ${JSON.stringify(api.model_version)}`);
    }

    // 5. The header.
    const header = (
      await waitUntil('header #watermark non-empty', 10_000, async () => {
        const h = await page.evaluate(readHeader);
        const absent = Object.entries({ watermark: '#watermark', lag: '#lag', eventsPerS: '#events-per-s', rejects: '#rejects' })
          .filter(([k]) => h[k] === null)
          .map(([, id]) => id);
        if (absent.length) fail(`page header lacks ${absent.join(', ')}`);
        return { done: h.watermark !== '', state: `#watermark=${JSON.stringify(h.watermark)}`, h };
      })
    ).h;
    checkProblems();

    // 6. Screenshot.
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'map.png');
    await page.screenshot({ path: shot, fullPage: true });
    screenshotOk = true;
    log(`screenshot: ${shot}`);
    checkProblems();

    const finalMap = await page.evaluate(readMap, STADIUM);
    console.log(
      `map.test OK: ${Math.max(hex.count, finalMap.count)} hexagons seen, stadium ${STADIUM} at ${panel.multiplier} ` +
        `(tick ${panel.tick}, = API), surge ${surgeAfter} s after server start; ` +
        `header watermark ${JSON.stringify(header.watermark)}, lag ${JSON.stringify(header.lag)}, ` +
        `events/s ${JSON.stringify(header.eventsPerS)}, rejects ${JSON.stringify(header.rejects)}`,
    );
  } catch (e) {
    if (page && !screenshotOk) {
      try {
        mkdirSync(ARTIFACTS, { recursive: true });
        const shot = path.join(ARTIFACTS, 'map-failure.png');
        await page.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
        console.error(`[map.test] failure screenshot: ${shot}`);
      } catch (se) {
        console.error(`[map.test] could not save a failure screenshot: ${se.message.split('\n')[0]}`);
      }
    }
    throw e;
  } finally {
    if (browser) {
      await Promise.race([browser.close().catch(() => {}), sleep(10_000)]);
    }
  }
}

const watchdog = setTimeout(async () => {
  console.error(`map.test FAILED: the whole test took longer than ${WATCHDOG_MS / 1000} s`);
  await stopServer().catch(() => {});
  process.exit(1);
}, WATCHDOG_MS);

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    console.error(`map.test: interrupted by ${sig}`);
    await stopServer().catch(() => {});
    process.exit(130);
  });
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  const msg = e instanceof TestFailure ? e.message : e.stack || String(e);
  console.error(`map.test FAILED after ${since()} s: ${msg}`);
  if (server && server.output.length) {
    console.error(`--- server output (last ${Math.min(server.output.length, 40)} lines) ---`);
    for (const line of server.output.slice(-40)) console.error(line);
    console.error('--- end of server output ---');
  }
} finally {
  try {
    await stopServer();
    if (server && server.pid) log(`server pid ${server.pid} stopped`);
  } catch (e) {
    code = 1;
    console.error(`map.test: ${e.message}`);
  }
  clearTimeout(watchdog);
}
process.exit(code);

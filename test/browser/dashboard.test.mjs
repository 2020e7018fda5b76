// The dashboard (example/www/index.html) in a real browser: Debian's
// chromium driven by playwright-core, against the example server and a
// mosquitto broker this test starts on free loopback ports.
//
//   node test/browser/dashboard.test.mjs
//
// EXAMPLE_BIN: the server binary (default example/civetweb-mqtt, relative to
// the repository root); TEST_TIMEOUT_SCALE multiplies every wait (sanitizer
// builds); KEEP_TMP=1 keeps the temporary directory (configs, logs).
// Prints "ok <check>" or "FAIL <check>: reason" for each check and ends with
// "N passed, N failed"; exits 0 only when every check passed. Every process
// it starts is stopped by its PID before it exits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, T, CHROMIUM, CHROMIUM_FLAGS, sleep, freePort, waitFor, tail, processes, checks, childWith } from './procs.mjs';

const EXAMPLE_BIN = path.resolve(ROOT, process.env.EXAMPLE_BIN || 'example/civetweb-mqtt');
const WWW = path.join(ROOT, 'example', 'www');
const OUT = path.join(ROOT, 'test', 'out');
const SHOT = path.join(OUT, 'dashboard.png');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dashboard-test-'));
const procs = processes(tmp);
const { children, start, waitExit, stop, waitPort } = procs;

// ---- processes ----------------------------------------------------------------

// ---- MQTT peers: mosquitto_pub / mosquitto_sub ---------------------------------

let nPub = 0;
async function mqttPub(topic, args) {
  const p = start('mosquitto_pub', 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', topic, ...args],
    `pub-${++nPub}.log`);
  const code = await waitExit(p, T(10000));
  if (code === undefined) { await stop(p); throw new Error(`mosquitto_pub ${topic} did not finish`); }
  children.delete(p);
  if (code !== 0) throw new Error(`mosquitto_pub ${topic} exited ${code}: ${tail(p.log)}`);
}

// ---- servers --------------------------------------------------------------------

let brokerPort, httpPort, broker, server, serverConf;
let nServer = 0;

function writeBrokerConf() {
  const conf = path.join(tmp, 'mosquitto.conf');
  fs.writeFileSync(conf, [
    `listener ${brokerPort} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'log_dest stderr',
    'log_type all',
    ''].join('\n'));
  return conf;
}

// The example's civetweb.conf with this test's ports and an absolute
// document root; everything else (the bridge lines included) as shipped.
function writeServerConf() {
  const example = fs.readFileSync(path.join(ROOT, 'example', 'civetweb.conf'), 'utf8');
  for (const need of ['MQTT_BRIDGE_PATH /mqtt', 'MQTT_BRIDGE_PUBLISH_ALLOW demo/#', 'MQTT_BRIDGE_SUBSCRIBE_ALLOW demo/#'])
    if (!example.split('\n').includes(need)) throw new Error(`example/civetweb.conf lacks the line "${need}"`);
  const seen = new Set();
  const lines = example.split('\n').map((line) => {
    const key = line.trim().split(/\s+/)[0].toLowerCase();
    const set = { listening_ports: `listening_ports 127.0.0.1:${httpPort}`, document_root: `document_root ${WWW}`,
      mqtt_broker_url: `MQTT_BROKER_URL tcp://127.0.0.1:${brokerPort}` }[key];
    if (set && !line.trim().startsWith('#')) { seen.add(key); return set; }
    return line;
  });
  for (const k of ['listening_ports', 'document_root', 'mqtt_broker_url'])
    if (!seen.has(k)) throw new Error(`example/civetweb.conf has no ${k} line`);
  const conf = path.join(tmp, 'civetweb.conf');
  fs.writeFileSync(conf, lines.join('\n'));
  return conf;
}

async function startServer() {
  const p = start('server', EXAMPLE_BIN, [serverConf], `server-${++nServer}.log`);
  await waitPort(httpPort, p, T(15000));
  return p;
}

// GET <bridge>/last/<topic>: {status, body}.
async function lastValue(topic) {
  const r = await fetch(`http://127.0.0.1:${httpPort}/mqtt/last/${topic.split('/').map(encodeURIComponent).join('/')}`,
    { signal: AbortSignal.timeout(3000) });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function status() {
  const r = await fetch(`http://127.0.0.1:${httpPort}/mqtt/status`, { signal: AbortSignal.timeout(3000) });
  if (!r.ok) throw new Error(`GET /mqtt/status: HTTP ${r.status}`);
  return r.json();
}

function serverSub(st, filter) {
  return (st.subscriptions || []).find((s) => s.filter === filter);
}

// ---- checks ---------------------------------------------------------------------

const { check, run } = checks(tmp, procs);

// ---- the browser ----------------------------------------------------------------

let context, page, browserPid = 0;
const pageErrors = [], outsideRequests = [];
const userDataDir = path.join(tmp, 'chromium-profile');

const sel = {
  ws: '[data-testid="ws-state"]',
  mqtt: '[data-testid="mqtt-state"]',
  sub: (f) => `[data-testid="subscription"][data-filter="${f}"]`,
  rows: '[data-testid="message-row"]',
};

async function state(selector) {
  return page.getAttribute(selector, 'data-state');
}

async function waitState(selector, want, ms) {
  const loc = page.locator(`${selector}[data-state="${want}"]`);
  try {
    await loc.waitFor({ state: 'attached', timeout: ms });
  } catch {
    throw new Error(`${selector} is "${await state(selector)}" after ${ms} ms, not "${want}"`);
  }
}

async function counter(name) {
  const v = await page.getAttribute(`[data-testid="counter-${name}"]`, 'data-value');
  return v === null || v === '' ? NaN : Number(v);
}

// The message rows as shown, newest first.
function listRows() {
  return page.$$eval(sel.rows, (trs) => trs.map((tr, i) => ({
    i, topic: tr.dataset.topic, qos: tr.dataset.qos, retain: tr.dataset.retain, base64: tr.dataset.base64,
    payload: tr.querySelector('[data-testid="message-payload"] .text').lastChild?.textContent ?? '',
    badge: tr.querySelector('[data-testid="message-payload"] .badge')?.textContent ?? '',
    last: tr.dataset.last, lastClass: tr.classList.contains('last-value'),
    lastLabel: tr.querySelector('[data-testid="last-value"]')?.textContent ?? '',
    time: tr.querySelector('td.time time')?.getAttribute('datetime') ?? '',
  })));
}

// The newest row for a topic and payload (and more, by pred); waits for it.
async function waitRow(topic, payload, ms, pred = () => true) {
  return waitFor(`a message row ${topic} "${payload}"`, async () =>
    (await listRows()).find((r) => r.topic === topic && r.payload === payload && pred(r)), ms);
}

async function fillSubscribe(filter, qos) {
  await page.fill('[data-testid="sub-filter"]', filter);
  await page.selectOption('[data-testid="sub-qos"]', String(qos));
  await page.click('[data-testid="sub-submit"]');
}

async function fillPublish(topic, payload, qos, retain = false) {
  await page.fill('[data-testid="pub-topic"]', topic);
  await page.fill('[data-testid="pub-payload"]', payload);
  await page.selectOption('[data-testid="pub-qos"]', String(qos));
  await page.setChecked('[data-testid="pub-retain"]', retain);
  await page.click('[data-testid="pub-submit"]');
}

// ---- the test ---------------------------------------------------------------------

async function main() {
  let base, received0 = NaN, published0 = NaN, cached = null;
  const LV_TOPIC = 'demo/lastvalue/test';

  await check('mosquitto starts on a free loopback port', async () => {
    brokerPort = await freePort();
    do httpPort = await freePort(); while (httpPort === brokerPort);
    broker = start('mosquitto', 'mosquitto', ['-c', writeBrokerConf()]);
    await waitPort(brokerPort, broker, T(10000));
  }, { critical: true });

  await check('example server starts with the example configuration', async () => {
    if (!fs.existsSync(EXAMPLE_BIN)) throw new Error(`${EXAMPLE_BIN} does not exist (make)`);
    serverConf = writeServerConf();
    server = await startServer();
    base = `http://127.0.0.1:${httpPort}`;
    await waitFor('GET /mqtt/status connected', async () => (await status()).connected === true, T(10000), 100);
  }, { critical: true });

  // Before any page is open: a message no browser sees live, not retained
  // (the broker keeps nothing), so only the server's last values have it.
  await check('a message published before the page opens is in GET /mqtt/last/<topic>', async () => {
    await waitFor('status: the server\'s demo/# granted', async () => {
      const s = serverSub(await status(), 'demo/#');
      return s && s.granted !== null && s.granted !== undefined;
    }, T(10000), 100);
    const before = await lastValue(LV_TOPIC);
    if (before.status !== 404) throw new Error(`GET /mqtt/last/${LV_TOPIC} answered ${before.status} before the publish`);
    await mqttPub(LV_TOPIC, ['-m', 'cached-42', '-q', '1']);
    cached = await waitFor(`GET /mqtt/last/${LV_TOPIC} 200`, async () => {
      const r = await lastValue(LV_TOPIC);
      return r.status === 200 && r.body && r.body.payload === 'cached-42' ? r.body : null;
    }, T(10000), 50);
    if (cached.topic !== LV_TOPIC || cached.retain !== false || cached.qos !== 1 || !cached.received)
      throw new Error(`last value ${JSON.stringify(cached)}`);
  });

  await check('chromium starts (playwright-core, /usr/bin/chromium)', async () => {
    fs.mkdirSync(userDataDir);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS,
      viewport: { width: 1280, height: 800 }, timeout: T(30000),
    });
    browserPid = childWith(userDataDir);
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(T(10000));
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('request', (r) => {
      if (!r.url().startsWith(base + '/') && !r.url().startsWith('data:')) outsideRequests.push(r.url());
    });
  }, { critical: true });

  await check('the dashboard loads from the document root', async () => {
    const r = await page.goto(base + '/', { timeout: T(15000) });
    if (!r || r.status() !== 200) throw new Error(`GET / answered ${r && r.status()}`);
    const title = await page.title();
    if (!/civetweb-mqtt/.test(title)) throw new Error(`title is "${title}"`);
  }, { critical: true });

  await check('the last value published before the page opened shows on load, marked "last value"', async () => {
    if (!cached) throw new Error('no last value to look for');
    const row = await waitRow(LV_TOPIC, 'cached-42', T(10000));
    if (row.last !== 'true' || !row.lastClass || row.lastLabel !== 'last value')
      throw new Error(`not marked as a last value (data-last ${row.last}, class ${row.lastClass}, label "${row.lastLabel}")`);
    if (row.qos !== '1' || row.retain !== 'false' || row.base64 !== 'false')
      throw new Error(`row shows qos ${row.qos}, retain ${row.retain}, base64 ${row.base64}`);
    if (row.time !== new Date(cached.received_ms).toISOString())
      throw new Error(`row time ${row.time}, not the server's received ${cached.received}`);
    // Nothing published since: the one row of the topic is the server's copy.
    const mine = (await listRows()).filter((r) => r.topic === LV_TOPIC);
    if (mine.length !== 1) throw new Error(`${mine.length} rows for ${LV_TOPIC}`);
  });

  await check('the dashboard shows WebSocket and MQTT connected', async () => {
    await waitState(sel.ws, 'connected', T(10000));
    await waitState(sel.mqtt, 'connected', T(10000));
  }, { critical: true });

  await check('default subscription demo/# at QoS 1 is active (page and server)', async () => {
    await waitState(sel.sub('demo/#'), 'active', T(10000));
    const qos = await page.getAttribute(sel.sub('demo/#'), 'data-qos');
    if (qos !== '1') throw new Error(`QoS shown ${qos}`);
    await waitFor('status: demo/# held by a browser', async () => (serverSub(await status(), 'demo/#')?.browsers ?? 0) >= 1, T(5000), 100);
  });

  await check('a live message replaces the last value of its topic', async () => {
    await mqttPub(LV_TOPIC, ['-m', 'live-43', '-q', '0']);
    const row = await waitRow(LV_TOPIC, 'live-43', T(10000));
    if (row.last !== 'false' || row.lastClass || row.lastLabel) throw new Error('the live message is marked as a last value');
    if (row.i !== 0) throw new Error(`the live message is row ${row.i}, not the first`);
    if (row.qos !== '0') throw new Error(`QoS shown ${row.qos}`);
    const mine = (await listRows()).filter((r) => r.topic === LV_TOPIC);
    if (mine.length !== 1) throw new Error(`${mine.length} rows for ${LV_TOPIC}: ${mine.map((r) => `"${r.payload}"${r.last === 'true' ? ' (last value)' : ''}`).join(', ')}`);
  });

  await check('counters panel shows the status counters', async () => {
    await waitFor('counters filled', async () => {
      for (const k of ['published', 'received', 'dropped_queue_full', 'reconnects', 'bridge_clients', 'bridge_delivered'])
        if (Number.isNaN(await counter(k))) return false;
      return (await counter('bridge_clients')) >= 1;
    }, T(6000), 100);
    received0 = await counter('received');
    published0 = await counter('published');
  });

  // Retained before the page subscribes demo/extra/+: the broker sends it on
  // that SUBSCRIBE, with the retain flag.
  await mqttPub('demo/extra/config', ['-m', '{"mode":"eco"}', '-q', '1', '-r']).catch((e) => console.log(`# ${e.message}`));

  await check('subscribe demo/extra/+ at QoS 2 via the form', async () => {
    await fillSubscribe('demo/extra/+', 2);
    await waitState(sel.sub('demo/extra/+'), 'active', T(10000));
    const qos = await page.getAttribute(sel.sub('demo/extra/+'), 'data-qos');
    if (qos !== '2') throw new Error(`QoS shown ${qos}`);
    await waitFor('status: demo/extra/+ granted', async () => {
      const s = serverSub(await status(), 'demo/extra/+');
      return s && s.browsers === 1 && s.granted !== null;
    }, T(5000), 100);
  });

  await check('the retained message shows with its retained flag', async () => {
    // demo/# got it live first (not retained); SUBSCRIBE demo/extra/+ brings
    // the broker's retained copy.
    const row = await waitRow('demo/extra/config', '{"mode":"eco"}', T(10000), (r) => r.retain === 'true');
    if (row.qos !== '1') throw new Error(`QoS shown ${row.qos}`);
  });

  await check('a mosquitto_pub message appears with topic, payload and QoS', async () => {
    await mqttPub('demo/sensors/kitchen/temperature', ['-m', '21.5', '-q', '1']);
    const row = await waitRow('demo/sensors/kitchen/temperature', '21.5', T(10000));
    if (row.qos !== '1' || row.retain !== 'false' || row.base64 !== 'false')
      throw new Error(`row shows qos ${row.qos}, retain ${row.retain}, base64 ${row.base64}`);
  });

  await check('newest message first, QoS 0 shown', async () => {
    await mqttPub('demo/lamp', ['-m', 'on', '-q', '0']);
    const row = await waitRow('demo/lamp', 'on', T(10000));
    if (row.i !== 0) throw new Error(`demo/lamp is row ${row.i}, not the first`);
    if (row.qos !== '0') throw new Error(`QoS shown ${row.qos}`);
    const second = await waitRow('demo/sensors/kitchen/temperature', '21.5', 1000);
    if (second.i !== 1) throw new Error(`the older message is row ${second.i}, not the second`);
  });

  await check('a binary payload is shown in base64, marked', async () => {
    const bin = path.join(tmp, 'binary.bin');
    fs.writeFileSync(bin, Buffer.from([0xff, 0x00, 0x01, 0x02, 0xfe]));
    await mqttPub('demo/camera/frame', ['-f', bin, '-q', '1']);
    const row = await waitRow('demo/camera/frame', Buffer.from([0xff, 0x00, 0x01, 0x02, 0xfe]).toString('base64'), T(10000));
    if (row.base64 !== 'true' || row.badge !== 'base64') throw new Error(`not marked (base64 ${row.base64}, badge "${row.badge}")`);
  });

  await check('several messages arrive in publishing order', async () => {
    const msgs = [['demo/sensors/livingroom/humidity', '48'], ['demo/door/front', '{"open":false,"battery":87}'],
      ['demo/sensors/kitchen/temperature', '21.7'], ['demo/lamp', 'off']];
    for (const [t, m] of msgs) await mqttPub(t, ['-m', m, '-q', '1']);
    await waitRow(...msgs[msgs.length - 1], T(10000)); // the last one in: all in
    const shown = await listRows();
    const rows = msgs.map(([t, m]) => shown.find((r) => r.topic === t && r.payload === m)?.i);
    if (rows.join() !== '3,2,1,0') throw new Error(`rows ${rows.join()}, not 3,2,1,0`);
  });

  await check('publish from the form reaches mosquitto_sub, ack shown', async () => {
    const sub = start('mosquitto_sub', 'stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(brokerPort),
      '-t', 'demo/page/out', '-q', '1', '-C', '1', '-W', String(Math.ceil(T(20000) / 1000)), '-v', '-d'], 'sub.log');
    try {
      await waitFor('mosquitto_sub SUBACK', async () => {
        if (sub.exited) throw new Error(`mosquitto_sub exited ${sub.code}: ${tail(sub.log)}`);
        return fs.readFileSync(sub.log, 'utf8').includes('received SUBACK');
      }, T(10000), 20);
      await fillPublish('demo/page/out', 'hello from the browser', 1, false);
      await waitState('[data-testid="publish-result"]', 'ok', T(10000));
      const text = await page.textContent('[data-testid="publish-result"]');
      if (!/message id \d+/.test(text)) throw new Error(`ack shows "${text}"`);
      const code = await waitExit(sub, T(15000));
      if (code !== 0) throw new Error(`mosquitto_sub exited ${code}: ${tail(sub.log)}`);
      const got = fs.readFileSync(sub.log, 'utf8').split('\n').filter((l) => l.startsWith('demo/page/out '));
      if (got.length !== 1 || got[0] !== 'demo/page/out hello from the browser') throw new Error(`mosquitto_sub got ${JSON.stringify(got)}`);
    } finally {
      await stop(sub);
    }
    await waitRow('demo/page/out', 'hello from the browser', T(10000)); // demo/# brings it back too
  });

  await check('counters update (received, published, bridge_delivered)', async () => {
    await waitFor('the counters to grow', async () =>
      (await counter('received')) >= received0 + 4 && (await counter('published')) > published0 &&
      (await counter('bridge_delivered')) >= 4 && (await counter('bridge_clients')) >= 1, T(8000), 200);
  });

  await check('screenshot saved (test/out/dashboard.png)', async () => {
    // The form back to its inviting defaults for the picture.
    await page.fill('[data-testid="pub-topic"]', 'demo/lamp');
    await page.fill('[data-testid="pub-payload"]', 'on');
    await page.fill('[data-testid="sub-filter"]', '');
    await page.locator('[data-testid="sub-filter"]').blur();
    await page.mouse.move(1270, 790);
    await sleep(1500); // row highlight faded
    fs.mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: SHOT });
    if (fs.statSync(SHOT).size < 10000) throw new Error('the screenshot is suspiciously small');
  });

  await check('a denied subscription ("#") shows the 403 error', async () => {
    await fillSubscribe('#', 0);
    await waitState('[data-testid="subscribe-result"]', 'error', T(10000));
    const text = await page.textContent('[data-testid="subscribe-result"]');
    if (!text.includes('403') || !/not allowed/.test(text)) throw new Error(`subscribe result shows "${text}"`);
    await page.locator('[data-testid="error-item"][data-status="403"]').first().waitFor({ state: 'visible', timeout: T(5000) });
    if (await page.locator(sel.sub('#')).count() !== 0) throw new Error('"#" is listed as a subscription');
    // GET /mqtt/last?filter=%23 is refused too (403): quietly.
    const ctxs = await page.$$eval('[data-testid="error-item"] .ctx', (xs) => xs.map((x) => x.textContent));
    if (ctxs.some((c) => c.includes('/last'))) throw new Error(`errors shown for /last: ${ctxs.join(', ')}`);
    if (await page.isVisible('[data-testid="last-note"]')) throw new Error(`note shown: "${await page.textContent('[data-testid="last-note"]')}"`);
  });

  await check('a denied publish (private/x) shows the 403 error', async () => {
    await fillPublish('private/x', 'nope', 0, false);
    await waitState('[data-testid="publish-result"]', 'error', T(10000));
    const text = await page.textContent('[data-testid="publish-result"]');
    if (!text.includes('403')) throw new Error(`publish result shows "${text}"`);
  });

  await check('the list is capped at 500 rows, newest first', async () => {
    const lines = path.join(tmp, 'lines.txt');
    fs.writeFileSync(lines, Array.from({ length: 520 }, (_, i) => `n ${i + 1}`).join('\n') + '\n');
    // -l: one message a line, from standard input (a shell redirect).
    const p = start('mosquitto_pub', 'sh', ['-c', `exec mosquitto_pub -h 127.0.0.1 -p ${brokerPort} -t demo/bulk -q 0 -l < '${lines}'`], 'pub-bulk.log');
    const code = await waitExit(p, T(15000));
    if (code !== 0) { await stop(p); throw new Error(`mosquitto_pub -l exited ${code}: ${tail(p.log)}`); }
    children.delete(p);
    const row = await waitRow('demo/bulk', 'n 520', T(15000));
    if (row.i !== 0) throw new Error(`the newest is row ${row.i}`);
    const n = await page.locator(sel.rows).count();
    if (n !== 500) throw new Error(`${n} rows`);
    await page.click('[data-testid="msg-clear"]');
    await waitFor('an empty list', async () => (await page.locator(sel.rows).count()) === 0, T(3000));
  });

  await check('a filter subscribed from the form brings its last values', async () => {
    // The list is empty now; demo/lastvalue/+ has one topic, last "live-43".
    await fillSubscribe('demo/lastvalue/+', 0);
    await waitState(sel.sub('demo/lastvalue/+'), 'active', T(10000));
    const row = await waitRow(LV_TOPIC, 'live-43', T(10000));
    if (row.last !== 'true' || row.lastLabel !== 'last value') throw new Error(`not marked as a last value (data-last ${row.last})`);
    const rows = await listRows();
    if (rows.length !== 1) throw new Error(`${rows.length} rows: ${rows.map((r) => r.topic).join(', ')}`);
    await page.click(`${sel.sub('demo/lastvalue/+')} [data-testid="unsubscribe"]`);
    await page.locator(sel.sub('demo/lastvalue/+')).waitFor({ state: 'detached', timeout: T(10000) });
  });

  await check('server stopped (SIGTERM): the page shows disconnected', async () => {
    const code = await stop(server);
    if (code !== 0) throw new Error(`the server exited ${code}: ${tail(server.log)}`);
    await waitState(sel.ws, 'disconnected', T(10000));
    await waitFor('MQTT state not "connected"', async () => (await state(sel.mqtt)) !== 'connected', T(6000), 100);
    await waitState('[data-testid="status-updated"]', 'error', T(6000));
    await page.screenshot({ path: path.join(OUT, 'dashboard-disconnected.png') });
  });

  await check('server restarted: the page reconnects and re-subscribes by itself', async () => {
    server = await startServer();
    await waitState(sel.ws, 'connected', T(20000));
    await waitState(sel.sub('demo/#'), 'active', T(10000));
    await waitState(sel.sub('demo/extra/+'), 'active', T(10000));
    await waitFor('status: both filters held by the browser, granted', async () => {
      const st = await status();
      const a = serverSub(st, 'demo/#'), b = serverSub(st, 'demo/extra/+');
      return st.connected && a && a.browsers === 1 && a.granted !== null && b && b.browsers === 1 && b.granted !== null;
    }, T(10000), 100);
    await waitState(sel.mqtt, 'connected', T(6000));
  });

  await check('after the restart a new message arrives', async () => {
    await mqttPub('demo/after/restart', ['-m', 'back again', '-q', '1']);
    await waitRow('demo/after/restart', 'back again', T(10000));
  });

  await check('the unsubscribe button removes the subscription (page and server)', async () => {
    await page.click(`${sel.sub('demo/extra/+')} [data-testid="unsubscribe"]`);
    await page.locator(sel.sub('demo/extra/+')).waitFor({ state: 'detached', timeout: T(10000) });
    await waitFor('status: demo/extra/+ gone', async () => !serverSub(await status(), 'demo/extra/+'), T(5000), 100);
  });

  await check('no script errors, nothing fetched from outside the server', async () => {
    if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
    if (outsideRequests.length) throw new Error(`outside requests: ${outsideRequests.join(', ')}`);
  });
}

// ---- run, always clean up ------------------------------------------------------------

run(main, 'dashboard test', 240, ['server-1.log', 'server-2.log', 'mosquitto.log'], () => [context, browserPid]);

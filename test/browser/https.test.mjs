// HTTPS in front of the bridge: Debian's nginx with example/nginx.conf
// (TLS termination, WebSocket upgrade, SSE unbuffered) before the example
// server, a certificate generated here, a mosquitto broker; all on free
// loopback ports. Drives the bridge through nginx as a browser would
// (https:// publish, wss:// WebSocket, SSE, digest authentication, the
// public https:// Origin), then opens the dashboard in Debian's chromium
// over https:// (the test's own CA is not trusted by chromium: certificate
// errors ignored there; the Node clients verify the certificate).
//
//   node test/browser/https.test.mjs          (make test-https)
//
// EXAMPLE_BIN: the server binary (default example/civetweb-mqtt);
// TEST_TIMEOUT_SCALE multiplies every wait; KEEP_TMP=1 keeps the temporary
// directory. Prints "ok <check>" / "FAIL <check>: reason", ends with
// "N passed, N failed"; every process it starts is stopped by its PID.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { chromium } from 'playwright-core';
import { ROOT, SCALE, T, CHROMIUM, CHROMIUM_FLAGS, sleep, freePort, waitFor, tail, processes, checks, childWith } from './procs.mjs';

const EXAMPLE_BIN = path.resolve(ROOT, process.env.EXAMPLE_BIN || 'example/civetweb-mqtt');
const NGINX = process.env.NGINX || '/usr/sbin/nginx';
const WWW = path.join(ROOT, 'example', 'www');
const USER = 'alice', PASSWORD = 'wonder land', REALM = 'cwm-https-test';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'https-test-'));
const procs = processes(tmp);
const { children, start, waitExit, stop, waitPort } = procs;
fs.chmodSync(tmp, 0o755); // nginx's workers run as another user

// ---- processes ------------------------------------------------------------------

async function mqttPub(topic, args) {
  const p = start('mosquitto_pub', 'mosquitto_pub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', topic, ...args],
    'pub.log');
  const code = await waitExit(p, T(10000));
  if (code === undefined) { await stop(p); throw new Error(`mosquitto_pub ${topic} did not finish`); }
  children.delete(p);
  if (code !== 0) throw new Error(`mosquitto_pub ${topic} exited ${code}: ${tail(p.log)}`);
}

// mosquitto_sub for one topic: resolves with the first `count` lines.
function mqttSub(topic, count) {
  const p = start('mosquitto_sub', 'mosquitto_sub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', topic,
    '-v', '-C', String(count), '-W', String(30 * SCALE)], `sub-${topic.replace(/\W/g, '_')}.log`);
  return p;
}

// ---- configuration ----------------------------------------------------------------

let brokerPort, httpPort, httpsPort, broker, server, nginx, ca, origin;
let originOption = false; // does this server know BRIDGE_ALLOWED_ORIGINS?

function writeCert() {
  const key = path.join(tmp, 'key.pem'), cert = path.join(tmp, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  fs.chmodSync(key, 0o644);
  return fs.readFileSync(cert);
}

function writeBrokerConf() {
  const conf = path.join(tmp, 'mosquitto.conf');
  fs.writeFileSync(conf, [`listener ${brokerPort} 127.0.0.1`, 'allow_anonymous true', 'persistence false',
    'log_dest stderr', ''].join('\n'));
  return conf;
}

// example/civetweb.conf with this test's ports, document root and an auth
// file; plus the public origin when the server knows the option.
function writeServerConf(withOrigins) {
  const example = fs.readFileSync(path.join(ROOT, 'example', 'civetweb.conf'), 'utf8');
  const lines = example.split('\n').map((line) => {
    const key = line.trim().split(/\s+/)[0].toLowerCase();
    return { listening_ports: `listening_ports 127.0.0.1:${httpPort}`, document_root: `document_root ${WWW}`,
      mqtt_broker_url: `MQTT_BROKER_URL tcp://127.0.0.1:${brokerPort}` }[key] ?? line;
  });
  const ha1 = crypto.createHash('md5').update(`${USER}:${REALM}:${PASSWORD}`).digest('hex');
  const auth = path.join(tmp, 'htdigest');
  fs.writeFileSync(auth, `${USER}:${REALM}:${ha1}\n`);
  lines.push(`authentication_domain ${REALM}`, `MQTT_BRIDGE_AUTH_FILE ${auth}`);
  if (withOrigins) lines.push(`MQTT_BRIDGE_ALLOWED_ORIGINS ${origin}`);
  const conf = path.join(tmp, 'civetweb.conf');
  fs.writeFileSync(conf, lines.join('\n') + '\n');
  return conf;
}

// example/nginx.conf as shipped, with this test's ports and temp paths.
function writeNginxConf() {
  let c = fs.readFileSync(path.join(ROOT, 'example', 'nginx.conf'), 'utf8');
  const swap = (from, to) => {
    if (!c.includes(from)) throw new Error(`example/nginx.conf has no "${from}"`);
    c = c.replace(from, to);
  };
  swap('listen 443 ssl;', `listen 127.0.0.1:${httpsPort} ssl;`);
  swap('server 127.0.0.1:8080;', `server 127.0.0.1:${httpPort};`);
  // Temp files under the prefix, not /var/lib/nginx.
  swap('http {', ['http {', ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `    ${t}_temp_path ${path.join(tmp, 'nginx', t)};`)].join('\n'));
  fs.mkdirSync(path.join(tmp, 'nginx', 'logs'), { recursive: true });
  fs.chmodSync(path.join(tmp, 'nginx'), 0o755);
  const conf = path.join(tmp, 'nginx.conf');
  fs.writeFileSync(conf, c);
  return conf;
}

// ---- HTTPS with digest authentication ---------------------------------------------

function request(method, p, { headers = {}, body = null, stream = false } = {}) {
  return new Promise((resolve, reject) => {
    const r = https.request({ host: '127.0.0.1', port: httpsPort, method, path: p, ca, headers,
      agent: false, timeout: T(15000) }, (res) => {
      if (stream) { resolve(res); return; }
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
    });
    r.on('timeout', () => r.destroy(new Error(`${method} ${p}: timeout`)));
    r.on('error', reject);
    if (body !== null) r.write(body);
    r.end();
  });
}

function challenge(h) {
  const v = String(h || '');
  if (!/^Digest /i.test(v)) throw new Error(`no digest challenge (WWW-Authenticate: ${v})`);
  const o = {};
  for (const m of v.slice(7).matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) o[m[1]] = m[2] ?? m[3];
  return o;
}

let nc = 0;
function digest(ch, method, uri, password = PASSWORD) {
  const md5 = (s) => crypto.createHash('md5').update(s).digest('hex');
  const cnonce = crypto.randomBytes(8).toString('hex');
  const n = (++nc).toString(16).padStart(8, '0');
  const ha1 = md5(`${USER}:${ch.realm}:${password}`), ha2 = md5(`${method}:${uri}`);
  const response = md5(`${ha1}:${ch.nonce}:${n}:${cnonce}:auth:${ha2}`);
  return `Digest username="${USER}", realm="${ch.realm}", nonce="${ch.nonce}", uri="${uri}", ` +
    `qop=auth, nc=${n}, cnonce="${cnonce}", response="${response}"` + (ch.opaque ? `, opaque="${ch.opaque}"` : '');
}

// A browser's request: challenged first, then answered.
async function authed(method, p, opts = {}) {
  const first = await request(method, p, { ...opts, stream: false });
  if (first.status !== 401) throw new Error(`${method} ${p} without credentials answered ${first.status}, not 401`);
  const ch = challenge(first.headers['www-authenticate']);
  return request(method, p, { ...opts, headers: { ...opts.headers, Authorization: digest(ch, method, p) } });
}

// ---- a WebSocket client over TLS, as a browser sends it ---------------------------

function wsConnect(p, headers) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: httpsPort, ca }, () => {
      const key = crypto.randomBytes(16).toString('base64');
      s.write([`GET ${p} HTTP/1.1`, `Host: 127.0.0.1:${httpsPort}`, 'Upgrade: websocket', 'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13',
        ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n'));
      let buf = Buffer.alloc(0);
      const ws = { s, frames: [], status: 0, head: '', closed: false };
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        if (!ws.status) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          ws.head = buf.subarray(0, end).toString();
          ws.status = Number(ws.head.split(' ')[1]);
          buf = buf.subarray(end + 4);
          const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
          if (ws.status === 101 && !ws.head.includes(`Sec-WebSocket-Accept: ${accept}`)) {
            reject(new Error(`bad Sec-WebSocket-Accept: ${ws.head}`));
            return;
          }
          resolve(ws);
        }
        for (;;) { // server frames: unmasked
          if (buf.length < 2) return;
          let len = buf[1] & 0x7f, off = 2;
          if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
          else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
          if (buf.length < off + len) return;
          const op = buf[0] & 0x0f, payload = buf.subarray(off, off + len);
          buf = buf.subarray(off + len);
          if (op === 1) ws.frames.push(JSON.parse(payload.toString()));
          if (op === 8) ws.closed = true;
        }
      };
      s.on('data', onData);
      s.on('close', () => { ws.closed = true; if (!ws.status) reject(new Error('closed before a response')); });
    });
    s.on('error', reject);
    s.setTimeout(T(15000), () => s.destroy(new Error('timeout')));
  });
}

function wsSend(ws, obj) {
  const payload = Buffer.from(JSON.stringify(obj));
  const mask = crypto.randomBytes(4);
  const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length])
    : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  ws.s.write(Buffer.concat([head, mask, body]));
}

// ---- checks -----------------------------------------------------------------------

const { check, run } = checks(tmp, procs);

let context, browserPid = 0;
const userDataDir = path.join(tmp, 'chromium-profile');

async function startServer(withOrigins) {
  const p = start('server', EXAMPLE_BIN, [writeServerConf(withOrigins)], `server-${withOrigins ? 'o' : 'n'}.log`);
  // Up when the bridge answers (401: it wants credentials); a client that
  // refused its options makes the server exit instead.
  const bridgeUp = () => waitFor('the bridge on the server', async () => {
    if (p.exited) return false;
    const r = await fetch(`http://127.0.0.1:${httpPort}/mqtt/status`, { signal: AbortSignal.timeout(3000) });
    return r.status === 401;
  }, T(15000), 50).then(() => true);
  const up = await Promise.race([bridgeUp(), p.done.then(() => false)]);
  if (!up || p.exited) { await stop(p); return null; }
  return p;
}

async function main() {
  await check('a certificate for 127.0.0.1, mosquitto, the example server with digest auth', async () => {
    ca = writeCert();
    brokerPort = await freePort();
    do httpPort = await freePort(); while (httpPort === brokerPort);
    do httpsPort = await freePort(); while (httpsPort === brokerPort || httpsPort === httpPort);
    origin = `https://127.0.0.1:${httpsPort}`;
    broker = start('mosquitto', 'mosquitto', ['-c', writeBrokerConf()]);
    await waitPort(brokerPort, broker, T(10000));
    if (!fs.existsSync(EXAMPLE_BIN)) throw new Error(`${EXAMPLE_BIN} does not exist (make)`);
    // With the public origin allowed where the bridge has the option.
    server = await startServer(true);
    originOption = server !== null;
    if (!server) server = await startServer(false);
    if (!server) throw new Error(`the example server did not start: ${tail(path.join(tmp, 'server-n.log'))}`);
  }, { critical: true });

  await check('nginx starts with example/nginx.conf (TLS on a free port)', async () => {
    const conf = writeNginxConf();
    nginx = start('nginx', NGINX, ['-p', path.join(tmp, 'nginx'), '-c', conf, '-e', path.join(tmp, 'nginx', 'logs', 'error.log'),
      '-g', 'daemon off;']);
    await waitPort(httpsPort, nginx, T(15000));
  }, { critical: true });

  await check('over https: the bridge asks for digest credentials, refuses a wrong password', async () => {
    const r = await request('GET', '/mqtt/status');
    if (r.status !== 401) throw new Error(`GET /mqtt/status answered ${r.status}`);
    const ch = challenge(r.headers['www-authenticate']);
    if (ch.realm !== REALM) throw new Error(`realm ${ch.realm}`);
    const bad = await request('GET', '/mqtt/status', { headers: { Authorization: digest(ch, 'GET', '/mqtt/status', 'wrong') } });
    if (bad.status !== 401) throw new Error(`a wrong password got ${bad.status}`);
  });

  await check('over https: GET /mqtt/status with digest auth, client connected', async () => {
    await waitFor('connected', async () => {
      const r = await authed('GET', '/mqtt/status');
      if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`);
      return JSON.parse(r.body).connected === true;
    }, T(10000), 200);
  });

  await check('https POST /mqtt/publish as a browser sends it (Origin, JSON) reaches the broker', async () => {
    const sub = mqttSub('demo/https/post', 1);
    await sleep(300); // mosquitto_sub subscribed (it prints nothing before)
    let r;
    for (let i = 0; i < 20; i++) { // until the subscriber is in
      r = await authed('POST', '/mqtt/publish', { headers: { Origin: origin, 'Content-Type': 'application/json' },
        body: JSON.stringify({ topic: 'demo/https/post', payload: 'via nginx', qos: 1 }) });
      if (r.status !== 200 || !(JSON.parse(r.body).id > 0)) throw new Error(`POST answered ${r.status}: ${r.body}`);
      if (await waitExit(sub, T(500)) !== undefined) break;
    }
    if (await waitExit(sub, T(10000)) !== 0) throw new Error(`mosquitto_sub: ${tail(sub.log)}`);
    children.delete(sub);
    if (!fs.readFileSync(sub.log, 'utf8').includes('demo/https/post via nginx')) throw new Error(tail(sub.log));
  });

  await check('wss:// upgrade through nginx: challenged without credentials', async () => {
    const ws = await wsConnect('/mqtt/ws', { Origin: origin });
    ws.s.destroy();
    if (ws.status !== 401) throw new Error(`upgrade answered ${ws.status}`);
    challenge((ws.head.match(/^WWW-Authenticate: (.*)$/mi) || [])[1]);
  });

  await check('wss:// WebSocket with digest auth and the https Origin: hello, subscribe, message, publish', async () => {
    await mqttPub('demo/https/ws/retained', ['-m', 'kept', '-r', '-q', '1']);
    const first = await wsConnect('/mqtt/ws', { Origin: origin });
    first.s.destroy();
    const ch = challenge((first.head.match(/^WWW-Authenticate: (.*)$/mi) || [])[1]);
    const ws = await wsConnect('/mqtt/ws', { Origin: origin, Authorization: digest(ch, 'GET', '/mqtt/ws') });
    try {
      if (ws.status !== 101) throw new Error(`upgrade answered ${ws.status}: ${ws.head.split('\r\n')[0]}`);
      await waitFor('hello', async () => ws.frames.find((f) => f.op === 'hello'), T(10000));
      wsSend(ws, { op: 'subscribe', topic: 'demo/https/ws/#', qos: 1, id: 1 });
      await waitFor('the retained message', async () =>
        ws.frames.find((f) => f.op === 'message' && f.topic === 'demo/https/ws/retained' && f.payload === 'kept'), T(10000));
      wsSend(ws, { op: 'publish', topic: 'demo/https/ws/live', payload: 'round trip', qos: 1, id: 2 });
      await waitFor('its own publish back', async () =>
        ws.frames.find((f) => f.op === 'message' && f.topic === 'demo/https/ws/live' && f.payload === 'round trip'), T(10000));
      if (ws.closed) throw new Error('closed');
    } finally { ws.s.destroy(); }
  });

  await check('SSE through nginx: each message arrives while the stream stays open (not buffered)', async () => {
    await mqttPub('demo/https/sse', ['-m', 'first', '-r', '-q', '1']);
    const p = '/mqtt/events?topic=demo/https/sse';
    const first = await request('GET', p);
    const ch = challenge(first.headers['www-authenticate']);
    const res = await request('GET', p, { stream: true, headers: { Accept: 'text/event-stream', Origin: origin,
      Authorization: digest(ch, 'GET', p) } });
    let text = '', ended = false;
    res.setEncoding('utf8');
    res.on('data', (d) => { text += d; });
    res.on('end', () => { ended = true; });
    res.on('error', () => { ended = true; });
    try {
      if (res.statusCode !== 200) throw new Error(`GET ${p} answered ${res.statusCode}`);
      if (!/^text\/event-stream/.test(res.headers['content-type'] || '')) throw new Error(`content-type ${res.headers['content-type']}`);
      await waitFor('the retained message as an event', async () => text.includes('"payload":"first"'), T(10000));
      await mqttPub('demo/https/sse', ['-m', 'second', '-q', '1']);
      await waitFor('a live message as an event', async () => text.includes('"payload":"second"'), T(10000));
      if (ended) throw new Error('the stream ended');
    } finally { res.destroy(); }
  });

  // Request smuggling: CivetWeb 1.15 takes a duplicate Content-Length and
  // Transfer-Encoding with Content-Length; the recipe's nginx refuses both
  // before anything reaches it (docs: what a proxy in front must do).
  await check('nginx refuses request-smuggling shapes (duplicate Content-Length, Transfer-Encoding with Content-Length)', async () => {
    const shapes = [
      ['Content-Length: 5', 'Content-Length: 7'],
      ['Content-Length: 5', 'Transfer-Encoding: chunked'],
    ];
    for (const extra of shapes) {
      const status = await new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: httpsPort, ca }, () => {
          s.write([`POST /mqtt/publish/demo/https/smuggled HTTP/1.1`, `Host: 127.0.0.1:${httpsPort}`,
            'Content-Type: application/octet-stream', ...extra, '', '0\r\n\r\nGET /x HTTP/1.1\r\nHost: y\r\n\r\n'].join('\r\n'));
        });
        let head = '';
        s.on('data', (d) => { head += d.toString(); if (head.includes('\r\n')) { resolve(Number(head.split(' ')[1])); s.destroy(); } });
        s.on('error', reject);
        s.on('close', () => resolve(Number(head.split(' ')[1]) || 0));
        s.setTimeout(T(15000), () => s.destroy(new Error('timeout')));
      });
      if (status !== 400) throw new Error(`${extra.join(' + ')} answered ${status}, not 400`);
    }
  });

  // Only where the bridge has the option (it is left out otherwise, not
  // counted as passed).
  if (originOption) {
    await check('a foreign Origin is refused through nginx, the public one allowed (BRIDGE_ALLOWED_ORIGINS)', async () => {
      // Refused before credentials are asked for: 403, not a 401 challenge.
      const r = await request('POST', '/mqtt/publish', { headers: { Origin: 'https://evil.example', 'Content-Type': 'application/json' },
        body: JSON.stringify({ topic: 'demo/https/evil', payload: 'x' }), stream: false });
      if (r.status !== 403) throw new Error(`a foreign Origin got ${r.status}, not 403`);
    });
  } else {
    console.log('# skipped: this bridge has no BRIDGE_ALLOWED_ORIGINS option (no Origin check to test)');
  }

  // ---- the dashboard in chromium over https ----
  let page;
  const pageErrors = [];
  await check('chromium opens the dashboard over https (digest credentials, certificate errors ignored)', async () => {
    fs.mkdirSync(userDataDir);
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, ignoreHTTPSErrors: true,
      httpCredentials: { username: USER, password: PASSWORD }, timeout: T(30000),
    });
    browserPid = childWith(userDataDir);
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(T(10000));
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const r = await page.goto(`${origin}/`, { timeout: T(15000) });
    if (!r || r.status() !== 200) throw new Error(`GET / answered ${r && r.status()}`);
    if (!/civetweb-mqtt/.test(await page.title())) throw new Error(`title ${await page.title()}`);
  }, { critical: true });

  await check('the dashboard connects its WebSocket over wss:// and shows MQTT connected', async () => {
    const protocol = await page.evaluate(() => location.protocol);
    if (protocol !== 'https:') throw new Error(`page protocol ${protocol}`);
    await page.locator('[data-testid="ws-state"][data-state="connected"]').waitFor({ state: 'attached', timeout: T(15000) });
    await page.locator('[data-testid="mqtt-state"][data-state="connected"]').waitFor({ state: 'attached', timeout: T(10000) });
    await page.locator('[data-testid="subscription"][data-filter="demo/#"][data-state="active"]')
      .waitFor({ state: 'attached', timeout: T(10000) });
  });

  await check('a message published by mosquitto_pub shows in the dashboard over https', async () => {
    await mqttPub('demo/https/browser', ['-m', 'seen over tls', '-q', '1']);
    await page.locator('[data-testid="message-row"][data-topic="demo/https/browser"]', { hasText: 'seen over tls' })
      .first().waitFor({ state: 'attached', timeout: T(10000) });
  });

  await check('publish from the dashboard form goes out through nginx to the broker', async () => {
    const sub = mqttSub('demo/https/form', 1);
    await sleep(300);
    for (let i = 0; i < 20; i++) {
      await page.fill('[data-testid="pub-topic"]', 'demo/https/form');
      await page.fill('[data-testid="pub-payload"]', 'from chromium');
      await page.click('[data-testid="pub-submit"]');
      if (await waitExit(sub, T(500)) !== undefined) break;
    }
    if (await waitExit(sub, T(10000)) !== 0) throw new Error(`mosquitto_sub: ${tail(sub.log)}`);
    children.delete(sub);
    if (!fs.readFileSync(sub.log, 'utf8').includes('demo/https/form from chromium')) throw new Error(tail(sub.log));
    if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  });

  await check("nginx's access log shows the wss:// upgrade answered 101 by the server", async () => {
    const log = fs.readFileSync(path.join(tmp, 'nginx', 'logs', 'access.log'), 'utf8');
    if (!/"GET \/mqtt\/ws HTTP\/1\.1" 101 /.test(log)) throw new Error('no 101 for /mqtt/ws in the access log');
  });
}

run(main, 'https test', 180, ['server-o.log', 'server-n.log', 'nginx/logs/error.log', 'mosquitto.log'], () => [context, browserPid]);

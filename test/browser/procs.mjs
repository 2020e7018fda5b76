// What the browser tests share: scaled waits, free ports, and the
// processes a test starts (each stopped by its PID: SIGTERM, then SIGKILL).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCALE = Math.max(1, Number(process.env.TEST_TIMEOUT_SCALE) || 1);
export const T = (ms) => ms * SCALE; // a bounded wait, scaled
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export function answers(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { c.destroy(); resolve(ok); };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    c.setTimeout(1000, () => done(false));
  });
}

export async function waitFor(what, fn, ms, every = 50) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}` + (last instanceof Error ? ` (${last.message})` : ''));
    await sleep(every);
  }
}

export function tail(file, n = 15) {
  try { return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join(' | '); } catch { return '(no log)'; }
}

// The processes of one test, their logs in tmp: {children, start, waitExit,
// stop, waitPort}. children holds every process started and not stopped.
export function processes(tmp) {
  const children = new Set();
  function start(name, cmd, args, logName) {
    const log = path.join(tmp, logName || `${name}.log`);
    const fd = fs.openSync(log, 'a');
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], cwd: ROOT });
    fs.closeSync(fd);
    const p = { name, pid: child.pid, log, child, code: null, exited: false };
    p.done = new Promise((resolve) => {
      child.on('exit', (code, signal) => { p.exited = true; p.code = code ?? `signal ${signal}`; resolve(p.code); });
      child.on('error', (e) => { p.exited = true; p.code = `spawn error: ${e.message}`; resolve(p.code); });
    });
    children.add(p);
    return p;
  }
  async function waitExit(p, ms) {
    if (p.exited) return p.code;
    return Promise.race([p.done, sleep(ms).then(() => undefined)]);
  }
  async function stop(p, ms = T(15000)) {
    if (!p.exited) {
      try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ }
      if (await waitExit(p, ms) === undefined) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
        await waitExit(p, 5000);
      }
    }
    children.delete(p);
    return p.code;
  }
  async function waitPort(port, p, ms) {
    await waitFor(`port ${port}`, async () => {
      if (p && p.exited) throw new Error(`${p.name} exited (${p.code}): ${tail(p.log)}`);
      return answers(port);
    }, ms, 20);
  }
  // Every process still running, the last started first.
  async function stopAll(ms) {
    for (const p of [...children].reverse()) await stop(p, ms);
  }
  return { children, start, waitExit, stop, waitPort, stopAll };
}

// The PID of our child process whose command line contains arg (the
// browser playwright started for us, with our profile), or 0.
export function childWith(arg) {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if (fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(arg)) return Number(d);
    } catch { /* gone */ }
  }
  return 0;
}

// The checks of one test and its end (procs: what processes(tmp) gave).
// check(name, fn, {critical}) runs one check and prints "ok name" or
// "FAIL name: reason" (after a critical one failed, the rest fail unrun).
// run(main, label, seconds, logs, browser) runs main under a watchdog of
// seconds (scaled), then always closes the browser (browser() gives
// [playwright context, its PID]) and stops every process, prints
// "N passed, N failed" (and the tails of the logs in tmp on a failure),
// removes tmp unless KEEP_TMP or a failure, and exits: 0 only when every
// check passed.
export function checks(tmp, procs) {
  let passed = 0, failed = 0, fatal = null;
  const fail = (what) => { failed++; console.log(`FAIL ${what}`); };
  async function check(name, fn, { critical = false } = {}) {
    if (fatal) { fail(`${name}: not run (${fatal})`); return; }
    try {
      await fn();
      passed++;
      console.log(`ok ${name}`);
    } catch (e) {
      fail(`${name}: ${String(e && e.message ? e.message : e).split('\n')[0]}`);
      if (critical) fatal = `"${name}" failed`;
    }
  }
  async function run(main, label, seconds, logs, browser) {
    let cleaned = false;
    async function clean() {
      if (cleaned) return;
      cleaned = true;
      await closeBrowser(...browser());
      await procs.stopAll(10000);
    }
    function finish() {
      clearTimeout(watchdog);
      if (failed > 0 || process.env.KEEP_TMP) {
        console.log(`# logs and configuration kept in ${tmp}`);
        for (const f of logs) {
          const file = path.join(tmp, f);
          if (failed > 0 && fs.existsSync(file)) console.log(`# ${f}: ${tail(file, 8)}`);
        }
      } else {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
      console.log(`${passed} passed, ${failed} failed`);
      process.exit(failed === 0 && passed > 0 ? 0 : 1);
    }
    const watchdog = setTimeout(() => {
      fail(`watchdog: the test ran over ${T(seconds)} s`);
      clean().finally(() => finish());
    }, T(seconds * 1000));
    try {
      await main();
    } catch (e) {
      fail(`${label}: ${e && e.stack ? e.stack.split('\n')[0] : e}`);
    } finally {
      await clean();
      finish();
    }
  }
  return { check, run };
}

// Closes a playwright context (at most 10 s), then SIGKILLs its browser.
export async function closeBrowser(context, browserPid) {
  if (context) await Promise.race([context.close().catch(() => {}), sleep(10000)]);
  if (browserPid) { try { process.kill(browserPid, 'SIGKILL'); } catch { /* closed */ } }
}

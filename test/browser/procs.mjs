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
  return { children, start, waitExit, stop, waitPort };
}

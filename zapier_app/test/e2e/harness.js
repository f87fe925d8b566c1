'use strict';

// Starts a real Paywalls Relay and its standalone sandbox upstream on 127.0.0.1 for the
// end-to-end tests, creates relay tokens with the CLI, and stops everything afterwards.
//
// The relay's console script comes from PAYWALLS_RELAY_BIN, or the repository's venv
// (`make venv` creates it): <repo>/.venv/bin/paywalls-relay.

const { spawn, execFile } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { promisify } = require('util');

const execFileAsync = promisify(execFile);

const RELAY_BIN = process.env.PAYWALLS_RELAY_BIN || path.resolve(__dirname, '../../../.venv/bin/paywalls-relay');
const SANDBOX_KEY = 'sk-sandbox-test';

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Harness {
  constructor() {
    this.children = [];
    this.logs = {};
  }

  async start() {
    if (!fs.existsSync(RELAY_BIN)) {
      throw new Error(
        `paywalls-relay not found at ${RELAY_BIN}. Run \`make venv\` in the repository root, ` +
          'or set PAYWALLS_RELAY_BIN to the console script.',
      );
    }
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'paywalls-zapier-e2e-'));
    const [sandboxPort, relayPort] = [await freePort(), await freePort()];
    this.sandboxUrl = `http://127.0.0.1:${sandboxPort}`;
    this.relayUrl = `http://127.0.0.1:${relayPort}`;

    // Only what the relay needs, so a developer's own settings cannot leak in; the
    // working directory is the temp dir, so no .env file is picked up either.
    this.env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME || this.dir,
      LANG: 'C.UTF-8',
      DATABASE_URL: `sqlite:///${path.join(this.dir, 'relay.db')}`,
      PAYWALLS_API_KEY: SANDBOX_KEY,
      PAYWALLS_BASE_URL: `${this.sandboxUrl}/v1`,
      RELAY_ADMIN_KEY: crypto.randomBytes(24).toString('hex'),
    };

    this.spawn('sandbox', ['sandbox', '--host', '127.0.0.1', '--port', String(sandboxPort), '--api-key', SANDBOX_KEY]);
    await this.waitFor(`${this.sandboxUrl}/_sandbox/state`, 'sandbox');
    await this.cli(['db', 'upgrade']);
    this.spawn('relay', ['run', '--host', '127.0.0.1', '--port', String(relayPort)]);
    await this.waitFor(`${this.relayUrl}/healthz`, 'relay');
  }

  spawn(name, args) {
    const child = spawn(RELAY_BIN, args, { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.logs[name] = '';
    const append = (chunk) => {
      this.logs[name] = (this.logs[name] + chunk.toString()).slice(-20000);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    child.exited = new Promise((resolve) => child.on('exit', resolve));
    this.children.push(child);
    return child;
  }

  async waitFor(url, name, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      try {
        const response = await fetch(url);
        if (response.status === 200) {
          return;
        }
        last = `HTTP ${response.status}`;
      } catch (error) {
        last = error.message;
      }
      await sleep(150);
    }
    throw new Error(`${name} did not answer 200 at ${url} within ${timeoutMs} ms (${last}).\n${this.logs[name]}`);
  }

  async cli(args) {
    try {
      const { stdout } = await execFileAsync(RELAY_BIN, args, { cwd: this.dir, env: this.env, timeout: 60000 });
      return stdout;
    } catch (error) {
      throw new Error(`paywalls-relay ${args.join(' ')} failed: ${error.message}\n${error.stdout}\n${error.stderr}`);
    }
  }

  // Creates a token; returns {id, token, ...} as printed by `tokens create --json`.
  async createToken(label, options = []) {
    const out = await this.cli(['tokens', 'create', '--label', label, ...options, '--json']);
    return JSON.parse(out.trim().split('\n').pop());
  }

  async revokeToken(id) {
    return this.cli(['tokens', 'revoke', id]);
  }

  // --- sandbox control API ---------------------------------------------------------------

  async sandbox(method, pathname, body) {
    const response = await fetch(`${this.sandboxUrl}${pathname}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      throw new Error(`sandbox ${method} ${pathname}: HTTP ${response.status} ${await response.text()}`);
    }
    return response.json();
  }

  state() {
    return this.sandbox('GET', '/_sandbox/state');
  }

  async stop() {
    await Promise.all(
      this.children.map(async (child) => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await child.exited;
          clearTimeout(timer);
        }
      }),
    );
    this.children = [];
    if (this.dir) {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

module.exports = { Harness, RELAY_BIN };

'use strict';

// A live Paywalls Relay and its sandbox upstream for the end-to-end tests, started the one way
// every suite starts them: `paywalls-relay dev-stack --json --exit-with-stdin`. It prints one JSON
// line {relay_url, sandbox_url, admin_key, sandbox_control, database_url, pid}; tokens are made
// through the admin API with admin_key, the sandbox is driven through /_sandbox/* with
// sandbox_control. Closing its stdin (or SIGTERM) stops it, so a crashed test run leaves nothing.
//
// The relay's console script comes from PAYWALLS_RELAY_BIN, or the repository's venv
// (`make venv` creates it): <repo>/.venv/bin/paywalls-relay.

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const RELAY_BIN = process.env.PAYWALLS_RELAY_BIN || path.resolve(__dirname, '../../../.venv/bin/paywalls-relay');
const CONTROL_HEADER = 'X-Sandbox-Control';

class Harness {
  constructor() {
    this.child = null;
    this.log = '';
  }

  async start(timeoutMs = 60000) {
    if (!fs.existsSync(RELAY_BIN)) {
      throw new Error(
        `paywalls-relay not found at ${RELAY_BIN}. Run \`make venv\` in the repository root, ` +
          'or set PAYWALLS_RELAY_BIN to the console script.',
      );
    }
    // Only what the stack needs, so a developer's own settings cannot leak in.
    const env = { PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8' };
    this.child = spawn(RELAY_BIN, ['dev-stack', '--json', '--exit-with-stdin'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-20000);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', resolve));
    const lines = readline.createInterface({ input: this.child.stdout });
    const stack = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dev-stack printed nothing within ${timeoutMs} ms.\n${this.log}`)), timeoutMs);
      lines.once('line', (line) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line));
        } catch (error) {
          reject(new Error(`dev-stack printed ${JSON.stringify(line)}, not JSON.\n${this.log}`));
        }
      });
      this.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`dev-stack exited (${code}) before printing its JSON line.\n${this.log}`));
      });
    });
    Object.assign(this, {
      relayUrl: stack.relay_url,
      sandboxUrl: stack.sandbox_url,
      adminKey: stack.admin_key,
      sandboxControl: stack.sandbox_control,
      stack,
    });
    return stack;
  }

  // --- admin API ---------------------------------------------------------------------------

  async admin(method, pathname, body) {
    const response = await fetch(`${this.relayUrl}/v1/admin${pathname}`, {
      method,
      headers: { Authorization: `Bearer ${this.adminKey}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json();
    if (!response.ok) {
      throw new Error(`admin ${method} ${pathname}: HTTP ${response.status} ${JSON.stringify(data)}`);
    }
    return data;
  }

  // A token with these settings (schemas/token-settings.json); {id, token, ...}.
  createToken(settings) {
    return this.admin('POST', '/tokens', settings);
  }

  revokeToken(id) {
    return this.admin('POST', `/tokens/${encodeURIComponent(id)}/revoke`);
  }

  // --- sandbox control API -----------------------------------------------------------------

  async sandbox(method, pathname, body) {
    const headers = { [CONTROL_HEADER]: this.sandboxControl };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    const response = await fetch(`${this.sandboxUrl}${pathname}`, {
      method,
      headers,
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
    if (!this.child) {
      return;
    }
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin.end();
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    this.child = null;
  }
}

module.exports = { Harness, RELAY_BIN };

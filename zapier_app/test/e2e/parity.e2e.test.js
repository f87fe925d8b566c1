'use strict';

// The Zapier leg of the behaviour parity table (schemas/parity-cases.json, generated from
// relay/contract.py; the n8n node and the Python suite run the same rows). Each case runs the
// app's step through createAppTester against a live relay and sandbox (`paywalls-relay
// dev-stack`), following the file's protocol, and checks what the app sent (body, query,
// Idempotency-Key), what the relay answered (status, problem, limit, reason, fields), what the
// user is told (the client refusal text, or the catalogue message for the relay's problem), the
// step output, and whether money moved (the sandbox state).

const fs = require('fs');
const path = require('path');
const zapier = require('zapier-platform-core');

const App = require('../../index');
const { renderProblem } = require('../../lib/errors');
const { problemName, deriveKey } = require('../../lib/generated/relay-contract');
const { Harness } = require('./harness');
const { stepError } = require('../helpers');

jest.setTimeout(120000);

const PARITY = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../schemas/parity-cases.json'), 'utf8'));

// The app as Zapier runs it, plus two recorders at the edges of its own middleware: what left
// after every beforeRequest, and the relay's answer before afterResponse turns it into an error.
const seen = { requests: [], responses: [] };
const recordRequest = (request) => {
  seen.requests.push({ ...request, headers: { ...(request.headers || {}) } });
  return request;
};
const recordResponse = (response) => {
  let data = response.data;
  if (data === undefined) {
    try {
      data = JSON.parse(response.content);
    } catch (_e) {
      data = response.content;
    }
  }
  seen.responses.push({ status: response.status, data });
  return response;
};
const RecordedApp = {
  ...App,
  beforeRequest: [...App.beforeRequest, recordRequest],
  afterResponse: [recordResponse, ...App.afterResponse],
};
const appTester = zapier.createAppTester(RecordedApp);
const PERFORMS = {
  deposit: App.creates.deposit_credits.operation.perform,
  charge: App.creates.charge_user.operation.perform,
};

const harness = new Harness();

beforeAll(async () => {
  await harness.start();
}, 120000);

afterAll(async () => {
  await harness.stop();
});

const run = async (op, token, inputs) => {
  try {
    return { output: await appTester(PERFORMS[op], { authData: { baseUrl: harness.relayUrl, token: token.token }, inputData: inputs }) };
  } catch (error) {
    return { error: stepError(error) };
  }
};

const money = (state) => ({ balances: state.balances, deposits: state.deposits, charges: state.charges });

const lowerKeys = (headers) => Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));

function sentOf(request) {
  const url = new URL(request.url);
  const query = Object.fromEntries(url.searchParams);
  Object.assign(query, request.params || {});
  const body = typeof request.body === 'string' ? JSON.parse(request.body) : request.body;
  return { body, query, headers: lowerKeys(request.headers) };
}

describe('the parity table', () => {
  it('is version 1, names its protocol, and has money cases for both operations', () => {
    expect(PARITY.version).toBe(1);
    expect(PARITY.cases.length).toBeGreaterThan(40);
    expect(new Set(PARITY.cases.map((c) => c.op))).toEqual(new Set(['deposit', 'charge']));
  });
});

describe.each(PARITY.cases.map((c) => [c.name, c]))('parity: %s', (_name, testCase) => {
  it('sends, answers, tells and moves money as the table says', async () => {
    const { expect: want } = testCase;
    await harness.sandbox('POST', '/_sandbox/reset');
    const setup = testCase.setup || {};
    for (const [user, balance] of Object.entries(setup.balances || {})) {
      await harness.sandbox('PUT', `/_sandbox/balances/${encodeURIComponent(user)}`, { balance });
    }
    for (const fault of setup.faults || []) {
      await harness.sandbox('POST', '/_sandbox/faults', fault);
    }
    const token = await harness.createToken(testCase.token);
    if (testCase.token_revoked) {
      await harness.revokeToken(token.id);
    }
    for (const call of testCase.before || []) {
      await run(call.op, token, call.inputs);
    }
    const before = money(await harness.state());
    seen.requests = [];
    seen.responses = [];

    const result = await run(testCase.op, token, testCase.inputs);
    const after = money(await harness.state());

    if (want.client_error) {
      expect({ code: result.error && result.error.code, message: result.error && result.error.message }).toEqual({
        code: want.client_error,
        message: want.message,
      });
      expect(seen.requests).toEqual([]);
      expect(after).toEqual(before);
      return;
    }

    // What the app sent.
    expect(seen.requests).toHaveLength(1);
    const sent = sentOf(seen.requests[0]);
    expect(sent.body).toEqual(want.body);
    expect(sent.query).toEqual(want.query || {});
    expect(sent.headers['idempotency-key'] === undefined ? null : sent.headers['idempotency-key']).toBe(want.key);
    if (want.key) {
      expect(deriveKey(testCase.op, want.body, want.fields)).toBe(want.key);
    }

    // What the relay answered.
    expect(seen.responses).toHaveLength(1);
    const answer = seen.responses[0];
    expect(answer.status).toBe(want.status);
    const body = answer.data && typeof answer.data === 'object' ? answer.data : {};
    expect(problemName(body)).toBe(want.problem || null);
    if (want.limit) expect(body.limit).toBe(want.limit);
    if (want.reason) expect(body.reason).toBe(want.reason);
    if (want.error_fields) {
      expect((body.errors || []).map((e) => e.field).sort()).toEqual([...want.error_fields].sort());
    }

    // What the user is told, or what the step outputs.
    if (want.problem) {
      expect(result.error).toBeDefined();
      expect(result.error.message).toBe(
        renderProblem(body, {
          url: seen.requests[0].url,
          status: answer.status,
          origin: new URL(harness.relayUrl).origin,
          user: typeof sent.body.user === 'string' ? sent.body.user : null,
          retry_after: result.error.delay || null,
        }),
      );
      expect(result.error.message).not.toMatch(/\{|\}|\[\[|undefined/);
    } else {
      expect(result.error).toBeUndefined();
      expect(result.output).toMatchObject(want.output);
    }

    // Whether money moved: never on a dry run or a refusal (sandbox_unchanged: false makes no
    // claim: a fault may have been consumed, a charge declined).
    if (want.sandbox_unchanged) {
      expect(after).toEqual(before);
    }
    if (sent.query.dry_run === 'true') {
      expect(after).toEqual(before);
    }
  });
});

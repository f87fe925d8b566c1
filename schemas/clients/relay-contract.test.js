'use strict';

// The shared implementation on its own (node --test schemas/clients/). The packages' suites
// (make test-zapier, make test-n8n) test their generated copies with the same vectors.

const test = require('node:test');
const assert = require('node:assert');
const contract = require('./relay-contract');
const vectors = require('../idempotency-vectors.json');

test('every idempotency vector: the expected key or the expected refusal', () => {
  for (const vector of vectors.vectors) {
    const fields = vector.fields === undefined ? undefined : vector.fields;
    // "undefined": paths set to undefined (JSON cannot say it): the same as absent.
    for (const path of vector.undefined || []) {
      const segments = path.split('.');
      let target = vector.body;
      for (const segment of segments.slice(0, -1)) {
        target = target[segment];
      }
      target[segments[segments.length - 1]] = undefined;
    }
    if (vector.expected_error) {
      assert.throws(
        () => contract.deriveKey(vector.op, vector.body, fields),
        (error) => error instanceof contract.ContractError && error.code === vector.expected_error.error,
        vector.name,
      );
    } else {
      assert.strictEqual(contract.deriveKey(vector.op, vector.body, fields), vector.expected, vector.name);
    }
  }
});

test('every problem and every forbidden limit renders for every tool, with nothing left unfilled', () => {
  for (const tool of ['zapier', 'n8n']) {
    for (const name of Object.keys(contract.PROBLEMS.problems)) {
      const bodies = [{ type: contract.PROBLEM_PREFIX + name, status: 400, detail: 'D.' }, { name }];
      if (name === 'forbidden') {
        for (const limit of Object.keys(contract.PROBLEMS.problems.forbidden.limits)) {
          bodies.push({ type: contract.PROBLEM_PREFIX + name, limit, remaining: '5' });
        }
      }
      for (const body of bodies) {
        const message = contract.renderProblem(body, { tool, op: 'deposit', url: 'https://r.example/v1/user/balance/deposit' });
        assert.ok(message.length > 20, `${tool} ${name}`);
        assert.doesNotMatch(message, /\{|\}|\[\[|\]\]|undefined|null/, `${tool} ${name}: ${message}`);
      }
    }
  }
});

test('tool words differ where the tools differ', () => {
  const body = { type: `${contract.PROBLEM_PREFIX}unauthorized` };
  assert.match(contract.renderProblem(body, { tool: 'zapier' }), /My Apps > Paywalls Relay > Reconnect/);
  assert.match(contract.renderProblem(body, { tool: 'n8n' }), /Credentials > Paywalls Relay API/);
  assert.throws(() => contract.renderProblem(body, {}), TypeError);
});

test('buildRequest: trims, merges metadata, derives the key with the preset, asks for a dry run', () => {
  const request = contract.buildRequest('deposit', {
    user: ' acme:u1 ',
    amount: ' 10.50 ',
    reason: 'refund',
    reference: ' in_1 ',
    extra_metadata: { ' plan ': ' pro ', blank: '   ', gone: null },
    dedupe_on: 'reference',
    dry_run: 'true',
  });
  assert.deepStrictEqual(request.body, {
    user: 'acme:u1',
    amount: '10.50',
    metadata: { plan: 'pro', reason: 'refund', reference: 'in_1' },
  });
  assert.deepStrictEqual(request.fields, ['user', 'metadata.reference']);
  assert.strictEqual(request.key, contract.deriveKey('deposit', request.body, ['user', 'metadata.reference']));
  assert.deepStrictEqual(request.query, { dry_run: 'true' });
});

test('buildRequest refusals use the client_errors texts', () => {
  const base = { user: 'u', amount: '1', reference: 'r' };
  const cases = [
    [{ ...base, reference: '  ' }, 'reference-required'],
    [{ ...base, extra_metadata: { Reference: 'x' } }, 'metadata-clash'],
    [{ ...base, reason: 'refund', extra_metadata: { ' REASON ': 'x' } }, 'metadata-clash'],
    [{ ...base, extra_metadata: { ' ': 'x' } }, 'metadata-blank-key'],
    [{ ...base, extra_metadata: [{ key: 'a', value: '1' }, { key: ' a', value: '2' }] }, 'metadata-duplicate-key'],
    [{ ...base, extra_metadata: 'a=b' }, 'extra-metadata-invalid'],
    [{ ...base, user: ['a', 'b'] }, 'field-not-text'],
    [{ ...base, reference: { id: 1 } }, 'field-not-text'],
    [{ ...base, dedupe_on: 'All' }, 'dedupe-preset-unknown'],
    [{ ...base, dedupe_on: 'custom', custom_dedupe_fields: ' , ,' }, 'custom-dedupe-fields-empty'],
    [{ ...base, dedupe_on: 'custom', custom_dedupe_fields: 'user, metadata.invoice id' }, 'custom-dedupe-field-invalid'],
    [{ ...base, dry_run: 'maybe' }, 'dry-run-invalid'],
  ];
  for (const [inputs, code] of cases) {
    assert.throws(
      () => contract.buildRequest('deposit', inputs),
      (error) => error.code === code && !/[{}]/.test(error.message) && error.message.length > 10,
      code,
    );
  }
});

test('an amount the derivation refuses is sent without a key, never refused by the client', () => {
  for (const amount of ['1.5e2', '-3.10', '.5', '10.', '1,000', true, { a: 1 }]) {
    const request = contract.buildRequest('charge', { user: 'u', amount, reference: 'r' });
    assert.strictEqual(request.key, null, String(amount));
    assert.deepStrictEqual(request.body.amount, typeof amount === 'string' ? amount.trim() : amount);
    assert.ok(!('Idempotency-Key' in request.headers));
  }
});

test('buildOutput: snake_case, dry run without new_balance', () => {
  const request = contract.buildRequest('deposit', { user: 'u', amount: '10.00', reference: 'r' });
  assert.deepStrictEqual(
    contract.buildOutput('deposit', request, { balanceFormatted: '10.00' }, { idempotency_key: 'k', replayed: true, sandbox: true }),
    { user: 'u', amount: '10', reason: null, reference: 'r', metadata: { reference: 'r' }, idempotency_key: 'k', replayed: true, sandbox: true, dry_run: false, new_balance: '10.00' },
  );
  const dry = contract.buildOutput('charge', request, { dry_run: true, would: 'charge', idempotency_key: 'k2', remaining: { daily_cap: '5' } }, {});
  assert.strictEqual(dry.dry_run, true);
  assert.strictEqual(dry.would, 'charge');
  assert.strictEqual(dry.idempotency_key, 'k2');
  assert.ok(!('success' in dry) && !('message' in dry) && !('new_balance' in dry));
});

test('hostile: a row named __proto__ is kept as a row, and the key is what Python derives from the JSON', () => {
  const extra = JSON.parse('{"__proto__": {"a": 1}, "constructor": "x"}');
  const request = contract.buildRequest('deposit', { user: 'u', amount: '1', reference: 'r', extra_metadata: extra });
  assert.deepStrictEqual(Object.keys(request.body.metadata), ['__proto__', 'constructor', 'reference']);
  assert.strictEqual(JSON.stringify(request.body), '{"user":"u","amount":"1","metadata":{"__proto__":{"a":1},"constructor":"x","reference":"r"}}');
  assert.strictEqual(request.key, contract.deriveKey('deposit', JSON.parse(JSON.stringify(request.body))));
});

test('hostile: relay values are never read as templates; odd limits and ops fall back', () => {
  const rejected = contract.renderProblem(
    { type: `${contract.PROBLEM_PREFIX}upstream-rejected`, detail: 'x {reconnect} [[y]]' },
    { tool: 'n8n', op: 'deposit' },
  );
  assert.match(rejected, /\(Relay: x \{reconnect\} \[\[y\]\]\)$/);
  const odd = contract.renderProblem({ type: `${contract.PROBLEM_PREFIX}forbidden`, limit: '__proto__' }, { tool: 'zapier', op: 'constructor' });
  assert.strictEqual(odd, 'This relay token is not allowed to do this (limit: __proto__). Ask your relay operator to check the token.');
});

test('hostile: trimming is String.prototype.trim (U+FEFF yes, U+0085 and U+001C no), inner spaces stay', () => {
  const request = contract.buildRequest('deposit', { user: '\ufeffu\u0085\u001c', amount: '\u00a01\u2028', reference: ' a b ' });
  assert.strictEqual(request.body.user, 'u\u0085\u001c');
  assert.strictEqual(request.body.amount, '1');
  assert.strictEqual(request.body.metadata.reference, 'a b');
});

test('hostile: 10k-character and unicode values pass through; long custom field lists fail fast', () => {
  const long = 'x'.repeat(10000);
  const request = contract.buildRequest('charge', { user: long, amount: '1', reference: 'ré\u0301f', extra_metadata: { '键': long } });
  assert.strictEqual(request.body.user, long);
  assert.strictEqual(request.body.metadata['键'], long);
  const started = Date.now();
  assert.throws(
    () => contract.buildRequest('deposit', { user: 'u', amount: '1', reference: 'r', dedupe_on: 'custom', custom_dedupe_fields: `metadata${'.a'.repeat(50000)}!` }),
    (error) => error.code === 'custom-dedupe-field-invalid',
  );
  assert.ok(Date.now() - started < 1000);
});

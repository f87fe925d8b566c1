'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

// The app's copy of schemas/clients/relay-contract.js (npm run generate), the code the app runs.
const {
  canonicalJson,
  canonicalAmount,
  deriveKey,
  valueAt,
  DEFAULT_FIELDS,
  ContractError,
} = require('../lib/generated/relay-contract');

// The shared contract: every implementation must reproduce every expected key, and refuse
// every body the vectors refuse (expected_error: {"error": "amount" | "user" | "path"}).
const VECTORS_FILE = path.resolve(__dirname, '../../schemas/idempotency-vectors.json');
const { version, vectors } = JSON.parse(fs.readFileSync(VECTORS_FILE, 'utf8'));

describe('idempotency vectors (schemas/idempotency-vectors.json)', () => {
  it('is version 1 and not empty', () => {
    expect(version).toBe(1);
    expect(vectors.length).toBeGreaterThanOrEqual(54);
  });

  it('holds valid and invalid vectors', () => {
    expect(vectors.filter((v) => v.expected_error).length).toBeGreaterThan(20);
    for (const vector of vectors) {
      expect(Boolean(vector.expected) !== Boolean(vector.expected_error)).toBe(true);
    }
  });

  // "undefined": dotted paths set to undefined in the body (JSON cannot say it).
  const bodyOf = (vector) => {
    const body = JSON.parse(JSON.stringify(vector.body));
    for (const dotted of vector.undefined || []) {
      const segments = dotted.split('.');
      const parent = segments.slice(0, -1).reduce((value, segment) => value[segment], body);
      parent[segments[segments.length - 1]] = undefined;
    }
    return body;
  };

  it.each(vectors.map((v) => [v.name, v]))('%s', (_name, vector) => {
    const derive = () =>
      vector.fields === undefined
        ? deriveKey(vector.op, bodyOf(vector))
        : deriveKey(vector.op, bodyOf(vector), vector.fields);
    if (vector.expected_error) {
      let error = null;
      try {
        derive();
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(ContractError);
      expect(error.code).toBe(vector.expected_error.error);
    } else {
      expect(derive()).toBe(vector.expected);
    }
  });
});

describe('canonicalJson (RFC 8785)', () => {
  it('sorts keys by UTF-16 code units, not by code point', () => {
    // U+FF41 (fullwidth a) sorts after the surrogate pair of U+1F600 in UTF-16 order,
    // but before it by code point.
    expect(canonicalJson({ 'ａ': 1, '😀': 2, 'é': 3, z: 4 })).toBe('{"z":4,"é":3,"😀":2,"ａ":1}');
  });

  it('formats numbers like ECMAScript and writes -0 as 0', () => {
    expect(canonicalJson([1e21, 1e-7, 0.1, -0, 5.0, 9007199254740991, 333333333.3333333])).toBe(
      '[1e+21,1e-7,0.1,0,5,9007199254740991,333333333.3333333]',
    );
  });

  it('escapes strings minimally', () => {
    expect(canonicalJson('a\n\t"\\\u0001\u001f</script>é😀')).toBe('"a\\n\\t\\"\\\\\\u0001\\u001f</script>é😀"');
  });

  it('writes no whitespace and nests', () => {
    expect(canonicalJson({ b: [true, false, null, { d: 1, c: 'x' }], a: {} })).toBe(
      '{"a":{},"b":[true,false,null,{"c":"x","d":1}]}',
    );
  });

  it('refuses what JSON cannot carry', () => {
    expect(() => canonicalJson(NaN)).toThrow(TypeError);
    expect(() => canonicalJson(Infinity)).toThrow(TypeError);
    expect(() => canonicalJson(10n)).toThrow(TypeError);
  });
});

describe('canonicalAmount', () => {
  it.each([
    ['10.00', '10'],
    ['10.0', '10'],
    [10, '10'],
    ['0.50', '0.5'],
    [7, '7'],
    ['7.25', '7.25'],
    ['007.50', '7.5'],
    ['00.5', '0.5'],
    ['100', '100'],
    ['0.000001', '0.000001'],
    [1e-6, '0.000001'],
    [150.0, '150'],
    [999999999.99, '999999999.99'],
  ])('%j -> %s', (input, expected) => {
    expect(canonicalAmount(input)).toBe(expected);
  });

  // What no two languages read alike is refused, never guessed: the client then sends the body
  // without a key and the relay names amount.
  it.each([
    ['ten'], [''], ['1,5'], ['1.2.3'], [null], [true], [NaN], [{}], [['1']], ['1.5e2'], [' 2.50 '], ['.5'], ['5.'],
    ['-3.10'], ['+5'], [-3.1], ['0'], ['0.00'], [0], [1e-7], [1e21], ['１０'], ['Infinity'], [Infinity],
  ])('refuses %j', (input) => {
    expect(() => canonicalAmount(input)).toThrow(ContractError);
  });
});

describe('deriveKey', () => {
  it('hashes the UTF-8 bytes of the canonical document', () => {
    const body = { user: 'café:üser', amount: '3' };
    const document = '{"fields":{"amount":"3","metadata":null,"user":"café:üser"},"op":"deposit","v":1}';
    const expected = 'pwk1_' + crypto.createHash('sha256').update(Buffer.from(document, 'utf8')).digest('hex');
    expect(deriveKey('deposit', body)).toBe(expected);
    // Latin-1 ("binary") hashing, z.hash's default, would give another key.
    const latin1 = 'pwk1_' + crypto.createHash('sha256').update(document, 'binary').digest('hex');
    expect(deriveKey('deposit', body)).not.toBe(latin1);
  });

  it('defaults to the whole body', () => {
    expect(DEFAULT_FIELDS).toEqual(['user', 'amount', 'metadata']);
    const body = { user: 'u', amount: '1', metadata: { reference: 'r' } };
    expect(deriveKey('deposit', body)).toBe(deriveKey('deposit', body, ['metadata', 'amount', 'user']));
  });

  it('refuses paths the contract does not allow and unknown ops', () => {
    expect(() => deriveKey('deposit', {}, ['balance'])).toThrow(/not an allowed dedupe path/);
    expect(() => deriveKey('deposit', {}, ['metadata.'])).toThrow(/not an allowed dedupe path/);
    expect(() => deriveKey('deposit', {}, ['metadata.invoice id'])).toThrow(/not an allowed dedupe path/);
    expect(() => deriveKey('refund', {})).toThrow(/op must be/);
  });

  it('reads dotted paths, null when missing or through a non-object', () => {
    const body = { metadata: { a: { b: 0 }, s: 'x', arr: [1] } };
    expect(valueAt(body, 'metadata.a.b')).toBe(0);
    expect(valueAt(body, 'metadata.s.length')).toBeNull();
    expect(valueAt(body, 'metadata.arr.0')).toBeNull();
    expect(valueAt(body, 'metadata.missing')).toBeNull();
    expect(valueAt(body, 'user')).toBeNull();
  });
});

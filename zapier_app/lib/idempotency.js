'use strict';

// The Idempotency-Key derivation of schemas/idempotency.md (v1), byte for byte the
// same as the relay's relay/idempotency.py and the n8n node. Its shared test is
// schemas/idempotency-vectors.json (see test/idempotency.test.js).
//
//   pwk1_ + hex(sha256(utf8(JCS({"v":1,"op":op,"fields":{path: value}}))))
//
// No dependency beyond Node itself: a small RFC 8785 (JCS) serializer, the canonical
// amount text and Node's crypto.

const crypto = require('crypto');

const KEY_PREFIX = 'pwk1_';
const DEFAULT_FIELDS = Object.freeze(['user', 'amount', 'metadata']);
const PATH_PATTERN = /^(user|amount|metadata(\.[^.]+)*)$/;

// RFC 8785 JSON Canonicalization Scheme.
// - object keys sorted by UTF-16 code units: the default Array.prototype.sort order;
// - numbers in ECMAScript Number-to-String form: what JSON.stringify prints for a
//   finite number (it also turns -0 into "0");
// - strings with JSON.stringify's minimal escaping (\b \f \n \r \t \" \\ and \u00XX
//   for the other control characters; everything else as it is).
function canonicalJson(value) {
  if (value === null) {
    return 'null';
  }
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) {
        throw new TypeError(`JCS cannot represent the number ${value}`);
      }
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item) => canonicalJson(item === undefined ? null : item)).join(',')}]`;
      }
      const members = Object.keys(value)
        .filter((key) => value[key] !== undefined)
        .sort()
        .map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`);
      return `{${members.join(',')}}`;
    }
    default:
      throw new TypeError(`JCS cannot represent a value of type ${typeof value}`);
  }
}

const DECIMAL_PATTERN = /^[+-]?(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d+))?$/;

// Canonical decimal text of an amount: no sign, no exponent, no leading zeros of the
// integer part (one digit kept), no trailing zeros of the fraction, no trailing ".".
// "10.00" -> "10", 10 -> "10", "0.50" -> "0.5", "007.50" -> "7.5".
// A JSON number is read as its shortest round-trip decimal text (String(n)).
// Throws on anything that is not a finite decimal.
function canonicalAmount(value) {
  let text;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) {
      throw new TypeError(`not a decimal amount: ${value}`);
    }
    text = String(value);
  } else if (typeof value === 'string') {
    text = value.trim();
  } else {
    throw new TypeError(`not a decimal amount: ${JSON.stringify(value)}`);
  }
  const match = DECIMAL_PATTERN.exec(text);
  if (!match) {
    throw new TypeError(`not a decimal amount: ${JSON.stringify(value)}`);
  }
  let integer = match[1] !== undefined ? match[1] : '';
  let fraction = match[1] !== undefined ? match[2] || '' : match[3];
  const exponent = match[4] !== undefined ? parseInt(match[4], 10) : 0;
  if (exponent > 0) {
    const shift = Math.min(exponent, fraction.length);
    integer += fraction.slice(0, shift) + '0'.repeat(exponent - shift);
    fraction = fraction.slice(shift);
  } else if (exponent < 0) {
    const shift = Math.min(-exponent, integer.length);
    fraction = '0'.repeat(-exponent - shift) + integer.slice(integer.length - shift) + fraction;
    integer = integer.slice(0, integer.length - shift);
  }
  integer = integer.replace(/^0+/, '') || '0';
  fraction = fraction.replace(/0+$/, '');
  return fraction ? `${integer}.${fraction}` : integer;
}

// The value at a dotted path; null when a segment is missing or the value before it
// is not an object.
function valueAt(body, path) {
  let value = body;
  for (const segment of path.split('.')) {
    if (
      value === null ||
      typeof value !== 'object' ||
      Array.isArray(value) ||
      !Object.prototype.hasOwnProperty.call(value, segment) ||
      value[segment] === undefined
    ) {
      return null;
    }
    value = value[segment];
  }
  return value;
}

function isValidPath(path) {
  return typeof path === 'string' && PATH_PATTERN.test(path);
}

function deriveKey(op, body, fields = DEFAULT_FIELDS) {
  if (op !== 'deposit' && op !== 'charge') {
    throw new TypeError(`op must be "deposit" or "charge", not ${JSON.stringify(op)}`);
  }
  const picked = {};
  for (const path of fields) {
    if (!isValidPath(path)) {
      throw new TypeError(`not an allowed dedupe path: ${JSON.stringify(path)}`);
    }
    let value = valueAt(body, path);
    if (path === 'amount' && value !== null) {
      value = canonicalAmount(value);
    }
    picked[path] = value;
  }
  const document = canonicalJson({ v: 1, op, fields: picked });
  return KEY_PREFIX + crypto.createHash('sha256').update(document, 'utf8').digest('hex');
}

module.exports = {
  KEY_PREFIX,
  DEFAULT_FIELDS,
  canonicalJson,
  canonicalAmount,
  valueAt,
  isValidPath,
  deriveKey,
};

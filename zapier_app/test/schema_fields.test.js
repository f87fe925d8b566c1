'use strict';

// Input fields agree with schemas/: every property of the request schemas has a
// matching input field with the same required flag, so the two cannot drift.
//
// How body properties map to input fields:
// - user   -> input field "user"   (same required flag)
// - amount -> input field "amount" (same required flag)
// - metadata -> built by the step from three input fields: "reason", "reference" and
//   "extra_metadata" ({...extra_metadata, reason, reference}). metadata is optional in
//   the schema, so all three must be optional too: a required one would make every
//   body carry metadata, i.e. make metadata required in practice.
// - "dedupe_on" is no body property: it chooses the fields of the Idempotency-Key
//   header (schemas/idempotency.md), so it is listed as a step-only control.
// A new schema property, a new input field, or a changed required flag fails here.

const fs = require('fs');
const path = require('path');

const App = require('../index');
const { buildBody } = require('../lib/balance_change');

const SCHEMAS = path.resolve(__dirname, '../../schemas');
const readSchema = (name) => JSON.parse(fs.readFileSync(path.join(SCHEMAS, name), 'utf8'));
const common = readSchema('common.json');

// Resolve "common.json#/$defs/x" references (the only kind the request schemas use).
const resolve = (property) => {
  if (!property.$ref) {
    return property;
  }
  const match = /^common\.json#\/\$defs\/(\w+)$/.exec(property.$ref);
  if (!match) {
    throw new Error(`unexpected $ref ${property.$ref}`);
  }
  return common.$defs[match[1]];
};

const BODY_MAPPING = {
  user: ['user'],
  amount: ['amount'],
  metadata: ['reason', 'reference', 'extra_metadata'],
};
const STEP_ONLY = ['dedupe_on'];

describe.each([
  ['deposit_credits', 'deposit-request.json'],
  ['charge_user', 'charge-request.json'],
])('%s input fields vs schemas/%s', (actionKey, schemaFile) => {
  const schema = readSchema(schemaFile);
  const inputFields = App.creates[actionKey].operation.inputFields;
  const byKey = Object.fromEntries(inputFields.map((f) => [f.key, f]));
  const required = new Set(schema.required || []);

  it('maps every schema property, and only those', () => {
    expect(Object.keys(schema.properties).sort()).toEqual(Object.keys(BODY_MAPPING).sort());
  });

  it.each(Object.keys(BODY_MAPPING))('property %s has its input fields with the same required flag', (property) => {
    expect(schema.properties[property]).toBeDefined();
    for (const fieldKey of BODY_MAPPING[property]) {
      expect(byKey[fieldKey]).toBeDefined();
      expect({ field: fieldKey, required: Boolean(byKey[fieldKey].required) }).toEqual({
        field: fieldKey,
        required: required.has(property),
      });
    }
  });

  it('has no input field outside the mapping', () => {
    const mapped = new Set([...Object.values(BODY_MAPPING).flat(), ...STEP_ONLY]);
    expect(inputFields.map((f) => f.key).filter((k) => !mapped.has(k))).toEqual([]);
    for (const key of STEP_ONLY) {
      expect(byKey[key]).toBeDefined();
      expect(Boolean(byKey[key].required)).toBe(false);
    }
  });

  it('takes user and amount as text (amount is a decimal string)', () => {
    expect(resolve(schema.properties.user).type).toBe('string');
    expect(byKey.user.type).toBe('string');
    expect(resolve(schema.properties.amount).anyOf.map((s) => s.type)).toContain('string');
    expect(byKey.amount.type).toBe('string');
    expect(byKey.extra_metadata.dict).toBe(true);
  });

  it('builds a body with only schema properties, required ones present', () => {
    const body = buildBody({
      user: 'acme:user_123',
      amount: '10',
      reason: 'other',
      reference: 'in_1',
      extra_metadata: { plan: 'pro' },
      dedupe_on: 'all',
    });
    expect(Object.keys(body).every((k) => k in schema.properties)).toBe(true);
    for (const property of required) {
      expect(body[property]).toEqual(expect.any(String));
    }
    expect(body.metadata).toEqual({ plan: 'pro', reason: 'other', reference: 'in_1' });
    expect(resolve(schema.properties.metadata).type).toBe('object');
    // With only the required fields filled, metadata is left out altogether.
    expect(buildBody({ user: 'u', amount: '1' })).toEqual({ user: 'u', amount: '1' });
  });
});

describe('find_user_balance input fields vs schemas/balance-query.json', () => {
  const schema = readSchema('balance-query.json');
  const inputFields = App.searches.find_user_balance.operation.inputFields;

  it('has exactly the query properties with the same required flags', () => {
    expect(inputFields.map((f) => f.key).sort()).toEqual(Object.keys(schema.properties).sort());
    for (const field of inputFields) {
      expect({ key: field.key, required: Boolean(field.required) }).toEqual({
        key: field.key,
        required: schema.required.includes(field.key),
      });
    }
  });
});

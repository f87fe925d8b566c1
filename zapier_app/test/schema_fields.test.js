'use strict';

// Input fields agree with schemas/: every property of the request schemas has a
// matching input field with the same required flag, so the two cannot drift.
//
// How body properties map to input fields:
// - user   -> input field "user"   (same required flag)
// - amount -> input field "amount" (same required flag)
// - metadata -> built by the step from three input fields: "reason", "reference" and
//   "extra_metadata" ({...extra_metadata, reason, reference}). metadata is optional in
//   the schema, so they are optional too, except Reference: the clients require it
//   (client-contract.json reference_policy), though the relay API does not.
// - "dedupe_on", "custom_dedupe_fields" and "dry_run" are no body properties: the first two
//   choose the fields of the Idempotency-Key header (schemas/idempotency.md), the third
//   sends ?dry_run=true; they are step-only controls.
// A new schema property, a new input field, or a changed required flag fails here.

const fs = require('fs');
const path = require('path');

const App = require('../index');
const { buildRequest, CONTRACT } = require('../lib/generated/relay-contract');

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
const STEP_ONLY = ['dedupe_on', 'custom_dedupe_fields', 'dry_run'];
const CLIENT_REQUIRED = new Set(['reference']); // reference_policy

const shownFields = (inputFields) =>
  inputFields.flatMap((f) => (typeof f === 'function' ? f(null, { inputData: { dedupe_on: 'custom' } }) : [f]));

describe.each([
  ['deposit_credits', 'deposit-request.json'],
  ['charge_user', 'charge-request.json'],
])('%s input fields vs schemas/%s', (actionKey, schemaFile) => {
  const schema = readSchema(schemaFile);
  const inputFields = shownFields(App.creates[actionKey].operation.inputFields);
  const op = actionKey === 'deposit_credits' ? 'deposit' : 'charge';
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
        required: required.has(property) || (CLIENT_REQUIRED.has(fieldKey) && CONTRACT.reference_policy.required_for.includes(op)),
      });
    }
  });

  it('has no input field outside the mapping', () => {
    const mapped = new Set([...Object.values(BODY_MAPPING).flat(), ...STEP_ONLY]);
    expect(inputFields.map((f) => f.key).filter((k) => !mapped.has(k))).toEqual([]);
    for (const key of STEP_ONLY) {
      expect(byKey[key]).toBeDefined();
    }
    // Custom Dedupe Fields is required only where it is shown (Deduplicate On = custom).
    expect(Boolean(byKey.dedupe_on.required)).toBe(false);
    expect(Boolean(byKey.dry_run.required)).toBe(false);
  });

  it('takes user and amount as text (amount is a decimal string)', () => {
    expect(resolve(schema.properties.user).type).toBe('string');
    expect(byKey.user.type).toBe('string');
    expect(resolve(schema.properties.amount).anyOf.map((s) => s.type)).toContain('string');
    expect(byKey.amount.type).toBe('string');
    expect(byKey.extra_metadata.dict).toBe(true);
  });

  it('builds a body with only schema properties, required ones present', () => {
    const { body } = buildRequest(op, {
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
    // With only the required fields filled, metadata holds only the Reference.
    expect(buildRequest(op, { user: 'u', amount: '1', reference: 'r' }).body).toEqual({
      user: 'u',
      amount: '1',
      metadata: { reference: 'r' },
    });
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

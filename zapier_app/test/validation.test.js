'use strict';

// The app passes Zapier's schema validation as a whole (what `zapier validate` runs
// locally) and each visible action alone: the app-level check does not flag a missing
// sample, the per-action schemas do.

const zapier = require('zapier-platform-core');
const CreateSchema = require('zapier-platform-schema/lib/schemas/CreateSchema');
const SearchSchema = require('zapier-platform-schema/lib/schemas/SearchSchema');
const TriggerSchema = require('zapier-platform-schema/lib/schemas/TriggerSchema');

const App = require('../index');

const KINDS = [
  ['creates', CreateSchema],
  ['searches', SearchSchema],
  ['triggers', TriggerSchema],
];

let definition;
beforeAll(async () => {
  definition = (await zapier.createAppHandler(App)({ command: 'definition' })).results;
});

describe('app validation', () => {
  it('reports zero errors', async () => {
    const { results } = await zapier.createAppHandler(App)({ command: 'validate' });
    expect(results).toEqual([]);
  });

  it('catches a broken definition (the check itself works)', async () => {
    const broken = {
      ...App,
      creates: {
        ...App.creates,
        deposit_credits: {
          ...App.creates.deposit_credits,
          display: { ...App.creates.deposit_credits.display, important: true },
        },
      },
    };
    const { results } = await zapier.createAppHandler(broken)({ command: 'validate' });
    expect(results.length).toBeGreaterThan(0);
  });

  it('has the four actions of issue 5 and the three instant triggers of issue 16', () => {
    expect(Object.keys(App.creates).sort()).toEqual(['charge_user', 'deposit_credits', 'get_topup_link']);
    expect(Object.keys(App.searches)).toEqual(['find_user_balance']);
    expect(Object.keys(App.triggers)).toEqual(['new_deposit', 'deposit_created', 'balance_depleted', 'charge_failed']);
  });

  it('uses the core it depends on, pinned exactly', () => {
    const pkg = require('../package.json');
    expect(App.platformVersion).toBe(zapier.version);
    expect(pkg.dependencies).toEqual({ 'zapier-platform-core': zapier.version });
    expect(zapier.version).toMatch(/^19\./);
  });
});

describe.each(KINDS)('each of %s validated alone', (kind, Schema) => {
  const keys = () => Object.keys(App[kind]);

  it('passes its schema', () => {
    for (const key of keys()) {
      const action = definition[kind][key];
      expect(action.display.hidden).not.toBe(true);
      const { errors } = Schema.validate(action);
      expect({ key, errors: errors.map((e) => e.stack) }).toEqual({ key, errors: [] });
    }
  });

  it('would be flagged without a sample', () => {
    for (const key of keys()) {
      const action = JSON.parse(JSON.stringify(definition[kind][key]));
      delete action.operation.sample;
      expect(Schema.validate(action).errors.length).toBeGreaterThan(0);
    }
  });

  it('has outputFields naming every top-level sample key but metadata', () => {
    for (const key of keys()) {
      const { sample, outputFields } = App[kind][key].operation;
      expect(outputFields.length).toBeGreaterThan(0);
      const declared = new Set(outputFields.map((f) => f.key.split('__')[0]));
      const undeclared = Object.keys(sample).filter((k) => k !== 'metadata' && !declared.has(k));
      expect({ key, undeclared }).toEqual({ key, undeclared: [] });
      for (const field of outputFields) {
        expect(field.label).toEqual(expect.any(String));
      }
    }
  });

  it('has a label and help text on every input field', () => {
    for (const key of keys()) {
      // A dynamic field (Custom Dedupe Fields) is checked as Zapier shows it.
      const shown = App[kind][key].operation.inputFields.flatMap((field) =>
        typeof field === 'function' ? field(null, { inputData: { dedupe_on: 'custom' } }) : [field],
      );
      for (const field of shown) {
        expect({ key: field.key, label: typeof field.label, help: typeof field.helpText }).toEqual({
          key: field.key,
          label: 'string',
          help: 'string',
        });
      }
    }
  });
});

describe('samples are honest', () => {
  const { deriveKey } = require('../lib/generated/relay-contract');

  it.each([
    ['deposit_credits', 'deposit'],
    ['charge_user', 'charge'],
  ])('%s sample key is the key of its own fields', (key, op) => {
    const { sample } = App.creates[key].operation;
    const body = { user: sample.user, amount: sample.amount, metadata: sample.metadata };
    expect(sample.idempotency_key).toBe(deriveKey(op, body));
    expect(sample.metadata).toEqual({ reason: sample.reason, reference: sample.reference });
  });
});

describe('authentication definition', () => {
  it('is custom auth with a URL field and a secret token field', () => {
    const { authentication } = App;
    expect(authentication.type).toBe('custom');
    const byKey = Object.fromEntries(authentication.fields.map((f) => [f.key, f]));
    expect(Object.keys(byKey).sort()).toEqual(['baseUrl', 'token']);
    expect(byKey.token.type).toBe('password');
    expect(byKey.token.isNoSecret).toBeUndefined();
    expect(byKey.baseUrl.required).toBe(true);
    expect(byKey.token.required).toBe(true);
  });
});

'use strict';

// lib/generated/ is what `npm run generate` writes from schemas/ (committed, since `zapier push`
// uploads only this folder). Regenerating must give exactly the committed files, and the app
// must use them.

const fs = require('fs');
const path = require('path');

const { render, OUT } = require('../scripts/generate');
const App = require('../index');

const SCHEMAS = path.resolve(__dirname, '../../schemas');
const contract = JSON.parse(fs.readFileSync(path.join(SCHEMAS, 'client-contract.json'), 'utf8'));

describe('npm run generate', () => {
  const files = render();

  it.each(Object.keys(files))('committed lib/generated/%s is what generate writes', (name) => {
    expect(fs.readFileSync(path.join(OUT, name), 'utf8')).toBe(files[name]);
  });

  it('writes nothing else into lib/generated', () => {
    expect(fs.readdirSync(OUT).sort()).toEqual(Object.keys(files).sort());
  });

  it('copies the shared JS unchanged but for its header', () => {
    const source = fs.readFileSync(path.join(SCHEMAS, 'clients/relay-contract.js'), 'utf8');
    const copy = files['relay-contract.js'];
    expect(copy.replace(/^\/\/ GENERATED.*\n\/\/.*\n/m, '')).toBe(source);
  });

  it('would notice a change in the contract (the check itself works)', () => {
    const committed = JSON.parse(fs.readFileSync(path.join(OUT, 'fields.json'), 'utf8'));
    committed.deposit.inputFields[0].label = 'Changed';
    expect(`${JSON.stringify(committed, null, 2)}\n`).not.toBe(files['fields.json']);
  });
});

describe('the actions use the generated fields of their operation', () => {
  const actions = {
    deposit: App.creates.deposit_credits,
    charge: App.creates.charge_user,
    balance: App.searches.find_user_balance,
    deposits: App.triggers.new_deposit,
    topup: App.creates.get_topup_link,
  };

  it.each(Object.keys(actions))('%s: its inputs, in the contract order, with label, required and help', (op) => {
    const spec = contract.operations[op];
    const fields = actions[op].operation.inputFields
      .flatMap((f) => (typeof f === 'function' ? f(null, { inputData: { dedupe_on: 'custom' } }) : [f]))
      .filter((f) => spec.inputs.includes(f.key));
    expect(fields.map((f) => f.key)).toEqual(spec.inputs);
    for (const field of fields) {
      const input = { ...contract.inputs[field.key], ...((spec.input_overrides || {})[field.key] || {}) };
      expect({ key: field.key, label: field.label, required: field.required }).toEqual({
        key: field.key,
        label: input.label,
        required: Boolean(input.required),
      });
      expect(field.helpText).toBe(input.help.replace(/\{([a-z_]+)\}/g, (m, name) => spec[name] || m));
    }
    expect(actions[op].key).toBe(spec.zapier.key);
  });

  it.each(['deposit', 'charge'])('%s: outputs every scalar key of the contract, snake_case', (op) => {
    const keys = actions[op].operation.outputFields.map((f) => f.key);
    const scalar = contract.operations[op].outputs.filter((o) => o.type !== 'object').map((o) => o.key);
    expect(keys).toEqual(scalar);
    expect(keys.every((k) => /^[a-z]+(_[a-z]+)*$/.test(k))).toBe(true);
  });

  it('Reference is required, Dry Run is off by default', () => {
    for (const op of ['deposit', 'charge']) {
      const fields = actions[op].operation.inputFields.filter((f) => typeof f !== 'function');
      expect(fields.find((f) => f.key === 'reference').required).toBe(true);
      expect(fields.find((f) => f.key === 'dry_run')).toMatchObject({ type: 'boolean', default: 'false', required: false });
    }
  });
});

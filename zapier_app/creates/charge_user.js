'use strict';

// POST /v1/user/charge -> 200 {"success": true|false, "message": "..."}; with Dry Run,
// POST ...?dry_run=true -> 200 {"dry_run": true, "would": ..., "remaining": ...}.
// success: false (too little balance) is an answer, not an error: it is returned as data so
// the Zap can branch on it with a Filter or Paths step.

const { send } = require('../lib/balance_change');
const fields = require('../lib/fields');

const OP = 'charge';
const spec = fields.definition(OP);

const perform = (z, bundle) => send(z, bundle, OP);

module.exports = {
  key: spec.key,
  noun: spec.noun,
  display: { label: spec.label, description: spec.description },
  operation: {
    inputFieldGroups: [fields.advancedGroup],
    inputFields: fields.inputFields(OP),
    perform,
    sample: {
      user: 'acme:user_123',
      amount: '2.5',
      reason: 'usage',
      reference: 'job_42',
      metadata: { reason: 'usage', reference: 'job_42' },
      idempotency_key: 'pwk1_d78afb283f73fd08c04d0aff9263b4d7d8f813ebc7bb581f213bf568c9bf90b1',
      replayed: false,
      sandbox: false,
      dry_run: false,
      success: true,
      message: 'Charged 2.50 from the balance.',
    },
    outputFields: fields.outputFields(OP),
  },
};

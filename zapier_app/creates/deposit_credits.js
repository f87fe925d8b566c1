'use strict';

// POST /v1/user/balance/deposit -> 200 {"balanceFormatted": "..."}; with Dry Run,
// POST ...?dry_run=true -> 200 {"dry_run": true, "would": ..., "remaining": ...}.
// Fields, request and output: schemas/client-contract.json via lib/generated/.

const { send } = require('../lib/balance_change');
const fields = require('../lib/fields');

const OP = 'deposit';
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
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_1Q2w3E4r',
      metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
      idempotency_key: 'pwk1_17dfbe5531ecbd7d305a3dbb93bf51135ca896a68bd0f26ec6f404eb27b83828',
      replayed: false,
      sandbox: false,
      dry_run: false,
      new_balance: '25.00',
    },
    outputFields: fields.outputFields(OP),
  },
};

'use strict';

// GET /v1/user/balance?user= -> {"balance": "...", "balanceFormatted": "..."}

const contract = require('../lib/generated/relay-contract');
const { requireObjectBody } = require('../lib/errors');
const { relayRequest, requestFor } = require('../lib/relay');
const fields = require('../lib/fields');

const OP = 'balance';
const spec = fields.definition(OP);

const perform = async (z, bundle) => {
  const request = requestFor(z, OP, bundle.inputData);
  const response = await relayRequest(z, bundle, { url: request.path, method: request.method, params: request.query });
  const data = requireObjectBody(z, response);
  const output = contract.buildReadOutput(OP, request, data, {
    sandbox: response.getHeader('x-relay-sandbox') === 'true',
  });
  // Zapier searches return a list; id lets Zapier tell results apart.
  return [{ id: output.user, ...output }];
};

module.exports = {
  key: spec.key,
  noun: spec.noun,
  display: {
    label: spec.label,
    description: "Looks up a user's current Paywalls balance, e.g. to check it before charging or to show it in a message.",
  },
  operation: {
    inputFields: fields.inputFields(OP),
    perform,
    sample: {
      id: 'acme:user_123',
      user: 'acme:user_123',
      balance: '25000000',
      balance_formatted: '25.00',
      sandbox: false,
    },
    outputFields: [{ key: 'id', label: 'ID', type: 'string' }, ...fields.outputFields(OP)],
  },
};

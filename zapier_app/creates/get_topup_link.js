'use strict';

// GET /v1/user/balance/topup?user= -> Paywalls' answer ({"url": "https://..."}), passed on by the
// relay (token operation topup). A create, not a search: Paywalls makes a link each time
// (its event paywall.balance.topup.link.created), and the step is what a Zap runs after
// Balance Depleted to email the user where to top up. It moves no money.

const contract = require('../lib/generated/relay-contract');
const { requireObjectBody } = require('../lib/errors');
const { relayRequest, requestFor } = require('../lib/relay');
const fields = require('../lib/fields');

const OP = 'topup';
const spec = fields.definition(OP);

const perform = async (z, bundle) => {
  const request = requestFor(z, OP, bundle.inputData);
  const response = await relayRequest(z, bundle, { url: request.path, method: request.method, params: request.query });
  const data = requireObjectBody(z, response);
  return contract.buildReadOutput(OP, request, data, { sandbox: response.getHeader('x-relay-sandbox') === 'true' });
};

module.exports = {
  key: spec.key,
  noun: spec.noun,
  display: { label: spec.label, description: spec.description },
  operation: {
    inputFields: fields.inputFields(OP),
    perform,
    sample: { user: 'acme:user_123', topup_url: 'https://paywalls.ai/topup/pw_3kq9', sandbox: false },
    outputFields: fields.outputFields(OP),
  },
};

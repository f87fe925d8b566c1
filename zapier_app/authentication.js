'use strict';

const { clientError } = require('./lib/errors');
const { relayRequest } = require('./lib/relay');

// The connection test: GET /v1/relay/me answers with the token's id, label, operations
// and limits (schemas/me-response.json). Anything else is not a Paywalls Relay.
const test = async (z, bundle) => {
  const response = await relayRequest(z, bundle, { url: '/v1/relay/me', method: 'GET' });
  const me = response.data;
  if (!me || typeof me !== 'object' || typeof me.id !== 'string' || !Array.isArray(me.operations)) {
    const url = response.request && response.request.url;
    throw clientError(z, 'no-relay-here', { url, status: response.status });
  }
  return me;
};

// Shown in Zapier's account list: the token's label, marked when the relay runs
// against its simulated upstream.
const connectionLabel = (z, bundle) => {
  const me = bundle.inputData || {};
  const label = me.label || me.id || 'Paywalls Relay';
  return me.sandbox ? `${label} (sandbox)` : label;
};

module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'baseUrl',
      label: 'Relay URL',
      type: 'string',
      required: true,
      placeholder: 'https://relay.example.com',
      helpText:
        'The address of your Paywalls Relay, e.g. `https://relay.example.com` (without `/v1`). ' +
        'Your relay operator can tell you.',
    },
    {
      key: 'token',
      label: 'Relay Token',
      type: 'password',
      required: true,
      placeholder: 'pwr_...',
      helpText:
        'A scoped relay token (starts with `pwr_`), created by your relay operator with `paywalls-relay tokens create`. ' +
        'It decides which operations, users and amounts this connection may use. ' +
        '**Never paste your Paywalls secret key (`sk-...`) here.**',
    },
  ],
  test,
  connectionLabel,
};

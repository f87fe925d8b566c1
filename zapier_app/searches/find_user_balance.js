'use strict';

const { requireObjectBody } = require('../lib/errors');

// GET /v1/user/balance?user= -> {"balance": "...", "balanceFormatted": "..."}
const perform = async (z, bundle) => {
  const user = String(bundle.inputData.user === undefined ? '' : bundle.inputData.user).trim();
  const response = await z.request({
    url: '/v1/user/balance',
    method: 'GET',
    params: { user },
  });
  const data = requireObjectBody(z, response);
  return [
    {
      id: user,
      user,
      balance: data.balance === undefined ? null : data.balance,
      balance_formatted: data.balanceFormatted === undefined ? null : data.balanceFormatted,
      sandbox: response.getHeader('x-relay-sandbox') === 'true',
    },
  ];
};

module.exports = {
  key: 'find_user_balance',
  noun: 'Balance',
  display: {
    label: 'Find User Balance',
    description: "Looks up a user's current Paywalls balance, e.g. to check it before charging or to show it in a message.",
  },
  operation: {
    inputFields: [
      {
        key: 'user',
        label: 'User',
        type: 'string',
        required: true,
        placeholder: 'acme:user_123',
        helpText: 'The Paywalls user id whose balance to look up, e.g. `acme:user_123`.',
      },
    ],
    perform,
    sample: {
      id: 'acme:user_123',
      user: 'acme:user_123',
      balance: '25000000',
      balance_formatted: '25.00',
      sandbox: false,
    },
    outputFields: [
      { key: 'id', label: 'ID', type: 'string' },
      { key: 'user', label: 'User', type: 'string' },
      { key: 'balance', label: 'Balance (Raw Units)', type: 'string' },
      { key: 'balance_formatted', label: 'Balance', type: 'string' },
      { key: 'sandbox', label: 'Sandbox Mode', type: 'boolean' },
    ],
  },
};

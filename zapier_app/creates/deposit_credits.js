'use strict';

const { send, fields, commonOutputFields } = require('../lib/balance_change');

const REASONS = [
  { value: 'signup_bonus', label: 'Signup bonus', sample: 'signup_bonus' },
  { value: 'subscription_renewal', label: 'Subscription renewal', sample: 'subscription_renewal' },
  { value: 'refund', label: 'Refund', sample: 'refund' },
  { value: 'goodwill', label: 'Goodwill', sample: 'goodwill' },
  { value: 'promotion', label: 'Promotion', sample: 'promotion' },
  { value: 'migration', label: 'Migration', sample: 'migration' },
  { value: 'other', label: 'Other', sample: 'other' },
];

// POST /v1/user/balance/deposit -> 200 {"balanceFormatted": "..."}
const perform = async (z, bundle) => {
  const { response, common } = await send(z, bundle, 'deposit', '/v1/user/balance/deposit');
  const data = response.data || {};
  return {
    ...common,
    new_balance: data.balanceFormatted === undefined ? null : data.balanceFormatted,
  };
};

module.exports = {
  key: 'deposit_credits',
  noun: 'Deposit',
  display: {
    label: 'Deposit Credits',
    description:
      "Adds credits to a user's Paywalls balance, for example a signup bonus or a renewal after a paid invoice. " +
      'Safe to replay: a repeat of the same deposit is never credited twice.',
  },
  operation: {
    inputFieldGroups: [fields.advancedGroup],
    inputFields: [
      fields.userField,
      fields.amountField('add to the balance'),
      fields.reasonField(REASONS, 'Why the credits are granted. Stored with the deposit as metadata `reason`.'),
      fields.referenceField('the Stripe invoice id `in_1Q2w3E4r`'),
      fields.extraMetadataField,
      fields.dedupeOnField,
    ],
    perform,
    sample: {
      user: 'acme:user_123',
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_1Q2w3E4r',
      metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
      new_balance: '25.00',
      idempotency_key: 'pwk1_17dfbe5531ecbd7d305a3dbb93bf51135ca896a68bd0f26ec6f404eb27b83828',
      replayed: false,
      sandbox: false,
    },
    outputFields: [
      ...commonOutputFields,
      { key: 'new_balance', label: 'New Balance', type: 'string' },
      { key: 'metadata__reason', label: 'Metadata: Reason', type: 'string' },
      { key: 'metadata__reference', label: 'Metadata: Reference', type: 'string' },
    ],
  },
  REASONS,
};

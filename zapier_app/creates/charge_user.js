'use strict';

const { send, fields, commonOutputFields } = require('../lib/balance_change');

const REASONS = [
  { value: 'usage', label: 'Usage', sample: 'usage' },
  { value: 'subscription', label: 'Subscription', sample: 'subscription' },
  { value: 'purchase', label: 'Purchase', sample: 'purchase' },
  { value: 'adjustment', label: 'Adjustment', sample: 'adjustment' },
  { value: 'other', label: 'Other', sample: 'other' },
];

// POST /v1/user/charge -> 200 {"success": true|false, "message": "..."}
// success: false (too little balance, not authorized) is an answer, not an error:
// it is returned as data so the Zap can branch on it with a Filter or Paths step.
const perform = async (z, bundle) => {
  const { response, common } = await send(z, bundle, 'charge', '/v1/user/charge');
  const data = response.data || {};
  return {
    ...common,
    success: data.success === true,
    message: typeof data.message === 'string' ? data.message : '',
  };
};

module.exports = {
  key: 'charge_user',
  noun: 'Charge',
  display: {
    label: 'Charge User',
    description:
      "Takes an amount from a user's Paywalls balance. If the balance is too low, the step still succeeds with " +
      'Success = false and a top-up message, so your Zap can branch on it. Needs a token with the charge operation.',
  },
  operation: {
    inputFieldGroups: [fields.advancedGroup],
    inputFields: [
      fields.userField,
      fields.amountField('take from the balance'),
      fields.reasonField(REASONS, 'What the charge is for. Stored with the charge as metadata `reason`.'),
      fields.referenceField('the order or job id `render-42`'),
      fields.extraMetadataField,
      fields.dedupeOnField,
    ],
    perform,
    sample: {
      user: 'acme:user_123',
      amount: '2.5',
      reason: 'usage',
      reference: 'render-42',
      metadata: { reason: 'usage', reference: 'render-42' },
      success: true,
      message: 'Charged 2.50 from the balance.',
      idempotency_key: 'pwk1_af7efb634c4e916a9c603c5a87c545d4e4f467ed6a30ff6952380e8c7c3c920e',
      replayed: false,
      sandbox: false,
    },
    outputFields: [
      ...commonOutputFields,
      { key: 'success', label: 'Success', type: 'boolean' },
      { key: 'message', label: 'Message', type: 'string' },
      { key: 'metadata__reason', label: 'Metadata: Reason', type: 'string' },
      { key: 'metadata__reference', label: 'Metadata: Reference', type: 'string' },
    ],
  },
  REASONS,
};

'use strict';

// Polls GET /v1/relay/deposits (newest first). Each entry has a stable id (e.g. "led_42"),
// which Zapier uses to tell new deposits from ones it has seen. Reason and Reference are
// lifted out of metadata so they are easy to map (relay-contract.js buildReadOutput, the same
// items n8n's List Deposits gives).

const contract = require('../lib/generated/relay-contract');
const { requireObjectBody, unexpectedBodyError } = require('../lib/errors');
const { relayRequest, requestFor } = require('../lib/relay');
const fields = require('../lib/fields');

const OP = 'deposits';
const PAGE_SIZE = 50;
const spec = fields.definition(OP);

// Zapier-only: a polling trigger filters on Reason itself (the relay's feed has no such query).
const reasonFilter = {
  key: 'reason',
  label: 'Reason',
  type: 'string',
  required: false,
  choices: fields.definition('deposit').inputFields.find((f) => f.key === 'reason').choices,
  helpText: 'Only trigger on deposits with this reason. Leave empty for any reason.',
};

const perform = async (z, bundle) => {
  const request = requestFor(z, OP, bundle.inputData);
  const response = await relayRequest(z, bundle, {
    url: request.path,
    method: request.method,
    params: { limit: String(PAGE_SIZE), ...request.query },
  });
  // Not a {data: [...]} page: something other than the relay answered; an empty list would hide it.
  const page = requireObjectBody(z, response);
  if (!Array.isArray(page.data)) {
    throw unexpectedBodyError(z, response);
  }
  const reason = typeof bundle.inputData.reason === 'string' ? bundle.inputData.reason.trim() : '';
  return contract.buildReadOutput(OP, request, page, {}).filter((item) => !reason || item.reason === reason);
};

module.exports = {
  key: spec.key,
  noun: spec.noun,
  display: {
    label: 'New Deposit',
    description:
      'Triggers when credits are deposited to a user through Paywalls Relay, by any Zap, workflow or script ' +
      '(checked every few minutes). Needs a token with the ledger operation. For deposits from any source ' +
      '(Stripe, top-up links), at once, use Deposit Created (events operation).',
  },
  operation: {
    type: 'polling',
    inputFields: [...fields.inputFields(OP), reasonFilter],
    perform,
    sample: {
      id: 'led_42',
      user: 'acme:user_123',
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_1Q2w3E4r',
      metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
      balance_formatted: '25.00',
      idempotency_key: 'pwk1_17dfbe5531ecbd7d305a3dbb93bf51135ca896a68bd0f26ec6f404eb27b83828',
      token_id: 'Uq8xoIK4PjS2',
      token_label: 'Zapier: Stripe renewals',
      created_at: '2026-11-03T09:15:27Z',
    },
    outputFields: fields.outputFields(OP),
  },
};

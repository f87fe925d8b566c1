'use strict';

// Polls GET /v1/relay/deposits (newest first). Each entry has a stable id (e.g.
// "led_42"), which Zapier uses to tell new deposits from ones it has seen.
// Reason and Reference are lifted out of metadata so they are easy to map.

const { requireObjectBody, unexpectedBodyError } = require('../lib/errors');

const PAGE_SIZE = 50;

const toItem = (entry) => {
  const metadata = entry.metadata && typeof entry.metadata === 'object' ? entry.metadata : {};
  return {
    id: entry.id,
    created_at: entry.created_at,
    user: entry.user,
    amount: entry.amount,
    reason: metadata.reason === undefined ? null : metadata.reason,
    reference: metadata.reference === undefined ? null : metadata.reference,
    metadata,
    balance_formatted: entry.balance_formatted === undefined ? null : entry.balance_formatted,
    idempotency_key: entry.idempotency_key,
    token_id: entry.token_id,
    token_label: entry.token_label === undefined ? null : entry.token_label,
  };
};

const perform = async (z, bundle) => {
  const params = { limit: String(PAGE_SIZE) };
  const user = String(bundle.inputData.user === undefined ? '' : bundle.inputData.user).trim();
  if (user) {
    params.user = user;
  }
  const response = await z.request({ url: '/v1/relay/deposits', method: 'GET', params });
  // Not a {data: [...]} page: something other than the relay answered; an empty list would hide it.
  const page = requireObjectBody(z, response);
  if (!Array.isArray(page.data)) {
    throw unexpectedBodyError(z, response);
  }
  const { data } = page;
  const reason = String(bundle.inputData.reason === undefined ? '' : bundle.inputData.reason).trim();
  return data
    .map(toItem)
    .filter((item) => !reason || item.reason === reason);
};

module.exports = {
  key: 'new_deposit',
  noun: 'Deposit',
  display: {
    label: 'New Deposit',
    description:
      'Triggers when credits are deposited to a user through Paywalls Relay, by any Zap, workflow or script. ' +
      'Needs a token with the ledger operation.',
  },
  operation: {
    type: 'polling',
    inputFields: [
      {
        key: 'user',
        label: 'User',
        type: 'string',
        required: false,
        placeholder: 'acme:user_123',
        helpText: 'Only trigger on deposits to this Paywalls user id. Leave empty for deposits to any user.',
      },
      {
        key: 'reason',
        label: 'Reason',
        type: 'string',
        required: false,
        choices: require('../creates/deposit_credits').REASONS,
        helpText: 'Only trigger on deposits with this reason. Leave empty for any reason.',
      },
    ],
    perform,
    sample: {
      id: 'led_42',
      created_at: '2026-11-03T09:15:27Z',
      user: 'acme:user_123',
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_1Q2w3E4r',
      metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
      balance_formatted: '25.00',
      idempotency_key: 'pwk1_17dfbe5531ecbd7d305a3dbb93bf51135ca896a68bd0f26ec6f404eb27b83828',
      token_id: 'Uq8xoIK4PjS2',
      token_label: 'Zapier: Stripe renewals',
    },
    outputFields: [
      { key: 'id', label: 'Deposit ID', type: 'string' },
      { key: 'created_at', label: 'Created At', type: 'datetime' },
      { key: 'user', label: 'User', type: 'string' },
      { key: 'amount', label: 'Amount', type: 'string' },
      { key: 'reason', label: 'Reason', type: 'string' },
      { key: 'reference', label: 'Reference', type: 'string' },
      { key: 'balance_formatted', label: 'Balance After Deposit', type: 'string' },
      { key: 'idempotency_key', label: 'Idempotency Key', type: 'string' },
      { key: 'token_id', label: 'Token ID', type: 'string' },
      { key: 'token_label', label: 'Token Label', type: 'string' },
    ],
  },
};

'use strict';

// What "Deposit Credits" and "Charge User" share: the input fields, the request body
// built from them, the Idempotency-Key derived from that body, and the call itself.
//
// Body sent to the relay (schemas/deposit-request.json, charge-request.json):
//   {user, amount, metadata?}
// metadata is built from three input fields:
//   {...extra_metadata, reason, reference}
// (Reason and Reference win over an Extra Metadata row of the same key; empty values are
// left out; no metadata at all when all three are empty.)

const { deriveKey, canonicalAmount, DEFAULT_FIELDS } = require('./idempotency');
const { messages, requireObjectBody } = require('./errors');

// "Deduplicate On" choices -> the dedupe field list of schemas/idempotency.md.
const DEDUPE_CHOICES = {
  all: {
    label: 'All fields (recommended)',
    fields: DEFAULT_FIELDS,
  },
  reference: {
    label: 'User and Reference only',
    fields: ['user', 'metadata.reference'],
  },
  amount_reference: {
    label: 'User, Amount and Reference',
    fields: ['user', 'amount', 'metadata.reference'],
  },
};
const DEFAULT_DEDUPE = 'all';

const text = (value) => (value === undefined || value === null ? '' : String(value).trim());

function buildMetadata(inputData) {
  const metadata = {};
  const extra = inputData.extra_metadata;
  if (extra && typeof extra === 'object' && !Array.isArray(extra)) {
    for (const [rawKey, value] of Object.entries(extra)) {
      const key = rawKey.trim();
      if (key && value !== undefined && value !== null && value !== '') {
        metadata[key] = value;
      }
    }
  }
  const reason = text(inputData.reason);
  const reference = text(inputData.reference);
  if (reason) {
    metadata.reason = reason;
  }
  if (reference) {
    metadata.reference = reference;
  }
  return Object.keys(metadata).length ? metadata : undefined;
}

function buildBody(inputData) {
  const body = { user: text(inputData.user), amount: text(inputData.amount) };
  const metadata = buildMetadata(inputData);
  if (metadata) {
    body.metadata = metadata;
  }
  return body;
}

function dedupeFields(choice) {
  const entry = DEDUPE_CHOICES[text(choice) || DEFAULT_DEDUPE];
  if (!entry) {
    return null;
  }
  return entry.fields;
}

// The key for this body, or null when the amount is not a decimal at all: the relay then
// refuses the amount with its own field message, and nothing is sent to Paywalls.
function keyFor(op, body, fields) {
  try {
    return deriveKey(op, body, fields);
  } catch (error) {
    if (error instanceof TypeError && !/dedupe path/.test(error.message)) {
      return null;
    }
    throw error;
  }
}

function canonicalOrAsSent(amount) {
  try {
    return canonicalAmount(amount);
  } catch (_e) {
    return amount;
  }
}

async function send(z, bundle, op, path) {
  const body = buildBody(bundle.inputData);
  const fields = dedupeFields(bundle.inputData.dedupe_on);
  if (!fields) {
    throw new z.errors.Error(
      `Deduplicate On "${bundle.inputData.dedupe_on}" is not one of: ${Object.values(DEDUPE_CHOICES)
        .map((c) => c.label)
        .join(', ')}.`,
      'validation',
      400,
    );
  }
  if (fields.includes('metadata.reference') && !(body.metadata && body.metadata.reference)) {
    throw new z.errors.Error(messages.referenceRequiredForDedupe(), 'validation', 400);
  }
  const key = keyFor(op, body, fields);
  const headers = { 'Content-Type': 'application/json' };
  if (key) {
    headers['Idempotency-Key'] = key;
  }
  const response = await z.request({ url: path, method: 'POST', headers, body });
  // A 2xx without the relay's JSON object is a failure, not a success with empty output.
  requireObjectBody(z, response);
  const metadata = body.metadata || {};
  return {
    response,
    common: {
      user: body.user,
      amount: canonicalOrAsSent(body.amount),
      reason: metadata.reason || null,
      reference: metadata.reference || null,
      metadata,
      idempotency_key: response.getHeader('idempotency-key') || key,
      replayed: response.getHeader('idempotent-replayed') === 'true',
      sandbox: response.getHeader('x-relay-sandbox') === 'true',
    },
  };
}

// --- input fields ------------------------------------------------------------------------

const userField = {
  key: 'user',
  label: 'User',
  type: 'string',
  required: true,
  placeholder: 'acme:user_123',
  helpText:
    'The Paywalls user id: 1-128 letters, digits and `_ - . :` (no spaces, no @). Use a pseudonymous id such as ' +
    '`acme:user_123`, never an email address.',
};

const amountField = (verb) => ({
  key: 'amount',
  label: 'Amount',
  type: 'string',
  required: true,
  placeholder: '10.00',
  helpText:
    `How much to ${verb}, as a plain positive decimal in your paywall's currency: \`10\`, \`2.50\`. ` +
    'No currency symbol, sign or thousands separator.',
});

const reasonField = (choices, helpText) => ({
  key: 'reason',
  label: 'Reason',
  type: 'string',
  required: false,
  choices,
  helpText,
});

const referenceField = (example) => ({
  key: 'reference',
  label: 'Reference',
  type: 'string',
  required: false,
  placeholder: example,
  helpText:
    `The id of the event that caused this step, e.g. ${example}. **Map it from your trigger: it is what makes ` +
    'replays safe.** Zapier may run a step twice (a timeout, a replay, two Zaps on one trigger); with the same ' +
    'Reference and fields, the second run returns the first result instead of applying it again.',
});

const extraMetadataField = {
  key: 'extra_metadata',
  label: 'Extra Metadata',
  dict: true,
  required: false,
  helpText:
    'More key/value pairs to store with this step in Paywalls, e.g. `plan` = `pro`, `campaign` = `black-friday`. ' +
    'Ids and short labels only: no secrets or personal data. Together with Reason and Reference, at most 50 keys.',
};

const dedupeOnField = {
  key: 'dedupe_on',
  label: 'Deduplicate On',
  type: 'string',
  required: false,
  default: DEFAULT_DEDUPE,
  group: 'advanced',
  choices: Object.entries(DEDUPE_CHOICES).map(([value, c]) => ({
    value,
    label: c.label,
    sample: value,
  })),
  helpText:
    'Which fields make two runs "the same" (the relay answers a repeat with the first result). ' +
    '**All fields** (default): a repeat must match in every field. **User and Reference only**: one result per ' +
    'user and Reference, even if the amount changed; a different amount with the same Reference is refused. ' +
    'Options other than All fields need a Reference.',
};

const advancedGroup = { key: 'advanced', label: 'Advanced', emphasize: false };

// Output fields both actions share.
const commonOutputFields = [
  { key: 'user', label: 'User', type: 'string' },
  { key: 'amount', label: 'Amount', type: 'string' },
  { key: 'reason', label: 'Reason', type: 'string' },
  { key: 'reference', label: 'Reference', type: 'string' },
  { key: 'idempotency_key', label: 'Idempotency Key', type: 'string' },
  { key: 'replayed', label: 'Was a Replay', type: 'boolean' },
  { key: 'sandbox', label: 'Sandbox Mode', type: 'boolean' },
];

module.exports = {
  DEDUPE_CHOICES,
  DEFAULT_DEDUPE,
  buildBody,
  buildMetadata,
  dedupeFields,
  keyFor,
  send,
  fields: {
    userField,
    amountField,
    reasonField,
    referenceField,
    extraMetadataField,
    dedupeOnField,
    advancedGroup,
  },
  commonOutputFields,
};
